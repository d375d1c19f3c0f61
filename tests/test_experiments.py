"""The experiment harnesses behind the published learning numbers: worker processes keep
job order, the ReFT arms count their compute consistently, and both benchmark scripts run
end to end on a tiny budget. (The learning claims themselves are the slow tests.)"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from eco_helpers import ROOT
from ift.lab.hardware import describe_hardware
from ift.lab.reft_arms import CountingReward, ReftSettings, run_job, run_seed
from ift.lab.workers import map_in_processes
from ift.rewards import AnswerMatchReward

TINY = ReftSettings(num_train=128, num_val=16, batch_size=32, mini_batch_size=32, samples_per_prompt=2,
                    warmup_steps=4, ppo_iterations=2, max_new_tokens=8)


def square(x: int) -> int:
    return x * x


def test_worker_processes_return_results_in_job_order():
    jobs = list(range(7))
    assert map_in_processes(square, jobs, workers=2) == [x * x for x in jobs]
    assert map_in_processes(square, jobs, workers=1) == [x * x for x in jobs]


def test_reft_arms_share_the_warm_up_and_spend_equal_optimizer_steps():
    result = run_seed(TINY, seed=0)
    arms = result["arms"]
    assert set(arms) == {"sft", "sft+ppo", "sft+sft"}
    # PPO: 2 iterations x ppo_epochs 2 x (32 prompts x 2 samples / mini-batches of 32) updates.
    assert TINY.updates_per_iteration == 4
    steps = TINY.warmup_steps + TINY.ppo_iterations * TINY.updates_per_iteration
    assert [arms[arm]["optimizer_steps"] for arm in ("sft", "sft+ppo", "sft+sft")] == [steps] * 3
    assert arms["sft+ppo"]["tokens_sampled"] > 0 and arms["sft"]["tokens_sampled"] == 0
    # every sampled response was scored: 2 iterations x 32 prompts x 2 samples
    assert 0.0 <= arms["sft+ppo"]["mean_train_score"] <= 1.0
    for value in [result["warmup_accuracy"]] + [arm["accuracy"] for arm in arms.values()]:
        assert 0.0 <= value <= 1.0
    # same seed, same machine: the same numbers
    again = run_seed(TINY, seed=0, arms=("sft+ppo",))
    assert again["warmup_accuracy"] == result["warmup_accuracy"]
    assert again["arms"]["sft+ppo"]["accuracy"] == arms["sft+ppo"]["accuracy"]


def test_sequential_job_runs_the_recipe_through_its_switch():
    result = run_job(("sequential", TINY, 0))
    assert result["stage_batches"] == TINY.ppo_iterations
    assert 0.0 <= result["switch_accuracy"] <= 1.0 and 0.0 <= result["accuracy"] <= 1.0


def test_bad_arm_and_job_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown arm"):
        run_seed(TINY, 0, arms=("sft+ppo", "dpo"))
    with pytest.raises(ValueError, match="lacks 'sft\\+ppo'"):
        run_seed(TINY, 0, arms=("sft",))
    with pytest.raises(ValueError, match="unknown job kind"):
        run_job(("nope", TINY, 0))


def test_counting_reward_records_scores_tokens_and_quarters():
    from ift.core.tokenizer import build_char_tokenizer

    reward = CountingReward(AnswerMatchReward(trigger="answer:"), build_char_tokenizer())
    for responses in (["answer: 3", "3"], ["answer: 4", "x"], ["answer: 3", "answer: 3"], ["", ""]):
        reward(["1+2="] * 2, responses, [{"answer": "3"}] * 2)
    assert reward.scores == [1.0, 0.0, 0.1, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert reward.tokens == len("answer: 3") * 3 + 1 + len("answer: 4") + 1
    assert reward.quarter_means() == {"first_quarter": 0.5, "last_quarter": 0.0}


def test_hardware_line_names_cpu_torch_and_kernels():
    line = describe_hardware()
    assert "cores" in line and "torch" in line and "CPU kernels" in line


@pytest.mark.parametrize("script, args", [
    ("reft_arms.py", ["--seeds", "2", "--warmup-steps", "3", "--ppo-iterations", "1", "--workers", "2"]),
    ("arithmetic_learning.py", ["--seeds", "2", "--steps", "2,4", "--workers", "1"]),
    ("arithmetic_learning.py", ["--seeds", "2", "--steps", "2,6", "--workers", "1", "--objectives", "SFT->PPO",
                                "--warmup-steps", "2", "--num-train", "64", "--num-val", "16"]),
])
def test_benchmark_scripts_print_mean_and_std_over_seeds(script, args, tmp_path):
    out = tmp_path / "runs.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "±" in done.stdout and "seeds 0-1" in done.stdout and "CPU kernels" in done.stdout
    assert out.exists()


def test_sft_then_ppo_arm_needs_a_warmup_inside_the_budget():
    from ift.lab.arithmetic_learning import LearningSettings, make_objective

    with pytest.raises(ValueError, match="warmup_steps"):
        make_objective("SFT->PPO", LearningSettings(eval_steps=(10,), warmup_steps=0))
    recipe = make_objective("SFT->PPO", LearningSettings(eval_steps=(10,), warmup_steps=4))
    assert [type(stage.objective).__name__ for stage in recipe.stages] == ["SFT", "PPO"]
    assert recipe.stages[0].steps == 4


def test_code_task_arms_score_in_the_sandbox():
    from ift.lab.reft_arms import CODE_SETTINGS

    tiny = dataclasses.replace(CODE_SETTINGS, num_train=64, num_val=8, warmup_steps=2, ppo_iterations=1,
                               max_new_tokens=16)
    result = run_seed(tiny, seed=0, arms=("sft+ppo",))
    ppo = result["arms"]["sft+ppo"]
    assert ppo["optimizer_steps"] == tiny.warmup_steps + tiny.updates_per_iteration
    assert ppo["tokens_sampled"] > 0 and 0.0 <= ppo["accuracy"] <= 1.0


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        ReftSettings(task="poetry")


def test_standard_error_is_the_sample_std_over_root_n():
    from ift.lab.stats import mean_and_standard_error, mean_std

    values = [0.1, 0.3, 0.2, 0.6]
    mean, std = mean_std(values)
    naive_mean = sum(values) / 4
    naive_std = (sum((v - naive_mean) ** 2 for v in values) / 3) ** 0.5
    assert mean == pytest.approx(naive_mean) and std == pytest.approx(naive_std)
    assert mean_and_standard_error(values) == pytest.approx((naive_mean, naive_std / 2))
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_and_standard_error([0.5])


def test_accuracy_probe_measures_a_budget_the_step_count_jumps_over(monkeypatch):
    """PPO takes several optimizer steps per batch: a budget of 5 reached by 4 -> 6 is measured at 6."""
    from types import SimpleNamespace

    import ift.lab.arithmetic_learning as learning

    calls = []
    monkeypatch.setattr(learning, "held_out_accuracy", lambda module, data, max_new_tokens: calls.append(1) or len(calls) / 10)
    probe = learning.AccuracyAt((2, 5), data=None)
    for step in (1, 2, 4, 6, 8):
        probe.on_train_batch_end(SimpleNamespace(global_step=step), None)
    assert probe.accuracy == {2: 0.1, 5: 0.2} and probe.measured_at == {2: 2, 5: 6}
    assert len(calls) == 2
