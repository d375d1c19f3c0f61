"""The sub-commands of ``ift`` besides LightningCLI's ``fit|validate|test``, all built one way.

A sub-command is a :class:`Command`: its name, an *arguments* dataclass whose fields are
its options, and the function that runs it with an instance of that dataclass. The parser
is built from the dataclass by jsonargparse, as LightningCLI builds ``ift fit``'s from
:class:`~ift.modules.FineTuneModule`'s signature: each field's type, default and docstring
(the ``Attributes:`` section of the class docstring) are its option's type, default and
help, so nothing about an option is written twice. Every sub-command therefore also takes
``--config FILE.yaml`` (the same keys as the options) and ``--print_config`` (prints the
settings as YAML that ``--config`` reads back, and exits without running anything).

Checks of the options live in the dataclass's ``__post_init__``: a ValueError there is a
usage error (usage and message on stderr, exit status 2). Errors of the run itself that
are the user's to fix (a missing file, a checkpoint that cannot be read) are the command's
``errors``: they stop with one line, ``ift <name>: error: <message>``.

Registering a command is one entry in :data:`COMMANDS` (the CLI is the top layer, so it
imports the lab and ``ift.predict`` directly).

Spellings kept from the argparse parsers these replace: a boolean field is a flag
(``--overwrite``, ``--chat``; also ``--chat false`` and ``--no_chat``), a list field takes
its values after one flag (``--k 1 5 10``), and every option may be spelt with dashes
instead of underscores (``--max-new-tokens``, ``--no-stops``).
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import inspect
import re
import sys
import textwrap
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import docstring_parser
from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser, DefaultHelpFormatter

from ift.core.stop_signals import SIGNAL_EXIT_BASE, stop_on_signals, stopping_signal
from ift.core.stop_signals import describe as describe_signal
from ift.data.records import DataFormatError
from ift.lab.code import command as code_pass_rate
from ift.lab.code import pairs_command as code_pairs
from ift.lab.frozen_lake import command as frozen_lake
from ift.lab.code.humaneval import HumanEvalError
from ift.lab.frozen_lake.run_log import FrozenLakeError
from ift.predict import command as predict
from ift.predict.policy import PredictError

DASHES_NOTE = ("Options may also be spelt with dashes (--max-new-tokens for --max_new_tokens), and read from a YAML "
               "file with --config (--print_config prints the settings as such a file, then exits).")


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (type and default after each option's docstring), with the
    description and examples laid out as written."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One sub-command of ``ift``.

    Attributes:
        name: the word after ``ift``.
        arguments: the dataclass of its options (types, defaults and help from its fields
            and their docstrings; checks in its ``__post_init__``).
        run: does the work with an ``arguments`` instance and returns the result.
        summary: what it does, in a few words, for ``ift --help``.
        examples: the text whose lines starting with ``    ift `` are shown as examples
            (the command module's docstring).
        errors: errors of ``run`` reported as ``ift <name>: error: ...`` (exit status 1).
    """

    name: str
    arguments: type
    run: Callable[[Any], Any]
    summary: str
    examples: str = ""
    errors: Tuple[Type[BaseException], ...] = ()

    @property
    def prog(self) -> str:
        return f"ift {self.name}"

    def parser(self) -> ArgumentParser:
        """The jsonargparse parser of this command, built from ``arguments``."""
        description = "\n\n".join(textwrap.fill(paragraph, 79) for paragraph in description_of(self.arguments))
        examples = [line for line in self.examples.splitlines() if line.startswith("    ift ")]
        epilog = ("examples:\n" + "\n".join(examples) + "\n\n" if examples else "") + textwrap.fill(DASHES_NOTE, 79)
        parser = ArgumentParser(prog=self.prog, description=description, epilog=epilog,
                                formatter_class=_HelpFormatter, exit_on_error=True)
        parser.add_argument("--config", action=ActionConfigFile,
                            help="a YAML file of these options (keys as the option names, with underscores)")
        add_dataclass_options(parser, self.arguments)
        return parser

    def parse(self, argv: Optional[Sequence[str]] = None) -> Any:
        """The ``arguments`` instance that ``argv`` gives. ``--help``, ``--print_config`` and
        usage errors exit (status 0, 0 and 2)."""
        parser = self.parser()
        argv = [str(arg) for arg in (sys.argv[2:] if argv is None else argv)]
        config = parser.parse_args(underscored(argv, parser._option_string_actions))
        values = {field.name: config.get(field.name) for field in dataclasses.fields(self.arguments)
                  if field.init and field.name in config}
        try:
            return self.arguments(**values)
        except ValueError as error:
            parser.error(str(error))

    def invoke(self, argv: Optional[Sequence[str]] = None) -> Any:
        """Parse ``argv`` and run; the run's errors are raised as they are."""
        return self.run(self.parse(argv))

    def __call__(self, argv: Optional[Sequence[str]] = None) -> Any:
        """Parse ``argv`` and run; the run's ``errors`` stop with ``ift <name>: error: ...``.

        Ctrl-C and SIGTERM stop the run as an exception (:func:`stop_on_signals`), so that it
        stops its workers and says what it kept; then ``ift <name>: stopped by SIGTERM`` and
        the shell's exit status (128 + the signal: 130 for Ctrl-C, 143 for SIGTERM), with no
        traceback.
        """
        arguments = self.parse(argv)
        with stop_on_signals():
            try:
                return self.run(arguments)
            except self.errors as error:
                raise SystemExit(f"{self.prog}: error: {error}") from None
            except (KeyboardInterrupt, SystemExit) as error:
                signum = stopping_signal(error)
                if signum is None:
                    raise
                print(f"{self.prog}: stopped by {describe_signal(signum)}", file=sys.stderr, flush=True)
                raise SystemExit(SIGNAL_EXIT_BASE + signum) from None


# ------------------------------------------------------------------------- the options
def add_dataclass_options(parser: ArgumentParser, arguments: type) -> None:
    """Add one option per field of the dataclass ``arguments`` (see the module docstring).

    jsonargparse's ``add_class_arguments`` adds them, except two kinds, added here with
    the field's default and docstring so that they keep the spelling of plain flags: a
    boolean is a flag (``--chat``; ``--chat false``, ``--no_chat``), a list takes its values
    after one flag (``--k 1 5 10``; jsonargparse alone wants ``--k [1,5,10]``). A list of
    strings added here also keeps a value such as ``####`` a string (jsonargparse reads an
    optional value as YAML, where ``#`` starts a comment).
    """
    hints = typing.get_type_hints(arguments)
    docs = field_docs(arguments)
    flags: Dict[str, dataclasses.Field] = {}
    lists: Dict[str, Tuple[dataclasses.Field, type]] = {}
    for field in dataclasses.fields(arguments):
        hint = _without_none(hints[field.name])
        if hint is bool:
            flags[field.name] = field
        elif typing.get_origin(hint) in (list, collections.abc.Sequence):
            (item,) = typing.get_args(hint) or (str,)
            lists[field.name] = (field, item)
    parser.add_class_arguments(arguments, as_group=False, skip=set(flags) | set(lists), instantiate=False)
    for name, field in flags.items():
        parser.add_argument(f"--{name}", action=ActionYesNo(no_prefix="no_"), nargs="?", default=_default(field),
                            help=docs.get(name))
    for name, (field, item) in lists.items():
        parser.add_argument(f"--{name}", type=item, nargs="+", default=_default(field), help=docs.get(name),
                            metavar=name.upper())


def description_of(arguments: type) -> List[str]:
    """The paragraphs of the class docstring before its ``Attributes:``/``Args:`` section, each
    on one line, without reStructuredText markup."""
    text = re.split(r"^\s*(?:Attributes|Args|Arguments):\s*$", inspect.cleandoc(arguments.__doc__ or ""),
                    maxsplit=1, flags=re.M)[0]
    text = re.sub(r":\w+:`~?([^`]+)`", lambda match: match.group(1).split(".")[-1], text)
    text = text.replace("``", "")
    return [" ".join(paragraph.split()) for paragraph in text.split("\n\n") if paragraph.strip()]


def field_docs(arguments: type) -> Dict[str, str]:
    """``{field: its docstring}`` from the ``Attributes:`` (or ``Args:``) sections of the class
    and its bases, the class's own first."""
    docs: Dict[str, str] = {}
    for cls in reversed(arguments.__mro__):
        for param in docstring_parser.parse(cls.__doc__ or "").params:
            docs[param.arg_name] = " ".join((param.description or "").split())
    return docs


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    raise TypeError(f"the option --{field.name} needs a default")


def underscored(argv: Sequence[str], known: Dict[str, Any]) -> List[str]:
    """``argv`` with dashed option names (``--max-new-tokens``, ``--no-stops=...``) spelt as
    the parser knows them (``--max_new_tokens``); unknown names are left for the parser to
    name in its error. Nothing after ``--`` is touched."""
    result: List[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            return result + list(argv[index:])
        if arg.startswith("--") and "-" in arg[2:]:
            name, sep, value = arg.partition("=")
            spelt = "--" + name[2:].replace("-", "_")
            if name not in known and spelt in known:
                arg = spelt + sep + value
        result.append(arg)
    return result


# ------------------------------------------------------------------------- the registry
COMMANDS: Dict[str, Command] = {command.name: command for command in (
    Command("frozen-lake", frozen_lake.FrozenLakeArguments, frozen_lake.run,
            summary="the Frozen Lake comparison of every objective", examples=frozen_lake.__doc__ or "",
            errors=(FrozenLakeError,)),
    Command("code-pass-rate", code_pass_rate.PassRateArguments, code_pass_rate.run,
            summary="held-out pass rate of a checkpoint on the built-in code task, or on HumanEval",
            examples=code_pass_rate.__doc__ or "", errors=(HumanEvalError, ValueError, OSError, ImportError)),
    Command("code-pairs", code_pairs.CodePairsArguments, code_pairs.run,
            summary="preference pairs of the code task: passing vs failing programs, judged by the sandbox",
            examples=code_pairs.__doc__ or "", errors=(ValueError,)),
    Command("predict", predict.PredictArguments, predict.run,
            summary="responses of a checkpoint or export to a file of prompts, scored on answers",
            examples=predict.__doc__ or "", errors=(PredictError, DataFormatError, FileNotFoundError)),
)}


def commands_help() -> str:
    """The lines ``ift --help`` adds about the commands of :data:`COMMANDS`."""
    lines = ["ift: also these commands (each with --help, --config and --print_config):"]
    lines += [f"  `ift {name} --help`: {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines) + "\n"


__all__ = ["COMMANDS", "Command", "add_dataclass_options", "commands_help", "field_docs", "underscored"]
