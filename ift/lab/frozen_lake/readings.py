"""The readings of the paper's metric that ``ift frozen-lake`` reports, and their numbers per run.

A reading is one π* (``uniform`` over tied optimal moves, or ``one_hot``) and one set of states
(``map``, ``nonterminal``, ``optimal_path``, ``training``): see
:mod:`ift.tasks.frozen_lake.metric_variants`. Every run records the MSE of every reading
(:func:`reading_metrics`), and every claim about "closer to π*" is judged under each
(:mod:`ift.lab.frozen_lake.claims`). The paper's words ("the MSE distance between the transition
matrices of the optimal and trained policy") describe the whole map; they do not say how π*
treats ties, so both ``map`` readings are what the words describe. The headline reading, the one
the tables lead with, is this project's π* over the whole map (``mse_to_optimal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from ift.tasks.frozen_lake.distributions import ActionProbs
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.exploration import explored_mse, sample_visits
from ift.tasks.frozen_lake.metric_variants import PI_STAR_TIES, REGIONS, mse_variants, optimal_policy, variant_name

#: Short labels of the regions, for tables.
REGION_LABELS = {"map": "whole map", "nonterminal": "non-terminal", "optimal_path": "optimal path",
                 "training": "training"}


@dataclass(frozen=True)
class Reading:
    """One reading of the metric: a π* and a set of states."""

    ties: str
    region: str

    @property
    def name(self) -> str:
        """``<ties>/<region>``, e.g. ``one_hot/training``."""
        return f"{self.ties}/{self.region}"

    @property
    def mse_key(self) -> str:
        """The run metric holding this reading's MSE."""
        return variant_name(self.ties, self.region)

    @property
    def explored_key(self) -> str:
        """The run metric holding the explored states' MSE to this reading's π*."""
        return "explored_mse" if self.ties == "uniform" else f"explored_mse_{self.ties}"

    @property
    def paper_words(self) -> bool:
        """Whether the paper's words describe it (the transition matrices cover every state)."""
        return self.region == "map"

    @property
    def label(self) -> str:
        """E.g. ``π* one-hot, training states``."""
        return f"π* {self.ties.replace('_', '-')}, {REGION_LABELS[self.region]}"


#: Every reading, π* ties outermost.
READINGS: List[Reading] = [Reading(ties, region) for ties in PI_STAR_TIES for region in REGIONS]
#: The reading of the tables' "MSE to π*" column (``mse_to_optimal``).
HEADLINE = Reading("uniform", "map")


def reading_metrics(task: FrozenLakeTask, action_probs: ActionProbs, demonstrated: str,
                    rejected: Optional[str]) -> Dict[str, float]:
    """The MSE of every reading, and the explored states' MSE to the one-hot π*, of one policy.

    ``demonstrated`` is the optimal path the data shows, ``rejected`` the set-up's rejected path
    (None: the map has none); both decide the ``training`` states.
    """
    metrics = mse_variants(task, action_probs, demonstrated, rejected)
    visits = sample_visits(task, action_probs)
    for ties in PI_STAR_TIES:
        if ties != "uniform":
            metrics[f"explored_mse_{ties}"] = explored_mse(task, action_probs, visits,
                                                           optimal_policy(task, ties, demonstrated))
    return metrics
