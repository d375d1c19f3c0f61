"""Refuse a ``model`` (or ``tokenizer``) name that can be neither a preset, a folder nor a
hub id, before anything tries the hub: a typo in a preset name or a missing folder would
otherwise spend a minute in network retries and end in a message about repo ids.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Iterable

#: What a Hugging Face hub id looks like: ``name`` or ``owner/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` is written as a file-system path rather than as a hub id
    (``owner/name`` has one slash and only letters, digits, ``.``, ``_`` and ``-``)."""
    if name.startswith(("/", "./", "../", "~")) or name.endswith(("/", os.sep)):
        return True
    if name.count("/") > 1:
        return True
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
