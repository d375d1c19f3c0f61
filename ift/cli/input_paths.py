"""``ift fit`` checks every path the run will read before anything is built.

A missing reward-model folder would otherwise be found at the first scoring (after the
policy loaded and the first rollout was sampled), a missing validation file after the
training set was tokenized, a model folder without ``config.json`` inside transformers.
:func:`check_input_paths` walks the resolved config once, before LightningCLI instantiates
any class, and stops with every problem at once: the setting (its dotted config key), the
path, why it cannot be used, and, when the path is an output of a shipped config (a
reward model written by ``configs/reward/reward_model.yaml``), the command that creates it.

The settings read are recognised by their argument names, wherever they sit in the config
(a reward inside a recipe's stage included):

* ``model.model`` and any ``model_name_or_path``: a model (a preset, a ``.gguf`` file, a
  folder holding ``config.json``, or a hub id); a ``model_name_or_path`` of a
  :class:`~ift.rewards.RewardModelScore` must be a sequence classifier with its head;
* any ``tokenizer``: ``char``, a ``.gguf`` file, a folder holding a tokenizer, or a hub id;
* ``train_data``/``val_data``/``test_data`` and ``dataset_kwargs.data_files``: data files
  and folders (:mod:`ift.data.source_paths`).

A hub id (``owner/name`` that is not a local path) cannot be checked offline and is left to
``from_pretrained``/``datasets``; a name written as a path (``./``, ``/``, ``~``, ``runs/``,
more than one slash, or a first folder that exists here) must exist. ``--ckpt_path`` is
checked by :mod:`ift.cli.resume`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import yaml

from ift.cli.resume_differences import resolve_class
from ift.core.model_factory import check_model_spec, check_tokenizer_spec
from ift.data.source_paths import data_path_problems
from ift.rewards.reward_model import RewardModelScore, check_reward_model_source

#: The argument names of data sources, checked together (with ``dataset_kwargs``) per data module.
DATA_SETTINGS = ("train_data", "val_data", "test_data")
#: Callback arguments that name the folder a run writes (for "which config creates this path").
OUTPUT_SETTINGS = ("dirpath", "output_dir")
#: The errors a check raises for a path that cannot be used (anything else is a bug, not a path).
PATH_ERRORS = (FileNotFoundError, ValueError, ModuleNotFoundError, OSError)


class InputPathError(SystemExit):
    """A path the run would read does not exist or cannot be used; the message names each
    path, its setting, and the command that creates it when a shipped config does."""

    def __init__(self, message: str):
        super().__init__(f"ift: error: {message}")


Problem = Tuple[str, Any, str]  # (setting, value, why)


def _walk(node: Any, key: str, owner: Any = None) -> Iterator[Tuple[str, str, Any, Dict[str, Any], Any]]:
    """``(setting, name, value, siblings, owner class)`` for every entry of every dict in the
    config; ``owner`` is the class whose ``init_args`` hold the entry (None at the top)."""
    if isinstance(node, dict):
        if "class_path" in node and isinstance(node.get("init_args"), dict):
            owner = resolve_class(node["class_path"])
        for name, value in node.items():
            setting = f"{key}.{name}" if key else str(name)
            yield setting, str(name), value, node, owner
            yield from _walk(value, setting, owner)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f"{key}[{index}]", owner)


def _is_reward_model(owner: Any) -> bool:
    return isinstance(owner, type) and issubclass(owner, RewardModelScore)


def _check(setting: str, value: Any, check) -> Optional[Problem]:
    try:
        check()
    except PATH_ERRORS as error:
        return setting, value, str(error)
    return None


def input_path_problems(config: Dict[str, Any]) -> List[Problem]:
    """Every path-valued setting of the resolved ``config`` (a dict, as ``--print_config``
    shows it) that names a missing or unusable file or folder."""
    problems: List[Problem] = []
    for setting, name, value, siblings, owner in _walk(config, ""):
        if value is None:
            continue
        problem = None
        if setting == "model.model" or (name == "model_name_or_path" and not _is_reward_model(owner)):
            problem = _check(setting, value, lambda: check_model_spec(value, setting))
        elif name == "model_name_or_path":
            label = siblings.get("label_index", 0)
            problem = _check(setting, value, lambda: check_reward_model_source(str(value), int(label or 0)))
        elif name == "tokenizer":
            problem = _check(setting, value, lambda: check_tokenizer_spec(value, setting))
        elif name == DATA_SETTINGS[0]:  # once per data module: its sources and data_files together
            prefix = setting[: -len(name)]
            sources = {split.split("_")[0]: siblings.get(split) for split in DATA_SETTINGS}
            kwargs = siblings.get("dataset_kwargs") if isinstance(siblings.get("dataset_kwargs"), dict) else None
            problems.extend((where, path, why) for where, path, why in data_path_problems(sources, kwargs, prefix))
        if problem is not None:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------- who writes a path
def _config_roots(config_files: Iterable[Any]) -> List[Path]:
    """The folders to search for the config that writes a path: the ``configs`` folder
    holding each given config file (else the file's own folder), and ``./configs``."""
    roots: List[Path] = []
    for item in config_files:
        path = Path(os.path.abspath(str(getattr(item, "absolute", None) or item)))
        folder = path.parent
        root = next((parent for parent in [folder, *folder.parents] if parent.name == "configs"), folder)
        roots.append(root)
    if os.path.isdir("configs"):
        roots.append(Path(os.path.abspath("configs")))
    return list(dict.fromkeys(roots))


def _written_folders(config: Any) -> Iterator[Tuple[str, str]]:
    """``(folder, callback class)`` for each output folder a config file's callbacks name."""
    trainer = config.get("trainer") if isinstance(config, dict) else None
    callbacks = trainer.get("callbacks") if isinstance(trainer, dict) else None
    if isinstance(callbacks, dict):
        callbacks = [callbacks]
    for callback in callbacks if isinstance(callbacks, list) else []:
        init = callback.get("init_args") if isinstance(callback, dict) else None
        for name in OUTPUT_SETTINGS:
            if isinstance(init, dict) and isinstance(init.get(name), str):
                yield init[name], f"{str(callback.get('class_path', '')).split('.')[-1]} {name}"


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def producers(path: str, config_files: Sequence[Any]) -> List[str]:
    """``ift fit --config FILE`` commands of the configs (beside the given ones) whose run
    writes ``path`` or a folder holding it."""
    target = os.path.abspath(os.path.expanduser(path))
    found: List[str] = []
    for root in _config_roots(config_files):
        for config_file in sorted(root.rglob("*.yaml")):
            try:
                config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                continue
            for folder, where in _written_folders(config):
                written = os.path.abspath(os.path.expanduser(folder))
                if target == written or target.startswith(written + os.sep):
                    found.append(f"`ift fit --config {_shown(config_file)}` (its {where} is {folder})")
    return list(dict.fromkeys(found))


def _looks_like_a_run_output(path: str) -> bool:
    parts = Path(path).parts
    return bool(parts) and (parts[0] == "runs" or "export" in parts or parts[-1] == "final")


def creation_hint(value: Any, config_files: Sequence[Any]) -> str:
    """How the missing ``value`` is made: the shipped config that writes it, or a word on runs' outputs."""
    if not isinstance(value, str) or os.path.exists(os.path.expanduser(value)):
        return ""
    commands = producers(value, config_files)
    if commands:
        return f"It is written by {' or '.join(commands)}: run that first (from the same folder), or point the " \
               f"setting at an existing one."
    if _looks_like_a_run_output(value):
        return ("It looks like the output of an earlier `ift fit` run (ift.callbacks.ExportPretrained writes "
                "<dirpath>/final, by default <run folder>/export/final): run that training first, or point the "
                "setting at an existing folder.")
    return ""


def check_input_paths(config: Dict[str, Any], config_files: Sequence[Any] = ()) -> None:
    """Stop with an :class:`InputPathError` listing every path the run would read that is
    missing or unusable (see the module docstring)."""
    problems = input_path_problems(config)
    if not problems:
        return
    rows = []
    for setting, value, why in problems:
        hint = creation_hint(value, config_files)
        rows.append(f"  {setting} = {value}\n    {why}" + (f"\n    {hint}" if hint else ""))
    raise InputPathError(
        "paths this run would read that do not exist or cannot be used (checked before anything was loaded; "
        f"relative paths start at {os.getcwd()}):\n" + "\n".join(rows)
    )
