"""The claims of the Frozen Lake sanity check on the default map, 5 fixed seeds, with the
defaults of ``ift frozen-lake`` (exactly the README's table).

Reproduced (asserted): IFT's mean MSE to π* is below SFT's; IFT with lam = 0 and gamma = 0
gives SFT's numbers exactly; PPO (environment reward only) reaches the goal greedily on
every seed. Not reproduced (strict xfail, so that a change that makes it hold is noticed
and the docs get updated): DPO's mean MSE below SFT's. See docs/frozen_lake.md.
"""

import json

import pytest

from ift import frozen_lake_cli as cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen_lake_claims")
    results = cli.run(["--out", str(out)])  # 5 seeds, every objective, 2 worker processes
    details = json.loads((out / "details.json").read_text())
    return results, details


def mse(results, name):
    return results[name]["mse_to_optimal"]["mean"]


def test_ift_is_closer_to_the_optimal_policy_than_sft(check):
    results, details = check
    assert mse(results, "IFT") < mse(results, "SFT")
    # ... and on every seed, not only on average.
    per_seed = {(run["objective"], run["seed"]): run["metrics"]["mse_to_optimal"] for run in details["runs"]}
    for seed in range(details["seeds"]):
        assert per_seed[("IFT", seed)] < per_seed[("SFT", seed)], seed


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
    results, _ = check
    assert mse(results, "DPO") < mse(results, "SFT")
