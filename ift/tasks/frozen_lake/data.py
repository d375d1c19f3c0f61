"""The data of the Frozen Lake sanity check, as a data module every objective can train on.

One map gives one example; an epoch repeats it ``num_copies`` times. What the example
holds depends on what the objective may see (docs/objectives.md, "What each Frozen Lake
objective sees"):

* ``objective_data="optimal"`` (SFT, IFT): ``prompt`` + ``response`` = the optimal
  trajectory (e.g. ``"SFFF/FFHF/FFHG/FFFF:"`` -> ``"RRRDD"``); batches carry
  ``input_ids/attention_mask/labels``.
* ``objective_data="preference"`` (DPO, ORPO): ``prompt`` + ``chosen`` (optimal) +
  ``rejected`` (the sub-optimal trajectory, e.g. ``"DDDRRRU"``); batches carry
  ``chosen_*`` and ``rejected_*``.
* ``objective_data="prompts"`` (PPO): the prompt only; batches carry the left-padded
  ``prompt_input_ids`` to sample from, and the reward
  (:func:`ift.tasks.frozen_lake.reward.frozen_lake_reward`) reads the map back from the prompt.

Every batch also carries ``prompt_input_ids`` and the raw ``examples``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.datamodule import ExamplesDataModule
from ift.data.records import Record
from ift.tasks.frozen_lake.env import DEFAULT_GAMMA, FrozenLakeTask
from ift.tasks.frozen_lake.maps import MAP_SEPARATOR

OBJECTIVE_DATA = ("optimal", "preference", "prompts")


class FrozenLakeDataModule(ExamplesDataModule):
    """Frozen Lake examples for SFT/IFT (optimal trajectory), DPO/ORPO (preference pair) or
    PPO (prompt only); see the module docstring.

    Args:
        map: the map: rows joined by ``,`` (``"SFFF,FFHF,FFHG,FFFF"``), ``"4x4"``/``"8x8"``,
            ``"random:SIZE:SEED"``, or None for the default map (one optimal path RRRDD,
            a sub-optimal one DDDRRRU).
        objective_data: what the objective sees: ``optimal``, ``preference`` or ``prompts``.
        num_copies: how many times the single example is repeated in one training epoch.
        val_copies: copies in a validation split (0: no validation).
        allow_several_optimal: on maps with several shortest paths, train on the first one
            (L < D < R < U order) instead of stopping with an error; π* still spreads over all.
        gamma: discount of the value iteration behind π* (only used for the metrics).
        batch_size: see :class:`~ift.data.datamodule.ExamplesDataModule` (as are the other
            arguments: ``seed``, ``max_length``, ``tokenizer``, ...).
    """

    def __init__(
        self,
        map: Optional[str] = None,
        objective_data: str = "optimal",
        num_copies: int = 64,
        val_copies: int = 0,
        allow_several_optimal: bool = False,
        gamma: float = DEFAULT_GAMMA,
        batch_size: int = 1,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        if objective_data not in OBJECTIVE_DATA:
            raise ValueError(f"FrozenLakeDataModule: objective_data {objective_data!r} is not one of {OBJECTIVE_DATA}")
        if num_copies < 1:
            raise ValueError(f"FrozenLakeDataModule: num_copies must be >= 1, got {num_copies}")
        if val_copies < 0:
            raise ValueError(f"FrozenLakeDataModule: val_copies must be >= 0, got {val_copies}")
        self.task = FrozenLakeTask(map if map is not None else FrozenLakeTask().rows, gamma=gamma)
        self.map = MAP_SEPARATOR.join(self.task.rows)
        self.objective_data = objective_data
        self.num_copies = num_copies
        self.val_copies = val_copies
        self.allow_several_optimal = allow_several_optimal
        self.example()  # fail now, not at setup, on a map the data cannot be made from

    def example(self) -> Dict[str, Any]:
        """The one example of this map for ``objective_data``."""
        task = self.task
        optimal = task.optimal_trajectory(require_unique=not self.allow_several_optimal)
        if self.objective_data == "optimal":
            return {"prompt": task.prompt(), "response": optimal}
        if self.objective_data == "preference":
            return {"prompt": task.prompt(), "chosen": optimal, "rejected": task.suboptimal_trajectory()}
        return {"prompt": task.prompt()}

    def load_examples(self, split: str) -> Optional[List[Record]]:
        copies = {"train": self.num_copies, "val": self.val_copies}.get(split, 0)
        if copies == 0:
            return None
        example = self.example()
        return [(f"frozen_lake:{self.map}[{index}]", dict(example)) for index in range(copies)]
