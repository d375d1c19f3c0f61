"""The built-in code task: the generator's reference code is right by its own tests (run in
the sandbox), the splits are disjoint and seeded, and the shipped SFT -> PPO and SFT -> GRPO
configs run end to end with the sandboxed reward."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from eco_helpers import ROOT
from ift.cli import main
from ift.tasks.code import (
    CodeTaskDataModule,
    apply_steps,
    code_examples,
    describe_steps,
    step_options,
    steps_to_code,
)
from ift.core.tokenizer import build_char_tokenizer
from ift.rewards import CodeTestsReward

CODE_CONFIG = ROOT / "configs" / "code" / "sft_then_ppo.yaml"
CODE_GRPO_CONFIG = ROOT / "configs" / "code" / "sft_then_grpo.yaml"


def evaluate_trusted(code: str, x: int) -> int:
    """Run the generator's own (trusted) reference code in this process."""
    namespace: dict = {}
    exec(code, namespace)
    return namespace["f"](x)


def random_steps(rng: random.Random, length: int):
    ops = [("add", rng.randint(1, 9)), ("sub", rng.randint(1, 9)), ("mul", rng.randint(2, 9)), ("square", 0)]
    return [rng.choice(ops) for _ in range(length)]


def test_reference_code_with_fewest_parentheses_computes_the_steps():
    rng = random.Random(0)
    for _ in range(300):
        steps = random_steps(rng, rng.randint(1, 4))
        code = steps_to_code(steps)
        for x in range(-5, 6):
            assert evaluate_trusted(code, x) == apply_steps(steps, x), (steps, code)
    # the parentheses are the fewest: none where precedence already gives the order
    assert steps_to_code([("mul", 2), ("add", 3)]) == "def f(x):\n    return x*2+3"
    assert steps_to_code([("add", 3), ("mul", 2)]) == "def f(x):\n    return (x+3)*2"
    assert steps_to_code([("mul", 2), ("square", 0)]) == "def f(x):\n    return (x*2)**2"
    assert steps_to_code([("square", 0), ("mul", 3)]) == "def f(x):\n    return x**2*3"
    assert describe_steps([("add", 3), ("mul", 2), ("square", 0)]) == "add 3, times 2, square"


def test_examples_are_distinct_seeded_and_their_tests_hold():
    first = code_examples(40, seed=3)
    assert first == code_examples(40, seed=3)
    assert first != code_examples(40, seed=4)
    assert len({example["prompt"] for example in first}) == 40
    for example in first:
        assert len(example["tests"]) == 4 and example["prompt"].startswith("# f(x): ")
        for test in example["tests"]:
            call, expected = test[len("assert "):].split(" == ")
            assert evaluate_trusted(example["response"], int(call[2:-1])) == int(expected)


def test_reference_functions_score_one_in_the_sandbox_and_wrong_ones_less():
    examples = code_examples(6, seed=1)
    reward = CodeTestsReward(timeout_s=10.0, max_workers=2)
    prompts = [example["prompt"] for example in examples]
    assert reward(prompts, [example["response"] for example in examples], examples) == [1.0] * 6
    wrong = [example["response"].replace("return ", "return 1000+") for example in examples]
    assert all(score < 1.0 for score in reward(prompts, wrong, examples))
    assert reward.counts["ok"] >= 6 and reward.counts["runs"] == 12


def test_splits_are_disjoint_and_sized():
    data = CodeTaskDataModule(num_train=30, num_val=10, num_test=5, tokenizer=build_char_tokenizer())
    splits = data.all_examples()
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 30, "val": 10, "test": 5}
    prompts = [{row["prompt"] for row in rows} for rows in splits.values()]
    assert not (prompts[0] & prompts[1]) and not (prompts[0] & prompts[2]) and not (prompts[1] & prompts[2])


def test_problems_are_drawn_uniformly_so_every_split_has_the_same_mix():
    # Every problem of the space can be drawn: 9 single steps with constants up to 3.
    options = step_options(3)
    assert len(options) == len(set(options)) == 3 + 3 + 2 + 1
    everything = code_examples(9 + 9 ** 2, seed=0, max_constant=3)
    expected = {f"# f(x): {describe_steps([a])}\n" for a in options}
    expected |= {f"# f(x): {describe_steps([a, b])}\n" for a in options for b in options}
    assert {example["prompt"] for example in everything} == expected
    # The default task draws 700 of its 756 problems: held-out splits cut from the first
    # draws must not be richer in one-step problems than the training split.
    splits = CodeTaskDataModule(tokenizer=build_char_tokenizer()).all_examples()
    share = {name: sum("," not in row["prompt"] for row in rows) / len(rows) for name, rows in splits.items()}
    assert abs(share["val"] - share["train"]) < 0.05 and abs(share["test"] - share["train"]) < 0.05, share


def test_impossible_task_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="could not draw 500 distinct problems"):
        code_examples(500, seed=0, max_steps=1, max_constant=2)
    with pytest.raises(ValueError, match="num_tests must be in"):
        code_examples(5, seed=0, num_tests=50)


def fit_small_code_recipe(config, tmp_path, samples, **trainer_settings):
    """``ift fit`` of a shipped code recipe (SFT -> an RL stage) made small: one epoch per
    stage, 8 problems, short generations; ``samples`` sets the RL stage's responses per prompt.
    Returns the CLI once both epochs ran."""
    stages = config["model"]["objective"]["init_args"]["stages"]
    stages[0]["epochs"], stages[1]["epochs"] = 1, 1
    stages[1]["objective"]["init_args"].update(max_new_tokens=24, mini_batch_size=8, **samples)
    config["trainer"].update(max_epochs=2, enable_progress_bar=False, **trainer_settings)
    config["data"]["init_args"].update(num_train=8, num_val=4, num_test=4, batch_size=8, eval_batch_size=4)
    small = tmp_path / "code.yaml"
    small.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(small), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert cli.trainer.state.finished and cli.trainer.current_epoch == 2
    return cli


def test_shipped_code_config_runs_sft_then_ppo_with_the_sandbox(tmp_path, capsys):
    config = yaml.safe_load(CODE_CONFIG.read_text())
    stages = config["model"]["objective"]["init_args"]["stages"]
    assert [stage["objective"]["class_path"] for stage in stages] == ["SFT", "PPO"]
    assert stages[1]["objective"]["init_args"]["reward"]["class_path"] == "ift.rewards.CodeTestsReward"
    cli = fit_small_code_recipe(config, tmp_path, {"samples_per_prompt": 2}, check_val_every_n_epoch=1)
    trainer, module = cli.trainer, cli.model
    reward = module.objective.stages[1].objective.reward
    assert isinstance(reward, CodeTestsReward)
    assert reward.counts["responses"] == 16  # 8 prompts x 2 samples, each run or looked up in the sandbox
    assert "train/score" in trainer.callback_metrics and "train/reward_timeouts" in trainer.callback_metrics
    # The held-out pass rate of the checkpoint, through `ift code-pass-rate`.
    (checkpoint,) = (tmp_path / "run").glob("**/checkpoints/*.ckpt")
    task = json.dumps({"num_train": 8, "num_val": 4, "num_test": 4})
    result = main(["code-pass-rate", "--ckpt", str(checkpoint), "--task", task, "--max-new-tokens", "24"])
    assert result["count"] == 4 and 0.0 <= result["pass_rate"] <= result["mean_score"] <= 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_shipped_code_config_runs_sft_then_grpo_with_the_sandbox(tmp_path):
    config = yaml.safe_load(CODE_GRPO_CONFIG.read_text())
    ppo = yaml.safe_load(CODE_CONFIG.read_text())
    stages = config["model"]["objective"]["init_args"]["stages"]
    assert [stage["objective"]["class_path"] for stage in stages] == ["SFT", "GRPO"]
    assert config["trainer"]["max_epochs"] == sum(stage["epochs"] for stage in stages)
    # The PPO config's reward, task and optimizer; only the RL stage (and the warm-up's length) differ.
    ppo_rl = ppo["model"]["objective"]["init_args"]["stages"][1]
    assert stages[1]["objective"]["init_args"]["reward"] == ppo_rl["objective"]["init_args"]["reward"]
    assert (config["data"], config["model"]["optimizer"]) == (ppo["data"], ppo["model"]["optimizer"])
    assert stages[1]["lr"] == ppo_rl["lr"] and stages[1]["epochs"] == ppo_rl["epochs"]
    cli = fit_small_code_recipe(config, tmp_path, {"num_generations": 2})
    trainer, module = cli.trainer, cli.model
    objective = module.objective.stages[1].objective
    assert type(objective).__name__ == "GRPO" and isinstance(objective.rewards[0], CodeTestsReward)
    assert objective.rewards[0].counts["responses"] == 16  # 8 prompts x 2 samples, each run or looked up in the sandbox
    for key in ("train/score", "train/kl_ref", "train/zero_variance_groups", "train/reward_timeouts"):
        assert key in trainer.callback_metrics, key
