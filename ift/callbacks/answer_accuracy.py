"""Held-out answer accuracy: greedy-decode each held-out prompt that has a reference answer
and log the share answered right as ``val/accuracy`` (``test/accuracy`` under ``ift test``).

It is a callback, not part of the module: the module knows no task, and a run whose data
has reference answers (arithmetic, GSM8K) asks for the metric in its config::

    trainer:
      callbacks:
        - class_path: ift.callbacks.AnswerAccuracy
          init_args:
            max_new_tokens: 300
            answer_trigger: ["####"]   # read answers as the PPO reward does

(``FineTuneModule``'s former ``eval_accuracy``, ``eval_max_new_tokens`` and
``eval_answer_trigger`` are this callback, its ``max_new_tokens`` and its ``answer_trigger``.)
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List, Mapping, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torchmetrics import MeanMetric

from ift.core.generation import generate_responses
from ift.rewards.answer import AnswerMatchReward, answers_match

#: The stages the callback measures, by the prefix of their metric keys.
STAGES = ("val", "test")

#: A loaded Lightning checkpoint, or the path of one.
CheckpointLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]


class AnswerAccuracy(Callback):
    """On every validation (and test) batch with an ``answer`` and ``prompt_input_ids``,
    greedy-decode the prompts with the module's policy, read each response's answer and log
    ``{stage}/{name}``: the share of the epoch's prompts whose answer matches the reference
    (numerically, within 1e-2; :func:`~ift.rewards.answers_match`). Batches without answers
    (preference pairs, chat) are skipped.

    The value is a torchmetrics mean over prompts (hits and counts summed over the epoch and
    over every process, then divided), not a mean of batch means; it starts afresh each
    validation. It is on the progress bar and can be monitored
    (``ModelCheckpoint(monitor="val/accuracy", mode="max")``).

    Args:
        max_new_tokens: longest greedy response decoded per prompt.
        answer_trigger: how the answer is read from a response: None for the liberal rule of
            :func:`~ift.rewards.extract_answer` (``####``, ``answer:``, ``=``, else the last
            number); a phrase or list of phrases (e.g. ``["answer:"]``, ``["####"]``) for
            ReFT's rule, the number after the last trigger and no answer without one. Give it
            the PPO reward's ``trigger`` so that the accuracy and the reward agree on what
            counts as an answer.
        name: the metric's name after the stage prefix (``accuracy``: ``val/accuracy``); give
            two instances different names to log two rules side by side.

    The module it runs on needs ``policy`` (a causal LM) and ``tokenizer`` attributes, as
    :class:`~ift.modules.FineTuneModule` has. Its settings are saved in checkpoints (the
    callback state), so that ``ift predict`` reads answers by the rule the run validated with
    (:func:`recorded_answer_trigger`).
    """

    def __init__(self, max_new_tokens: int = 16, answer_trigger: Optional[Union[str, List[str]]] = None,
                 name: str = "accuracy"):
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"AnswerAccuracy: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ValueError(f"AnswerAccuracy: name must be a non-empty metric name without '/', got {name!r}")
        try:  # AnswerMatchReward checks the trigger: a bad one is refused now, not at the first validation
            self._rule = AnswerMatchReward(trigger=answer_trigger)
        except (TypeError, ValueError) as error:
            raise type(error)(f"AnswerAccuracy: answer_trigger={answer_trigger!r}: {error}") from None
        self.max_new_tokens = max_new_tokens
        self.answer_trigger = answer_trigger
        self.name = name
        self.metrics = {stage: MeanMetric() for stage in STAGES}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    # ------------------------------------------------------------------ measuring
    @torch.no_grad()
    def hits(self, pl_module: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """1.0 for each prompt of ``batch`` whose greedy answer matches ``batch['answer']``,
        the answer read by ``answer_trigger``'s rule, else 0.0 (float32, on the policy's device)."""
        tokenizer = pl_module.tokenizer
        responses, _ = generate_responses(
            pl_module.policy,
            batch["prompt_input_ids"],
            batch["prompt_attention_mask"],
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=self.max_new_tokens,
        )
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        hits = [answers_match(self._rule.extract(text), gold) for text, gold in zip(texts, batch["answer"])]
        return torch.tensor([float(hit) for hit in hits], dtype=torch.float32, device=responses.device)

    def accuracy(self, pl_module: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        """Share of the prompts of ``batch`` answered right (see :meth:`hits`); 0 for no prompt."""
        hits = self.hits(pl_module, batch)
        return hits.mean() if hits.numel() else torch.tensor(0.0)

    # ------------------------------------------------------------------ hooks
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._measure("val", pl_module, batch)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._measure("test", pl_module, batch)

    def _measure(self, stage: str, pl_module: pl.LightningModule, batch: Any) -> None:
        if not isinstance(batch, Mapping) or "answer" not in batch or "prompt_input_ids" not in batch:
            return
        hits = self.hits(pl_module, batch)
        metric = self.metrics[stage]
        if metric.device != hits.device:
            metric.to(hits.device)
        metric.update(hits)
        # A Metric object: Lightning computes it (synced over processes) at the epoch's end and resets it.
        pl_module.log(f"{stage}/{self.name}", metric, prog_bar=True, on_step=False, on_epoch=True,
                      metric_attribute=f"{self.state_key}.{stage}")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """The settings, so that a checkpoint records how its run read answers."""
        return {"max_new_tokens": self.max_new_tokens, "answer_trigger": self.answer_trigger, "name": self.name}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Nothing to restore: the config's settings apply on resume (the metric restarts each epoch)."""


def recorded_answer_settings(checkpoint: CheckpointLike) -> Optional[Dict[str, Any]]:
    """The :class:`AnswerAccuracy` settings (``max_new_tokens``, ``answer_trigger``, ``name``)
    a checkpoint's run validated with, or None when it had no such callback.

    ``checkpoint``: a loaded Lightning checkpoint, or the path of one (loaded memory-mapped;
    a checkpoint holding objects, as one of a module built in Python, is unpickled whole, so
    give only a file you would load with ``load_from_checkpoint``). Reads the callback state
    (the one named ``accuracy`` first), and for checkpoints written before the callback
    existed the module's former ``eval_answer_trigger`` and ``eval_max_new_tokens``
    hyper-parameters."""
    if not isinstance(checkpoint, Mapping):
        checkpoint = _load_checkpoint(os.fspath(checkpoint))
    states = [state for key, state in (checkpoint.get("callbacks") or {}).items()
              if str(key).startswith(AnswerAccuracy.__qualname__) and isinstance(state, Mapping)]
    if states:
        states.sort(key=lambda state: state.get("name") != "accuracy")
        return dict(states[0])
    hparams = checkpoint.get("hyper_parameters") or {}
    if not hparams.get("eval_accuracy", True) or not any(key.startswith("eval_") for key in hparams):
        return None
    return {"max_new_tokens": hparams.get("eval_max_new_tokens", 16),
            "answer_trigger": hparams.get("eval_answer_trigger"), "name": "accuracy"}


def recorded_answer_trigger(checkpoint: CheckpointLike) -> Optional[Union[str, List[str]]]:
    """The ``answer_trigger`` of :func:`recorded_answer_settings` (None without one)."""
    settings = recorded_answer_settings(checkpoint)
    return None if settings is None else settings.get("answer_trigger")


def _load_checkpoint(path: str) -> Mapping[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # objects in the hyper-parameters (a module built in Python)
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
