"""Read a language-model policy as a Frozen Lake policy, and watch it learn.

**The action distribution of the LM at a state ``s``** (the same for every objective):
the policy's next-token distribution after the text ``prompt + prefix(s)``, restricted to
the four action tokens ``L, D, R, U`` and renormalised over them, where ``prefix(s)`` is
the shortest action string from the start that reaches ``s`` (ties broken L < D < R < U;
on the optimal path it is the optimal trajectory's own prefix). See
:meth:`ift.data.frozen_lake.FrozenLakeTask.query_texts`. All states are read in one
batched forward pass (left-padded) with the policy in eval mode.

**The greedy episode** of the LM: from the start, repeatedly take the most probable of the
four action tokens after ``prompt + actions so far`` (the real history, not the shortest
prefix), until a hole, the goal, or ``n_states`` moves. Its success and length are the
``success_rate`` and ``episode_length`` of the check.

:class:`FrozenLakeMonitor` computes these during training (every ``every_n_steps``
optimizer steps, the MSE to π* for the learning curve; at the end, every metric) and logs
``frozen_lake/*`` to the Trainer's loggers.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ift.data.frozen_lake import (
    ACTIONS,
    FrozenLakeTask,
    action_probs_from_logits,
    explored_states,
    greedy_episode,
    mse_to_optimal,
    total_variation,
)
from ift.data.collate import lengths_mask, pad_sequences
from ift.core.forward import policy_logits

#: States whose action distribution moved more than this (total variation) from the
#: initial policy's count as "explored".
EXPLORED_THRESHOLD = 0.05


def action_token_ids(tokenizer) -> List[int]:
    """Ids of the tokens ``L``, ``D``, ``R``, ``U`` (in that order)."""
    ids = []
    for char in ACTIONS:
        encoded = tokenizer(char, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(f"Frozen Lake: action {char!r} is not a single token of the tokenizer (ids {encoded})")
        ids.append(encoded[0])
    return ids


@torch.no_grad()
def lm_action_probs(policy: torch.nn.Module, tokenizer, texts: Sequence[str]) -> np.ndarray:
    """``[len(texts), 4]``: the LM's next-token probabilities of L, D, R, U after each text,
    renormalised over those four (one left-padded forward pass, eval mode)."""
    ids = [tokenizer(text)["input_ids"] for text in texts]
    input_ids = pad_sequences(ids, tokenizer.pad_token_id, "left")
    mask = lengths_mask(ids, "left")
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    try:
        logits = policy_logits(policy, input_ids.to(device), mask.to(device))[:, -1]
    finally:
        policy.train(was_training)
    return action_probs_from_logits(logits.float(), action_token_ids(tokenizer))


def lm_policy(policy: torch.nn.Module, tokenizer, task: FrozenLakeTask) -> Dict[int, np.ndarray]:
    """{reachable non-terminal state: probabilities of L, D, R, U} of the LM (see module docstring)."""
    return task.collect_action_probs(lambda texts: lm_action_probs(policy, tokenizer, texts))


def lm_greedy_episode(policy: torch.nn.Module, tokenizer, task: FrozenLakeTask):
    """The LM's greedy episode over the four action tokens, with its real history."""
    prompt = task.prompt()
    return greedy_episode(task, lambda state, history: lm_action_probs(policy, tokenizer, [prompt + history])[0])


def evaluate_lm(
    policy: torch.nn.Module,
    tokenizer,
    task: FrozenLakeTask,
    initial: Optional[Dict[int, np.ndarray]] = None,
    threshold: float = EXPLORED_THRESHOLD,
) -> Tuple[Dict[str, float], Dict[int, np.ndarray]]:
    """``(metrics, action_probs)``. Metrics: ``mse_to_optimal``, ``success`` (greedy, 0/1),
    ``episode_length`` (greedy moves); with the ``initial`` policy also ``explored_states``
    (states whose distribution moved more than ``threshold`` in total variation) and
    ``mean_total_variation`` (how far, on average over the states, the policy moved)."""
    probs = lm_policy(policy, tokenizer, task)
    episode = lm_greedy_episode(policy, tokenizer, task)
    metrics = {
        "mse_to_optimal": mse_to_optimal(probs, task.optimal_policy()),
        "success": float(episode.success),
        "episode_length": float(episode.steps),
    }
    if initial is not None:
        metrics["explored_states"] = float(explored_states(probs, initial, threshold))
        metrics["mean_total_variation"] = float(np.mean([total_variation(probs[s], initial[s]) for s in probs]))
    return metrics, probs


class FrozenLakeMonitor(Callback):
    """Evaluate the policy as a Frozen Lake agent during and after training.

    Records the MSE to π* at the start and every ``every_n_steps`` optimizer steps
    (:attr:`curve`, ``[(step, mse), ...]``), and at the end of fit every metric of
    :func:`evaluate_lm` (:attr:`results`, :attr:`action_probs`; the policy before training
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
                "FrozenLakeMonitor needs a map: give map=... or train on ift.data.FrozenLakeDataModule"
            )
        return task

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probs = lm_policy(pl_module.policy, pl_module.tokenizer, self.task)
        self.curve.append((int(trainer.global_step), mse_to_optimal(probs, self.task.optimal_policy())))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.task = self._resolve_task(trainer)
        self.curve = []
        self.initial_results, self.initial_action_probs = evaluate_lm(pl_module.policy, pl_module.tokenizer, self.task)
        self.curve.append((int(trainer.global_step), self.initial_results["mse_to_optimal"]))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.every_n_steps:
            return
        # Under manual optimization (PPO) one batch may make several optimizer steps.
        if trainer.global_step - self.curve[-1][0] >= self.every_n_steps:
            self._record(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics, probs = evaluate_lm(pl_module.policy, pl_module.tokenizer, self.task, self.initial_action_probs,
                                     self.threshold)
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
        from ift.data.frozen_lake_plot import plot_policies

        os.makedirs(directory, exist_ok=True)
        payload = {
            "map": "/".join(self.task.rows),
            "threshold": self.threshold,
            "metrics": self.results,
            "curve": self.curve,
            "action_probs": {str(s): [float(x) for x in p] for s, p in (self.action_probs or {}).items()},
        }
        with open(os.path.join(directory, "frozen_lake_metrics.json"), "w") as handle:
            json.dump(payload, handle, indent=2)
        plot_policies(self.task, {title: self.action_probs}, curves={title: self.curve},
                      path=os.path.join(directory, "frozen_lake.png"))
