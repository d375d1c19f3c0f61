"""The gradient of one critic-free optimizer step, however the step's rows are processed.

Shared by ``test_critic_free_normaliser.py`` (one process: the whole step, gradient
accumulation, the micro-batch-local normaliser) and by the two processes it starts with
``python critic_free_ddp_probe.py RANK WORLD INIT_FILE OUT_DIR`` (gloo on CPU, each rank
holding half of the rows). Everything here is deterministic: every process builds the
same tiny model and the same hand-made rollout, so the gradients can be compared across
processes.

The rollout has two groups of four responses of very different lengths (the first group
long, one of them truncated; the second short, one of them unscorable and so masked out
of the loss), old log-probs perturbed away from the current policy (so the clip is
active on some tokens) and reference log-probs perturbed the other way (the KL term has
a gradient).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from factories import tiny_module
from ift.objectives import CISPO, DAPO, GRPO, GSPO, DrGRPO
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps
from ift.objectives.critic_free import GroupRollout

#: responses per prompt, and the generation limit (Dr.GRPO's constant): the response width.
G, R = 4, 16
#: response lengths (EOS included): a long group (row 0 hit the limit), then a short one.
LENGTHS = (16, 13, 10, 7, 1, 3, 2, 1)
#: a response the reward could not score: in the rollout, out of the loss.
UNSCORED_ROW = 7
PROMPTS = ("12+7=", "3-19=?")
B = len(LENGTHS)
#: the policy's weights in float64: the model's sums in another order then differ by ~1e-16, so a
#: tight tolerance separates "the same objective" from "a slightly different one". The log-probs
#: and the aggregation stay float32, as in training: the gradient they pass back per token does
#: not depend on how the step is batched, only the float64 sums over tokens do.
DTYPE = torch.float64

REWARD = lambda prompts, responses, examples: [0.0] * len(responses)  # noqa: E731 (never called)
COMMON = dict(num_generations=G, max_new_tokens=R, seed=0, reward_timeout_s=None)

#: name -> (class, options): every loss aggregation, with and without the KL in the loss.
CASES: Dict[str, Tuple[type, Dict[str, Any]]] = {
    "token-mean-grpo-k3-kl": (GRPO, dict(loss_aggregation="token-mean", beta=0.1)),
    "token-mean-dapo": (DAPO, dict(dynamic_sampling=False, overlong="none")),
    "seq-mean-token-mean-grpo-k2-kl-dual-clip": (GRPO, dict(beta=0.1, kl_estimator="k2", dual_clip=3.0)),
    "seq-mean-token-sum-norm-dr-grpo": (DrGRPO, {}),
    "seq-mean-token-sum-norm-dr-grpo-k1-kl": (DrGRPO, dict(beta=0.1, kl_estimator="k1")),
    "sequence-gspo": (GSPO, dict(epsilon_low=0.1, epsilon_high=0.1)),
    "token-mean-cispo": (CISPO, dict(loss_aggregation="token-mean", beta=0.1)),
}


def make_objective(case: str, micro_batch_size: Optional[int] = None):
    cls, options = CASES[case]
    return cls(REWARD, micro_batch_size=micro_batch_size, **COMMON, **options)


class GradientRecorder:
    """The part of a StepContext a critic-free update uses; its ``optimizer_step`` runs the
    backward passes of one step (a loss, or the micro-batches' callables one at a time, as
    the module does) and records the accumulated gradient instead of stepping."""

    def __init__(self, policy: torch.nn.Module, tokenizer: Any):
        self.policy = policy
        self.tokenizer = tokenizer
        self.steps: List[torch.Tensor] = []

    def optimizer_step(self, loss: Union[torch.Tensor, Sequence[Callable[[], torch.Tensor]]]) -> bool:
        parts = [lambda: loss] if isinstance(loss, torch.Tensor) else list(loss)
        self.policy.zero_grad(set_to_none=True)
        for part in parts:
            part().backward()
        self.steps.append(flat_gradient(self.policy))
        self.policy.zero_grad(set_to_none=True)
        return True

    def ensure_reference(self, refresh: bool = False) -> None:
        pass


def make_context(dtype: torch.dtype = DTYPE) -> GradientRecorder:
    """The tiny-gpt2 policy (seed 0, dropout 0) in ``dtype`` and the character tokenizer."""
    module = tiny_module(seed=0)
    return GradientRecorder(module.policy.to(dtype), module.tokenizer)


def flat_gradient(policy: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().clone()
                      for p in policy.parameters()])


def weight_fingerprint(policy: torch.nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in policy.parameters()])


def build_rollout(objective, context: GradientRecorder, seed: int = 1234) -> GroupRollout:
    """The hand-made rollout of the module docstring, the same on every process."""
    tokenizer = context.tokenizer
    generator = torch.Generator().manual_seed(seed)
    prompts = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS for _ in range(G)]
    P = max(len(ids) for ids in prompts)
    prompt_ids = torch.full((B, P), tokenizer.pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    for row, ids in enumerate(prompts):  # left-padded
        prompt_ids[row, P - len(ids):] = torch.tensor(ids)
        prompt_mask[row, P - len(ids):] = 1
    lengths = torch.tensor(LENGTHS)
    response_mask = torch.arange(R).unsqueeze(0) < lengths.unsqueeze(-1)
    ended_with_eos = lengths < R
    response_ids = torch.randint(4, len(tokenizer), (B, R), generator=generator)  # no special ids
    response_ids[torch.arange(B)[ended_with_eos], lengths[ended_with_eos] - 1] = tokenizer.eos_token_id
    response_ids = torch.where(response_mask, response_ids, tokenizer.pad_token_id)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
    score_valid = torch.ones(B, dtype=torch.bool)
    score_valid[UNSCORED_ROW] = False
    loss_mask = response_mask & score_valid.unsqueeze(-1)
    with torch.no_grad():
        current = rollout_steps.policy_logprobs(context, input_ids, attention_mask, response_ids,
                                                objective.temperature, objective.share_prompts)
    old = torch.where(response_mask, current + 0.3 * torch.randn(B, R, generator=generator), 0.0)
    ref = torch.where(response_mask, current - 0.3 * torch.randn(B, R, generator=generator), 0.0)
    return GroupRollout(
        input_ids=input_ids, attention_mask=attention_mask, response_ids=response_ids, response_mask=response_mask,
        old_logprobs=old, ref_logprobs=ref if objective.uses_reference else None,
        scores=torch.randn(B, generator=generator), ended_with_eos=ended_with_eos, score_valid=score_valid,
        advantages=torch.randn(B, generator=generator), loss_mask=loss_mask,
    )


def fresh(rollout: GroupRollout, rows: Optional[Sequence[int]] = None) -> GroupRollout:
    """A copy of ``rollout`` (its ``rows``) that carries no step totals."""
    picked = rollout.select(torch.as_tensor(list(range(rollout.batch_size)) if rows is None else list(rows)))
    return dataclasses.replace(picked, step_tokens=None, step_sequences=None)


def record_micro_batches(objective) -> List[int]:
    """Make ``objective`` note the loss-mask tokens of every batch its loss is computed on."""
    seen: List[int] = []
    original = objective.loss_on_rollout

    def recording(context, rollout):
        seen.append(int(rollout.loss_mask.sum()))
        return original(context, rollout)

    objective.loss_on_rollout = recording
    return seen


def gradient_of(context: GradientRecorder, loss: torch.Tensor) -> torch.Tensor:
    context.policy.zero_grad(set_to_none=True)
    loss.backward()
    gradient = flat_gradient(context.policy)
    context.policy.zero_grad(set_to_none=True)
    return gradient


def whole_step(objective, context: GradientRecorder, rollout: GroupRollout):
    """(gradient, metrics) of the step's rows in one prepare_update + loss_on_rollout."""
    batch = objective.prepare_update(context, fresh(rollout))
    loss, metrics = objective.loss_on_rollout(context, batch)
    return gradient_of(context, loss), metrics


def accumulated_step(objective, context: GradientRecorder, rollout: GroupRollout, micro: int):
    """(gradient, tokens per micro-batch) of the step through the real update loop
    (``update_on_rollout`` -> ``prepare_update`` -> ``_accumulated_step``)."""
    objective.micro_batch_size = micro
    seen = record_micro_batches(objective)
    before = len(context.steps)
    objective.update_on_rollout(context, fresh(rollout))
    assert len(context.steps) == before + 1, "one rollout, one mini-batch: exactly one optimizer step"
    return context.steps[-1], seen


def local_normaliser_step(objective, context: GradientRecorder, rollout: GroupRollout, micro: int) -> torch.Tensor:
    """The known bug: each micro-batch aggregated with its own totals, the losses averaged
    over the micro-batches (``loss / accumulation_steps``)."""
    chunks = [list(range(first, min(first + micro, rollout.batch_size))) for first in range(0, rollout.batch_size, micro)]
    context.policy.zero_grad(set_to_none=True)
    for rows in chunks:
        (objective.loss_on_rollout(context, fresh(rollout, rows)).loss / len(chunks)).backward()
    gradient = flat_gradient(context.policy)
    context.policy.zero_grad(set_to_none=True)
    return gradient


# ---------------------------------------------------------------------------- one rank of the DDP run
def all_reduce_mean(gradient: torch.Tensor, world: int) -> torch.Tensor:
    """What DDP does to a gradient: the sum over ranks divided by the world size."""
    gradient = gradient.clone()
    torch.distributed.all_reduce(gradient, op=torch.distributed.ReduceOp.SUM)
    return gradient / world


def run_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        context = make_context()
        results: Dict[str, Any] = {"fingerprint": weight_fingerprint(context.policy)}
        share = B // world
        rows = list(range(rank * share, (rank + 1) * share))
        for case in CASES:
            objective = make_objective(case)
            rollout = build_rollout(objective, context)
            same = rollout.old_logprobs.clone()
            torch.distributed.broadcast(same, src=0)
            assert torch.equal(same, rollout.old_logprobs), "ranks built different rollouts"
            half = fresh(rollout, rows)
            # (c) each rank its half, whole: prepare_update (totals over ranks) + loss_on_rollout.
            whole, _ = whole_step(objective, context, half)
            # (c') each rank its half through the update loop, one row per micro-batch.
            micro, tokens = accumulated_step(make_objective(case), context, half, micro=1)
            # negative control: each rank normalises by its own totals (no sum over ranks).
            local = fresh(half)
            local.step_tokens, local.step_sequences = Fn.step_totals(local.loss_mask)
            rank_local = gradient_of(context, objective.loss_on_rollout(context, local).loss)
            results[case] = {"whole": all_reduce_mean(whole, world), "micro": all_reduce_mean(micro, world),
                             "rank_local": all_reduce_mean(rank_local, world), "micro_tokens": tokens}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    rank_arg, world_arg, init_arg, out_arg = sys.argv[1:5]
    run_rank(int(rank_arg), int(world_arg), init_arg, out_arg)
