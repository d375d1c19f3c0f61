"""The steps every rollout objective shares, each a small function: repeat the prompts, turn
sampled ids into the tokens that count and the text the reward sees, cut episodes that end
early, log-probs of sampled tokens (policy and reference), trim unused columns, the core
statistics of a rollout. :class:`ift.objectives.RolloutObjective` runs them; an algorithm's
own steps (PPO's values and GAE) live next to it (:mod:`ift.objectives.ppo_rollout`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

from ift.core.shared_prompts import response_outputs
from ift.objectives import functional as Fn
from ift.objectives.contract import StepContext


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
            f"a rollout objective needs prompts: the batch has no 'prompt_input_ids' (keys: {sorted(batch)}); "
            "use a data module that yields left-padded prompts (e.g. ift.tasks.arithmetic.ArithmeticDataModule)"
        )
    k = samples_per_prompt
    return Prompts(
        ids=batch["prompt_input_ids"].repeat_interleave(k, dim=0),
        mask=batch["prompt_attention_mask"].repeat_interleave(k, dim=0),
        texts=_repeat(_prompt_texts(batch, tokenizer), k),
        examples=_repeat(_examples(batch), k),
    )


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
    # position's log-prob independent of them, and the update epochs then run on shorter rows.
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


def policy_logprobs(context: StepContext, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    response_ids: torch.Tensor, temperature: float, share_prompts: bool = False) -> torch.Tensor:
    """``B x R`` log-probs of ``response_ids`` under the current policy (with gradient when
    grad is enabled; ``share_prompts``: each distinct prompt runs once)."""
    length = input_ids.shape[1] - response_ids.shape[1]
    logits = response_outputs(context.policy, input_ids, attention_mask, length, share_prompts=share_prompts).logits
    return sampled_logprobs(logits, response_ids, temperature)


def reference_logprobs(context: StepContext, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       response_ids: torch.Tensor, temperature: float, share_prompts: bool = False) -> torch.Tensor:
    """``B x R`` log-probs of ``response_ids`` under the frozen reference policy, no gradient."""
    length = input_ids.shape[1] - response_ids.shape[1]
    with torch.no_grad(), context.reference_model() as reference:
        ref_logits = response_outputs(reference, input_ids, attention_mask, length, share_prompts=share_prompts).logits
        ref_logprobs = sampled_logprobs(ref_logits, response_ids, temperature)
        del ref_logits
    return ref_logprobs


RolloutT = TypeVar("RolloutT")


def trim_right(rollout: RolloutT) -> RolloutT:
    """Drop response columns that no row of this (mini-)batch uses (shorter forward pass); every
    ``B x R`` and ``B x T`` tensor field of the rollout (of any :class:`Rollout` subclass) loses
    the same columns on the right."""
    used = rollout.response_mask.any(0)
    if used.all() or not used.any():
        return rollout
    keep = int(used.nonzero().max()) + 1
    cut = rollout.response_ids.shape[1] - keep
    trimmed = {}
    for item in dataclasses.fields(rollout):
        value = getattr(rollout, item.name)
        if item.init and isinstance(value, torch.Tensor) and value.dim() == 2:
            trimmed[item.name] = value[:, :-cut]
    return dataclasses.replace(rollout, **trimmed)


def core_rollout_metrics(rollout: Any, reward_timeouts: int) -> Dict[str, torch.Tensor]:
    """The statistics every rollout logs: mean score (over the responses the reward could
    score), response length, EOS rate, nan scores and reward timeouts so far."""
    valid = getattr(rollout, "score_valid", None)
    return {
        "score": rollout.scores.mean() if valid is None else Fn.masked_mean(rollout.scores, valid),
        "response_length": rollout.response_mask.sum(-1).float().mean(),
        "eos_rate": rollout.ended_with_eos.float().mean(),
        "reward_nan": torch.tensor(float(rollout.n_nan_rewards)),
        "reward_timeouts": torch.tensor(float(reward_timeouts)),
    }


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
