"""YAML syntax of the ``--config`` files, checked before LightningCLI reads them: its parser
reports a syntax error as ``in "<unicode string>", line 3``, without the file's name."""

from __future__ import annotations

import os
from typing import List, Optional

import yaml


def config_paths(args: List[str]) -> List[str]:
    """The files named by ``--config PATH`` / ``--config=PATH`` in ``args``, in order."""
    paths = []
    for index, arg in enumerate(args):
        if arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
        elif arg == "--config" and index + 1 < len(args):
            paths.append(args[index + 1])
    return paths


def yaml_syntax_error(path: str) -> Optional[str]:
    """``path:line: not valid YAML (...)`` and the fix, or None when it parses (or is not a
    file: LightningCLI then says so itself)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            yaml.safe_load(handle)
    except UnicodeDecodeError as error:
        return f"--config {path}: not valid UTF-8 ({error.reason} at byte {error.start}); save it as UTF-8"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return (f"--config {where}: not valid YAML ({problem}{column}); check the indentation (spaces, the same "
                f"depth for keys of one mapping) and the quoting there")
    return None


def check_config_files(args: List[str]) -> None:
    """Stop with ``ift: error: --config FILE:LINE: ...`` at the first config file that is not YAML."""
    for path in config_paths(args):
        message = yaml_syntax_error(path)
        if message:
            raise SystemExit(f"ift: error: {message}")
