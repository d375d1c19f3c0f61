"""``ift fit|validate|test`` is quiet by default: third-party notices that say nothing about
the run are filtered, one by one; ``--verbose`` brings every one of them back.

Filtered (each by its logger and message, or its warning message, never by category alone):

* Lightning's "💡 Tip: ... litlogger / litmodels" adverts and the "GPU available ... /
  TPU available ..." banners (the ``rank_zero`` info loggers);
* Lightning's tensorboardX notice ("Starting from v1.9.0, `tensorboardX` has been removed");
* the ``LeafSpec`` deprecation warning from ``pytorch_lightning/utilities/_pytree.py``;
* "Found N module(s) in eval mode at the start of training": the reference model of PPO and
  DPO is kept in eval mode on purpose (no dropout), and hub models load in eval mode;
* transformers' logging below errors (e.g. its ``attention_mask`` / ``pad_token_id`` advice
  during PPO rollouts, which passes the attention mask it means).

Everything else still shows, in particular the project's own warnings (``ift.*`` warning
classes such as ``NonFiniteLossWarning`` and ``RewardTimeoutWarning``, skipped-example
reports) and Lightning's other messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Iterator, List, Tuple

VERBOSE_FLAG = "--verbose"

# (message regex matched at the start of the warning's text) of the warnings filtered.
QUIET_WARNINGS: Tuple[str, ...] = (
    r"Starting from v1\.9\.0, `tensorboardX` has been removed",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Found \d+ module\(s\) in eval mode at the start of training",
)
# Loggers of Lightning's rank-zero info messages, and the messages filtered from them.
RANK_ZERO_LOGGERS: Tuple[str, ...] = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
QUIET_LOG_MESSAGES: Tuple[str, ...] = (r"💡 Tip:", r"GPU available: ", r"TPU available: ", r"HPU available: ")


def take_verbose_flag(args: List[str]) -> Tuple[List[str], bool]:
    """``args`` without ``--verbose``, and whether it was there. It is taken out before
    LightningCLI parses the arguments (LightningCLI does not know it)."""
    kept = [arg for arg in args if arg != VERBOSE_FLAG]
    return kept, len(kept) != len(args)


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``patterns``."""

    def __init__(self, patterns: Tuple[str, ...]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{pattern})" for pattern in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge: let it through
            return True
        return not self.pattern.match(message)


@contextlib.contextmanager
def quiet_third_party_output(enabled: bool = True) -> Iterator[None]:
    """Within the block, filter the notices listed in this module's docstring (nothing
    when ``enabled`` is False); every filter and level is put back afterwards, so that a
    test calling ``ift.cli.main`` leaves the process as it found it."""
    if not enabled:
        yield
        return
    drop = _DropMessages(QUIET_LOG_MESSAGES)
    loggers = [logging.getLogger(name) for name in RANK_ZERO_LOGGERS]
    transformers_logging = _transformers_logging()
    previous_verbosity = transformers_logging.get_verbosity() if transformers_logging else None
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for logger in loggers:
            logger.addFilter(drop)
        if transformers_logging:
            transformers_logging.set_verbosity_error()
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)
            if transformers_logging:
                transformers_logging.set_verbosity(previous_verbosity)


def _transformers_logging():
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # pragma: no cover (transformers is a dependency)
        return None
    return transformers_logging


VERBOSE_HELP = ("ift: --verbose (fit, validate, test) shows the third-party notices hidden by default "
                "(Lightning tips and device banners, deprecation notices, transformers' advice); "
                "see ift/cli/quiet.py for the list\n")


def print_verbose_help(args: List[str]) -> None:
    """Name ``--verbose`` above LightningCLI's help of a subcommand (its parser does not know it)."""
    if args[:1] in (["fit"], ["validate"], ["test"]) and ("-h" in args or "--help" in args):
        print(VERBOSE_HELP)
