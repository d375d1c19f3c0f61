"""The claims of the Frozen Lake sanity check on the default map, 5 seeds, with the
defaults of ``ift frozen-lake`` (the README's table).

A comparison "A closer to π* than B" is asserted on the paired per-seed differences of MSE
to π*: their mean must be below zero by more than ``Z`` standard errors of the mean (sample
std / sqrt(seeds)), so neither seed-to-seed spread nor the drift between CPU kernels can
flip it. Reproduced (asserted): IFT closer than SFT; IFT with lam = 0, gamma = 0 gives SFT's
numbers exactly; PPO (environment reward only) reaches the goal greedily on every seed.
Not reproduced (strict xfail, asserted the same robust way, so that a change that makes it
hold is noticed and the docs get updated): DPO closer than SFT. See docs/frozen_lake.md.
"""

import json

import pytest

from ift.tasks.frozen_lake import command as cli
from ift.core.stats import mean_and_standard_error

pytestmark = pytest.mark.slow

Z = 2.0


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen_lake_claims")
    results = cli.run(["--out", str(out)])  # 5 seeds, every objective, 2 worker processes
    details = json.loads((out / "details.json").read_text())
    return results, details


def paired_mse_differences(details, first, second):
    """Per seed: MSE to π* of ``first`` minus that of ``second`` (negative: ``first`` is closer)."""
    per_seed = {(run["objective"], run["seed"]): run["metrics"]["mse_to_optimal"] for run in details["runs"]}
    return [per_seed[(first, seed)] - per_seed[(second, seed)] for seed in range(details["seeds"])]


def robustly_closer(details, first, second) -> bool:
    diffs = paired_mse_differences(details, first, second)
    mean, se = mean_and_standard_error(diffs)
    print(f"\nMSE {first} - {second} per seed: " + ", ".join(f"{d:+.4f}" for d in diffs)
          + f"; mean {mean:+.4f}, SE {se:.4f}")
    return mean < -Z * se


def test_ift_is_closer_to_the_optimal_policy_than_sft(check):
    _, details = check
    assert robustly_closer(details, "IFT", "SFT")


def test_ift_with_lam0_gamma0_is_sft_exactly(check):
    results, details = check
    assert results["IFT-lam0-gamma0"] == results["SFT"]
    runs = {(run["objective"], run["seed"]): run for run in details["runs"]}
    for seed in range(details["seeds"]):
        ift0, sft = runs[("IFT-lam0-gamma0", seed)], runs[("SFT", seed)]
        assert ift0["metrics"] == sft["metrics"]
        assert ift0["curve"] == sft["curve"]
        assert ift0["action_probs"] == sft["action_probs"]


def test_ppo_from_the_environment_reward_reaches_the_goal(check):
    results, _ = check
    assert results["PPO"]["success_rate"]["mean"] == 1.0
    assert results["SFT-PPO"]["success_rate"]["mean"] == 1.0


def test_supervised_objectives_learn_the_optimal_trajectory(check):
    results, _ = check
    for name in ("SFT", "IFT", "DPO", "ORPO"):
        assert results[name]["success_rate"]["mean"] == 1.0, name
        assert results[name]["episode_length"]["mean"] == 5.0, name  # RRRDD


@pytest.mark.xfail(strict=True, reason="does not reproduce on this setup: DPO's sequence-level penalty on the rejected "
                                       "path DDDRRRU also pushes down its optimal tail (R, R, R, U); docs/frozen_lake.md")
def test_dpo_is_closer_to_the_optimal_policy_than_sft(check):
    _, details = check
    assert robustly_closer(details, "DPO", "SFT")
