"""Learning tests (slow): the code study's first finding at the tiny scale, asserted only where it
holds over seeds and CPU kernels (docs/code_study.md has every number and the other findings).

The runs are the study's own (``ift.lab.code_study.arms.run_mix`` with the ``TINY`` settings:
the character-level tiny GPT-2 from random initialisation, SFT for 1000 steps of 32 on one
training mix, greedy pass@1 on the 100 held-out compositions of 2-3 atomic functions), so
``python benchmarks/code_sft_rl_study.py --findings mix`` prints the same numbers for these
seeds. Three arms, seeds 0-2, on two worker processes: about 4-5 minutes.

Measured (AMD EPYC, torch 2.13.0 CPU) with this machine's AVX-512 kernels and with AVX2's
(``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``), held-out
pass@1 of seeds 0, 1, 2:

- AVX-512: atomic 0.00, 0.00, 0.00; atomic+5 0.00, 0.00, 0.00; atomic+400 0.31, 0.11, 0.28;
- AVX2:    atomic 0.00, 0.00, 0.00; atomic+5 0.00, 0.01, 0.00; atomic+400 0.30, 0.16, 0.25.

The atomic-only model never writes more than one line, so it passes no composition on any seed.

Asserted: with 400 synthetic functions beside the atomic ones, every seed passes at least
``MIN_GAIN`` = 0.05 more held-out compositions than with the atomic ones alone (the lowest
seed gains 0.11; the seeds' std is 0.10), and the mean gain exceeds ``Z`` standard errors.
The paper's "a handful of synthetic functions suffices" does not hold here (5 add nothing
measurable): a strict xfail.

Reproduce: ``pytest -s -m claim tests/test_code_study_claims.py``, with and without the AVX2 variables.
"""

from __future__ import annotations

import pytest

from ift.lab.code_study import TINY
from ift.lab.code_study.arms import run_job
from ift.lab.stats import mean_and_standard_error
from ift.lab.workers import map_in_processes

pytestmark = [pytest.mark.slow, pytest.mark.claim]

SEEDS = (0, 1, 2)
ARMS = ("atomic", "atomic+5", "atomic+400")
Z = 2.0
MIN_GAIN = 0.05


@pytest.fixture(scope="module")
def held_out():
    """``arm -> [held-out pass@1 of each seed]``."""
    jobs = [("mix", TINY, seed, arm) for seed in SEEDS for arm in ARMS]
    results = map_in_processes(run_job, jobs, workers=2)
    table = {arm: [r["held_out"] for r in results if r["arm"] == arm] for arm in ARMS}
    print("\nheld-out pass@1, seeds " + ", ".join(map(str, SEEDS)) + ": "
          + "; ".join(f"{arm} " + ", ".join(f"{v:.2f}" for v in values) for arm, values in table.items()))
    return table


def gains(held_out, arm):
    return [with_arm - atomic for with_arm, atomic in zip(held_out[arm], held_out["atomic"])]


def test_sft_generalises_to_new_compositions_only_with_synthetic_functions_beside_the_atomic_ones(held_out):
    gain = gains(held_out, "atomic+400")
    mean, se = mean_and_standard_error(gain)
    assert min(gain) >= MIN_GAIN, f"atomic+400 - atomic per seed: {gain}"
    assert mean > Z * se, f"mean gain {mean:.3f}, SE {se:.3f}"


@pytest.mark.xfail(strict=True, reason="at the tiny scale a handful of synthetic functions adds nothing measurable "
                                       "(held-out pass@1 0.00 with 5, seeds 0-2, both kernel settings); see the module docstring")
def test_a_handful_of_synthetic_functions_suffices(held_out):
    gain = gains(held_out, "atomic+5")
    mean, se = mean_and_standard_error(gain)
    assert min(gain) >= MIN_GAIN and mean > Z * se, f"atomic+5 - atomic per seed: {gain}"
