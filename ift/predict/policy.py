"""The policy ``ift predict`` generates with, and its tokenizer, from what the user names:

* a file: a Lightning checkpoint written by ``ift fit`` (``FineTuneModule.load_from_checkpoint``).
  The module's tokenizer is not among its saved hyper-parameters, so it is taken from the
  run config that ``ift fit`` records in every checkpoint (``--tokenizer`` overrides it);
  without it a ``char:...`` tokenizer would be rebuilt with the default characters and the
  weights would not fit;
* a folder with a ``config.json``: a Hugging Face folder (``save_pretrained``), e.g. one
  written by :class:`~ift.callbacks.ExportPretrained`, with its tokenizer;
* a preset name (``tiny-gpt2``, ...): an untrained model, for trying the command out;
* anything else that does not look like a path: a hub id.

A path that is none of these stops with :class:`PredictError` naming it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pickle
from typing import Any, Dict, List, Optional, Union

import torch
from transformers import PreTrainedTokenizerBase

from ift.core.gguf_source import is_gguf_spec
from ift.core.model_factory import MODEL_PRESETS, build_policy, build_tokenizer

#: Suffixes of files that are certainly meant as a checkpoint or weights, not a hub id.
_WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


class PredictError(ValueError):
    """``ift predict`` cannot run as asked; the message names the argument or path and the fix."""


@dataclasses.dataclass
class LoadedPolicy:
    """A policy ready to generate, with what it was loaded from.

    Attributes:
        policy: the causal LM (``generate`` works on it).
        tokenizer: its tokenizer (a pad token is always set).
        source: what the user named (checkpoint path, folder, preset or hub id).
        kind: ``checkpoint``, ``folder``, ``gguf`` (a ``.gguf`` file or a pretrained preset such as
            ``smollm2-135m-instruct``), ``preset`` or ``hub``.
        answer_trigger: the ``answer_trigger`` of the checkpoint's
            :class:`~ift.callbacks.AnswerAccuracy` (or of its older ``eval_answer_trigger``; None
            elsewhere), the rule ``val/accuracy`` read answers with during training.
    """

    policy: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    source: str
    kind: str
    answer_trigger: Optional[Union[str, List[str]]] = None


def looks_like_path(source: str) -> bool:
    """True when ``source`` is meant as a local path rather than a hub id or preset."""
    return (source.startswith(("/", "./", "../", "~", ".\\")) or "\\" in source or source.count("/") > 1
            or source.lower().endswith(_WEIGHT_SUFFIXES) or source in (".", ".."))


def load_policy(source: str, tokenizer: Optional[str] = None) -> LoadedPolicy:
    """The policy named by ``source`` (see the module docstring); ``tokenizer`` overrides the
    tokenizer it would use (``char``, ``char:CHARS``, a folder or hub id)."""
    if not source:
        raise PredictError("--policy is empty; give an `ift fit` checkpoint, an export folder, a preset or a hub id")
    path = os.path.expanduser(source)
    if is_gguf_spec(source):  # a .gguf file or a pretrained preset: a model, its tokenizer inside
        spec = path if source.lower().endswith(".gguf") else source
        tok = build_tokenizer(tokenizer, spec)
        return LoadedPolicy(build_policy(spec, tok), tok, source, "gguf")
    if os.path.isfile(path):
        return _from_checkpoint(path, tokenizer)
    if os.path.isdir(path):
        return _from_folder(path, tokenizer)
    if source in MODEL_PRESETS:
        spec = tokenizer or "char"
        tok = build_tokenizer(spec, source)
        return LoadedPolicy(build_policy(source, tok), tok, source, "preset")
    if looks_like_path(source):
        raise PredictError(
            f"--policy {source}: no such checkpoint file or folder; give a checkpoint written by `ift fit` "
            f"(e.g. lightning_logs/version_0/checkpoints/last.ckpt), a folder written by ExportPretrained "
            f"(e.g. lightning_logs/version_0/export/final), a preset ({', '.join(MODEL_PRESETS)}) or a hub id"
        )
    try:
        tok = build_tokenizer(tokenizer, source)
        return LoadedPolicy(build_policy(source, tok), tok, source, "hub")
    except (OSError, ValueError) as error:  # not found offline / on the hub, or not a valid repo id
        raise PredictError(
            f"--policy {source}: not a file, folder or preset here, and not loadable as a hub id ({error}); "
            f"give an `ift fit` checkpoint, an export folder or a preset ({', '.join(MODEL_PRESETS)})"
        ) from None


# ---------------------------------------------------------------------------- checkpoints
def _from_checkpoint(path: str, tokenizer: Optional[str]) -> LoadedPolicy:
    from ift.modules import FineTuneModule

    recorded = _recorded_model_config(path)
    spec = tokenizer if tokenizer is not None else recorded.get("tokenizer")
    if spec is not None and not isinstance(spec, str):
        raise PredictError(f"--policy {path}: the run recorded tokenizer {spec!r}, which is not a name or folder; "
                           f"give the tokenizer with --tokenizer")
    kwargs: Dict[str, Any] = {"map_location": "cpu"}
    if spec is not None:
        kwargs["tokenizer"] = spec
    try:
        module = FineTuneModule.load_from_checkpoint(path, **kwargs)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        used = f"tokenizer {spec!r}" if spec is not None else "the model's default tokenizer (none was recorded)"
        raise PredictError(
            f"--policy {path}: the weights do not fit the model built with {used}: "
            f"{str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error}; "
            f"give the tokenizer the run trained with, e.g. --tokenizer char:0123456789+="
        ) from None
    policy = module.policy
    from ift.callbacks.answer_accuracy import recorded_answer_trigger

    trigger = recorded_answer_trigger(path)
    return LoadedPolicy(policy, module.tokenizer, path, "checkpoint", trigger)


def _recorded_model_config(path: str) -> Dict[str, Any]:
    """The ``model`` config ``ift fit`` recorded in the checkpoint ({} when it recorded none),
    after checking that the file is a whole Lightning checkpoint."""
    from ift.callbacks.save_config import RUN_CONFIG_KEY

    try:
        checkpoint = _load_weights_only(path)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():
            return {}  # whole, but holding objects (a module built in Python): load_from_checkpoint reads it
        raise _unreadable(path, error) from None
    except Exception as error:  # a truncated zip, a bad header, another file format
        raise _unreadable(path, error) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        found = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise PredictError(
            f"--policy {path}: not a checkpoint written by `ift fit` (no state_dict and hyper_parameters; found "
            f"{found}); give a Lightning checkpoint (*.ckpt) or a folder written by ExportPretrained / save_pretrained"
        )
    recorded = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("model")
    return recorded if isinstance(recorded, dict) else {}


def _load_weights_only(path: str) -> Any:
    """``torch.load`` without unpickling objects, tensors memory-mapped (not read) where it can."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # an old, non-zip file


def _unreadable(path: str, error: Exception) -> PredictError:
    size = os.path.getsize(path)
    return PredictError(
        f"--policy {path}: cannot be read as a checkpoint ({size} bytes; {type(error).__name__}: {error}). "
        f"If it is a checkpoint it is incomplete (cut short by a crash or a full disk): use another one of the "
        f"run's checkpoints"
    )


# ---------------------------------------------------------------------------- folders
def _from_folder(path: str, tokenizer: Optional[str]) -> LoadedPolicy:
    if not os.path.isfile(os.path.join(path, "config.json")):
        checkpoints = sorted(glob.glob(os.path.join(path, "**", "*.ckpt"), recursive=True))
        exports = sorted(os.path.dirname(found) for found in glob.glob(os.path.join(path, "**", "config.json"),
                                                                       recursive=True))
        found = "; ".join(part for part in (
            f"checkpoints in it: {', '.join(checkpoints[:3])}" if checkpoints else "",
            f"model folders in it: {', '.join(exports[:3])}" if exports else "") if part)
        raise PredictError(
            f"--policy {path}: this folder has no config.json, so it is not a Hugging Face model folder "
            f"(save_pretrained / ExportPretrained); " + (f"{found}: pass one of them" if found else
                                                         "give a checkpoint file written by `ift fit` or an export folder")
        )
    try:
        tok = build_tokenizer(tokenizer, path)
    except (OSError, ValueError) as error:
        raise PredictError(f"--policy {path}: no tokenizer could be loaded from the folder ({error}); "
                           f"give one with --tokenizer (char, char:CHARS, a folder or hub id)") from None
    try:
        policy = build_policy(path, tok)
    except OSError as error:
        raise PredictError(f"--policy {path}: {error}") from None
    return LoadedPolicy(policy, tok, path, "folder")
