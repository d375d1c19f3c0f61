"""Refuse a ``model`` (or ``tokenizer``) name that can be neither a preset, a folder nor a
hub id, before anything tries the hub: a typo in a preset name or a missing folder would
otherwise spend a minute in network retries and end in a message about repo ids.

A local folder is also checked for what ``from_pretrained`` will read from it (a model's
``config.json``, a tokenizer's files), so that an incomplete folder is named as such rather
than reported by transformers as a config without a ``model_type``.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Iterable, List

#: What a Hugging Face hub id looks like: ``name`` or ``owner/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
#: Leading folders that mark a name as a path of this project's outputs, never a hub id
#: (the shipped configs write their models under ``runs/``).
LOCAL_PREFIXES = ("runs/",)
#: The file ``from_pretrained`` reads first from a model folder.
MODEL_CONFIG_FILE = "config.json"
#: Files of which a tokenizer folder holds at least one (fast, BPE, WordPiece, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")
#: Where an ift run writes a model folder, for messages.
EXPORT_HINT = ("a folder written by save_pretrained, e.g. an ift export (ift.callbacks.ExportPretrained writes "
               "<dirpath>/final, by default <run folder>/export/final)")


class ModelFolderError(FileNotFoundError):
    """A local model or tokenizer folder that lacks the files ``from_pretrained`` reads; the
    message names the folder, what it lacks, what it holds and the fix."""


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` is written as a file-system path rather than as a hub id
    (``owner/name`` has one slash and only letters, digits, ``.``, ``_`` and ``-``).

    A name that starts with ``/``, ``./``, ``../``, ``~`` or ``runs/``, ends with a slash,
    has more than one slash, or whose first part is an existing local folder (``models/x``
    when ``models/`` exists here) is a path: it must exist, it is never sent to the hub."""
    if name.startswith(("/", "./", "../", "~", *LOCAL_PREFIXES)) or name.endswith(("/", os.sep)):
        return True
    if name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        return True
    if "/" in name and os.path.isdir(name.split("/", 1)[0]):
        return True  # partly exists here: a local path with a missing tail, not an owner/name on the hub
    return not HUB_ID.match(name)


def check_pretrained_source(name: str, presets: Iterable[str], what: str = "model") -> None:
    """Refuse ``name`` when it is not an existing folder and is written as a path
    (``FileNotFoundError``, naming the folder looked for) or is a near-miss of a preset name
    (``ValueError``); both list the presets."""
    if os.path.isdir(os.path.expanduser(name)):
        return
    presets = sorted(presets)
    listed = ", ".join(presets)
    if looks_like_a_path(name):
        raise FileNotFoundError(
            f"{what} {name!r}: no folder {os.path.abspath(os.path.expanduser(name))!r} exists (and it is not a "
            f"preset: {listed}). Give a folder written by save_pretrained (e.g. an ift export), a .gguf file, "
            f"a hub id such as 'owner/name', or a preset."
        )
    close = difflib.get_close_matches(name, presets, n=1, cutoff=0.75)
    if close:
        raise ValueError(
            f"{what} {name!r} is not a preset (did you mean {close[0]!r}? presets: {listed}), and no folder of "
            f"that name exists here. A hub id is used as given only when it is not this close to a preset."
        )


def _contents(folder: str, limit: int = 12) -> str:
    entries = sorted(os.listdir(folder))
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries)} in all)" if len(entries) > limit else "")
    return shown or "nothing: it is empty"


def _what_else_it_is(folder: str) -> List[str]:
    """Hints from what the folder holds instead: a GGUF file, Lightning checkpoints."""
    entries = os.listdir(folder)
    hints = []
    gguf = sorted(entry for entry in entries if entry.lower().endswith(".gguf"))
    if gguf:
        hints.append(f"it holds the GGUF file {gguf[0]!r}: give that file's path ({os.path.join(folder, gguf[0])}) "
                     f"or {{folder: {folder}, gguf_file: {gguf[0]}}}")
    if any(entry.endswith(".ckpt") for entry in entries) or "checkpoints" in entries:
        hints.append("it holds Lightning checkpoints (.ckpt), which are not a model folder: resume one with "
                     "--ckpt_path FILE, or take the run's export (ift.callbacks.ExportPretrained)")
    return hints


def check_model_folder(folder: str, what: str = "model") -> None:
    """Refuse an existing local folder without ``config.json`` (:class:`ModelFolderError`):
    ``from_pretrained`` would fail with transformers' "Should have a `model_type` key"."""
    local = os.path.expanduser(folder)
    if os.path.isfile(os.path.join(local, MODEL_CONFIG_FILE)):
        return
    hints = "; ".join(_what_else_it_is(local))
    raise ModelFolderError(
        f"{what} {folder!r}: the folder {os.path.abspath(local)} has no {MODEL_CONFIG_FILE}, so it is not a model "
        f"folder (it holds {_contents(local)}). Give {EXPORT_HINT}, a .gguf file, a hub id or a preset"
        + (f"; {hints}" if hints else "") + ". A folder whose save was cut short must be written again."
    )


def check_tokenizer_folder(folder: str, what: str = "tokenizer") -> None:
    """Refuse an existing local folder that holds no tokenizer file (:class:`ModelFolderError`)."""
    local = os.path.expanduser(folder)
    if any(os.path.isfile(os.path.join(local, name)) for name in TOKENIZER_FILES):
        return
    raise ModelFolderError(
        f"{what} {folder!r}: the folder {os.path.abspath(local)} holds no tokenizer (none of "
        f"{', '.join(TOKENIZER_FILES)}; it holds {_contents(local)}). "
        + ("Give a tokenizer beside it (tokenizer: a folder written by a tokenizer's save_pretrained, a hub id or "
           "'char'), or save the tokenizer into this folder (an ift export holds one)." if what == "model" else
           "Give a folder written by a tokenizer's save_pretrained (an ift export holds one), a .gguf file, 'char', "
           "a hub id, or leave it out to use the model's own tokenizer.")
    )
