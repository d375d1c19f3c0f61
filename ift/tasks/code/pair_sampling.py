"""Sampling the programs of ``ift code-pairs``: a strong and a weak source per problem.

A source is a policy at a temperature. Two policies (a trained checkpoint and a weaker
one), or one policy at two temperatures (a low one for the strong source, a high one for
the weak). Policies are named as ``ift predict --policy`` names them and loaded by
:func:`ift.predict.policy.load_policy`: an ``ift fit`` checkpoint, an export folder, a
``.gguf`` file, a preset or a hub id. One policy named twice is loaded once.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ift.predict.policy import LoadedPolicy, PredictError, load_policy
from ift.tasks.code.completions import generate_texts
from ift.tasks.code.pairs import SOURCES, Program


@dataclasses.dataclass(frozen=True)
class Source:
    """One source of programs.

    Attributes:
        name: ``strong`` or ``weak``.
        policy: what to load (checkpoint path, export folder, ``.gguf`` file, preset, hub id).
        temperature: sampling temperature; 0 decodes greedily (then ``samples`` must be 1).
    """

    name: str
    policy: str
    temperature: float


def load_sources(sources: Sequence[Source], tokenizer: Optional[str] = None, seed: int = 0) -> Dict[str, LoadedPolicy]:
    """The policies of ``sources``, keyed by the name the user gave, each loaded once.

    ``torch`` is seeded before each load, so a preset's untrained weights follow ``seed``.
    An unknown policy stops with :class:`ift.predict.policy.PredictError` naming the
    source's option (``--strong`` / ``--weak``) and the fix.
    """
    loaded: Dict[str, LoadedPolicy] = {}
    for source in sources:
        if source.policy in loaded:
            continue
        torch.manual_seed(seed)
        try:
            loaded[source.policy] = load_policy(source.policy, tokenizer)
        except PredictError as error:
            # load_policy speaks of `ift predict`'s option; name this command's.
            raise PredictError(str(error).replace("--policy", f"--{source.name}")) from None
    return loaded


def sample_programs(sources: Sequence[Source], policies: Dict[str, LoadedPolicy], prompts: Sequence[str], *,
                    samples: int, max_new_tokens: int = 48, batch_size: int = 16, device: str = "cpu", seed: int = 0,
                    progress: Optional[Callable[[str, int, int], None]] = None) -> List[List[Program]]:
    """Per prompt, ``samples`` programs from each source (the sources' programs in their order).

    Each source's sampling starts from ``torch.manual_seed(seed + its index)``: the same
    seed, policies and prompts give the same programs, and the two sources of one policy
    do not draw the same random numbers. ``progress(source, done, total)`` follows each batch.
    """
    programs: List[List[Program]] = [[] for _ in prompts]
    for index, source in enumerate(sources):
        if source.name not in SOURCES:
            raise ValueError(f"source name must be one of {SOURCES}, got {source.name!r}")
        loaded = policies[source.policy]
        loaded.policy.eval()
        torch.manual_seed(seed + index)
        report = None if progress is None else (lambda done, total, name=source.name: progress(name, done, total))
        generated = generate_texts(loaded.policy, loaded.tokenizer, prompts, samples=samples,
                                   temperature=source.temperature, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, device=device, progress=report)
        for group, texts in zip(programs, generated.texts):
            group += [Program(text, source.name, source.policy, source.temperature) for text in texts]
    return programs


__all__ = ["Source", "load_sources", "sample_programs"]
