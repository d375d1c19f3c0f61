"""The ``--task`` option of ``ift code-pairs`` and ``ift code-pass-rate``: which code problems.

Its value is a JSON object of :class:`~ift.tasks.code.CodeTaskDataModule` arguments, given
inline (``--task '{"num_train": 200}'``) or as the path of a file holding one
(``--task task.json``). It is read and checked before any model loads: a value that is not
JSON, a file that is not there, a key the command would not use or a value the data module
refuses stops with a message naming the fix.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from ift.tasks.code.data import CodeTaskDataModule

#: The arguments that decide the problems (the task generator's and the splits' sizes).
PROBLEM_KEYS = ("num_train", "num_val", "num_test", "max_steps", "max_constant", "num_tests", "min_input",
                "max_input", "task_seed")
EXAMPLE = '{"num_train": 200, "task_seed": 1}'


def read_task(value: Optional[str], keys: Sequence[str] = PROBLEM_KEYS, flag: str = "--task") -> Dict[str, Any]:
    """The arguments ``value`` gives (``{}`` for None), checked: only ``keys``, and values that
    :class:`CodeTaskDataModule` accepts. Raises ValueError naming ``flag`` and the fix."""
    if value is None:
        return {}
    text, origin = value, f"{flag} {value}"
    if not value.lstrip().startswith(("{", "[")):
        path = os.path.expanduser(value)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                text, origin = handle.read(), f"{flag} {value} (the file)"
        elif os.path.isdir(path):
            raise ValueError(f"{flag} {value} is a folder; give a JSON object inline, e.g. {flag} '{EXAMPLE}', or the "
                             f"path of a JSON file holding one")
        elif value.lower().endswith((".json", ".yaml", ".yml")) or os.sep in value:
            raise ValueError(f"{flag} {value}: no such file; give a JSON object inline, e.g. {flag} '{EXAMPLE}', or "
                             f"the path of a JSON file holding one")
    try:
        task = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{origin} is not JSON ({error}); give a JSON object inline, e.g. {flag} '{EXAMPLE}', or the "
                         f"path of a JSON file holding one") from None
    if not isinstance(task, dict):
        raise ValueError(f"{origin}: a JSON object of CodeTaskDataModule arguments is needed, not "
                         f"{type(task).__name__} {json.dumps(task)[:60]}; e.g. {flag} '{EXAMPLE}'")
    unknown = [key for key in task if key not in keys]
    if unknown:
        others = [key for key in unknown if key in _data_module_arguments()]
        why = (f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not used here; " if others else "")
        raise ValueError(f"{flag}: unknown key(s) {', '.join(map(repr, unknown))} ({why}its keys are "
                         f"CodeTaskDataModule's arguments that decide the problems: {', '.join(keys)})")
    try:
        CodeTaskDataModule(**task).all_examples()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{origin}: {error}") from None
    return task


def _data_module_arguments() -> Sequence[str]:
    import inspect

    return [name for name in inspect.signature(CodeTaskDataModule.__init__).parameters if name != "self"]


__all__ = ["EXAMPLE", "PROBLEM_KEYS", "read_task"]
