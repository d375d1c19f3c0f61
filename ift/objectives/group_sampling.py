"""Groups of sampled responses: pick whole groups out of a scored rollout, put scored parts
back together, and DAPO's dynamic sampling (draw again for groups whose rewards all agree).

A *group* is the ``G`` responses sampled for one prompt; they are consecutive rows
(row ``b`` belongs to group ``b // G``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Sequence

import torch

from ift.objectives import rollout_steps as steps
from ift.objectives.rollout import ScoredSamples


def group_rows(groups: Sequence[int], group_size: int) -> torch.Tensor:
    """Row indices of the given groups, each group's rows in order."""
    return torch.tensor([g * group_size + i for g in groups for i in range(group_size)], dtype=torch.long)


def select_prompt_rows(batch: Dict[str, Any], rows: Sequence[int]) -> Dict[str, Any]:
    """The rows ``rows`` of a batch of prompts: tensors indexed on their first dimension,
    lists (prompt texts, answers, examples) picked item by item, anything else kept."""
    size = int(batch["prompt_input_ids"].shape[0])
    index = torch.tensor(list(rows), dtype=torch.long)
    picked: Dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == size:
            picked[key] = value[index.to(value.device)]
        elif isinstance(value, (list, tuple)) and len(value) == size:
            picked[key] = [value[i] for i in rows]
        else:
            picked[key] = value
    return picked


def select_groups(scored: ScoredSamples, groups: Sequence[int], group_size: int) -> ScoredSamples:
    """The whole groups ``groups`` of ``scored`` (metrics kept as they are)."""
    rows = group_rows(groups, group_size)
    device = scored.scores.device
    index = rows.to(device)
    listed = rows.tolist()
    prompts = steps.Prompts(ids=scored.prompts.ids[index], mask=scored.prompts.mask[index],
                            texts=[scored.prompts.texts[i] for i in listed],
                            examples=[scored.prompts.examples[i] for i in listed])
    samples = steps.Samples(ids=scored.samples.ids[index], mask=scored.samples.mask[index],
                            ended_with_eos=scored.samples.ended_with_eos[index],
                            texts=[scored.samples.texts[i] for i in listed])
    valid = scored.score_valid[index] if scored.score_valid is not None else None
    components = scored.reward_components[index] if scored.reward_components is not None else None
    return ScoredSamples(prompts=prompts, samples=samples, input_ids=scored.input_ids[index],
                         attention_mask=scored.attention_mask[index], scores=scored.scores[index],
                         n_nan_rewards=int((~valid).sum()) if valid is not None else 0, score_valid=valid,
                         metrics=dict(scored.metrics), reward_components=components)


def _pad_right(tensor: torch.Tensor, width: int, value: Any) -> torch.Tensor:
    missing = width - tensor.shape[1]
    if missing <= 0:
        return tensor
    fill = torch.full((tensor.shape[0], missing), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, fill], dim=1)


def concat_scored(parts: List[ScoredSamples], pad_token_id: int) -> ScoredSamples:
    """One :class:`ScoredSamples` of ``parts`` (same prompt width; responses padded on the
    right to the longest); the metrics are the first part's."""
    if len(parts) == 1:
        return parts[0]
    width = max(part.samples.ids.shape[1] for part in parts)
    prompts = steps.Prompts(ids=torch.cat([p.prompts.ids for p in parts]), mask=torch.cat([p.prompts.mask for p in parts]),
                            texts=[t for p in parts for t in p.prompts.texts],
                            examples=[e for p in parts for e in p.prompts.examples])
    samples = steps.Samples(
        ids=torch.cat([_pad_right(p.samples.ids, width, pad_token_id) for p in parts]),
        mask=torch.cat([_pad_right(p.samples.mask, width, False) for p in parts]),
        ended_with_eos=torch.cat([p.samples.ended_with_eos for p in parts]),
        texts=[t for p in parts for t in p.samples.texts],
    )
    input_ids, attention_mask = steps.sequences(prompts, samples)
    valid = None
    if any(p.score_valid is not None for p in parts):
        valid = torch.cat([p.score_valid if p.score_valid is not None else torch.ones_like(p.scores, dtype=torch.bool)
                           for p in parts])
    metrics = dict(parts[0].metrics)
    components = None
    if all(p.reward_components is not None for p in parts):
        components = torch.cat([p.reward_components for p in parts])
    return ScoredSamples(prompts=prompts, samples=samples, input_ids=input_ids, attention_mask=attention_mask,
                         scores=torch.cat([p.scores for p in parts]), n_nan_rewards=sum(p.n_nan_rewards for p in parts),
                         score_valid=valid, metrics=metrics, reward_components=components)


class DynamicSamplingResult(NamedTuple):
    """What :func:`dynamic_sampling` returns."""

    #: as many groups as the first draw, every one with some spread in its rewards where
    #: the rounds allowed (then, filled up with the first draw's flat groups).
    scored: ScoredSamples
    #: groups whose rewards all agreed, over every draw (each one is dropped or used to fill).
    dropped: int
    #: extra rounds of sampling taken.
    rounds: int
    #: flat groups of the first draw put back because the rounds ran out.
    filled: int


def dynamic_sampling(
    first: ScoredSamples,
    batch: Dict[str, Any],
    group_size: int,
    max_rounds: int,
    is_flat: Callable[[ScoredSamples], torch.Tensor],
    draw: Callable[[Dict[str, Any]], ScoredSamples],
    idle_round: Callable[[], None],
    any_process: Callable[[bool], bool],
    pad_token_id: int,
) -> DynamicSamplingResult:
    """DAPO's dynamic sampling on one batch of prompts: keep the groups of ``first`` whose
    rewards differ, draw the prompts of the flat ones again (``draw(sub_batch)``) for up to
    ``max_rounds`` extra rounds, and fill what is still missing with the first draw's flat
    groups (their advantages are 0: they only carry the KL term).

    DAPO draws *new* prompts from the data to replace flat groups; an objective sees one
    batch at a time, so here the same prompts are drawn again, each round on a new sampling
    stream. Under DDP every process runs as many rounds as the one that needs most
    (``any_process``); a process with nothing to draw calls ``idle_round`` instead, which
    takes part in the collectives a draw would run.
    """
    draws = [first]
    flat = is_flat(first)
    kept = [select_groups(first, (~flat).nonzero().flatten().tolist(), group_size)]
    spare_groups = flat.nonzero().flatten().tolist()
    missing = list(spare_groups)  # prompt (group) indices still without a group that has spread
    dropped, rounds = len(spare_groups), 0
    while rounds < max_rounds and any_process(bool(missing)):
        rounds += 1
        if not missing:
            idle_round()
            continue
        again = draw(select_prompt_rows(batch, missing))
        draws.append(again)
        flat_again = is_flat(again)
        kept.append(select_groups(again, (~flat_again).nonzero().flatten().tolist(), group_size))
        dropped += int(flat_again.sum())
        missing = [missing[i] for i in flat_again.nonzero().flatten().tolist()]
    filled = len(missing)
    if missing:
        kept.append(select_groups(first, missing, group_size))
    parts = [part for part in kept if part.scores.numel()]
    merged = concat_scored(parts, pad_token_id)
    merged.metrics = dict(first.metrics)
    for key in first.metrics:
        if key.startswith("time/"):  # every draw's time counts
            merged.metrics[key] = sum(d.metrics.get(key, torch.tensor(0.0)) for d in draws)
    return DynamicSamplingResult(merged, dropped, rounds, filled)
