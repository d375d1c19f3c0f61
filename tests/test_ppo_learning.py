"""Learning tests (slow): what PPO after an SFT warm-up does on the arithmetic task (ReFT),
asserted only where it holds over seeds and CPU kernels.

The runs are ``ift.lab.reft_arms`` at the benchmark's defaults (the ReFT tables of
docs/results.md, ``python benchmarks/reft_arms.py``): two-operand ``+``/``-`` with operands 0-29,
worked solutions, 1536 training and 264 held-out questions, an 800-step SFT warm-up, then
48 PPO iterations (384 optimizer steps) at lr 1e-4, or as many SFT steps at the same lr;
reward and accuracy under ReFT's answer rule (trigger ``answer:``). Seeds 0-3, plus
seeds 0-2 of the ``Sequential`` SFT -> PPO recipe in one fit (24 PPO iterations).

A gain is asserted robust when its mean over seeds exceeds ``Z`` standard errors of that
mean (sample std / sqrt(seeds)); a claim that the measured numbers contradict is a strict
xfail that states them.

Measured (AMD EPYC, torch 2.13.0 CPU), paired over seeds 0-3:

- PPO training score, last quarter of the rollouts - first: AVX-512 +0.036, +0.069,
  +0.021, +0.041 (mean 0.042, 4.2 SE); asserted.
- held-out accuracy, PPO - warm-up: AVX-512 +0.163, +0.174, +0.023, +0.053 (mean +0.103,
  2.9 SE; +0.123 ± 0.079 over the benchmark's 5 seeds); AVX2 +0.076, +0.091, -0.011,
  +0.027 (mean +0.045, 1.9 SE). Positive on average under both kernels but not robust: a
  non-strict xfail (a strict one would fail on whichever kernel it happens to pass on);
  what is asserted is that PPO does not significantly *lower* it.
- held-out accuracy, PPO - more SFT at the same lr and steps: negative on every seed under
  both kernels (-0.093 ± 0.032 over 5 seeds, AVX-512): ReFT's claim, a strict xfail.
"""

from __future__ import annotations

import dataclasses

import pytest

from ift.lab.reft_arms import ReftSettings, run_job
from ift.lab.stats import mean_and_standard_error
from ift.lab.workers import map_in_processes

pytestmark = [pytest.mark.slow, pytest.mark.claim]

SETTINGS = ReftSettings()
SEQUENTIAL = dataclasses.replace(SETTINGS, ppo_iterations=24)
ARM_SEEDS = (0, 1, 2, 3)
SEQUENTIAL_SEEDS = (0, 1, 2)
Z = 2.0


@pytest.fixture(scope="module")
def runs():
    jobs = [("arms", SETTINGS, seed, ("sft+ppo", "sft+sft")) for seed in ARM_SEEDS]
    jobs += [("sequential", SEQUENTIAL, seed) for seed in SEQUENTIAL_SEEDS]
    results = map_in_processes(run_job, jobs, workers=2)
    return results[:len(ARM_SEEDS)], results[len(ARM_SEEDS):]


def report(name, values):
    mean, se = mean_and_standard_error(values)
    print(f"\n{name}: " + ", ".join(f"{v:+.3f}" for v in values) + f"; mean {mean:+.3f}, SE {se:.3f}")
    return mean, se


def test_ppo_raises_its_training_reward(runs):
    arms, _ = runs
    gains = [r["arms"]["sft+ppo"]["train_score"]["last_quarter"] - r["arms"]["sft+ppo"]["train_score"]["first_quarter"]
             for r in arms]
    mean, se = report("PPO training score, last quarter - first quarter", gains)
    assert mean > Z * se


def test_ppo_does_not_lower_held_out_accuracy_below_its_warm_up(runs):
    """What does hold under both kernels: no loss (a collapsed or drifting policy fails this)."""
    arms, _ = runs
    losses = [r["warmup_accuracy"] - r["arms"]["sft+ppo"]["accuracy"] for r in arms]
    mean, se = report("held-out accuracy, warm-up - PPO", losses)
    assert mean < Z * se


@pytest.mark.xfail(strict=False, reason="not robust over 4 seeds: mean gain +0.103 (2.9 SE) with AVX-512 kernels, "
                                        "+0.045 (1.9 SE) with AVX2's; see the module docstring")
def test_ppo_raises_held_out_accuracy_above_its_warm_up(runs):
    arms, _ = runs
    gains = [r["arms"]["sft+ppo"]["accuracy"] - r["warmup_accuracy"] for r in arms]
    mean, se = report("held-out accuracy, PPO - warm-up", gains)
    assert mean > Z * se


@pytest.mark.xfail(strict=True, reason="ReFT's claim does not hold at this scale: more SFT at the same lr and "
                                       "optimizer steps beats PPO on every seed (docs/results.md, 'ReFT')")
def test_ppo_beats_more_sft_at_equal_optimizer_steps(runs):
    arms, _ = runs
    gains = [r["arms"]["sft+ppo"]["accuracy"] - r["arms"]["sft+sft"]["accuracy"] for r in arms]
    mean, se = report("held-out accuracy, PPO - more SFT", gains)
    assert mean > 0


def test_sequential_sft_then_ppo_in_one_fit_raises_the_training_reward(runs):
    _, sequential = runs
    for r in sequential:  # the recipe switched and ran its PPO iterations
        assert r["stage_batches"] >= SEQUENTIAL.ppo_iterations
    gains = [r["train_score"]["last_quarter"] - r["train_score"]["first_quarter"] for r in sequential]
    report("Sequential: PPO-stage training score, last quarter - first quarter", gains)
    held_out = [r["accuracy"] - r["switch_accuracy"] for r in sequential]
    report("Sequential: held-out accuracy, end - switch", held_out)
    mean, se = mean_and_standard_error(gains)
    assert mean > Z * se
