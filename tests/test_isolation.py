"""Tests write only under temporary folders: each runs in its own ``tmp_path``, and a write
into the repository is refused and fails the test (``conftest.RepositoryGuard``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from factories import quiet_trainer

ROOT = Path(__file__).resolve().parents[1]


def test_each_test_runs_in_its_own_tmp_path(tmp_path):
    assert Path.cwd().resolve() == tmp_path.resolve()
    assert ROOT not in Path.cwd().resolve().parents
    # What Lightning and the module's interrupt checkpoint write to when given no folder.
    assert Path(quiet_trainer().default_root_dir).resolve() == tmp_path.resolve()


def test_a_write_into_the_repository_is_refused_and_recorded(repository_guard, tmp_path):
    probe = ROOT / f"isolation-probe-{os.getpid()}"
    (tmp_path / "mine.txt").write_text("fine")  # under tmp_path: allowed
    assert (ROOT / "pytest.ini").read_text()  # reading the repository: allowed
    os.makedirs(ROOT / "tests", exist_ok=True)  # creates nothing: allowed
    with pytest.raises(AssertionError, match="into the repository"):
        open(probe.with_suffix(".ckpt"), "wb")
    with pytest.raises(AssertionError, match="into the repository"):
        os.mkdir(probe)
    with pytest.raises(AssertionError, match="into the repository"):
        os.replace(tmp_path / "mine.txt", probe.with_suffix(".txt"))
    assert not any(path.exists() for path in (probe, probe.with_suffix(".ckpt"), probe.with_suffix(".txt")))
    refused = repository_guard.take_violations()  # taken here, so this test itself passes
    assert refused == [f"{probe.name}.ckpt (open)", f"{probe.name} (os.mkdir)", f"{probe.name}.txt (os.rename)"]
