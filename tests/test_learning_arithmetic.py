"""Learning test (slow): SFT and IFT each learn held-out two-operand addition, on every seed.

Tiny GPT-2, operands 0-29, 700 training and 200 held-out problems, 1100 AdamW steps at lr
3e-3 (``ift.experiments.arithmetic_learning``), seeds 0-2, in two worker processes.

What is asserted, and why it is robust: every seed starts at (near) zero and ends far above
chance. The floor is set well below the lowest seed measured under both AVX-512 and AVX2
kernels (see MEASURED), so kernel drift and seed-to-seed spread cannot cross it; a model
that did not learn (or learned only the format) stays far below it.
"""

import pytest

from ift.experiments.arithmetic_learning import OBJECTIVES, LearningSettings, run

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)
SETTINGS = LearningSettings(eval_steps=(1100,))
# Measured with `python benchmarks/arithmetic_learning.py --seeds 5` (seeds 0-4, AMD EPYC,
# torch 2.13.0 CPU, AVX-512 kernels), after 1100 steps: SFT 0.898 ± 0.077 (lowest 0.780),
# IFT 0.925 ± 0.066 (lowest 0.835); every seed 0.000 untrained. The floor sits 0.28 (3.6 SFT
# standard deviations) below the lowest seed.
MAX_UNTRAINED_ACCURACY = 0.05
MIN_TRAINED_ACCURACY = 0.5


@pytest.fixture(scope="module")
def runs():
    return run(SETTINGS, SEEDS, OBJECTIVES, workers=2)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_learns_held_out_addition_on_every_seed(runs, objective):
    mine = [r for r in runs if r["objective"] == objective]
    assert [r["seed"] for r in mine] == list(SEEDS)
    for r in mine:
        after = r["after"][SETTINGS.eval_steps[-1]]
        print(f"{objective} seed {r['seed']}: held-out accuracy {r['before']:.3f} -> {after:.3f}")
        assert r["before"] <= MAX_UNTRAINED_ACCURACY, r
        assert after >= MIN_TRAINED_ACCURACY, r
