"""Which local paths a data module's settings name, and which of them are missing.

A data source (``train_data``, ``val_data``, ``test_data``) is a local file, a local folder
or a ``datasets.load_dataset`` name (a hub dataset such as ``openai/gsm8k``, or a builder
such as ``json``). A name written as a path (``./x``, ``/x``, ``~/x``, ``runs/x``, a file
suffix such as ``.jsonl``, more than one slash, or a first folder that exists here) must
exist; a hub name cannot be checked offline and is left to ``datasets``. Every entry of
``dataset_kwargs.data_files`` is a local file (or a glob pattern that must match one),
relative to the source folder when the source is a local folder, else to the working folder.

:func:`data_path_problems` lists the missing ones with the setting that names each, so that
the data module (at ``setup``, before any split is read) and ``ift fit`` (before anything is
built) can stop with all of them at once.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ift.core.model_source import looks_like_a_path
from ift.data.records import FILE_SUFFIXES

#: Characters that make a ``data_files`` entry a glob pattern.
GLOB_CHARACTERS = "*?["


def is_local_data_path(source: str) -> bool:
    """Whether the data source ``source`` is written as a local path (it must then exist)."""
    if os.path.exists(os.path.expanduser(source)):
        return True
    return os.path.splitext(source)[1].lower() in FILE_SUFFIXES or looks_like_a_path(source)


def missing_data_source(source: Optional[str]) -> Optional[str]:
    """Why ``source`` cannot be read from disk, or None (it exists, is absent, or is a hub name)."""
    if not isinstance(source, str) or "://" in source or not is_local_data_path(source):
        return None
    local = os.path.expanduser(source)
    if os.path.exists(local):
        return None
    return f"no such file or folder (looked for {os.path.abspath(local)})"


def _data_file_entries(data_files: Any, setting: str) -> Iterator[Tuple[str, Any]]:
    """``(setting, entry)`` for each path in ``data_files`` (a path, a list, or a dict of either)."""
    if isinstance(data_files, dict):
        for split, value in data_files.items():
            yield from _data_file_entries(value, f"{setting}.{split}")
    elif isinstance(data_files, (list, tuple)):
        for index, value in enumerate(data_files):
            yield from _data_file_entries(value, f"{setting}[{index}]")
    else:
        yield setting, data_files


def missing_data_file(entry: Any, base: str = "") -> Optional[str]:
    """Why the ``data_files`` entry ``entry`` names nothing on disk, or None."""
    if not isinstance(entry, str) or "://" in entry:
        return None
    path = os.path.join(base, os.path.expanduser(entry)) if base else os.path.expanduser(entry)
    if any(character in entry for character in GLOB_CHARACTERS):
        return None if glob.glob(path, recursive=True) else f"the pattern matches no file (in {os.path.abspath(path)})"
    return None if os.path.exists(path) else f"no such file (looked for {os.path.abspath(path)})"


def data_path_problems(sources: Dict[str, Optional[str]], dataset_kwargs: Optional[Dict[str, Any]],
                       prefix: str = "data.init_args.") -> List[Tuple[str, str, str]]:
    """``[(setting, path, why), ...]`` for every missing local path among the sources
    (``{"train": train_data, ...}``) and ``dataset_kwargs["data_files"]``; ``prefix`` is the
    settings' place in the config."""
    problems: List[Tuple[str, str, str]] = []
    folders = []
    for split, source in sources.items():
        why = missing_data_source(source)
        if why:
            problems.append((f"{prefix}{split}_data", str(source), why))
        elif isinstance(source, str) and os.path.isdir(os.path.expanduser(source)):
            folders.append(os.path.expanduser(source))
    data_files = (dataset_kwargs or {}).get("data_files")
    if data_files is not None:
        # datasets reads data_files relative to the dataset folder when the source is one.
        base = folders[0] if folders else ""
        for setting, entry in _data_file_entries(data_files, f"{prefix}dataset_kwargs.data_files"):
            why = missing_data_file(entry, base)
            if why:
                problems.append((setting, str(entry), why))
    return problems


def describe_problems(problems: List[Tuple[str, str, str]]) -> str:
    """The problems as one message: each path, why, and the setting to fix."""
    rows = "; ".join(f"{setting.rsplit('init_args.', 1)[-1]} {path}: {why}; fix {setting}"
                     for setting, path, why in problems)
    return f"{rows} (relative paths start at {os.getcwd()}), or leave an optional split out"
