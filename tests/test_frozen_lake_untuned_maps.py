"""PPO solves Frozen Lake maps its settings were not tuned on, from the environment's reward
alone, on every seed and with both policies (slow; a learning claim, so CI asserts it under
both kernel settings). Apart from test_frozen_lake_claims.py so that the two long runs can
go to different test workers."""

import pytest

from ift.lab.frozen_lake import command as cli
from ift.tasks.frozen_lake.policies import POLICIES

#: Two 5x5 maps the settings were not tuned on (a random walk reaches G in 0.11% and 0.02% of
#: episodes); benchmarks/frozen_lake_ppo_maps.py gives all six named 5x5/6x6 maps.
UNTUNED_MAPS = ("lake5x5a", "lake5x5b")


@pytest.fixture(scope="module")
def ppo_on_untuned_maps():
    from ift.lab.workers import map_in_processes

    jobs = [(policy, "PPO", seed, name, None, 0) for policy in POLICIES for name in UNTUNED_MAPS for seed in range(3)]
    return map_in_processes(cli.run_one, jobs, 2)


@pytest.mark.slow
@pytest.mark.claim
@pytest.mark.parametrize("policy", POLICIES)
def test_ppo_solves_maps_it_was_not_tuned_on(ppo_on_untuned_maps, policy):
    successes = [run["metrics"]["success_rate"] for run in ppo_on_untuned_maps if run["policy"] == policy]
    print(f"\nPPO ({policy}) greedy success on {UNTUNED_MAPS}, seeds 0-2: {successes}")
    assert len(successes) == 2 * 3 and all(success == 1.0 for success in successes)
