"""The steps of one PPO rollout, each a small function: sample, score, log-probs and values,
advantages. :meth:`ift.objectives.PPO.rollout` runs them in that order.

See docs/objectives.md, section PPO, for the per-token reward, GAE and whitening.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ift.core.distributed import all_reduce_sum_fn
from ift.core.generation import generate_responses
from ift.core.shared_prompts import response_outputs
from ift.objectives import functional as Fn
from ift.objectives.contract import StepContext
from ift.objectives.explained_variance import rollout_explained_variance
from ift.objectives.rollout import Rollout
from ift.objectives.value_functions import ValueFunction


@dataclass
class Prompts:
    """The prompts of one rollout, each repeated once per sample."""

    #: ``B x P`` left-padded prompt ids and their attention mask.
    ids: torch.Tensor
    mask: torch.Tensor
    #: the prompt texts and the data rows behind them (the reward reads e.g. ``answer``).
    texts: List[str]
    examples: List[Dict[str, Any]]


@dataclass
class Samples:
    """Sampled responses of one rollout, as tokens and as the text the reward sees."""

    #: ``B x R`` ids (pad after EOS), the tokens that count, and whether each row emitted EOS.
    ids: torch.Tensor
    mask: torch.Tensor
    ended_with_eos: torch.Tensor
    texts: List[str]


def repeated_prompts(batch: Dict[str, Any], tokenizer: Any, samples_per_prompt: int) -> Prompts:
    """The batch's prompts, ids and texts, each repeated ``samples_per_prompt`` times."""
    if "prompt_input_ids" not in batch:
        raise KeyError(
            f"PPO needs prompts: the batch has no 'prompt_input_ids' (keys: {sorted(batch)}); "
            "use a data module that yields left-padded prompts (e.g. ift.tasks.arithmetic.ArithmeticDataModule)"
        )
    k = samples_per_prompt
    return Prompts(
        ids=batch["prompt_input_ids"].repeat_interleave(k, dim=0),
        mask=batch["prompt_attention_mask"].repeat_interleave(k, dim=0),
        texts=_repeat(_prompt_texts(batch, tokenizer), k),
        examples=_repeat(_examples(batch), k),
    )


def sample_on_stream(context: StepContext, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, seed: int,
                     max_new_tokens: int, temperature: float, top_p: float, use_cache: bool) -> torch.Tensor:
    """``B x R`` sampled response ids (pad after EOS), drawn from a private stream seeded with ``seed``."""
    tokenizer = context.tokenizer
    with _seeded_rng(seed, prompt_ids.device):
        ids, _ = generate_responses(
            context.policy,
            prompt_ids,
            prompt_mask,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            use_cache=use_cache,
        )
    return ids


def samples_from_ids(ids: torch.Tensor, tokenizer: Any) -> Samples:
    """The tokens that count (up to and with the first EOS) and the text the reward sees."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    mask = Fn.response_mask_after_eos(ids, eos, pad)
    visible = torch.where(mask, ids, torch.full_like(ids, pad))
    texts = tokenizer.batch_decode(visible, skip_special_tokens=True)
    return Samples(ids=ids, mask=mask, ended_with_eos=Fn.ended_with_eos(ids, eos), texts=texts)


def tokens_covering(ids: torch.Tensor, mask: torch.Tensor, tokenizer: Any, chars: Sequence[Optional[int]]) -> List[Optional[int]]:
    """For each row, the fewest leading tokens whose decoded text (special tokens skipped, as
    the reward saw it) has at least ``chars[b]`` characters; None stays None (the whole row)."""
    counts: List[Optional[int]] = []
    for row, valid, wanted in zip(ids.tolist(), mask.sum(-1).tolist(), chars):
        if wanted is None:
            counts.append(None)
            continue
        low, high = 0, int(valid)  # decoded length is non-decreasing in the prefix: bisect it
        while low < high:
            middle = (low + high) // 2
            if len(tokenizer.decode(row[:middle], skip_special_tokens=True)) >= wanted:
                high = middle
            else:
                low = middle + 1
        counts.append(low)
    return counts


def cut_at_episode_ends(samples: Samples, reward: Any, prompts: Prompts, tokenizer: Any) -> Samples:
    """``samples`` whose tokens after the end of each episode no longer count, where ``reward``
    says where its episodes end (an optional ``response_ends(prompts, responses, examples)``
    method: per response, the number of leading characters that are the episode, or None for
    all). The reward has already seen the whole text; the cut tokens are neither credited nor
    trained on (an environment that ends an episode ignores the moves after it), and the
    columns past the longest episode are dropped."""
    response_ends = getattr(reward, "response_ends", None)
    if response_ends is None:
        return samples
    ends = list(response_ends(prompts.texts, samples.texts, prompts.examples))
    if len(ends) != len(samples.texts):
        raise ValueError(f"{type(reward).__name__}.response_ends returned {len(ends)} ends for {len(samples.texts)} responses")
    counts = tokens_covering(samples.ids, samples.mask, tokenizer, ends)
    mask = Fn.mask_first_tokens(samples.mask, counts)
    # Columns no row counts any more are dropped: causal attention makes every counted
    # position's log-prob independent of them, and the PPO epochs then run on shorter rows.
    longest = int(mask.sum(-1).max()) if mask.numel() else 0
    keep = max(longest, 1)
    return Samples(ids=samples.ids[:, :keep], mask=mask[:, :keep],
                   ended_with_eos=samples.ended_with_eos, texts=samples.texts)


def sampled_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """``B x R`` float32 log-probs of ``tokens`` under ``softmax(logits / temperature)``."""
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float()
    return torch.gather(scaled.log_softmax(-1), -1, tokens.unsqueeze(-1)).squeeze(-1)


def sequences(prompts: Prompts, samples: Samples) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of prompt followed by response, ``B x (P + R)``."""
    input_ids = torch.cat([prompts.ids, samples.ids], dim=1)
    attention_mask = torch.cat([prompts.mask.long(), samples.mask.long()], dim=1)
    return input_ids, attention_mask


def logprobs_and_values(context: StepContext, value_function: ValueFunction, input_ids: torch.Tensor,
                        attention_mask: torch.Tensor, samples: Samples, temperature: float,
                        share_prompts: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(old_logprobs, ref_logprobs, values)`` of the sampled tokens, ``B x R`` each, no gradient
    (``share_prompts``: each distinct prompt runs once, :mod:`ift.core.shared_prompts`)."""
    length = input_ids.shape[1] - samples.ids.shape[1]
    with torch.no_grad():
        logits, values = value_function.logits_and_values(context.policy, input_ids, attention_mask, length,
                                                          share_prompts)
        old_logprobs = sampled_logprobs(logits, samples.ids, temperature)
        del logits
        with context.reference_model() as reference:
            ref_logits = response_outputs(reference, input_ids, attention_mask, length,
                                          share_prompts=share_prompts).logits
            ref_logprobs = sampled_logprobs(ref_logits, samples.ids, temperature)
            del ref_logits
    return old_logprobs, ref_logprobs, torch.where(samples.mask, values.float(), 0.0)


def advantages_and_returns(scores: torch.Tensor, kl: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                           kl_coef: float, gamma: float, lam: float,
                           whiten: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rewards, advantages, returns)``: per-token rewards ``-beta KL_t`` plus the score on
    the last valid token, GAE, and advantages whitened over valid tokens of every process."""
    rewards = Fn.per_token_rewards(scores, kl, mask, kl_coef)
    advantages, returns = Fn.gae(rewards, values, mask, gamma, lam)
    if whiten:
        advantages = Fn.masked_whiten(advantages, mask, all_reduce=all_reduce_sum_fn())
    return rewards, advantages, returns


def trim_right(rollout: Rollout) -> Rollout:
    """Drop response columns that no row of this (mini-)batch uses (shorter forward pass)."""
    used = rollout.response_mask.any(0)
    if used.all() or not used.any():
        return rollout
    keep = int(used.nonzero().max()) + 1
    cut = rollout.response_ids.shape[1] - keep
    trimmed = {}
    for name, value in vars(rollout).items():
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            trimmed[name] = value[:, :-cut]
        else:
            trimmed[name] = value
    return Rollout(**trimmed)


def rollout_metrics(rollout: Rollout, reward_timeouts: int, timings: Dict[str, float]) -> Dict[str, torch.Tensor]:
    """The statistics of one rollout that PPO logs (score, KL, EOS rate, timings, ...)."""
    metrics = {
        "score": rollout.scores.mean(),
        "kl": rollout.kl.sum(-1).mean(),
        "kl_coef": torch.tensor(rollout.kl_coef),
        "response_length": rollout.response_mask.sum(-1).float().mean(),
        "eos_rate": rollout.ended_with_eos.float().mean(),
        "reward_nan": torch.tensor(float(rollout.n_nan_rewards)),
        "reward_timeouts": torch.tensor(float(reward_timeouts)),
    }
    metrics.update({f"time/{name}": torch.tensor(seconds) for name, seconds in timings.items()})
    # Over every process's tokens (a torchmetrics metric that gathers them), not rank 0's.
    variance = rollout_explained_variance(rollout.values, rollout.returns, rollout.response_mask)
    if torch.isfinite(variance):
        metrics["explained_variance"] = variance
    return metrics


def _repeat(items: List[Any], k: int) -> List[Any]:
    return [item for item in items for _ in range(k)]


def _prompt_texts(batch: Dict[str, Any], tokenizer: Any) -> List[str]:
    if "prompt" in batch:
        return list(batch["prompt"])
    return tokenizer.batch_decode(batch["prompt_input_ids"], skip_special_tokens=True)


def _examples(batch: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The data rows behind the prompts (the reward reads e.g. their ``answer``)."""
    size = int(batch["prompt_input_ids"].shape[0])
    if batch.get("examples") is not None:
        rows = [dict(row) if isinstance(row, dict) else {"example": row} for row in batch["examples"]]
    else:
        rows = [{} for _ in range(size)]
    for key in ("answer", "prompt", "response"):
        if key in batch and isinstance(batch[key], (list, tuple)):
            for row, value in zip(rows, batch[key]):
                row.setdefault(key, value)
    return rows


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the body on a private RNG stream; the global RNG state is left untouched."""
    devices: Optional[List[int]] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
