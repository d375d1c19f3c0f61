"""Learning test (slow): SFT and IFT each learn held-out two-operand addition, on every seed.

Tiny GPT-2, operands 0-29, 700 training and 200 held-out problems, 1100 AdamW steps at lr
3e-3 (``ift.lab.arithmetic_learning``), seeds 0-2, in two worker processes.

What is asserted, and why it is robust: every seed starts at (near) zero and ends far above
chance. The floor is set well below the lowest seed measured under both AVX-512 and AVX2
kernels (see MEASURED), so kernel drift and seed-to-seed spread cannot cross it; a model
that did not learn (or learned only the format) stays far below it.
"""

import pytest

from ift.lab.arithmetic_learning import OBJECTIVES, LearningSettings, run

pytestmark = [pytest.mark.slow, pytest.mark.claim]

SEEDS = (0, 1, 2)
SETTINGS = LearningSettings(eval_steps=(1100,))
# Measured with `python benchmarks/arithmetic_learning.py --seeds 5` (seeds 0-4, AMD EPYC,
# torch 2.13.0 CPU) after 1100 steps, mean ± std (lowest seed):
#   AVX-512 kernels: SFT 0.898 ± 0.077 (0.780), IFT 0.925 ± 0.066 (0.835)
#   AVX2 kernels:    SFT 0.844 ± 0.085 (0.770), IFT 0.843 ± 0.177 (0.580: seed 2 fell from
#                    0.795 at step 770, a late spike of the constant lr 3e-3)
# every seed 0.000 untrained. The floor sits 3 standard deviations of the widest spread
# (0.177) below the lowest mean, and 0.28 below the lowest seed of either kernel setting.
MAX_UNTRAINED_ACCURACY = 0.05
MIN_TRAINED_ACCURACY = 0.3


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
