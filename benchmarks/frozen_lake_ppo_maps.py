"""Does PPO solve Frozen Lake maps it was not tuned on, from the environment's reward alone?

    python benchmarks/frozen_lake_ppo_maps.py                       # 6 maps x both policies x 3 seeds
    python benchmarks/frozen_lake_ppo_maps.py --maps lake5x5a,lake5x5b --seeds 5 --policies mlp

Each run is exactly ``ift frozen-lake``'s PPO run (``ift.lab.frozen_lake.runs.run_config``,
default budget and settings) on one of the named maps with an 8-10 move optimal path
(``ift.tasks.frozen_lake.maps.PPO_MAPS``). For each map the table gives the greedy success
over seeds, and how often a uniformly random walk of the same length reaches the goal (the
chance PPO's first samples have to see a reward at all).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ift.lab.workers import map_in_processes  # noqa: E402
from ift.tasks.frozen_lake.env import FrozenLakeTask  # noqa: E402
from ift.tasks.frozen_lake.maps import PPO_MAPS  # noqa: E402
from ift.lab.frozen_lake.runs import ppo_max_new_tokens  # noqa: E402


def random_walk_success(task: FrozenLakeTask, episodes: int = 20000, seed: int = 0) -> float:
    """Share of uniformly random walks of at most PPO's response length that reach ``G``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(episodes):
        state = task.start_state
        for _ in range(ppo_max_new_tokens(task)):
            state, _, terminated = task.step(state, int(rng.integers(4)))
            if terminated:
                break
        hits += state == task.goal_state
    return hits / episodes


def run(job):
    """Greedy success of one PPO run: ``job = (policy, map name, seed)``."""
    import torch

    torch.set_num_threads(1)
    from ift.lab.frozen_lake.command import run_one

    policy, name, seed = job
    result = run_one((policy, "PPO", seed, name, None, 0))
    return policy, name, seed, result["metrics"]["success_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", default=",".join(PPO_MAPS), help="comma-separated named maps")
    parser.add_argument("--policies", default="mlp,transformer", help="comma-separated: mlp, transformer")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per map and policy")
    parser.add_argument("--workers", type=int, default=2, help="processes, one CPU thread each")
    args = parser.parse_args()
    maps, policies = args.maps.split(","), args.policies.split(",")
    jobs = [(policy, name, seed) for name in maps for policy in policies for seed in range(args.seeds)]
    results = map_in_processes(run, jobs, args.workers)
    print(f"| map | optimal moves | random walk reaches G | " + " | ".join(f"{p} PPO success" for p in policies) + " |")
    print("|---|---|---|" + "---|" * len(policies))
    for name in maps:
        task = FrozenLakeTask(name)
        cells = []
        for policy in policies:
            wins = [success for p, m, _, success in results if p == policy and m == name]
            cells.append(f"{sum(wins):.0f} of {len(wins)} seeds")
        print(f"| {name} | {len(task.optimal_trajectory())} | {random_walk_success(task):.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
