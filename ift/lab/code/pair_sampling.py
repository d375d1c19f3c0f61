"""Sampling the programs of ``ift code-pairs``: a strong and a weak source per problem.

A source is a policy at a temperature. Two policies (a trained checkpoint and a weaker
one), or one policy at two temperatures (a low one for the strong source, a high one for
the weak). A policy is resolved as ``ift code-pass-rate`` resolves ``--ckpt`` and
``--model``: a file is an ``ift fit`` checkpoint (``FineTuneModule.load_from_checkpoint``),
anything else a model spec of :class:`ift.modules.FineTuneModule` (an export folder, a
``.gguf`` file, a preset or a hub id). One policy named twice is loaded once.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ift.core.model_factory import MODEL_PRESETS
from ift.modules import FineTuneModule
from ift.lab.code.completions import generate_texts
from ift.lab.code.pairs import SOURCES, Program


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


#: Suffixes that make a name certainly a file meant as weights, not a preset or hub id.
_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".gguf")


def _looks_like_path(spec: str) -> bool:
    """True when ``spec`` is meant as a local path (a hub id is ``org/name``, a preset a word)."""
    return (spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or spec in (".", "..")
            or spec.lower().endswith(_FILE_SUFFIXES))


def _kinds() -> str:
    return (f"give a checkpoint written by `ift fit` (e.g. lightning_logs/version_0/checkpoints/last.ckpt), a folder "
            f"written by ExportPretrained or save_pretrained, a .gguf file, a preset ({', '.join(MODEL_PRESETS)}) "
            f"or a hub id")


def load_policy(option: str, spec: str, tokenizer: Optional[str] = None) -> FineTuneModule:
    """The module of one policy (see the module docstring); ``option`` (``--strong``)
    names it in errors. Raises ValueError naming the fix when ``spec`` cannot be loaded."""
    path = os.path.expanduser(spec)
    extra = {"tokenizer": tokenizer} if tokenizer else {}
    if os.path.isfile(path) and not path.lower().endswith(".gguf"):
        try:
            return FineTuneModule.load_from_checkpoint(path, map_location="cpu", **extra)
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as error:
            raise ValueError(f"{option} {spec}: cannot be loaded as a checkpoint written by `ift fit` "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); a run "
                             f"trained with a char:CHARS tokenizer needs --tokenizer; else {_kinds()}") from None
    if _looks_like_path(spec) and not os.path.exists(path):
        raise ValueError(f"{option} {spec}: no such checkpoint file or folder; {_kinds()}")
    try:
        return FineTuneModule(model=path if os.path.exists(path) else spec, **extra)
    except (OSError, ValueError) as error:  # not a model folder, not on the hub or offline
        raise ValueError(f"{option} {spec}: not a checkpoint, model folder or preset here, and not loadable as a hub "
                         f"id ({error}); {_kinds()}") from None


def load_sources(sources: Sequence[Source], tokenizer: Optional[str] = None,
                 seed: int = 0) -> Dict[str, FineTuneModule]:
    """The policies of ``sources``, keyed by the name the user gave, each loaded once.

    ``torch`` is seeded before each load, so a preset's untrained weights follow ``seed``.
    An unknown policy stops with a ValueError naming the source's option (``--strong`` /
    ``--weak``) and the fix.
    """
    loaded: Dict[str, FineTuneModule] = {}
    for source in sources:
        if source.policy not in loaded:
            torch.manual_seed(seed)
            loaded[source.policy] = load_policy(f"--{source.name}", source.policy, tokenizer)
    return loaded


def sample_programs(sources: Sequence[Source], policies: Dict[str, FineTuneModule], prompts: Sequence[str], *,
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
        module = policies[source.policy]
        module.eval()
        torch.manual_seed(seed + index)
        report = None if progress is None else (lambda done, total, name=source.name: progress(name, done, total))
        generated = generate_texts(module.policy, module.tokenizer, prompts, samples=samples,
                                   temperature=source.temperature, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, device=device, progress=report)
        for group, texts in zip(programs, generated.texts):
            group += [Program(text, source.name, source.policy, source.temperature) for text in texts]
    return programs


__all__ = ["Source", "load_policy", "load_sources", "sample_programs"]
