"""How the SFT-vs-RL code study measures a policy: pass rates of a split, greedy or sampled,
and pass-rate curves over training.

A problem passes when its response passes every test (the reward's full score). Greedy
pass@1 is the share of problems whose greedy response passes. Sampled pass@k draws ``n``
responses per problem at a temperature and averages the unbiased estimator
(:func:`ift.tasks.code.pass_at_k`) over problems.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch

from ift.core.generation import generate_responses
from ift.tasks.code.pass_at_k import mean_pass_at_k


def response_budget(tokenizer, data, splits: Sequence[str], margin: int = 8) -> int:
    """New tokens a response may take on ``splits``: the longest reference response plus ``margin``
    (so a greedy answer is never cut short, and a runaway one stops soon after)."""
    longest = 0
    for split in splits:
        for example in data.split_examples()[split]:
            longest = max(longest, len(tokenizer(example["response"], add_special_tokens=False)["input_ids"]))
    return longest + margin


def split_scores(policy, tokenizer, data, split: str, reward, max_new_tokens: int, samples: int = 1,
                 temperature: Optional[float] = None, seed: int = 0) -> List[List[float]]:
    """The reward's score of ``samples`` responses to every problem of ``split``, per problem.

    ``temperature`` None: greedy (then ``samples`` must be 1). Sampling draws from
    ``torch.manual_seed(seed + round)``, so the same policy gives the same scores.
    """
    if temperature is None and samples != 1:
        raise ValueError(f"split_scores: greedy decoding gives one response per problem, not {samples}")
    if data.tokenizer is None:
        data.tokenizer = tokenizer
    data.setup("validate")
    scores: List[List[float]] = []
    with torch.no_grad():
        for batch in data._eval_loader(split):
            per_problem: List[List[float]] = [[] for _ in batch["prompt"]]
            for round_ in range(samples):
                if temperature is not None:
                    torch.manual_seed(seed + round_)
                ids, _ = generate_responses(policy, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                            max_new_tokens=max_new_tokens, do_sample=temperature is not None,
                                            temperature=temperature or 1.0)
                texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
                for row, score in enumerate(reward(list(batch["prompt"]), texts, list(batch["examples"]))):
                    per_problem[row].append(float(score))
            scores += per_problem
    return scores


def sampled_pass_at_k(policy, tokenizer, data, split: str, reward, max_new_tokens: int, samples: int,
                      ks: Sequence[int], temperature: float = 1.0, seed: int = 0) -> Dict[str, float]:
    """``{"pass@k": unbiased pass@k}`` for every k in ``ks``, from ``samples`` responses per problem."""
    scores = split_scores(policy, tokenizer, data, split, reward, max_new_tokens, samples, temperature, seed)
    counts = [(len(row), sum(score >= 1.0 for score in row)) for row in scores]
    return {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks}


class PassRateCurve(pl.Callback):
    """Measures the policy every ``every_steps`` optimizer steps (and before the first).

    ``measure(policy)`` returns named pass rates; each point is recorded with the training
    samples seen by then (``samples_per_step`` per optimizer step) in :attr:`points`.
    """

    def __init__(self, every_steps: int, samples_per_step: int, measure: Callable[[Any], Dict[str, float]]):
        if every_steps < 1:
            raise ValueError(f"PassRateCurve: every_steps must be >= 1, got {every_steps}")
        self.every_steps, self.samples_per_step, self.measure = every_steps, samples_per_step, measure
        self.points: List[Dict[str, float]] = []
        self.seconds = 0.0  # spent measuring: not training time

    def _record(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        if self.points and self.points[-1]["step"] == step:
            return
        start, was_training = time.perf_counter(), pl_module.training
        point = {"step": step, "samples": step * self.samples_per_step, **self.measure(pl_module.policy)}
        pl_module.train(was_training)
        self.points.append(point)
        self.seconds += time.perf_counter() - start

    def on_train_start(self, trainer, pl_module):
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step % self.every_steps == 0:
            self._record(trainer, pl_module)


__all__ = ["PassRateCurve", "response_budget", "sampled_pass_at_k", "split_scores"]
