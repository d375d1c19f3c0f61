"""The engine/trainer mismatch and its truncated importance-sampling correction (no vLLM needed):

* :func:`ift.objectives.functional.engine_correction` against a slow loop, with its edge cases
  (all-masked rows, length 1, padding on either side, bf16 inputs, a cap of None);
* the rollout loop with an engine that reports log-probs (a test double of a vLLM sampler whose
  log-probs are the trainer's shifted by a known amount): the advantages carry the weight, the
  mismatch is logged, and an engine without log-probs (Hugging Face) changes nothing.
"""

import math

import pytest
import torch

from factories import MetricsLog, quiet_trainer, tiny_arithmetic, tiny_module
from reference_impls import loop_engine_correction
from ift.core.forward import position_ids_from_mask
from ift.core.sampling import HFSampler, SampledTokens, Sampler, samplers_in
from ift.objectives import GRPO, GSPO, PPO, Sequential, SFT
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps
from ift.rewards import Reward


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_engine_correction_against_a_slow_loop(level, padding):
    torch.manual_seed(0)
    old = torch.randn(5, 6) * 0.5 - 2
    engine = old + torch.randn(5, 6) * 0.8  # some weights above the cap, some below 1
    lengths = [6, 3, 1, 0, 4]  # a full row, length 1, an all-masked row
    mask = torch.zeros(5, 6, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if n:
            if padding == "right":
                mask[b, :n] = True
            else:
                mask[b, 6 - n:] = True
    weights, metrics = Fn.engine_correction(old, engine, mask, cap=2.0, level=level)
    expected, mean_diff, max_diff = loop_engine_correction(old, engine, mask, 2.0, level)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)
    assert float(metrics["engine/logprob_diff_mean"]) == pytest.approx(mean_diff, rel=1e-5)
    assert float(metrics["engine/logprob_diff_max"]) == pytest.approx(max_diff, rel=1e-5)
    valid = mask if level == "token" else mask.any(-1)
    assert float(metrics["engine/tis_weight_mean"]) == pytest.approx(float(expected[valid].mean()), rel=1e-5)
    cut = expected[valid] >= 2.0 - 1e-6  # weights the cap cut (the draw has some above it)
    assert float(metrics["engine/tis_truncated"]) == pytest.approx(float(cut.float().mean()), abs=1e-6)
    if level == "token":
        assert 0 < int(cut.sum()) < int(valid.sum())
    if level == "token":
        assert torch.all(weights[~mask] == 0)
    else:
        assert weights[3] == 0  # the all-masked row


def test_engine_correction_edge_cases():
    old = torch.tensor([[-1.0, -2.0]])
    mask = torch.tensor([[True, False]])
    # identical engines: weight 1, no difference
    weights, metrics = Fn.engine_correction(old, old.clone(), mask, cap=3.0)
    assert weights.tolist() == [[1.0, 0.0]] and float(metrics["engine/logprob_diff_max"]) == 0.0
    # no cap: measured, not corrected
    weights, metrics = Fn.engine_correction(old, old - 1, mask, cap=None)
    assert weights is None and set(metrics) == {"engine/logprob_diff_mean", "engine/logprob_diff_max"}
    # nothing valid: zeros, no nan
    weights, metrics = Fn.engine_correction(old, old - 1, torch.zeros_like(mask), cap=3.0)
    assert weights.tolist() == [[0.0, 0.0]] and all(float(v) == 0.0 for v in metrics.values())
    # bf16 inputs are read in float32
    weights, _ = Fn.engine_correction(old.bfloat16(), (old - 0.5).bfloat16(), mask, cap=3.0)
    assert weights.dtype == torch.float32 and weights[0, 0] == pytest.approx(math.exp(0.5), rel=1e-2)
    with pytest.raises(ValueError, match="shapes differ"):
        Fn.engine_correction(old, old[:, :1], mask, cap=3.0)
    with pytest.raises(ValueError, match="level 'batch'"):
        Fn.engine_correction(old, old, mask, cap=3.0, level="batch")


# ---------------------------------------------------------------------------- in the rollout loop
class Digits(Reward):
    """1 for each digit in the response (a reward every sample can earn)."""

    def __call__(self, prompts, responses, examples):
        return [float(sum(ch.isdigit() for ch in response)) for response in responses]


class ShiftedEngine(HFSampler):
    """Hugging Face sampling that reports log-probs: the trainer's minus ``shift`` (an engine whose
    probabilities are uniformly lower), with ``tis_cap`` like VLLMSampler's."""

    def __init__(self, shift: float, tis_cap=3.0):
        super().__init__()
        self.shift, self.tis_cap, self.closed = shift, tis_cap, 0

    def sample(self, policy, tokenizer, prompt_ids, prompt_mask, settings):
        drawn = super().sample(policy, tokenizer, prompt_ids, prompt_mask, settings)
        full = torch.cat([prompt_ids, drawn.ids], 1)
        mask = torch.cat([prompt_mask, torch.ones_like(drawn.ids)], 1)
        with torch.no_grad():  # positions from the mask, as the trainer reads left-padded prompts
            logits = policy(input_ids=full, attention_mask=mask,
                            position_ids=position_ids_from_mask(mask)).logits[:, prompt_ids.shape[1] - 1:-1]
        logprobs = rollout_steps.sampled_logprobs(logits, drawn.ids, settings.temperature) - self.shift
        return SampledTokens(ids=drawn.ids, logprobs=logprobs, finished=drawn.finished)

    def close(self):
        self.closed += 1


def advantages_of_first_rollout(objective):
    module = tiny_module(objective)
    log = MetricsLog()
    seen = {}
    original = objective.update_on_rollout

    def keep(context, rollout):
        seen.setdefault("rollout", rollout)
        return original(context, rollout)

    objective.update_on_rollout = keep
    trainer = quiet_trainer(callbacks=[log], max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, tiny_arithmetic())
    return seen["rollout"], log.rows


@pytest.mark.parametrize("shift,expected_weight", [(0.5, math.exp(0.5)), (2.0, 3.0)])
def test_grpo_advantages_carry_the_truncated_weight_and_the_mismatch_is_logged(shift, expected_weight):
    reference, _ = advantages_of_first_rollout(GRPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1))
    engine = ShiftedEngine(shift)
    rollout, rows = advantages_of_first_rollout(GRPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1,
                                                     sampler=engine))
    mask = rollout.response_mask
    assert rollout.advantages.shape == mask.shape  # per token now
    expected = reference.advantages.unsqueeze(-1) * torch.where(mask, expected_weight, 0.0)
    torch.testing.assert_close(rollout.advantages, expected, rtol=1e-4, atol=1e-6)
    logged = rows[0]
    assert logged["engine/logprob_diff_mean"] == pytest.approx(shift, rel=1e-4)
    assert logged["engine/tis_weight_mean"] == pytest.approx(expected_weight, rel=1e-4)
    assert engine.closed == 1  # fit's end released the engine


def test_gspo_takes_the_sequence_weight_and_ppo_the_token_weight():
    engine = ShiftedEngine(0.25)
    rollout, _ = advantages_of_first_rollout(GSPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1,
                                                  sampler=engine))
    reference, _ = advantages_of_first_rollout(GSPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1))
    assert rollout.advantages.dim() == 1  # one weight per response
    torch.testing.assert_close(rollout.advantages, reference.advantages * math.exp(0.25), rtol=1e-4, atol=1e-6)
    ppo = PPO(reward=Digits(), samples_per_prompt=2, max_new_tokens=4, seed=1, sampler=ShiftedEngine(0.25))
    ppo_rollout, rows = advantages_of_first_rollout(ppo)
    ppo_reference, _ = advantages_of_first_rollout(PPO(reward=Digits(), samples_per_prompt=2, max_new_tokens=4, seed=1))
    torch.testing.assert_close(ppo_rollout.advantages, ppo_reference.advantages * math.exp(0.25), rtol=1e-4,
                               atol=1e-6)


def test_without_a_cap_the_mismatch_is_measured_and_nothing_is_corrected():
    reference, _ = advantages_of_first_rollout(GRPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1))
    rollout, rows = advantages_of_first_rollout(GRPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1,
                                                     sampler=ShiftedEngine(0.5, tis_cap=None)))
    torch.testing.assert_close(rollout.advantages, reference.advantages)
    assert rows[0]["engine/logprob_diff_max"] == pytest.approx(0.5, rel=1e-4)
    assert "engine/tis_weight_mean" not in rows[0]


def test_hugging_face_sampling_reports_no_mismatch_and_samplers_are_found_in_recipes():
    _, rows = advantages_of_first_rollout(GRPO(reward=Digits(), num_generations=4, max_new_tokens=4, seed=1))
    assert not any(key.startswith("engine/") for key in rows[0])
    inner = ShiftedEngine(0.1)
    recipe = Sequential(stages=[{"objective": SFT(), "steps": 1},
                                {"objective": GRPO(reward=Digits(), num_generations=4, sampler=inner)}])
    assert samplers_in(recipe) == [inner]
    assert isinstance(samplers_in(PPO(reward=Digits()))[0], Sampler)


def test_without_vllm_the_engine_says_how_to_install_it():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here: tests/test_vllm_engine.py runs it")
    from ift.core.vllm_sampler import VLLMSampler

    sampler = VLLMSampler(kv_cache_mb=64)  # building it (a config, --print_config) needs no vLLM
    module = tiny_module()
    with pytest.raises(ImportError, match="make install-vllm"):
        sampler.load_weights(module.policy)
    with pytest.raises(ValueError, match="tis_cap"):
        VLLMSampler(tis_cap=0.5)
    with pytest.raises(ValueError, match="dtype 'int8'"):
        VLLMSampler(dtype="int8")
