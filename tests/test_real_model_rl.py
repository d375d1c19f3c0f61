"""The real-model RL experiment's code path (ift.lab.real_model_rl) on a tiny local model:
every arm trains for one or two optimizer steps and is measured, in one process, in seconds.
The real run (SmolLM2-135M-Instruct) is benchmarks/grpo_real_model.py; docs/real_model_rl.md."""

from __future__ import annotations

import dataclasses

from ift.lab.real_model_rl import (ARMS, PromptedArithmetic, RealModelRLSettings, run_seed, run_untrained, spaced,
                                   with_untrained)

TINY = RealModelRLSettings(model="tiny-gpt2", chat=False, num_train=16, num_val=4, sft_batch_size=2,
                           warmup_steps=1, rl_steps=1, rl_prompts=2, num_generations=2, max_new_tokens=3,
                           eval_batch_size=4)


def test_the_prompt_asks_the_problem_in_words_and_keeps_the_answer():
    assert spaced("12-9+15=") == "12 - 9 + 15"
    data = PromptedArithmetic(num_train=4, num_val=2, num_test=0, num_operands=3, max_operand=20, operators="+-",
                              worked_solution=True)
    example = data.all_examples()["val"][0]
    assert example["prompt"].startswith("Calculate ") and example["prompt"].endswith(". End with 'answer: N'.")
    assert example["response"].endswith(f"answer: {example['answer']}")
    assert eval(example["prompt"][len("Calculate "):-len(". End with 'answer: N'.")]) == int(example["answer"])


def test_every_arm_trains_and_is_measured_on_a_tiny_model():
    untrained = run_untrained(TINY)
    run = with_untrained([run_seed(TINY, 0)], untrained)[0]
    assert set(run["arms"]) == set(ARMS)
    for arm, cell in run["arms"].items():
        assert 0.0 <= cell["accuracy"] <= 1.0, arm
    steps = {arm: run["arms"][arm]["optimizer_steps"] for arm in ARMS}
    assert steps == {"untrained": 0, "sft": 1, "grpo": 1, "sft+grpo": 2, "sft+ppo": 2, "sft+sft": 2}
    for arm in ("grpo", "sft+grpo", "sft+ppo"):  # one rollout of 2 prompts x 2 samples, counted
        cell = run["arms"][arm]
        assert cell["rl_steps"] == 1 and cell["rollouts"] == 1 and cell["responses_sampled"] == 4, (arm, cell)
        assert cell["tokens_sampled"] > 0
    assert run["arms"]["sft"]["tokens_sampled"] == run["arms"]["sft+sft"]["tokens_sampled"] == 0
