"""The data of the Frozen Lake sanity check, as a data module every objective can train on.

One map gives one example; an epoch repeats it ``num_copies`` times. What the example
holds depends on what the objective may see (docs/objectives.md, "What each Frozen Lake
objective sees"):

* ``objective_data="optimal"`` (SFT, IFT): ``prompt`` + ``response`` = the optimal
  trajectory (e.g. ``"SFFF/FFHG/FHHH/FFFF:"`` -> ``"RRRD"``); batches carry
  ``input_ids/attention_mask/labels``.
* ``objective_data="preference"`` (DPO, ORPO): ``prompt`` + ``chosen`` (optimal) +
  ``rejected`` (``rejected="auto"``, this project's choice:
  :meth:`~ift.tasks.frozen_lake.env.FrozenLakeTask.rejected_trajectory`, a walk whose every move is
  non-optimal, e.g. ``"DDDRRRU"`` on the default map; ``rejected="suboptimal"``, the paper's
  words: a longer path that reaches ``G``); batches carry ``chosen_*`` and ``rejected_*``.
* ``objective_data="prompts"`` (PPO): the prompt only; batches carry the left-padded
  ``prompt_input_ids`` to sample from, and the reward
  (:func:`ift.tasks.frozen_lake.reward.frozen_lake_reward`) reads the map back from the prompt.

Every batch also carries ``prompt_input_ids`` and the raw ``examples`` (each with the
``map`` and its ``representation``, which the reward reads).

Two ways to write an example (``representation``): ``actions`` (the transformer policy: the
prompt is the map text, the response the action string) or ``states`` (the paper's state
MLP: the prompt is the start state, the response the states the path visits, each one
character of :data:`~ift.tasks.frozen_lake.state_policy.STATE_CHARS`).

Neither has a stop action: the environment ends an episode, at a hole or at ``G``. The state
policy ends it itself (EOS is its only output at a terminal state, and never elsewhere);
an action string is written without EOS (:meth:`FrozenLakeDataModule.encode_one`), for a
transformer whose outputs are the four moves alone (``FineTuneModule(output_tokens="LDRU",
output_eos=False)``): its sampled responses run to ``max_new_tokens`` and the moves after the
episode ended are ignored. With EOS as a fifth output, one sampled move in five would end a
PPO episode early, and a random walk would reach ``G`` on a 5x5 map eight times less often.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ift.data.datamodule import ExamplesDataModule
from ift.data.records import Record
from ift.tasks.frozen_lake.env import DEFAULT_GAMMA, FrozenLakeTask
from ift.tasks.frozen_lake.maps import MAP_SEPARATOR
from ift.tasks.frozen_lake.state_policy import state_text

OBJECTIVE_DATA = ("optimal", "preference", "prompts")
REPRESENTATIONS = ("actions", "states")
#: Which path DPO and ORPO reject: ``auto`` (this project's choice,
#: :meth:`~ift.tasks.frozen_lake.env.FrozenLakeTask.rejected_trajectory`: a never-optimal walk
#: where the map has one), ``away`` (that walk, or an error) or ``suboptimal`` (the paper's
#: words: a longer path that reaches ``G``, :meth:`~ift.tasks.frozen_lake.env.FrozenLakeTask.suboptimal_trajectory`).
REJECTED_PATHS = ("auto", "away", "suboptimal")


class FrozenLakeDataModule(ExamplesDataModule):
    """Frozen Lake examples for SFT/IFT (optimal trajectory), DPO/ORPO (preference pair) or
    PPO (prompt only); see the module docstring.

    Args:
        map: the map: rows joined by ``,`` (``"SFFF,FFHF,FFHG,FFFF"``), ``"4x4"``/``"8x8"``,
            ``"random:SIZE:SEED"``, a named map (``ift.tasks.frozen_lake.maps.NAMED_MAPS``),
            or None for the default map (one optimal path RRRD, a never-optimal one DDDRRRU).
        objective_data: what the objective sees: ``optimal``, ``preference`` or ``prompts``.
        num_copies: how many times the single example is repeated in one training epoch.
        val_copies: copies in a validation split (0: no validation).
        allow_several_optimal: on maps with several shortest paths, train on the first one
            (L < D < R < U order) instead of stopping with an error; π* still spreads over all.
        gamma: discount of the value iteration behind π* (only used for the metrics).
        representation: ``actions`` (map prompt, action-string responses: the transformer)
            or ``states`` (start-state prompt, visited-state responses: the state MLP).
        rejected: the rejected path of ``preference`` data: ``auto`` (a never-optimal walk
            where the map has one, else the sub-optimal success), ``away`` (the never-optimal
            walk) or ``suboptimal`` (a longer path that reaches ``G``: the paper's words).
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
        representation: str = "actions",
        rejected: str = "auto",
        batch_size: int = 1,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        if objective_data not in OBJECTIVE_DATA:
            raise ValueError(f"FrozenLakeDataModule: objective_data {objective_data!r} is not one of {OBJECTIVE_DATA}")
        if representation not in REPRESENTATIONS:
            raise ValueError(f"FrozenLakeDataModule: representation {representation!r} is not one of {REPRESENTATIONS}")
        if rejected not in REJECTED_PATHS:
            raise ValueError(f"FrozenLakeDataModule: rejected {rejected!r} is not one of {REJECTED_PATHS}")
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
        self.representation = representation
        self.rejected = rejected
        self.example()  # fail now, not at setup, on a map the data cannot be made from

    def example(self) -> Dict[str, Any]:
        """The one example of this map for ``objective_data``, written as ``representation``."""
        task = self.task
        optimal = task.optimal_trajectory(require_unique=not self.allow_several_optimal)
        example: Dict[str, Any] = {"prompt": self.prompt_text()}
        if self.objective_data == "optimal":
            example["response"] = self.response_text(optimal)
        elif self.objective_data == "preference":
            example["chosen"] = self.response_text(optimal)
            example["rejected"] = self.response_text(self.rejected_actions())
        example.update(map=self.map, representation=self.representation)
        return example

    def rejected_actions(self) -> str:
        """The rejected action string that ``rejected`` names (``ValueError`` if the map has none)."""
        return rejected_trajectory(self.task, self.rejected)

    def prompt_text(self) -> str:
        """The prompt: the map text (``actions``) or the start state (``states``)."""
        if self.representation == "states":
            return state_text([self.task.start_state])
        return self.task.prompt()

    def response_text(self, actions: str) -> str:
        """An action string as a response: itself, or the states it visits after the start."""
        if self.representation == "states":
            return state_text(self.task.run(actions).path[1:])
        return actions

    def encode_one(self, example: Dict[str, Any]) -> Dict[str, Any]:
        """Token ids and labels of ``example``; an action string loses its EOS (no stop action,
        see the module docstring), a state path keeps it (the state policy's end of episode)."""
        features = super().encode_one(example)
        if example.get("representation", self.representation) == "actions":
            for prefix in ("", "chosen_", "rejected_"):
                if f"{prefix}input_ids" in features:
                    features[f"{prefix}input_ids"], features[f"{prefix}labels"] = without_final_eos(
                        features[f"{prefix}input_ids"], features[f"{prefix}labels"], self.tokenizer.eos_token_id)
        return features

    def load_examples(self, split: str) -> Optional[List[Record]]:
        copies = {"train": self.num_copies, "val": self.val_copies}.get(split, 0)
        if copies == 0:
            return None
        example = self.example()
        return [(f"frozen_lake:{self.map}[{index}]", dict(example)) for index in range(copies)]


def rejected_trajectory(task: FrozenLakeTask, kind: str = "auto") -> str:
    """The rejected action string of ``kind`` (one of :data:`REJECTED_PATHS`) on ``task``'s map."""
    if kind == "away":
        return task.away_trajectory()
    if kind == "suboptimal":
        return task.suboptimal_trajectory()
    if kind == "auto":
        return task.rejected_trajectory()
    raise ValueError(f"rejected path {kind!r} is not one of {REJECTED_PATHS}")


def without_final_eos(input_ids: List[int], labels: List[int], eos_token_id: int):
    """``(input_ids, labels)`` without their last token, which must be the response's EOS."""
    if not input_ids or input_ids[-1] != eos_token_id or labels[-1] != eos_token_id:
        raise ValueError(f"FrozenLakeDataModule: expected an encoded response ending in EOS ({eos_token_id}), "
                         f"got ids ending {input_ids[-3:]}")
    return input_ids[:-1], labels[:-1]
