"""The two set-ups of ``ift frozen-lake``: the paper's words taken literally, and this project's.

The paper (arXiv 2405.11870 §5.3, Figure 3's caption, App. B.2) gives the policy ("a two-layer
fully connected neural network"), the map's shape ("one optimal and one sub-optimal
trajectory"), the data (SFT and IFT see the optimal trajectory; DPO and ORPO the pair, optimal
chosen, sub-optimal rejected), the metric (the MSE between the transition matrices of the
optimal and trained policies) and "similar hyper-parameters as in NLP setting" (RMSprop, IFT λ
0.2 and decay 0.95, DPO β 0.1, ORPO β 0.25). Its code for this part is not public: the map, the
learning rate, the budget, the states the MSE covers and how π* treats ties are not given.

* ``paper-literal``: all of the above as written — the map ``ring4x4``, whose only two routes to
  ``G`` are the optimal and one sub-optimal path, the sub-optimal *success* as the rejected
  response, the paper's policy and its four objectives (plus this project's λ = 0, γ = 0 check).
  What the paper does not give is this project's, as in ``ours``: learning rate 1e-2, a constant
  schedule, 300 steps, gradients clipped at norm 1, 5 seeds.
* ``ours``: the map ``check4x4`` with a rejected walk that is never optimal (a map tests DPO only
  if the rejected moves are really worse), both policies, and the RL arms (PPO, GRPO, SFT → PPO)
  and a tuned DPO row besides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ift.tasks.frozen_lake.policies import POLICIES


@dataclass(frozen=True)
class Setup:
    """One set-up of the comparison.

    Attributes:
        name: its ``--setup`` name.
        map: the named map it trains on (``--map`` replaces it).
        rejected: the rejected path of DPO and ORPO (``FrozenLakeDataModule``'s ``rejected``).
        policies: the policies it runs unless ``--policy`` is given.
        objectives: the objectives it runs unless ``--objectives`` is given (None: every one of
            :data:`ift.lab.frozen_lake.runs.OBJECTIVES`).
        headline: one line: what in it is the paper's and what is this project's.
    """

    name: str
    map: str
    rejected: str
    policies: Tuple[str, ...]
    objectives: Optional[Tuple[str, ...]]
    headline: str

    @property
    def folder(self) -> str:
        """Its folder under ``--out`` and ``configs/frozen_lake/`` (``paper_literal``, ``ours``)."""
        return self.name.replace("-", "_")


PAPER_LITERAL = Setup(
    name="paper-literal",
    map="ring4x4",
    rejected="suboptimal",
    policies=("mlp",),
    objectives=("SFT", "IFT", "IFT-lam0-gamma0", "DPO", "ORPO"),
    headline="the paper's words taken literally: its two-layer network, a map with one optimal and one "
             "sub-optimal path (ring4x4), the sub-optimal success rejected, RMSprop without weight decay, "
             "λ 0.2, γ 0.95, DPO β 0.1, ORPO β 0.25; ours where the paper is silent: lr 1e-2, 300 steps, "
             "clipping at norm 1, 5 seeds",
)
OURS = Setup(
    name="ours",
    map="check4x4",
    rejected="auto",
    policies=POLICIES,
    objectives=None,
    headline="this project's: the map check4x4 with a rejected walk that is never optimal, the paper's network "
             "and a character transformer, the RL arms (PPO, GRPO, SFT → PPO) and a tuned DPO row",
)
#: ``{name: Setup}``, in the order the command runs them.
SETUPS: Dict[str, Setup] = {setup.name: setup for setup in (PAPER_LITERAL, OURS)}
DEFAULT_SETUP = "ours"


def get_setup(name: str) -> Setup:
    """The set-up called ``name``, else a ``ValueError`` naming them."""
    if name not in SETUPS:
        raise ValueError(f"Frozen Lake set-up {name!r} is not one of {', '.join(SETUPS)}")
    return SETUPS[name]
