"""A reward model must be a sequence classifier with a trained head (issue 26, item 7).

A causal LM folder (what ExportPretrained writes for a policy) would load as
``AutoModelForSequenceClassification`` with a randomly initialised score head, and PPO would
train against noise. It is refused when the reward is built, before any step; so is a
classifier whose weights lack the head. A folder saved as a one-label classifier is accepted
and scores.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from ift.core.tokenizer import build_char_tokenizer
from ift.rewards import RewardModelScore


def tiny_config(tokenizer, **fields) -> GPT2Config:
    return GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, **fields)


def save(model, tokenizer, folder) -> str:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def causal_lm_folder(tmp_path, tokenizer) -> str:
    torch.manual_seed(0)
    return save(GPT2LMHeadModel(tiny_config(tokenizer)), tokenizer, tmp_path / "policy")


@pytest.fixture
def reward_model_folder(tmp_path, tokenizer) -> str:
    torch.manual_seed(0)
    return save(GPT2ForSequenceClassification(tiny_config(tokenizer, num_labels=1)), tokenizer, tmp_path / "rm")


def test_a_causal_lm_folder_is_refused_when_the_reward_is_built(causal_lm_folder):
    with pytest.raises(ValueError) as refused:
        RewardModelScore(causal_lm_folder, device="cpu")
    message = str(refused.value)
    assert causal_lm_folder in message and "GPT2LMHeadModel" in message and "causal language model" in message
    assert "randomly initialised" in message
    assert "RewardModeling" in message and "ExportPretrained" in message  # how to make one


def test_the_projects_exports_a_policy_refused_a_reward_model_accepted(tmp_path):
    from factories import tiny_module
    from ift.callbacks.export import export_pretrained
    from ift.objectives import RewardModeling

    policy = export_pretrained(tiny_module(), str(tmp_path / "policy"))
    with pytest.raises(ValueError, match=r"causal language model .*not a sequence classifier"):
        RewardModelScore(policy, device="cpu")
    reward_model = export_pretrained(tiny_module(RewardModeling()), str(tmp_path / "reward_model"))
    assert len(RewardModelScore(reward_model, device="cpu")(["1+1="], ["2"], [{}])) == 1


def test_a_one_label_sequence_classifier_is_accepted_and_scores(reward_model_folder, tokenizer):
    reward = RewardModelScore(reward_model_folder, device="cpu")
    scores = reward(["1+1=", "2+2="], ["2", "5"], [{}, {}])
    model = GPT2ForSequenceClassification.from_pretrained(reward_model_folder).eval()
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([tokenizer(text)["input_ids"]])).logits[0, 0].item()
                    for text in ("1+1=2", "2+2=5")]
    assert scores == pytest.approx(expected, abs=1e-5)


def test_a_classifier_whose_weights_lack_the_head_is_refused(reward_model_folder):
    from safetensors.torch import load_file, save_file

    weights = f"{reward_model_folder}/model.safetensors"
    state = load_file(weights)
    del state["score.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"the weights have no score\.weight.*at random"):
        RewardModelScore(reward_model_folder, device="cpu")


def test_a_source_that_cannot_be_checked_when_built_is_checked_when_loaded(causal_lm_folder, monkeypatch):
    """A hub id passes the build-time check (nothing offline to read); its weights are then
    checked at loading: here a local causal LM stands in for one."""
    import ift.rewards.reward_model as reward_model

    monkeypatch.setattr(reward_model, "check_reward_model_source", lambda *args, **kwargs: None, raising=False)
    reward = RewardModelScore(causal_lm_folder, device="cpu")
    with pytest.raises(ValueError, match=r"the weights have no score\.weight"):
        reward(["1+1="], ["2"], [{}])


def test_the_pre_flight_names_the_setting_of_a_causal_lm_given_as_reward_model(causal_lm_folder):
    from ift.cli.input_paths import input_path_problems

    config = {"model": {"model": "tiny-gpt2", "objective": {"class_path": "ift.objectives.PPO", "init_args": {
        "reward": {"class_path": "ift.rewards.RewardModelScore", "init_args": {"model_name_or_path": causal_lm_folder}}}}}}
    (problem,) = input_path_problems(config)
    assert problem[0] == "model.objective.init_args.reward.init_args.model_name_or_path"
    assert "GPT2LMHeadModel" in problem[2]
