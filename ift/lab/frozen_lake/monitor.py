"""Watch a policy learn Frozen Lake during training: the ``FrozenLakeMonitor`` callback.

:class:`FrozenLakeMonitor` reads the policy as a Frozen Lake policy — the state MLP through
its action head on every state (:mod:`ift.tasks.frozen_lake.state_policy`), a language model
through its action tokens (:mod:`ift.tasks.frozen_lake.lm_policy`) — and computes the metrics of
:func:`ift.tasks.frozen_lake.metrics.evaluate`: every ``every_n_steps`` optimizer steps the
MSE to π* for the learning curve, at the end every metric; it logs ``frozen_lake/<metric>``
to the Trainer's loggers.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.exploration import optimal_policy_everywhere
from ift.tasks.frozen_lake.lm_policy import lm_action_probs
from ift.tasks.frozen_lake.maps import MAP_SEPARATOR
from ift.tasks.frozen_lake.metrics import EXPLORED_THRESHOLD, evaluate, mse_to_optimal
from ift.tasks.frozen_lake.queries import read_text_policy
from ift.tasks.frozen_lake.policies import state_policy_action_probs
from ift.tasks.frozen_lake.state_policy import FrozenLakeStatePolicy
from ift.lab.frozen_lake.plot import plot_policies


class FrozenLakeMonitor(Callback):
    """Evaluate the policy as a Frozen Lake agent during and after training.

    Records the MSE to π* at the start and every ``every_n_steps`` optimizer steps
    (:attr:`curve`, ``[(step, mse), ...]``), and at the end of fit every metric of
    :func:`~ift.tasks.frozen_lake.metrics.evaluate` (:attr:`results`, :attr:`action_probs`; the policy before training
    is :attr:`initial_action_probs`, its metrics :attr:`initial_results`). Logs them as ``frozen_lake/<metric>``. With
    ``output_dir`` it also writes ``frozen_lake_metrics.json`` and ``frozen_lake.png``
    (the policy beside π*, and the learning curve) there.

    Args:
        every_n_steps: optimizer steps between two points of the learning curve (0: none).
        map: the map; None takes the ``task`` of the data module (FrozenLakeDataModule).
        threshold: total-variation distance above which a state counts as explored.
        output_dir: folder for the metrics JSON and the picture (None: write nothing).
    """

    def __init__(self, every_n_steps: int = 10, map: Optional[str] = None, threshold: float = EXPLORED_THRESHOLD,
                 output_dir: Optional[str] = None):
        if every_n_steps < 0:
            raise ValueError(f"FrozenLakeMonitor: every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.map = map
        self.threshold = threshold
        self.output_dir = output_dir
        self.task: Optional[FrozenLakeTask] = None
        self.curve: List[Tuple[int, float]] = []
        self.initial_action_probs: Optional[Dict[int, np.ndarray]] = None
        self.action_probs: Optional[Dict[int, np.ndarray]] = None
        self.initial_results: Dict[str, float] = {}
        self.results: Dict[str, float] = {}

    def _resolve_task(self, trainer: pl.Trainer) -> FrozenLakeTask:
        if self.map is not None:
            return FrozenLakeTask(self.map)
        task = getattr(trainer.datamodule, "task", None)
        if not isinstance(task, FrozenLakeTask):
            raise ValueError(
                "FrozenLakeMonitor needs a map: give map=... or train on ift.tasks.frozen_lake.FrozenLakeDataModule"
            )
        return task

    def _read_policy(self, pl_module: pl.LightningModule):
        """The module's policy as :func:`evaluate` takes it: the state MLP's ``{state: probs}``
        on every state, or a language model as a batched ``texts -> [len(texts), 4]`` function."""
        if isinstance(pl_module.policy, FrozenLakeStatePolicy):
            return state_policy_action_probs(pl_module.policy, self.task)
        return functools.partial(lm_action_probs, pl_module.policy, pl_module.tokenizer)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reading = self._read_policy(pl_module)
        probs = reading if isinstance(reading, dict) else read_text_policy(self.task, reading)
        everywhere = optimal_policy_everywhere(self.task)
        mse = mse_to_optimal(probs, {s: everywhere[s] for s in everywhere if s in probs})
        self.curve.append((int(trainer.global_step), mse))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.task = self._resolve_task(trainer)
        self.curve = []
        self.initial_results, self.initial_action_probs = evaluate(self.task, self._read_policy(pl_module))
        self.curve.append((int(trainer.global_step), self.initial_results["mse_to_optimal"]))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.every_n_steps:
            return
        # Under manual optimization (PPO) one batch may make several optimizer steps.
        if trainer.global_step - self.curve[-1][0] >= self.every_n_steps:
            self._record(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics, probs = evaluate(self.task, self._read_policy(pl_module), self.initial_action_probs, self.threshold)
        if self.curve[-1][0] != trainer.global_step:
            self.curve.append((int(trainer.global_step), metrics["mse_to_optimal"]))
        self.action_probs = probs
        self.results = metrics
        for logger in trainer.loggers:
            logger.log_metrics({f"frozen_lake/{key}": value for key, value in metrics.items()}, step=trainer.global_step)
        if self.output_dir and trainer.is_global_zero:
            self.write(self.output_dir, title=type(getattr(pl_module, "objective", None)).__name__)

    def write(self, directory: str, title: str = "policy") -> None:
        """Write ``frozen_lake_metrics.json`` and ``frozen_lake.png`` into ``directory``."""
        os.makedirs(directory, exist_ok=True)
        payload = {
            "map": MAP_SEPARATOR.join(self.task.rows),
            "threshold": self.threshold,
            "metrics": self.results,
            "curve": self.curve,
            "action_probs": {str(s): [float(x) for x in p] for s, p in (self.action_probs or {}).items()},
        }
        with open(os.path.join(directory, "frozen_lake_metrics.json"), "w") as handle:
            json.dump(payload, handle, indent=2)
        plot_policies(self.task, {title: self.action_probs}, curves={title: self.curve},
                      path=os.path.join(directory, "frozen_lake.png"))
