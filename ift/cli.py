"""The ``ift`` command: LightningCLI for ``fit|validate|test`` plus ``ift frozen-lake`` and
``ift code-pass-rate``."""

from __future__ import annotations

import sys
from typing import List, Optional

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

import ift.objectives  # noqa: F401  (registers objective classes for short class_path names)
from ift.callbacks.save_config import SaveRunConfig
import ift.data  # noqa: F401  (registers data module classes for short class_path names)
import ift.tasks.frozen_lake  # noqa: F401  (registers the Frozen Lake classes for short class_path names)
import ift.tasks.arithmetic  # noqa: F401  (registers ArithmeticDataModule for short class_path names)
import ift.tasks.code  # noqa: F401  (registers CodeTaskDataModule for short class_path names)
from ift.modules import FineTuneModule

EXTRA_COMMANDS = {"frozen-lake": "ift.tasks.frozen_lake.command:main", "code-pass-rate": "ift.tasks.code.command:main"}


class IFTCLI(LightningCLI):
    """LightningCLI for FineTuneModule. The data module is chosen by ``data.class_path``.

    There is deliberately no default data class: jsonargparse carries the init_args of a
    default class over to the class the user names (a chat data module would silently
    inherit the arithmetic task's ``max_length``).
    """


def unknown_objective_hint(args: List[str]) -> Optional[str]:
    """If ``args`` names an objective class that does not exist, say which ones do."""
    from ift.objectives import available_objectives

    known = available_objectives()
    for index, arg in enumerate(args):
        value = None
        if arg.startswith("--model.objective="):
            value = arg.split("=", 1)[1]
        elif arg == "--model.objective" and index + 1 < len(args):
            value = args[index + 1]
        if value and not value.lstrip().startswith(("{", "[")) and value.split(".")[-1] not in known:
            return f"unknown objective {value!r}; valid objectives: {', '.join(known)}"
    return None


def main(args: Optional[List[str]] = None):
    """Entry point of ``ift``; tests call ``main([...])`` with the same words as the shell."""
    from_console = args is None
    args = list(sys.argv[1:] if args is None else args)
    if args and args[0] in EXTRA_COMMANDS:
        module_name, function = EXTRA_COMMANDS[args[0]].split(":")
        module = __import__(module_name, fromlist=[function])
        return getattr(module, function)(args[1:])
    if args[:1] in (["-h"], ["--help"]):
        # LightningCLI's help lists fit/validate/test only; name the extra commands too.
        print("ift: also `ift frozen-lake --help` (the Frozen Lake comparison of every objective) and\n"
              "`ift code-pass-rate --help` (held-out pass rate of a checkpoint on the built-in code task)\n")
    hint = unknown_objective_hint(args)
    if hint:
        raise SystemExit(f"ift: error: {hint}")
    try:
        cli = IFTCLI(
            FineTuneModule,
            pl.LightningDataModule,
            subclass_mode_data=True,
            args=None if from_console else args,  # LightningCLI reads sys.argv itself
            # Each run saves its resolved config in its own versioned folder (and in W&B).
            save_config_callback=SaveRunConfig,
        )
    except SystemExit as exit_error:
        _explain_objective_error(exit_error)
        raise
    # The console script does sys.exit(main()): returning the CLI object would exit with 1.
    return None if from_console else cli


def _explain_objective_error(exit_error: SystemExit) -> None:
    """jsonargparse already printed its error; add the list of objectives when relevant."""
    if exit_error.code not in (0, None):
        from ift.objectives import available_objectives

        print(f"ift: valid objectives (model.objective.class_path): {', '.join(available_objectives())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    main()
