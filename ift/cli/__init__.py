"""The ``ift`` command: LightningCLI for ``fit|validate|test`` plus the commands of
:data:`ift.cli.commands.COMMANDS` (``ift frozen-lake``, ``ift code-pass-rate``,
``ift code-pairs`` and ``ift predict``), whose parsers jsonargparse builds from their
arguments dataclasses as LightningCLI builds ``fit``'s."""

from __future__ import annotations

import inspect
import re
import sys
import time
from typing import List, Optional

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import ift.objectives  # noqa: F401  (registers objective classes for short class_path names)
from ift.callbacks.resume_settings import OptimizerSettingsOnResume
from ift.callbacks.line_progress import add_progress_every_argument, line_progress_unless_terminal
from ift.callbacks.save_config import SaveRunConfig
from ift.cli.commands import COMMANDS, commands_help
from ift.cli.class_swaps import carried_arguments_notices
from ift.cli.config_files import check_config_files
from ift.cli.input_paths import check_input_paths
from ift.cli.outputs import check_output_folders
from ift.cli.resume import read_checkpoint, refusal_message, resolve_ckpt_path, ResumeError, weights_message
from ift.cli.resume_differences import optimizer_keys, resolve_class, resume_differences, weight_differences
import ift.data  # noqa: F401  (registers data module classes for short class_path names)
import ift.tasks.frozen_lake  # noqa: F401  (registers the Frozen Lake classes for short class_path names)
import ift.lab.frozen_lake  # noqa: F401  (registers FrozenLakeMonitor for a short class_path name)
import ift.tasks.arithmetic  # noqa: F401  (registers ArithmeticDataModule for short class_path names)
import ift.tasks.code  # noqa: F401  (registers CodeTaskDataModule for short class_path names)
from ift.modules import FineTuneModule
from ift.cli.summary import known_run_folder, summarize_run
from ift.core.subclasses import init_argument_names
from ift.cli.quiet import print_verbose_help, quiet_third_party_output, take_verbose_flag


class IFTArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, remembering its error messages so that ``ift`` adds hints
    only to the errors they are about."""

    errors: List[str] = []

    def error(self, message: str, ex: Optional[Exception] = None):
        IFTArgumentParser.errors.append(str(message))
        return super().error(message, ex)


class IFTCLI(LightningCLI):
    """LightningCLI for FineTuneModule. The data module is chosen by ``data.class_path``.

    There is deliberately no default data class: jsonargparse carries the init_args of a
    default class over to the class the user names (a chat data module would silently
    inherit the arithmetic task's ``max_length``).

    ``fit`` differs from LightningCLI's (see :mod:`ift.cli.resume`, :mod:`ift.cli.outputs` and
    :mod:`ift.cli.input_paths`): before anything is built every path the run reads is checked
    to exist; before the first step every output folder is checked to be writable; with ``--ckpt_path``
    the config is kept rather than overwritten by the checkpoint's hyper-parameters (settings
    that may change on resume are honoured and printed, the others refused with a list of
    differences), ``last`` is the newest checkpoint of an earlier run, and a cut-short file
    is named as such.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_class", IFTArgumentParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        add_progress_every_argument(parser)

    def _instantiate_trainer(self, config, callbacks):
        # Plain progress lines instead of Lightning's bar when stderr is not a terminal.
        every = self._get(self.config, "progress_every")
        return super()._instantiate_trainer(config, callbacks + line_progress_unless_terminal(config, callbacks, every))

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        IFTArgumentParser.errors.clear()  # parsed: a later SystemExit (Ctrl-C, a training error) is not a parse error

    def instantiate_classes(self) -> None:
        # A class that refuses its arguments (``PPO: invalid max_new_tokens=0``) reaches the
        # user through jsonargparse's list of every type the argument could have been; say
        # the class's own sentence instead.
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as error:
            explanation = _explain_construction_error(error)
            if explanation is None:
                raise
            print(f"ift: error: {explanation}", file=sys.stderr)
            raise SystemExit(2) from None

    def _parse_ckpt_path(self) -> None:
        # LightningCLI would lay the checkpoint's hyper-parameters over the user's config here,
        # silently; for fit, before_fit compares them instead. validate/test keep Lightning's way
        # (evaluating a checkpoint with the model it was trained as).
        if self.config.get("subcommand") == "fit":
            return
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        # Every path the run reads, before any model or data is loaded (ift.cli.input_paths).
        config = self.config[self.subcommand] if self.subcommand else self.config
        refuse_top_level_optimizer(config)
        check_input_paths(config.as_dict(), config.get("config") or ())

    def before_fit(self) -> None:
        self._started = time.perf_counter()
        self._resumed_step: Optional[int] = None
        check_output_folders(self.trainer)
        config = self.config_init[self.subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path:
            config["ckpt_path"] = self._prepare_resume(str(ckpt_path))

    def before_validate(self) -> None:
        self._started = time.perf_counter()

    def before_test(self) -> None:
        self._started = time.perf_counter()

    def after_fit(self) -> None:
        self._print_summary()

    def after_validate(self) -> None:
        self._print_summary()

    def after_test(self) -> None:
        self._print_summary()

    def _print_summary(self) -> None:
        """The end-of-run lines: final metrics and every file this run wrote (rank zero)."""
        if not self.trainer.is_global_zero:
            return
        seconds = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        text = summarize_run(self.trainer, self.subcommand, seconds, known_run_folder(self.trainer),
                             getattr(self, "_resumed_step", None))
        print(text, file=sys.stderr)

    def _prepare_resume(self, ckpt_path: str) -> str:
        """The checkpoint file to resume from, after checking it and the config against it."""
        path = resolve_ckpt_path(self.trainer, ckpt_path)
        if path != ckpt_path:
            print(f"ift: --ckpt_path {ckpt_path}: resuming from {path}", file=sys.stderr)
        checkpoint = read_checkpoint(path)
        if checkpoint is None:
            return path
        self._resumed_step = int(checkpoint.get("global_step", 0))
        self._dump_config()
        current = self.config_dump.get("model") or {}
        refused, honoured = resume_differences(checkpoint, current)
        weights = [] if refused else weight_differences(checkpoint["state_dict"], self.model)
        del checkpoint
        if refused:
            raise ResumeError(refusal_message(path, refused))
        if weights:
            raise ResumeError(weights_message(path, weights))
        for key, old, new in honoured:
            print(f"ift: resuming with {key} = {new!r} (the checkpoint's run had {old!r})", file=sys.stderr)
        keys = optimizer_keys(honoured)
        if keys:
            self.trainer.callbacks.append(OptimizerSettingsOnResume(keys))
        return path


def refuse_top_level_optimizer(config) -> None:
    """LightningCLI's own ``--optimizer`` / ``--lr_scheduler`` would replace the module's
    ``configure_optimizers`` and so silently drop ``model.optimizer`` and ``model.lr_scheduler``
    (Lightning only warns). The keys stay parseable (every saved ``config.yaml`` has them, as
    null); a value is refused, pointing to the module's arguments."""
    given = [key for key in ("optimizer", "lr_scheduler") if config.get(key) is not None]
    if given:
        moved = ", ".join(f"--{key} -> --model.{key}" for key in given)
        raise SystemExit(f"ift: error: {', '.join('--' + key for key in given)} would replace the module's own optimizer "
                         f"setup and drop model.optimizer / model.lr_scheduler; give them to the module instead "
                         f"({moved}; in YAML under model:)")


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
    if args and args[0] in COMMANDS:
        result = COMMANDS[args[0]](args[1:])
        # The console script does sys.exit(main()): a returned dict would exit with status 1.
        return None if from_console else result
    if args[:1] in (["-h"], ["--help"]):
        # LightningCLI's help lists fit/validate/test only; name the other commands too.
        print(commands_help())
    print_verbose_help(args)
    args, verbose = take_verbose_flag(args)  # ours, not LightningCLI's: taken out before it parses
    if from_console and verbose:
        sys.argv[1:] = args
    IFTArgumentParser.errors.clear()
    hint = unknown_objective_hint(args)
    if hint:
        raise SystemExit(f"ift: error: {hint}")
    check_config_files(args)
    for notice in carried_arguments_notices(args):
        print(notice, file=sys.stderr)
    try:
        with quiet_third_party_output(enabled=not verbose):
            cli = IFTCLI(
                FineTuneModule,
                pl.LightningDataModule,
                subclass_mode_data=True,
                args=None if from_console else args,  # LightningCLI reads sys.argv itself
                # Each run saves its resolved config in its own versioned folder (and in W&B).
                save_config_callback=SaveRunConfig,
            )
    except SystemExit as exit_error:
        if not (_explain_removed_arguments(exit_error) or _explain_unnamed_optimizer(exit_error)):
            _explain_objective_error(exit_error)
        raise
    # The console script does sys.exit(main()): returning the CLI object would exit with 1.
    return None if from_console else cli


def _explain_unnamed_optimizer(exit_error: SystemExit) -> bool:
    """jsonargparse already printed its error; when it is an optimizer argument given without an
    optimizer class (``--model.optimizer.lr 0.01`` over a config that names none), say to name
    the class. ``model.optimizer`` has no default class on purpose: jsonargparse would carry a
    default class's arguments (AdamW's ``weight_decay: 0.01``) into the class a config names.
    True when it did."""
    if exit_error.code in (0, None) or not IFTArgumentParser.errors:
        return False
    message = IFTArgumentParser.errors[-1]
    if 'Parser key "model.optimizer"' not in message or "class_path='torch.optim.Optimizer'" not in message:
        return False
    print("ift: model.optimizer names no class here (null means AdamW with torch's defaults); name it before its "
          "arguments: --model.optimizer torch.optim.AdamW --model.optimizer.lr 0.01, or in YAML "
          "optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.01}}", file=sys.stderr)
    return True


def _explain_removed_arguments(exit_error: SystemExit) -> bool:
    """jsonargparse already printed its error; when it is about a module argument that moved
    into a callback (``model.eval_accuracy``...), say where it went. True when it did."""
    if exit_error.code in (0, None) or not IFTArgumentParser.errors:
        return False
    from ift.modules.finetune import REMOVED_ARGUMENTS, removed_arguments_message

    message = IFTArgumentParser.errors[-1]
    names = [name for name in REMOVED_ARGUMENTS if re.search(rf"\bmodel\.{name}\b", message)]
    if names:
        print(f"ift: {removed_arguments_message(names)}", file=sys.stderr)
    return bool(names)


def _explain_objective_error(exit_error: SystemExit) -> None:
    """jsonargparse already printed its error; when it is about the objective, add the list of
    objectives, or the arguments the named objective accepts. Nothing after Ctrl-C, a
    training error or any other parse error."""
    if exit_error.code in (0, None) or not IFTArgumentParser.errors:
        return
    message = IFTArgumentParser.errors[-1]
    if "model.objective" not in message and "objective" not in message.split("\n", 1)[0]:
        return
    for class_path, option in re.findall(r"class_path '([^']+)':\s*Option '([^']+)' is not accepted", message):
        accepted = _accepted_arguments(class_path)
        if accepted is not None:
            print(f"ift: {class_path.split('.')[-1]} does not accept {option!r}; its arguments "
                  f"(model.objective.init_args.*): {', '.join(accepted)}", file=sys.stderr)
            return
    from ift.objectives import available_objectives

    # A known objective whose own argument is wrong (a reward of the wrong class, say): the
    # list of objectives would point the user at the wrong key.
    for class_path, key in re.findall(r"Problem with given class_path '([^']+)':\s*Parser key \"([^\"]+)\"", message):
        if class_path.split(".")[-1] in available_objectives():
            print(f"ift: the objective {class_path.split('.')[-1]} exists; the error above is in its argument "
                  f"model.objective.init_args.{key}", file=sys.stderr)
            return
    print(f"ift: valid objectives (model.objective.class_path): {', '.join(available_objectives())}", file=sys.stderr)


def _accepted_arguments(class_path: str) -> Optional[List[str]]:
    """The argument names of the class at ``class_path`` (None if it cannot be imported)."""
    cls = resolve_class(class_path)
    return init_argument_names(cls) if inspect.isclass(cls) else None


#: How jsonargparse starts the error of an argument that none of its possible types accepted.
_UNION_FAILURE = "Does not validate against any of the Union subtypes"


def _explain_construction_error(error: BaseException) -> Optional[str]:
    """The sentence of the class that refused its arguments, when ``error`` is jsonargparse's
    wrapping of it (None for any other error, which is then raised as it is).

    jsonargparse chains the class's own exception as the cause of its "Does not validate
    against any of the Union subtypes" list, which also names every other type the argument
    could have been; the cause is what the user needs. When the objective is the one at
    fault, the setting's place (``model.objective``) is named too.
    """
    if _UNION_FAILURE not in str(error):
        return None
    cause: Optional[BaseException] = error
    seen = 0
    while cause is not None and _UNION_FAILURE in str(cause) and seen < 32:
        cause, seen = cause.__cause__, seen + 1
    sentence = str(cause).strip() if cause is not None else _first_listed_error(str(error))
    if not sentence:
        return None
    given = re.search(r"Given value: Namespace\(class_path='([^']+)'", str(error))
    if given and _is_objective(given.group(1)):
        name = given.group(1).split(".")[-1]
        # Inside a recipe (Sequential, Mix) the sentence names the inner class: name the outer one.
        where = "model.objective" if sentence.startswith(f"{name}:") else f"model.objective, a {name}"
        return f"{sentence} (in {where})"
    return sentence


def _first_listed_error(message: str) -> str:
    """The first entry of jsonargparse's ``Errors:`` list that is not "Expected a <type>"."""
    block = message.split("Errors:", 1)[-1].split("Given value", 1)[0]
    for line in block.splitlines():
        entry = line.strip()
        if entry.startswith("- ") and not entry[2:].startswith("Expected a "):
            return entry[2:]
    return ""


def _is_objective(class_path: str) -> bool:
    from ift.objectives import Objective

    cls = resolve_class(class_path)
    return inspect.isclass(cls) and issubclass(cls, Objective)
