"""Arguments a new class inherits from the class it replaces, said before the run starts.

When a config names a class (``model.objective: {class_path: PPO, init_args: {...}}``) and a
later config or the command line names another one at the same place (``--model.objective
GRPO``), jsonargparse keeps every argument the config gave that the new class also takes:
only what is given changes. ``--config configs/arithmetic/ppo.yaml --model.objective GRPO``
trains a GRPO with PPO's ``kl_estimator: k1``, ``mini_batch_size: 64`` and
``max_new_tokens: 5``, not GRPO's own defaults. That is deliberate (a swap keeps the shared
settings), but it must not be silent: :func:`carried_arguments_notices` names each argument
carried over, with its value and where it came from, so the user can give it again.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ift.cli.config_files import config_paths
from ift.core.subclasses import init_argument_names


def _class_name(class_path: Any) -> Optional[str]:
    """The class's own name (``ift.objectives.GRPO`` and ``GRPO`` are the same class)."""
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) and class_path else None


def _accepted(class_path: str) -> Optional[set]:
    """The ``__init__`` argument names of the class (None when it cannot be found)."""
    from ift.cli.resume_differences import resolve_class

    candidates = [class_path] if "." in class_path else [f"{module}.{class_path}" for module in
                                                         ("ift.objectives", "ift.rewards", "ift.data", "torch.optim",
                                                          "ift.callbacks", "ift.tasks.arithmetic")]
    for candidate in candidates:
        cls = resolve_class(candidate)
        if inspect.isclass(cls):
            return set(init_argument_names(cls))
    return None


def _shown(value: Any) -> str:
    """A carried value in a line: a class given with arguments by its name alone."""
    if isinstance(value, dict) and "class_path" in value:
        return f"{_class_name(value['class_path'])}(...)"
    return json.dumps(value, default=str)


class _ClassSpecs:
    """The class named at each place so far, with the arguments given to it and their source."""

    def __init__(self):
        self.specs: Dict[str, Tuple[str, Dict[str, Any], str]] = {}
        self.notices: List[str] = []

    def name(self, place: str, class_path: str, init_args: Dict[str, Any], source: str) -> None:
        previous = self.specs.get(place)
        if previous is None or _class_name(previous[0]) == _class_name(class_path):
            merged = {**(previous[1] if previous else {}), **init_args}
            self.specs[place] = (class_path, merged, source)
            return
        old_class, old_args, old_source = previous
        accepted = _accepted(class_path)
        carried = {key: value for key, value in old_args.items()
                   if key not in init_args and (accepted is None or key in accepted)}
        if carried and accepted is not None:
            listed = ", ".join(f"{key}={_shown(value)}" for key, value in carried.items())
            self.notices.append(
                f"ift: {place}: {_class_name(class_path)} ({source}) replaces {_class_name(old_class)} ({old_source}) "
                f"and keeps the arguments given to it that {_class_name(class_path)} also takes: {listed}. "
                f"Give any of them again (e.g. --{place}.{next(iter(carried))} ...) for another value.")
        self.specs[place] = (class_path, {**carried, **init_args}, source)

    def walk(self, node: Any, prefix: str, source: str) -> None:
        """Record every ``{class_path, init_args}`` in a config mapping (lists are replaced whole
        by a later config, so nothing inside one is carried)."""
        if not isinstance(node, dict):
            return
        if "class_path" in node:
            init_args = node.get("init_args") or {}
            self.name(prefix, node["class_path"], dict(init_args) if isinstance(init_args, dict) else {}, source)
            node = init_args if isinstance(init_args, dict) else {}
        for key, value in node.items():
            self.walk(value, f"{prefix}.{key}" if prefix else str(key), source)


def _command_line_values(args: List[str]) -> List[Tuple[str, str]]:
    """``(key, value)`` of every ``--key value`` / ``--key=value`` in ``args``."""
    pairs = []
    for index, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--config":
            continue
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif index + 1 < len(args) and not args[index + 1].startswith("--"):
            key, value = arg[2:], args[index + 1]
        else:
            continue
        pairs.append((key, value))
    return pairs


def carried_arguments_notices(args: List[str]) -> List[str]:
    """One line per class swap that keeps arguments given to the class it replaces."""
    specs = _ClassSpecs()
    configs = config_paths(args)
    for path in configs:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                specs.walk(yaml.safe_load(handle), "", path)
        except (yaml.YAMLError, UnicodeDecodeError):
            return []  # check_config_files reports it
    pairs = _command_line_values(args)
    given = {key for key, _ in pairs}
    for key, value in pairs:
        if key not in specs.specs:
            continue
        try:
            spec = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        if isinstance(spec, str):
            spec = {"class_path": spec}
        if not isinstance(spec, dict) or "class_path" not in spec:
            continue
        # Arguments given on the command line after the swap are the user's own, not carried.
        again = {name.split(".")[-1]: None for name in given if name.startswith(f"{key}.")}
        specs.name(key, spec["class_path"], {**again, **(spec.get("init_args") or {})}, "command line")
    return specs.notices
