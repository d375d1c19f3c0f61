"""Learning tests (slow): GRPO learns from a reward alone, asserted only where it holds over seeds
and CPU kernels. Both parts run in this process, one after the other: about 75 s of one CPU (76 s
measured with the imports, 2026-12-07; 20-30 s arithmetic, the rest Frozen Lake).

**Arithmetic** (the built-in task, ``AnswerMatchReward``'s score: 1 for the right number, 0.1 for
a wrong one, 0 for none). An easy setting in which the untrained model is sometimes right: an
untrained tiny GPT-2 whose outputs are restricted to the ten digits (and EOS), one-token answers
to the 24 training problems ``a+b=`` with ``a, b`` in 0-4 (sums 0-8), so a random digit is right
about one time in ten. GRPO with the paper's defaults (beta 0.04 against the frozen untrained
reference, clip 0.2, one update per rollout), 4 problems x G = 32 answers per rollout, AdamW
at lr 3e-3, 200 rollouts. The training reward (the mean score of each rollout) is compared
between the first and the last quarter of the rollouts, per seed.

**Frozen Lake** (``ift frozen-lake``'s GRPO arm, ``configs/frozen_lake/ours/<policy>/grpo.yaml``,
the default map, seeds 0-2, both policies): the greedy policy reaches G, the command's check
"GRPO solves the map from the reward alone" judged by the same function; the same seeds'
untrained policies do not.

Measured (AMD EPYC, torch 2.13.0 CPU), with this machine's AVX-512 kernels and with AVX2's
(``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2``):

- arithmetic, training reward, last quarter - first quarter, seeds 0-3:
  AVX-512 +0.333, +0.489, +0.395, +0.365 (first quarters 0.215-0.232);
  AVX2    +0.292, +0.416, +0.429, +0.254.
  Seeds 4-7 (AVX-512): +0.353, +0.220, +0.359, +0.353. Over those 12 values the gain is
  0.355 ± 0.075 (mean ± std), lowest 0.220. Asserted: every seed gains at least
  ``MIN_GAIN`` = 0.1 (3.4 std below the mean, 0.12 below the lowest seed), and the mean gain
  exceeds ``Z`` standard errors.
- Frozen Lake, greedy success of seeds 0-4 (0-2 asserted): 1 on every seed, both policies,
  both kernel settings; untrained 0. Greedy episode lengths (the optimal path has 4 moves;
  bumps into the border are free): MLP 4 on every seed under both; transformer 6, 14, 14, 8, 7
  (AVX-512) and 9, 16, 5, 12, 7 (AVX2), out of at most 16. After the first tenth of the run,
  94-100% of the transformer's sampled episodes reach G, averaged over each tenth (seeds 0-2
  with AVX-512, seeds 1 and 3 with AVX2; seed 0 dipped to 54% in one tenth and recovered). Its
  greedy walks wander, but they do not fail. The narrowest pass is seed 1 with AVX2, whose walk
  reaches G on its 16th move, the last one allowed.

Reproduce: ``pytest -s -m claim tests/test_grpo_learning.py``, with and without the AVX2
variables; seeds 0-4 of Frozen Lake: ``ift frozen-lake --objectives GRPO``.
"""

from __future__ import annotations

import pytest

from ift.lab.frozen_lake import claims as judge
from ift.lab.frozen_lake import command as frozen_lake
from ift.lab.stats import mean_and_standard_error
from ift.tasks.frozen_lake.policies import POLICIES

pytestmark = [pytest.mark.slow, pytest.mark.claim,
              pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")]  # one per run, the whole config

Z = 2.0

# ---------------------------------------------------------------------------- arithmetic
ARITHMETIC_SEEDS = (0, 1, 2, 3)
ROLLOUTS = 200
MIN_GAIN = 0.1


def grpo_on_arithmetic(seed: int):
    """The training reward of every rollout (its mean score) of one GRPO run, in order."""
    import pytorch_lightning as pl
    import torch

    from ift.lab.reft_arms import CountingReward
    from ift.lab.trainer import quiet_trainer
    from ift.modules import FineTuneModule
    from ift.objectives import GRPO
    from ift.rewards import AnswerMatchReward
    from ift.tasks.arithmetic import ArithmeticDataModule

    pl.seed_everything(seed, verbose=False)
    reward = CountingReward(AnswerMatchReward(), tokenizer=None)
    module = FineTuneModule(model="tiny-gpt2", output_tokens="0123456789",
                            objective=GRPO(reward=reward, num_generations=32, max_new_tokens=1, seed=seed),
                            optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0))
    reward.tokenizer = module.tokenizer
    data = ArithmeticDataModule(num_train=24, num_val=1, num_test=0, max_operand=4, operators="+", batch_size=4,
                                seed=seed, tokenizer=module.tokenizer)
    quiet_trainer(ROLLOUTS).fit(module, data)  # one update per rollout: 200 steps, 200 rollouts
    return reward.batch_means


@pytest.fixture(scope="module")
def arithmetic_rewards():
    return {seed: grpo_on_arithmetic(seed) for seed in ARITHMETIC_SEEDS}


def test_grpo_raises_the_training_reward_on_arithmetic(arithmetic_rewards):
    gains = []
    for seed, means in arithmetic_rewards.items():
        assert len(means) == ROLLOUTS, seed
        quarter = ROLLOUTS // 4
        first, last = sum(means[:quarter]) / quarter, sum(means[-quarter:]) / quarter
        print(f"\nGRPO arithmetic seed {seed}: training reward {first:.3f} (first quarter) -> {last:.3f} (last)")
        gains.append(last - first)
    mean, se = mean_and_standard_error(gains)
    print(f"gain: mean {mean:+.3f}, SE {se:.3f}")
    assert min(gains) >= MIN_GAIN, gains
    assert mean > Z * se


# ---------------------------------------------------------------------------- Frozen Lake
FROZEN_LAKE_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def frozen_lake_runs():
    # eval_every 0: no learning curve (the curve's evaluations do not change the run)
    return [frozen_lake.run_one((policy, "GRPO", seed, None, None, 0))
            for policy in POLICIES for seed in FROZEN_LAKE_SEEDS]


@pytest.mark.parametrize("policy", POLICIES)
def test_grpo_solves_frozen_lake_from_the_reward_alone(frozen_lake_runs, policy):
    mine = [run for run in frozen_lake_runs if run["policy"] == policy]
    assert [run["seed"] for run in mine] == list(FROZEN_LAKE_SEEDS)
    print(f"\nGRPO ({policy}) greedy success, seeds {FROZEN_LAKE_SEEDS}: untrained "
          f"{[run['initial_metrics']['success_rate'] for run in mine]}, trained "
          f"{[run['metrics']['success_rate'] for run in mine]}, episode lengths "
          f"{[run['metrics']['episode_length'] for run in mine]}")
    assert all(run["initial_metrics"]["success_rate"] == 0.0 for run in mine)
    assert all(run["optimizer_steps"] == frozen_lake.DEFAULT_STEPS[policy] for run in mine)
    holds, evidence = judge.all_seeds(mine, "GRPO", "success_rate", 1.0)
    assert holds, evidence
