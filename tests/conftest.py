"""Test-wide settings: offline, deterministic, one CPU thread per process; every test runs in
its own temporary folder and may not write into the repository; the shared character tokenizer."""

import os
import sys
import threading
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run no faster on two threads, and a second thread competing with other
# processes made generation several times slower: one thread keeps timings steady.
torch.set_num_threads(1)


def pytest_report_header(config):
    """Which CPU kernels this run uses: learning numbers drift between AVX2 and AVX-512."""
    isa = {name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
           if name in os.environ}
    return f"torch {torch.__version__}, CPU kernels: {torch.backends.cpu.get_cpu_capability()} {isa or ''}".rstrip()


# ---------------------------------------------------------------------------- tests write only under temporary folders
ROOT = Path(__file__).resolve().parents[1]

# What a run leaves at the repository root when it writes to the working directory: the
# Trainer's default root (ift_runs/, lightning_logs/, interrupted.ckpt), loggers, checkpoints.
RUN_OUTPUTS = ("ift_runs", "lightning_logs", "runs", "wandb", "checkpoints", "exports")
# Written by Python and pytest themselves, not by tests.
NOT_OUTPUTS = ("__pycache__", ".pytest_cache")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Audit events that create or change a file, and which argument names it.
_WRITING_EVENTS = {"open": 0, "os.mkdir": 0, "os.rename": 1, "os.symlink": 1, "os.link": 1, "os.truncate": 0}


class RepositoryWriteError(AssertionError):
    """A test wrote into the repository instead of under a temporary folder."""


class RepositoryGuard:
    """Catches, in this process, every file a test creates or changes inside the repository.

    An audit hook (``sys.addaudithook``) sees each ``open`` for writing, ``mkdir``, rename,
    link and truncate; while armed, one whose target lies in the repository (outside
    ``__pycache__``, ``.pytest_cache``, ``*.egg-info`` and pytest's temporary folders) is
    refused with ``RepositoryWriteError`` and recorded, so the test fails even where the
    error is caught. Other processes are not watched, so files they write (another session
    working in the same checkout) cannot make a test fail."""

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.allowed: list = []  # folders inside the repository that tests may write (a --basetemp there)
        self.armed = False
        self.violations: list = []
        self._installed = False
        self._busy = threading.local()

    def arm(self, allowed=()) -> None:
        self.allowed = [os.path.realpath(path) for path in allowed]
        if not self._installed:
            sys.addaudithook(self._audit)
            self._installed = True
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def take_violations(self) -> list:
        """The writes refused since the last call (and forgets them)."""
        taken, self.violations = self.violations, []
        return taken

    def inside(self, path) -> "str | None":
        """``path`` relative to the repository, if a test may not write it; else None."""
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):  # a file descriptor, or not a path
            return None
        if full != self.root and not full.startswith(self.root + os.sep):
            return None
        if any(full == folder or full.startswith(folder + os.sep) for folder in self.allowed):
            return None
        relative = os.path.relpath(full, self.root)
        if any(part in NOT_OUTPUTS or part.endswith(".egg-info") for part in relative.split(os.sep)):
            return None
        return relative

    def _forbidden(self, event, args) -> "str | None":
        """What the audited operation would write inside the repository, if anything."""
        target = args[_WRITING_EVENTS[event]]
        if event == "open":
            mode, flags = args[1], args[2]
            if not ((flags or 0) & _WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))):
                return None
        elif event == "os.mkdir" and os.path.isdir(target):
            return None  # makedirs(exist_ok=True) on a folder that is there creates nothing
        return self.inside(target)

    def _audit(self, event, args):
        if not self.armed or event not in _WRITING_EVENTS or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            relative = self._forbidden(event, args)
        except Exception:  # the guard must never break the code it watches
            relative = None
        finally:
            self._busy.on = False
        if relative is None:
            return
        self.violations.append(f"{relative} ({event})")
        raise RepositoryWriteError(f"a test tried to write {relative!r} into the repository ({event}); "
                                   "tests write only under tmp_path (their working directory)")


GUARD = RepositoryGuard(ROOT)


def _run_outputs(root: Path) -> set:
    """Every path under the repository root's ``RUN_OUTPUTS`` folders and ``*.ckpt`` files."""
    found = set()
    for entry in os.scandir(root):
        if entry.name not in RUN_OUTPUTS and not entry.name.endswith(".ckpt"):
            continue
        found.add(entry.name)
        if entry.is_dir(follow_symlinks=False):
            for folder, _, files in os.walk(entry.path):
                found.update(os.path.relpath(os.path.join(folder, name), root) for name in files)
    return found


_OUTPUTS_BEFORE = pytest.StashKey[set]()


def pytest_sessionstart(session):
    session.config.stash[_OUTPUTS_BEFORE] = _run_outputs(ROOT)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Names run outputs that appeared at the repository root during this session.

    Writes of this process fail their test (``RepositoryGuard``); this also sees files of
    subprocesses and native code, but cannot tell them from those of another process
    working in the same checkout at the same time, so it reports them without failing."""
    before = config.stash.get(_OUTPUTS_BEFORE, None)
    if before is None:
        return
    new = sorted(_run_outputs(ROOT) - before)
    late = GUARD.take_violations()  # refused outside any test's teardown check (a module fixture's teardown)
    if not new and not late:
        return
    terminalreporter.section("files written into the repository", sep="=", red=True, bold=True)
    for line in late:
        terminalreporter.line(f"refused: {line}", red=True)
    for path in new[:30]:
        terminalreporter.line(f"new since the session started: {path}", red=True)
    if len(new) > 30:
        terminalreporter.line(f"... and {len(new) - 30} more", red=True)
    if new:
        terminalreporter.line("A test (or a subprocess it started) wrote outside its tmp_path, unless another "
                              "process using this checkout wrote them meanwhile.")


@pytest.fixture(scope="session", autouse=True)
def _session_working_directory(tmp_path_factory):
    """Module- and session-scoped fixtures also run in a temporary working directory; arms
    the ``RepositoryGuard`` for the whole run of the tests."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    GUARD.arm(allowed=[tmp_path_factory.getbasetemp()])
    try:
        yield
    finally:
        GUARD.disarm()
        os.chdir(previous)


@pytest.fixture(autouse=True)
def _test_working_directory(tmp_path, monkeypatch):
    """Runs each test with its own ``tmp_path`` as the working directory (what Lightning's
    ``default_root_dir`` and the interrupt checkpoint default to), and fails the test if it
    wrote into the repository."""
    monkeypatch.chdir(tmp_path)
    yield
    written = GUARD.take_violations()
    if written:
        pytest.fail("wrote into the repository instead of tmp_path: " + ", ".join(written), pytrace=False)


#: Variables that tell Lightning and torch.distributed "this process is one rank of a launched
#: job". One left in this process by a test (an in-process launcher sets them) makes every later
#: DDP fit of the same pytest worker wait for ranks that are never started.
DISTRIBUTED_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                         "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_distributed_variables_left_behind():
    """Restores the launcher variables a test set in ``os.environ``, and names the test."""
    before = {name: os.environ.get(name) for name in DISTRIBUTED_VARIABLES}
    yield
    left = {name for name in DISTRIBUTED_VARIABLES if os.environ.get(name) != before[name]}
    for name in left:
        if before[name] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before[name]
    if left:
        sys.stderr.write(f"\nconftest: a test left {sorted(left)} in os.environ; restored\n")


@pytest.fixture
def repository_guard():
    """The session's ``RepositoryGuard`` (to check the guard itself)."""
    return GUARD


@pytest.fixture(scope="session")
def tokenizer():
    """The character tokenizer (``build_char_tokenizer()``), built once and shared by every
    test that asks for it: read it, never change it."""
    from ift.data import build_char_tokenizer

    return build_char_tokenizer()


# ---------------------------------------------------------------------------- longest first
#: Modules whose module-scoped runs take minutes, longest first (measured with
#: `--durations=30`). Under pytest-xdist (`-n 2 --dist loadscope`, what `make test` runs) a
#: module goes to one worker whole, in collection order: starting these first keeps both
#: workers busy to the end instead of leaving one of them a long run at the tail.
LONGEST_FIRST = ("test_ppo_learning.py", "test_frozen_lake_claims.py", "test_frozen_lake_untuned_maps.py", "test_grpo_learning.py",
                 "test_frozen_lake_paper_literal.py", "test_code_study_claims.py",
                 "test_real_configs.py", "test_learning_arithmetic.py", "test_real_model.py", "test_distributed.py",
                 "test_frozen_lake_maps.py", "test_codepmp.py", "test_fault_handling.py")


def pytest_collection_modifyitems(session, config, items):
    """Puts the long modules first (a stable sort: every other test keeps its order)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
