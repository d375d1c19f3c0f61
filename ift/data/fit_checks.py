"""Checks of loaded data against what it trains, run by the data module's ``setup``: the
fields the objective reads and the length of context the model has.

Both would otherwise fail steps later with a bare ``KeyError: 'input_ids'`` or an
``IndexError`` inside the model; here they stop before the first step with
:class:`~ift.data.records.DataMismatchError`, naming the data source, the objective or the
model's limit, and the fix.

What an objective reads is its class attribute ``trains_on`` (one of the ``TRAINS_ON_*``
values of :mod:`ift.core.constants`; a subclass inherits it, and a recipe needs what its
parts need). An objective that declares none is not checked.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.core.constants import TRAINS_ON_PAIRS, TRAINS_ON_PROMPTS, TRAINS_ON_RESPONSES
from ift.data.records import DataMismatchError

RESPONSES, PAIRS, PROMPTS = TRAINS_ON_RESPONSES, TRAINS_ON_PAIRS, TRAINS_ON_PROMPTS
#: The encoded fields that carry each kind of data.
FIELDS = {RESPONSES: ("input_ids", "labels"), PAIRS: ("chosen_input_ids", "rejected_input_ids"), PROMPTS: ("prompt_ids",)}
#: The encoded sequences the model reads (their length must fit its positions).
SEQUENCE_KEYS = ("input_ids", "chosen_input_ids", "rejected_input_ids", "prompt_ids")
#: Where each kind of data comes from, for the messages.
SOURCES = {
    RESPONSES: "prompt/response records (ift.data.PromptResponseDataModule) or chat 'messages' (ift.data.ChatDataModule)",
    PAIRS: "prompt/chosen/rejected records (data.class_path: ift.data.PreferenceDataModule)",
    PROMPTS: "any data module",
}
USERS = {RESPONSES: "SFT or IFT", PAIRS: "DPO or ORPO", PROMPTS: "PPO"}


def objective_needs(objective: Any) -> List[Tuple[str, str]]:
    """``[(objective name, what it trains on), ...]`` for an objective or a recipe's parts."""
    if objective is None:
        return []
    parts = getattr(objective, "stages", None) or getattr(objective, "objectives", None)
    if isinstance(parts, (list, tuple)):
        return [need for part in parts for need in objective_needs(getattr(part, "objective", part))]
    need = getattr(objective, "trains_on", None)
    return [(type(objective).__name__, need)] if need in FIELDS else []


def data_gives(item: Dict[str, Any]) -> List[str]:
    """The kinds of data one encoded example carries."""
    return [kind for kind, fields in FIELDS.items() if all(field in item for field in fields)]


def check_objective_fit(needs: Sequence[Tuple[str, str]], items: Sequence[Dict[str, Any]], source: str) -> None:
    """Stop when the training examples lack what an objective trains on (every example
    has the same fields: the data module checks that when it encodes them)."""
    if not items:
        return
    gives = data_gives(items[0])
    for name, need in needs:
        if need in gives:
            continue
        given = [kind for kind in gives if kind != PROMPTS] or [PROMPTS]
        kind = given[0]
        raise DataMismatchError(
            f"{source} gives {kind}" + ("" if kind == PROMPTS else f" (data for {USERS[kind]})")
            + f", but the objective {name} trains on {need}: give it {SOURCES[need]}, "
            f"or choose an objective for this data (model.objective.class_path: {USERS[kind]})"
            + (". Prompts alone come from data.init_args.response_key: null (PromptResponseDataModule) or "
               "data.init_args.prompt_only: true (ChatDataModule)" if kind == PROMPTS and need == RESPONSES else "")
        )


def context_limit(module: Any) -> Optional[Tuple[int, str]]:
    """``(positions, config field)``: the longest sequence the module's model reads, from
    its config (``n_positions`` or ``max_position_embeddings``), or None when unknown (no
    model yet, e.g. built later in ``configure_model``, or a model without such a field)."""
    config = getattr(getattr(module, "policy", None), "config", None)
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, name
    return None


def prompt_room(policy: Any, max_new_tokens: int, option: str = "max_new_tokens",
                error: type = ValueError) -> Optional[int]:
    """The most prompt tokens that leave room for ``max_new_tokens`` generated ones in the
    positions ``policy`` reads (None when its config does not say); ``error`` (naming the
    command-line ``option``) when ``max_new_tokens`` leaves no room at all."""
    limit = context_limit(SimpleNamespace(policy=policy))
    if limit is None:
        return None
    positions, field = limit
    if max_new_tokens >= positions:
        raise error(f"{option} {max_new_tokens} leaves no room for a prompt: the model reads {positions} positions "
                    f"({field}); give a smaller {option}")
    return positions - max_new_tokens


def check_context(max_length: int, splits: Dict[str, Tuple[Sequence[Dict[str, Any]], Sequence[str]]],
                  limit: Optional[Tuple[int, str]]) -> None:
    """Stop when an encoded sequence is longer than the model's positions.

    ``splits`` maps a split to its ``(items, locations)``. Sequences are cut to
    ``max_length`` when encoded, so this only fires when ``max_length`` exceeds the limit;
    a ``max_length`` above the limit that every example fits under is left alone (the
    Frozen Lake transformer keeps the default 256 with 160 positions and short examples).
    """
    if limit is None or max_length <= limit[0]:
        return
    positions, field = limit
    longest, where, count = 0, "", 0
    for split, (items, locations) in splits.items():
        for item, location in zip(items, locations):
            length = max(len(item[key]) for key in SEQUENCE_KEYS if key in item)
            if length > positions:
                count += 1
                if length > longest:
                    longest, where = length, f"{location} ({split})"
    if count:
        raise DataMismatchError(
            f"data.init_args.max_length is {max_length}, but the model reads at most {positions} positions "
            f"(its config's {field}); {count} example(s) are longer, the longest ({longest} tokens) at {where}. "
            f"Set data.init_args.max_length to {positions} or less (longer examples then lose prompt tokens "
            f"from the left), or use a model with a longer context"
        )
