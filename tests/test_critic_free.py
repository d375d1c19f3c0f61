"""The critic-free objectives (GRPO family) through the rollout loop, on the tiny model:
each named variant's defaults and its YAML form, the errors a wrong setting gets, no
reference without a KL term, several weighted rewards and unscorable responses, whole
groups per mini-batch, DAPO's dynamic sampling and overlong handling, everywhere PPO works
(recipes, resume, LoRA, bf16, the shared prompt pass, seeds), and the metrics RL users read.

The maths of every formula is checked in ``test_critic_free_functional.py``; here the
numbers a test expects are computed in the test from what the rollout holds (its responses,
its masks), never copied from a run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytest
import pytorch_lightning as pl
import torch
import yaml

import ift.core.shared_prompts as shared_prompts
import ift.objectives.rollout_steps as rollout_steps
from factories import MetricsLog, quiet_trainer, tiny_arithmetic, tiny_module
from ift.core.sampling import SampledTokens, Sampler
from ift.modules import FineTuneModule
from ift.objectives import (CISPO, DAPO, GRPO, GSPO, RLOO, SFT, CriticFreeRL, DrGRPO, GroupRollout, Mix,
                            ReinforcePlusPlus, Sequential)
from ift.rewards import AnswerMatchReward, Reward

pytestmark = [pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore:Reward NanAt returned:RuntimeWarning")]

G = 4  # responses per prompt in every test here
PROMPTS = 4  # prompts per training batch of tiny_arithmetic()


# ---------------------------------------------------------------------------- rewards
class Digits(Reward):
    """How many digits a response has."""

    def __call__(self, prompts, responses, examples):
        return [float(sum(c.isdigit() for c in r)) for r in responses]


class Length(Reward):
    """How many characters a response has."""

    def __call__(self, prompts, responses, examples):
        return [float(len(r)) for r in responses]


class NanAt(Reward):
    """1.0 for every response, nan for the rows in ``rows``."""

    def __init__(self, rows: Sequence[int] = ()):
        self.rows = set(rows)

    def __call__(self, prompts, responses, examples):
        return [float("nan") if i in self.rows else 1.0 for i in range(len(responses))]


class CharCode(Reward):
    """A score that differs between almost any two responses; a constant (1.0) for every
    response to the prompts in ``flat`` (on the first call only with ``first_call_only``).
    Records every call: the prompts it saw and the scores it gave."""

    def __init__(self, flat: Sequence[str] = (), first_call_only: bool = False):
        self.flat = set(flat)
        self.first_call_only = first_call_only
        self.calls: List[Tuple[List[str], List[float]]] = []

    def __call__(self, prompts, responses, examples):
        first = not self.calls
        scores = [1.0 if p in self.flat and (first or not self.first_call_only) else float(sum(map(ord, r)) % 97 + 1)
                  for p, r in zip(prompts, responses)]
        self.calls.append((list(prompts), scores))
        return scores


# ---------------------------------------------------------------------------- helpers
class ScriptSampler(Sampler):
    """Answers row ``b`` with ``script[b % len(script)]``: ``(text, emits_eos)``; with
    ``len(script) == G`` every group holds the same responses in the same order."""

    def __init__(self, script: Sequence[Tuple[str, bool]]):
        self.script = list(script)

    def sample(self, policy, tokenizer, prompt_ids, prompt_mask, settings):
        rows = []
        for b in range(prompt_ids.shape[0]):
            text, eos = self.script[b % len(self.script)]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append(ids + [tokenizer.eos_token_id] if eos else ids)
        width = max(len(row) for row in rows)
        out = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        for b, row in enumerate(rows):
            out[b, :len(row)] = torch.tensor(row)
        return SampledTokens(ids=out, logprobs=None, finished=(out == tokenizer.eos_token_id).any(-1))




def small(cls=GRPO, **kwargs):
    """``cls`` with a few-token rollout: 4 responses per prompt, 4 new tokens, seed 1."""
    options = dict(reward=Digits(), num_generations=G, max_new_tokens=4, seed=1)
    options.update(kwargs)
    return cls(**options)


def fit(objective, batches: int = 2, epochs: int = 1, module_kwargs=None, callbacks=(), **trainer_kwargs):
    """Train ``objective`` on the tiny model for ``batches`` batches; ``(module, trainer, rows)``."""
    module = tiny_module(objective, **(module_kwargs or {}))
    log = MetricsLog()
    options = dict(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0)
    options.update(trainer_kwargs)
    trainer = quiet_trainer(callbacks=[log, *callbacks], **options)
    trainer.fit(module, tiny_arithmetic())
    return module, trainer, log.rows


def first_batch(module, batch_size: int = PROMPTS):
    data = tiny_arithmetic(batch_size=batch_size, tokenizer=module.tokenizer)
    data.setup()
    return next(iter(data.train_dataloader()))


def record_rollouts(objective) -> List[GroupRollout]:
    """Wrap ``objective.evaluate_rollout`` to keep every rollout it builds."""
    seen: List[GroupRollout] = []
    original = objective.evaluate_rollout

    def evaluate_rollout(context, scored):
        rollout = original(context, scored)
        seen.append(rollout)
        return rollout

    objective.evaluate_rollout = evaluate_rollout
    return seen


def count_calls(monkeypatch, owner, name) -> List[int]:
    """Count the calls of ``owner.name`` (a module function)."""
    calls = [0]
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def policy_state(module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.policy.state_dict().items()}


# ---------------------------------------------------------------------------- 1. defaults and YAML
VARIANT_DEFAULTS = {
    "GRPO": (GRPO, {}, dict(beta=0.04, loss_aggregation="seq-mean-token-mean", kl_estimator="k3", kl_placement="loss",
                            advantage_estimator="grpo", scale_rewards="group", epsilon_low=0.2, epsilon_high=0.2,
                            policy_loss="clip", importance_sampling_level="token", dynamic_sampling=False,
                            overlong="none"),
             ["0.04", "seq-mean-token-mean", "k3"]),
    "DrGRPO": (DrGRPO, {}, dict(scale_rewards="none", loss_aggregation="seq-mean-token-sum-norm", beta=0.0,
                                advantage_estimator="grpo", kl_placement="loss"),
               ["seq-mean-token-sum-norm", "none", "beta 0"]),
    "DAPO": (DAPO, {}, dict(epsilon_low=0.2, epsilon_high=0.28, loss_aggregation="token-mean", dynamic_sampling=True,
                            overlong="soft", beta=0.0, advantage_estimator="grpo", scale_rewards="group"),
             ["0.28", "token-mean", "soft", "beta 0"]),
    "GSPO": (GSPO, {}, dict(importance_sampling_level="sequence", epsilon_low=3e-4, epsilon_high=4e-4, beta=0.0,
                            loss_aggregation="seq-mean-token-mean", advantage_estimator="grpo"),
             ["3e-4", "4e-4", "sequence"]),
    "CISPO": (CISPO, {}, dict(policy_loss="cispo", epsilon_high=5.0, loss_aggregation="token-mean", beta=0.0,
                              importance_sampling_level="token"),
              ["cispo", "5", "token-mean"]),
    "RLOO": (RLOO, {}, dict(advantage_estimator="rloo", beta=0.05, kl_estimator="k1", kl_placement="reward",
                            loss_aggregation="seq-mean-token-sum-norm"),
             ["k1", "0.05", "reward"]),
    "ReinforcePlusPlus": (ReinforcePlusPlus, {}, dict(advantage_estimator="reinforce++", beta=0.01, kl_estimator="k1",
                                                      kl_placement="reward", loss_aggregation="token-mean",
                                                      policy_loss="clip", epsilon_low=0.2, epsilon_high=0.2),
                          ["k1", "0.01", "token-mean"]),
    "ReinforcePlusPlus-baseline": (ReinforcePlusPlus, {"baseline": True},
                                   dict(advantage_estimator="reinforce++-baseline", beta=0.01, kl_estimator="k1",
                                        kl_placement="reward", loss_aggregation="token-mean"),
                                   ["baseline", "0.01"]),
}


@pytest.mark.parametrize("name", list(VARIANT_DEFAULTS))
def test_each_variant_builds_with_the_defaults_its_docstring_states(name):
    cls, args, expected, doc_words = VARIANT_DEFAULTS[name]
    objective = cls(reward=AnswerMatchReward(), **args)
    assert isinstance(objective, CriticFreeRL)
    assert {key: getattr(objective, key) for key in expected} == pytest.approx(expected)
    for word in doc_words:  # the documented value is the one built
        assert word in cls.__doc__, (name, word)
    assert objective.num_generations == objective.samples_per_prompt == 8
    assert objective.uses_reference == objective.capabilities.reads_reference == (objective.beta > 0)
    assert objective.capabilities.manual_optimization
    # Any default can be overridden by name.
    assert cls(reward=AnswerMatchReward(), epsilon_high=0.5, **args).epsilon_high == 0.5


def test_the_variants_are_exported():
    import ift.objectives as objectives

    for name in ("CriticFreeRL", "GRPO", "DrGRPO", "DAPO", "GSPO", "CISPO", "RLOO", "ReinforcePlusPlus"):
        assert name in objectives.__all__ and name in objectives.available_objectives(), name


def tiny_config(objective: Dict[str, Any], path: Path) -> Path:
    """A run config for ``objective`` at tiny size, written to ``path``."""
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"model": "tiny-gpt2", "objective": objective},
        "data": {"class_path": "ift.tasks.arithmetic.ArithmeticDataModule",
                 "init_args": {"num_train": 8, "num_val": 2, "num_test": 2, "batch_size": 4}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def built_from_yaml(config: Path):
    """The objective the ``ift`` command's parser builds from ``config`` (nothing trained)."""
    from ift.cli import IFTCLI

    cli = IFTCLI(FineTuneModule, pl.LightningDataModule, subclass_mode_data=True, run=False,
                 args=["--config", str(config)])
    return cli.model.objective


YAML_CASES = {
    "GRPO": (GRPO, {"beta": 0.1}, {"beta": 0.1, "kl_estimator": "k3"}),
    "DrGRPO": (DrGRPO, {"max_new_tokens": 7}, {"max_new_tokens": 7, "scale_rewards": "none"}),
    "DAPO": (DAPO, {"max_resample_rounds": 1, "overlong": "mask"},
             {"max_resample_rounds": 1, "overlong": "mask", "epsilon_high": 0.28, "dynamic_sampling": True}),
    "GSPO": (GSPO, {"epsilon_high": 5e-4}, {"epsilon_high": 5e-4, "epsilon_low": 3e-4}),
    "CISPO": (CISPO, {"epsilon_high": 3.0}, {"epsilon_high": 3.0, "policy_loss": "cispo"}),
    "RLOO": (RLOO, {"beta": 0.0}, {"beta": 0.0, "advantage_estimator": "rloo"}),
    "ReinforcePlusPlus": (ReinforcePlusPlus, {"baseline": True}, {"advantage_estimator": "reinforce++-baseline"}),
    "CriticFreeRL": (CriticFreeRL, {"advantage_estimator": "rloo", "scale_rewards": "batch"},
                     {"advantage_estimator": "rloo", "scale_rewards": "batch", "beta": 0.04}),
}


@pytest.mark.parametrize("name", list(YAML_CASES))
def test_each_variant_is_chosen_in_yaml_by_its_short_name_and_takes_its_options(name, tmp_path, capsys):
    cls, options, expected = YAML_CASES[name]
    objective_config = {"class_path": name, "init_args": {
        "reward": {"class_path": "ift.rewards.AnswerMatchReward", "init_args": {"wrong": 0.25}},
        "num_generations": 4, **options}}
    config = tiny_config(objective_config, tmp_path / "run.yaml")
    objective = built_from_yaml(config)
    assert type(objective) is cls
    assert isinstance(objective.reward, AnswerMatchReward) and objective.reward.wrong == 0.25
    assert objective.num_generations == objective.samples_per_prompt == 4
    assert {key: getattr(objective, key) for key in expected} == pytest.approx(expected)

    from ift.cli import main

    try:
        main(["fit", "--config", str(config), "--print_config"])
    except SystemExit as stop:
        assert stop.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["objective"]
    assert printed["class_path"].startswith("ift.") and printed["class_path"].split(".")[-1] == name
    assert printed["init_args"]["num_generations"] == 4


@pytest.mark.parametrize("name", ["GRPO", "DAPO", "RLOO", "CriticFreeRL"])
def test_a_reward_setting_survives_the_printed_config(name, tmp_path, capsys):
    # The variants' reward argument is typed like CriticFreeRL's: untyped, the command line
    # read the nested reward as any value and printed trigger ['####'] as [null].
    config = tiny_config({"class_path": name, "init_args": {
        "reward": {"class_path": "ift.rewards.AnswerMatchReward", "init_args": {"trigger": ["####"]}},
        "num_generations": 2}}, tmp_path / "run.yaml")
    from ift.cli import main

    try:
        main(["fit", "--config", str(config), "--print_config"])
    except SystemExit as stop:
        assert stop.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["objective"]["init_args"]["reward"]
    assert printed["init_args"]["trigger"] == ["####"]
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()),
                                     "model": {"model": "tiny-gpt2", "objective": {"class_path": name, "init_args": {
                                         "reward": printed, "num_generations": 2}}}}))
    assert built_from_yaml(again).reward.triggers == ("####",)


def test_several_weighted_rewards_in_yaml(tmp_path):
    config = tiny_config({"class_path": "GRPO", "init_args": {
        "reward": [{"class_path": "ift.rewards.AnswerMatchReward"},
                   {"class_path": "ift.rewards.AnswerMatchReward", "init_args": {"correct": 2.0}}],
        "reward_weights": [1.0, 0.5], "num_generations": 2}}, tmp_path / "run.yaml")
    objective = built_from_yaml(config)
    assert [type(r) for r in objective.rewards] == [AnswerMatchReward, AnswerMatchReward]
    assert [r.correct for r in objective.rewards] == [1.0, 2.0]
    assert objective.weights == [1.0, 0.5]


def test_recipes_with_critic_free_stages_in_yaml(tmp_path):
    reward = {"class_path": "ift.rewards.AnswerMatchReward"}
    sequential = built_from_yaml(tiny_config({"class_path": "Sequential", "init_args": {"stages": [
        {"objective": {"class_path": "SFT"}, "steps": 2},
        {"objective": {"class_path": "DAPO", "init_args": {"reward": reward, "num_generations": 2}}}]}},
        tmp_path / "sequential.yaml"))
    assert isinstance(sequential, Sequential) and type(sequential.stages[1].objective) is DAPO
    assert sequential.stages[1].objective.num_generations == 2
    mix = built_from_yaml(tiny_config({"class_path": "Mix", "init_args": {
        "objectives": [{"class_path": "SFT"}, {"class_path": "GRPO", "init_args": {"reward": reward, "beta": 0.0}}],
        "weights": [1.0, 0.5]}}, tmp_path / "mix.yaml"))
    assert isinstance(mix, Mix) and type(mix.objectives[1]) is GRPO and mix.objectives[1].beta == 0.0


# ---------------------------------------------------------------------------- 2. clear errors
@pytest.mark.parametrize("cls", [CriticFreeRL, GRPO, DrGRPO, DAPO, GSPO, CISPO, RLOO])
def test_a_group_estimator_needs_two_generations(cls):
    with pytest.raises(ValueError, match=r"num_generations >= 2 \(got 1\)") as raised:
        cls(reward=Digits(), num_generations=1)
    assert cls.__name__ in str(raised.value)


def test_reinforce_pp_alone_accepts_one_generation_but_not_its_baseline_form():
    assert ReinforcePlusPlus(reward=Digits(), num_generations=1).num_generations == 1
    with pytest.raises(ValueError, match="num_generations"):
        ReinforcePlusPlus(reward=Digits(), num_generations=1, baseline=True)
    with pytest.raises(ValueError, match="baseline"):
        ReinforcePlusPlus(reward=Digits(), advantage_estimator="rloo")


def test_mini_batches_must_hold_whole_groups():
    with pytest.raises(ValueError, match=r"mini_batch_size=6 .*multiple of num_generations=4"):
        GRPO(reward=Digits(), num_generations=4, mini_batch_size=6)
    assert GRPO(reward=Digits(), num_generations=4, mini_batch_size=8).mini_batch_size == 8


def test_gspo_sequence_level_refuses_token_mean():
    with pytest.raises(ValueError, match=r"importance_sampling_level='sequence'.*token-mean"):
        GSPO(reward=Digits(), loss_aggregation="token-mean")
    with pytest.raises(ValueError, match="sequence"):
        CriticFreeRL(reward=Digits(), importance_sampling_level="sequence", loss_aggregation="seq-mean-token-sum-norm")
    # GSPO-token aggregates per token and accepts it.
    assert GSPO(reward=Digits(), importance_sampling_level="sequence-token", loss_aggregation="token-mean")


@pytest.mark.parametrize("option, value, allowed", [
    ("advantage_estimator", "ppo", "rloo"), ("scale_rewards", "std", "group"), ("loss_aggregation", "sum", "token-mean"),
    ("policy_loss", "sapo", "cispo"), ("importance_sampling_level", "tokens", "sequence-token"),
    ("kl_estimator", "k4", "k3"), ("kl_placement", "both", "reward"), ("overlong", "cut", "mask"),
])
def test_an_unknown_option_value_names_the_option_and_the_choices(option, value, allowed):
    with pytest.raises(ValueError) as raised:
        CriticFreeRL(reward=Digits(), **{option: value})
    message = str(raised.value)
    assert option in message and repr(value) in message and allowed in message, message


@pytest.mark.parametrize("option, value", [("beta", -0.1), ("epsilon_low", 1.0), ("dual_clip", 0.5),
                                           ("max_resample_rounds", -1), ("overlong_cache_tokens", 64)])
def test_an_out_of_range_number_is_refused_by_name(option, value):
    with pytest.raises(ValueError, match=rf"CriticFreeRL: {option}=?\b.*{value}"):
        CriticFreeRL(reward=Digits(), max_new_tokens=32, **{option: value})


@pytest.mark.parametrize("cls", [CriticFreeRL, GRPO, DAPO, RLOO, ReinforcePlusPlus])
def test_a_missing_reward_lists_the_rewards_there_are(cls):
    with pytest.raises(ValueError, match=r"no reward given.*AnswerMatchReward.*CodeTestsReward") as raised:
        cls()
    assert cls.__name__ in str(raised.value)
    with pytest.raises(ValueError, match="no reward given"):
        cls(reward=[])


def test_reward_weights_must_match_the_rewards():
    with pytest.raises(ValueError, match="1 reward_weights for 2 rewards"):
        GRPO(reward=[Digits(), Length()], reward_weights=[1.0])
    with pytest.raises(ValueError, match="3 reward_weights for 1 rewards"):
        GRPO(reward=Digits(), reward_weights=[1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------- 3. the reference only with beta > 0
@pytest.mark.parametrize("make", [
    lambda: small(GRPO, beta=0.0), lambda: small(DrGRPO), lambda: small(DAPO, max_resample_rounds=1),
    lambda: small(GSPO, mini_batch_size=8), lambda: small(CISPO), lambda: small(RLOO, beta=0.0),
    lambda: small(ReinforcePlusPlus, beta=0.0),
], ids=["GRPO-beta0", "DrGRPO", "DAPO", "GSPO", "CISPO", "RLOO-beta0", "REINFORCE++-beta0"])
def test_without_a_kl_term_no_reference_is_built_or_run(make, monkeypatch):
    objective = make()
    assert objective.beta == 0
    reference_passes = count_calls(monkeypatch, rollout_steps, "reference_logprobs")
    rollouts = record_rollouts(objective)
    module, trainer, rows = fit(objective, batches=2)
    assert trainer.global_step >= 2 and len(rollouts) >= 2
    assert module.reference_policy is None
    assert reference_passes[0] == 0
    assert all(rollout.ref_logprobs is None for rollout in rollouts)
    assert all("train/kl_ref" not in row for row in rows)
    assert all(math.isfinite(row["train/loss"]) for row in rows)


@pytest.mark.parametrize("make", [lambda: small(GRPO), lambda: small(RLOO), lambda: small(ReinforcePlusPlus),
                                  lambda: small(DAPO, beta=0.02)], ids=["GRPO", "RLOO", "REINFORCE++", "DAPO-beta"])
def test_a_kl_term_builds_the_reference_and_reads_it(make, monkeypatch):
    objective = make()
    assert objective.beta > 0
    reference_passes = count_calls(monkeypatch, rollout_steps, "reference_logprobs")
    rollouts = record_rollouts(objective)
    module, _, rows = fit(objective, batches=2)
    assert module.reference_policy is not None
    assert reference_passes[0] >= 2
    assert all(rollout.ref_logprobs is not None for rollout in rollouts)
    assert all(math.isfinite(row["train/kl_ref"]) for row in rows)


# ---------------------------------------------------------------------------- 4. several rewards, unscorable responses
# Member j of every group answers SCRIPT[j]; the responses differ in length and digits.
SCRIPT = [("12", True), ("a3", True), ("xyz9", False), ("5555", True)]
NAN_ROW = 5  # group 1, member 1


def scored_rollout(cls, **kwargs):
    rewards = [Length(), Digits(), NanAt(rows=[NAN_ROW])]
    weights = [1.0, -0.5, 2.0]
    objective = cls(reward=rewards, reward_weights=weights, num_generations=G, max_new_tokens=6,
                    sampler=ScriptSampler(SCRIPT), seed=2, **kwargs)
    module = tiny_module(objective)
    objective.begin(module.step_context)
    rollout = objective.rollout(module.step_context, first_batch(module))
    return objective, rollout, rewards, weights


def expected_group_advantages(scores: List[float], estimator: str) -> List[float]:
    """The advantages of one group's valid scores, written out plainly."""
    n = len(scores)
    mean = sum(scores) / n
    if estimator == "grpo":
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
        return [(s - mean) / (std + 1e-4) for s in scores]
    if estimator == "mean-only":
        return [s - mean for s in scores]
    if estimator == "rloo":
        return [s - (sum(scores) - s) / (n - 1) for s in scores]
    raise ValueError(estimator)


@pytest.mark.parametrize("cls, kwargs, estimator", [(GRPO, {}, "grpo"), (DrGRPO, {}, "mean-only"),
                                                    (RLOO, {"beta": 0.0}, "rloo")], ids=["GRPO", "DrGRPO", "RLOO"])
def test_an_unscorable_response_is_left_out_of_its_groups_baseline_and_of_the_loss(cls, kwargs, estimator):
    objective, rollout, rewards, weights = scored_rollout(cls, **kwargs)
    B = PROMPTS * G
    assert rollout.batch_size == B and rollout.responses[:G] == [text for text, _ in SCRIPT]
    # The score is the weighted sum of the rewards, on every scorable response.
    per_reward = [reward(rollout.prompts, rollout.responses, rollout.examples) for reward in rewards]
    valid = [b != NAN_ROW for b in range(B)]
    assert rollout.score_valid.tolist() == valid
    for b in range(B):
        if valid[b]:
            assert float(rollout.scores[b]) == pytest.approx(sum(w * r[b] for w, r in zip(weights, per_reward)))
    # Each reward's mean over the responses it could score, and the count of nan scores.
    for reward, values in zip(rewards, per_reward):
        finite = [v for v in values if math.isfinite(v)]
        assert float(rollout.metrics[f"reward_{type(reward).__name__}"]) == pytest.approx(sum(finite) / len(finite))
    assert float(rollout.metrics["reward_nan"]) == 1
    # The group with the unscorable member: the others are compared among themselves only.
    scores = rollout.scores.tolist()
    for group in range(PROMPTS):
        rows = [b for b in range(group * G, (group + 1) * G) if valid[b]]
        expected = expected_group_advantages([scores[b] for b in rows], estimator)
        assert rollout.advantages[rows].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6), group
    assert float(rollout.advantages[NAN_ROW]) == 0
    # Not trained on: its loss-mask row is empty; every other row trains on its response.
    assert not rollout.loss_mask[NAN_ROW].any()
    others = torch.tensor(valid)
    assert torch.equal(rollout.loss_mask[others], rollout.response_mask[others])
    # A 0 in the baseline would have moved the other members' advantages.
    with_zero = expected_group_advantages([scores[b] if b != NAN_ROW else 0.0 for b in range(G, 2 * G)], estimator)
    assert rollout.advantages[[4, 6, 7]].tolist() != pytest.approx([with_zero[i] for i in (0, 2, 3)], abs=1e-3)


def test_each_reward_and_the_nan_count_are_logged_in_a_fit():
    objective = GRPO(reward=[Length(), Digits(), NanAt(rows=[NAN_ROW])], reward_weights=[1.0, -0.5, 2.0],
                     num_generations=G, max_new_tokens=6, sampler=ScriptSampler(SCRIPT), seed=2)
    _, _, rows = fit(objective, batches=2)
    for row in rows:
        for name in ("Length", "Digits", "NanAt"):
            assert f"train/reward_{name}" in row, sorted(row)
        assert row["train/reward_nan"] == 1
        assert math.isfinite(row["train/loss"])


def test_two_rewards_of_one_class_are_logged_apart():
    objective = GRPO(reward=[Length(), Length(), Digits()], reward_weights=[1.0, 2.0, 1.0], num_generations=G,
                     max_new_tokens=6, sampler=ScriptSampler(SCRIPT), seed=2)
    module = tiny_module(objective)
    objective.begin(module.step_context)
    rollout = objective.rollout(module.step_context, first_batch(module))
    logged = [key for key in rollout.metrics if key.startswith("reward_") and key not in ("reward_nan", "reward_timeouts")]
    assert len(logged) == 3, f"3 rewards, logged as {logged}"


# ---------------------------------------------------------------------------- 5. whole groups per mini-batch
@pytest.mark.parametrize("micro_batch_size", [None, 4])
def test_every_mini_batch_holds_whole_groups(micro_batch_size):
    objective = small(GRPO, beta=0.0, mini_batch_size=8, micro_batch_size=micro_batch_size, epochs=2)
    full: List[List[str]] = []
    batches: List[List[str]] = []
    original_rollout, original_loss = objective.rollout, objective.loss_on_rollout

    def rollout(context, batch):
        result = original_rollout(context, batch)
        full.append(list(result.prompts))
        return result

    def loss_on_rollout(context, rollout):
        batches.append(list(rollout.prompts))
        return original_loss(context, rollout)

    objective.rollout, objective.loss_on_rollout = rollout, loss_on_rollout
    _, trainer, rows = fit(objective, batches=1)
    assert len(full) == 1 and len(full[0]) == PROMPTS * G
    assert all(len(set(full[0][g * G:(g + 1) * G])) == 1 for g in range(PROMPTS))  # a group is G rows in a row
    assert trainer.global_step == 2 * 2 and rows[0]["train/updates"] == 4  # 2 epochs x 2 mini-batches
    per_step = 8 // (micro_batch_size or 8)
    assert [len(b) for b in batches] == [micro_batch_size or 8] * (4 * per_step)
    for prompts in batches:  # consecutive runs of G rows of one prompt
        assert len(prompts) % G == 0
        assert all(len(set(prompts[i:i + G])) == 1 for i in range(0, len(prompts), G)), prompts
    half = len(batches) // 2
    for epoch in (batches[:half], batches[half:]):  # each epoch covers the rollout once
        assert sorted(sum(epoch, [])) == sorted(full[0])


@pytest.mark.parametrize("cls, kwargs", [(GRPO, {}), (DAPO, {"dynamic_sampling": False, "overlong": "none"}),
                                         (DrGRPO, {}), (GSPO, {}), (CISPO, {}), (RLOO, {}), (ReinforcePlusPlus, {})],
                         ids=["GRPO", "DAPO", "DrGRPO", "GSPO", "CISPO", "RLOO", "REINFORCE++"])
def test_micro_batches_add_up_to_the_steps_loss(cls, kwargs):
    # One scorable-less row and responses of several lengths: the totals matter.
    objective = cls(reward=[Length(), NanAt(rows=[NAN_ROW])], num_generations=G, max_new_tokens=6,
                    sampler=ScriptSampler(SCRIPT), seed=2, **kwargs)
    module = tiny_module(objective)
    objective.begin(module.step_context)
    rollout = objective.rollout(module.step_context, first_batch(module))
    context = module.step_context
    whole = objective.loss_on_rollout(context, rollout).loss
    step = objective.prepare_update(context, rollout.select(torch.arange(rollout.batch_size)))
    parts = sum(objective.loss_on_rollout(context, step.select(torch.arange(first, first + 4))).loss
                for first in range(0, rollout.batch_size, 4))
    assert float(whole) != 0
    assert float(parts) == pytest.approx(float(whole), rel=1e-5, abs=1e-7)


# ---------------------------------------------------------------------------- 6. DAPO: dynamic sampling, overlong
def flat_groups(scores: List[float]) -> int:
    return sum(len(set(scores[i:i + G])) == 1 for i in range(0, len(scores), G))


def dynamic_rollout(max_resample_rounds: int, first_call_only: bool = False):
    module = tiny_module(None)
    batch = first_batch(module)
    flat = list(batch["prompt"][:2])
    reward = CharCode(flat=flat, first_call_only=first_call_only)
    objective = DAPO(reward=reward, num_generations=G, max_new_tokens=6, overlong="none",
                     max_resample_rounds=max_resample_rounds, seed=5)
    module.objective = objective  # no weights are drawn: the module's policy stays the same
    rollout = objective.rollout(module.step_context, batch)
    return rollout, reward, batch, flat


def check_dynamic_sampling_bookkeeping(rollout, reward, batch):
    """The logged counts agree with what the reward saw, and the rollout keeps its shape."""
    metrics = {key: float(rollout.metrics[key]) for key in ("groups_dropped", "resample_rounds", "groups_filled")}
    flats = [flat_groups(scores) for _, scores in reward.calls]
    assert metrics["resample_rounds"] == len(reward.calls) - 1
    assert metrics["groups_dropped"] == sum(flats)
    assert metrics["groups_filled"] == flats[-1]
    for (_, earlier), (prompts, _) in zip(reward.calls, reward.calls[1:]):  # each round redraws the flat groups
        assert len(prompts) == flat_groups(earlier) * G
    # As many rows as prompts x G, one whole group per prompt of the batch.
    assert rollout.batch_size == len(batch["prompt"]) * G
    assert sorted(rollout.prompts) == sorted(p for p in batch["prompt"] for _ in range(G))
    assert all(len(set(rollout.prompts[i:i + G])) == 1 for i in range(0, rollout.batch_size, G))
    assert rollout.response_ids.shape[0] == rollout.advantages.shape[0] == rollout.loss_mask.shape[0] == rollout.batch_size
    kept_flat = flat_groups(rollout.scores.tolist())
    assert kept_flat == metrics["groups_filled"]
    assert float(rollout.metrics["zero_variance_groups"]) == pytest.approx(kept_flat / len(batch["prompt"]))
    return metrics


def test_dynamic_sampling_redraws_flat_groups_and_fills_what_stays_flat():
    rollout, reward, batch, flat = dynamic_rollout(max_resample_rounds=2)
    metrics = check_dynamic_sampling_bookkeeping(rollout, reward, batch)
    assert flat_groups(reward.calls[0][1]) == 2  # the two constant prompts (the others' scores differ)
    assert metrics == {"groups_dropped": 2 * 3, "resample_rounds": 2, "groups_filled": 2}
    for g in range(PROMPTS):  # the filled groups are the constant prompts', with advantage 0
        if rollout.prompts[g * G] in flat:
            assert torch.all(rollout.advantages[g * G:(g + 1) * G] == 0)


def test_dynamic_sampling_keeps_the_redrawn_groups_that_have_spread():
    rollout, reward, batch, flat = dynamic_rollout(max_resample_rounds=3, first_call_only=True)
    metrics = check_dynamic_sampling_bookkeeping(rollout, reward, batch)
    assert metrics == {"groups_dropped": 2, "resample_rounds": 1, "groups_filled": 0}
    assert float(rollout.metrics["zero_variance_groups"]) == 0
    # The constant prompts' groups are the second draw's: their scores are the second call's.
    second_prompts, second_scores = reward.calls[1]
    assert sorted(set(second_prompts)) == sorted(flat)
    for g in range(PROMPTS):
        rows = slice(g * G, (g + 1) * G)
        if rollout.prompts[g * G] in flat:
            assert rollout.advantages[rows].abs().sum() > 0
            assert sorted(rollout.scores[rows].tolist()) in [
                sorted(second_scores[i:i + G]) for i in range(0, len(second_scores), G)]


def test_no_resample_rounds_keeps_the_flat_groups():
    rollout, reward, batch, _ = dynamic_rollout(max_resample_rounds=0)
    metrics = check_dynamic_sampling_bookkeeping(rollout, reward, batch)
    assert len(reward.calls) == 1
    assert metrics == {"groups_dropped": 2, "resample_rounds": 0, "groups_filled": 2}
    assert float(rollout.metrics["zero_variance_groups"]) == pytest.approx(2 / PROMPTS)


# Lengths in tokens (EOS counted): 2, 5, 7, and 8 without EOS (truncated at max_new_tokens).
OVERLONG_SCRIPT = [("1", True), ("1234", True), ("123456", True), ("12345678", False)]


def overlong_rollout(overlong: str, **kwargs):
    objective = DAPO(reward=Digits(), num_generations=G, max_new_tokens=8, overlong=overlong, dynamic_sampling=False,
                     sampler=ScriptSampler(OVERLONG_SCRIPT), seed=4, **kwargs)
    module = tiny_module(objective)
    return objective.rollout(module.step_context, first_batch(module))


def test_overlong_mask_leaves_truncated_responses_out_of_the_loss():
    rollout = overlong_rollout("mask")
    truncated = ~rollout.ended_with_eos
    assert truncated.tolist() == [not eos for _, eos in OVERLONG_SCRIPT] * PROMPTS
    assert not rollout.loss_mask[truncated].any()
    assert torch.equal(rollout.loss_mask[~truncated], rollout.response_mask[~truncated])
    # Without the option the truncated responses are trained on.
    plain = overlong_rollout("none")
    assert torch.equal(plain.loss_mask, plain.response_mask) and plain.loss_mask[truncated].any()


def test_overlong_soft_adds_dapos_length_penalty_to_the_score():
    max_new, cache = 8, 4
    soft = overlong_rollout("soft", overlong_cache_tokens=cache)
    plain = overlong_rollout("none")
    assert torch.equal(soft.response_ids, plain.response_ids)
    lengths = soft.response_mask.sum(-1).tolist()
    assert lengths[:G] == [2, 5, 7, 8]

    def penalty(length):  # DAPO, eq. 13
        if length <= max_new - cache:
            return 0.0
        return (max_new - cache - length) / cache if length <= max_new else -1.0

    expected = [p + penalty(n) for p, n in zip(plain.scores.tolist(), lengths)]
    assert soft.scores.tolist() == pytest.approx(expected)
    assert float(soft.metrics["overlong_penalty"]) == pytest.approx(sum(map(penalty, lengths)) / len(lengths))
    # The penalty reaches the advantages: Digits alone scores 1, 4, 6, 8 here; with it the order holds but the gaps shrink.
    assert not torch.allclose(soft.advantages, plain.advantages)


def test_the_score_spread_is_that_of_the_scores_trained_on():
    rollout = overlong_rollout("soft", overlong_cache_tokens=4)
    assert float(rollout.metrics["score_std"]) == pytest.approx(float(rollout.scores.std()), rel=1e-5)


# ---------------------------------------------------------------------------- 7. everywhere PPO works
class SwitchRecorder(pl.Callback):
    """The policy and reference weights at each recipe switch."""

    def __init__(self):
        self.switches = []

    def on_stage_switch(self, trainer, module, stage_name):
        reference = None if module.reference_policy is None else {
            k: v.clone() for k, v in module.reference_policy.state_dict().items()}
        self.switches.append((stage_name, policy_state(module), reference))


@pytest.mark.parametrize("cls", [GRPO, DAPO])
def test_sft_then_a_critic_free_stage_in_one_fit(cls):
    objective = small(cls, mini_batch_size=8)
    recipe = Sequential(stages=[{"objective": SFT(), "steps": 2, "name": "sft"},
                                {"objective": objective, "name": "rl", "lr": 1e-3}])
    recorder = SwitchRecorder()
    initial = policy_state(tiny_module(None))
    module, trainer, rows = fit(recipe, batches=4, callbacks=[recorder])
    assert not module.automatic_optimization
    assert [row["train/stage"] for row in rows] == [0, 0, 1, 1]
    assert trainer.global_step == 2 + 2 * 2  # SFT: a step per batch; the RL stage: 2 mini-batches per batch
    assert all("train/score" in row and "train/policy_loss" in row for row in rows[2:])
    (name, at_switch, reference_at_switch), = recorder.switches
    assert name == "rl" and any(not torch.equal(initial[k], at_switch[k]) for k in initial)  # SFT trained
    if objective.beta > 0:  # the reference is the policy as it stood at the switch
        for key, value in module.reference_policy.state_dict().items():
            assert torch.equal(value, at_switch[key]), key
        assert all(math.isfinite(row["train/kl_ref"]) for row in rows[2:])
    else:
        assert reference_at_switch is None and module.reference_policy is None


def test_mix_of_sft_and_grpo_uses_one_rollout_and_one_loss_on_it():
    grpo = small(GRPO, beta=0.05, reward=CharCode())
    mix = Mix(objectives=[SFT(), grpo], weights=[1.0, 0.5])
    module = tiny_module(mix)
    assert module.automatic_optimization
    batch = first_batch(module)
    mix.begin(module.step_context)
    result = mix.training_step(module.step_context, batch)
    assert not result.stepped and result.loss.requires_grad
    assert {"sft_loss", "grpo_loss", "grpo_score", "grpo_kl_ref", "grpo_clip_ratio_low", "time/generation"} <= set(
        result.metrics)
    grpo.load_state_dict({"rollouts": 0})  # the same sampling stream: the same rollout and loss
    rollout = grpo.rollout(module.step_context, batch)
    grpo_loss, _ = grpo.loss_on_rollout(module.step_context, rollout)
    sft_loss, _ = SFT().loss(module.policy, batch)
    assert torch.allclose(result.loss, sft_loss + 0.5 * grpo_loss, atol=1e-6)
    # At ratio 1 GRPO's loss is 0 (advantages sum to 0 in a group), its gradient is not.
    grads = torch.autograd.grad(grpo_loss, [p for p in module.policy.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    mixed = Mix(objectives=[SFT(), small(GRPO, beta=0.05)], weights=[1.0, 0.5])
    module, trainer, rows = fit(mixed, batches=2, gradient_clip_val=1.0)
    assert trainer.global_step == 2 and all("train/grpo_score" in row for row in rows)
    assert module.reference_policy is not None


def resume_run(tmp_path, make_objective, max_steps: int = -1, ckpt_path=None):
    module = tiny_module(make_objective(), optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3))
    log = MetricsLog()
    trainer = quiet_trainer(max_epochs=2, max_steps=max_steps, limit_val_batches=0, callbacks=[log])
    trainer.fit(module, tiny_arithmetic(), ckpt_path=ckpt_path)
    return module, trainer, log.rows


RESUMABLE = {
    # the reference is checkpointed; two mini-batches and two epochs per rollout (old log-probs, ratios).
    "GRPO": lambda: small(GRPO, beta=0.1, mini_batch_size=8, epochs=2, seed=3),
    # dynamic sampling: the number of sampling streams used per batch varies.
    "DAPO": lambda: small(DAPO, mini_batch_size=8, max_resample_rounds=2, seed=3),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resume_mid_training_gives_the_same_losses_as_an_uninterrupted_run(name, tmp_path):
    make = RESUMABLE[name]
    full_module, full_trainer, full_rows = resume_run(tmp_path, make)
    updates = int(full_rows[0]["train/updates"])
    assert len(full_rows) == 8 and full_trainer.global_step == 8 * updates

    first_module, first_trainer, first_rows = resume_run(tmp_path, make, max_steps=4 * updates)
    assert len(first_rows) == 4
    path = tmp_path / "mid.ckpt"
    first_trainer.save_checkpoint(path)
    resumed_module, resumed_trainer, resumed_rows = resume_run(tmp_path, make, ckpt_path=str(path))
    assert resumed_trainer.global_step == full_trainer.global_step and len(resumed_rows) == 4
    if full_module.reference_policy is not None:  # the same reference, the initial policy
        for key, value in resumed_module.reference_policy.state_dict().items():
            assert torch.equal(value, full_module.reference_policy.state_dict()[key]), key
    else:
        assert resumed_module.reference_policy is None

    keys = ["train/loss", "train/score", "train/policy_loss", "train/approx_kl", "train/advantage_abs"]
    keys += ["train/kl_ref"] if name == "GRPO" else ["train/groups_dropped", "train/resample_rounds"]
    expected = [row[k] for row in full_rows for k in keys]
    got = [row[k] for row in first_rows + resumed_rows for k in keys]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for key, value in full_module.state_dict().items():
        assert torch.allclose(resumed_module.state_dict()[key], value, atol=1e-6), key
    assert resumed_module.objective.state_dict() == full_module.objective.state_dict()
    loaded = FineTuneModule.load_from_checkpoint(path)  # torch.load's default weights_only=True
    assert type(loaded.objective) is type(full_module.objective)
    assert loaded.objective.rollouts_taken == first_module.objective.rollouts_taken


def test_lora_grpo_reads_the_reference_through_disabled_adapters():
    pytest.importorskip("peft")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn", "c_proj"]}
    objective = small(GRPO, beta=0.04, epochs=2)
    rollouts = record_rollouts(objective)
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", objective=objective, lora=lora)
    frozen = {n: p.detach().clone() for n, p in module.policy.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in module.policy.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    log = MetricsLog()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[log])
    trainer.fit(module, tiny_arithmetic())
    assert module.reference_policy is None  # no copy: the policy with its adapters disabled
    assert all(math.isfinite(row["train/kl_ref"]) for row in log.rows)
    for name, p in module.policy.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, adapters[name]), name
        else:
            assert torch.equal(p, frozen[name]), name
    first, second = rollouts
    mask = first.response_mask
    # Before any update the adapters are zero: policy and reference agree; afterwards they do not.
    assert torch.allclose(first.old_logprobs[mask], first.ref_logprobs[mask], atol=1e-5)
    assert not torch.allclose(second.old_logprobs[second.response_mask], second.ref_logprobs[second.response_mask],
                              atol=1e-5)


def autocast_spy(objective):
    seen = []
    original = objective.training_step

    def training_step(context, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(context, batch)

    objective.training_step = training_step
    return seen


@pytest.mark.parametrize("cls", [GRPO, DAPO, GSPO])
@pytest.mark.parametrize("mode", ["bf16-mixed", "torch_dtype"])
def test_bf16(cls, mode):
    objective = small(cls, mini_batch_size=8, epochs=2)
    rollouts = record_rollouts(objective)
    if mode == "bf16-mixed":
        seen = autocast_spy(objective)
        module, trainer, rows = fit(objective, batches=2, precision="bf16-mixed")
        assert seen and all(enabled and dtype == torch.bfloat16 for enabled, dtype in seen)
        assert all(p.dtype == torch.float32 for p in module.policy.parameters())  # mixed: weights stay fp32
    else:
        module, trainer, rows = fit(objective, batches=2, module_kwargs={"torch_dtype": "bfloat16"})
        assert all(p.dtype == torch.bfloat16 for p in module.policy.parameters())
    assert trainer.global_step == 2 * 4  # 2 batches x 2 epochs x 2 mini-batches
    for row in rows:
        for key in ("train/loss", "train/policy_loss", "train/approx_kl", "train/score"):
            assert math.isfinite(row[key]), (key, row[key])
    for rollout in rollouts:  # log-probs are taken in float32 from bf16 logits
        assert rollout.old_logprobs.dtype == torch.float32
        assert torch.isfinite(rollout.old_logprobs[rollout.response_mask]).all()


@pytest.mark.parametrize("make", [lambda: small(GRPO, beta=0.05, epochs=2), lambda: small(GSPO, epochs=2),
                                  lambda: small(RLOO), lambda: small(ReinforcePlusPlus),
                                  lambda: small(CISPO, epochs=2)], ids=["GRPO", "GSPO", "RLOO", "REINFORCE++", "CISPO"])
def test_the_shared_prompt_pass_gives_the_same_rollout_and_loss(make, monkeypatch):
    shared_passes = []
    original = shared_prompts._shared_prompt_pass

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        shared_passes.append(result is not None)
        return result

    monkeypatch.setattr(shared_prompts, "_shared_prompt_pass", counted)
    objective = make()
    objective.reward = objective.rewards[0] = CharCode()  # scores that differ within every group
    assert objective.share_prompts
    module = tiny_module(objective)
    context = module.step_context
    objective.begin(context)
    batch = first_batch(module)
    results = []
    for share in (True, False):
        objective.share_prompts = share
        objective.load_state_dict({"rollouts": 0})
        shared_passes.clear()
        module.policy.zero_grad()
        rollout = objective.rollout(context, batch)
        loss, metrics = objective.loss_on_rollout(context, rollout)
        loss.backward()
        grads = [p.grad.clone() for p in module.policy.parameters() if p.grad is not None]
        results.append((rollout, loss.detach(), grads))
        assert (any(shared_passes) if share else not shared_passes), shared_passes
    (shared, shared_loss, shared_grads), (plain, plain_loss, plain_grads) = results
    assert torch.equal(shared.response_ids, plain.response_ids)
    mask = shared.response_mask
    for name in ("old_logprobs", "ref_logprobs"):
        a, b = getattr(shared, name), getattr(plain, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=2e-5)
    torch.testing.assert_close(shared.advantages, plain.advantages, rtol=1e-4, atol=1e-4)
    assert shared.advantages.abs().sum() > 0
    torch.testing.assert_close(shared_loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert len(shared_grads) == len(plain_grads) > 0 and any(g.abs().sum() > 0 for g in plain_grads)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make", [lambda seed: small(GRPO, mini_batch_size=8, epochs=2, seed=seed),
                                  lambda seed: small(DAPO, mini_batch_size=8, seed=seed)], ids=["GRPO", "DAPO"])
def test_the_same_seed_gives_the_same_losses(make):
    def losses(seed):
        _, _, rows = fit(make(seed), batches=3)
        return [(row["train/loss"], row["train/score"], row["train/policy_loss"]) for row in rows]

    first, again, other = losses(7), losses(7), losses(8)
    assert len(first) == 3
    assert first == again  # bit for bit
    assert first != other  # the seed does matter


# ---------------------------------------------------------------------------- 8. the metrics RL users read
COMMON_METRICS = ["train/loss", "train/score", "train/score_std", "train/zero_variance_groups", "train/clip_ratio_low",
                  "train/clip_ratio_high", "train/approx_kl", "train/policy_loss", "train/completion_length_max",
                  "train/response_length", "train/truncated_share", "train/tokens_sampled", "train/eos_rate",
                  "train/reward_nan", "train/updates", "time/generation", "time/scoring", "time/update"]


def check_metric_values(row, max_new_tokens: int):
    rows = PROMPTS * G
    assert row["train/tokens_sampled"] == pytest.approx(row["train/response_length"] * rows)
    assert row["train/response_length"] <= row["train/completion_length_max"] <= max_new_tokens
    assert row["train/truncated_share"] == pytest.approx(1 - row["train/eos_rate"])
    assert row["train/score_std"] >= 0
    assert 0 <= row["train/zero_variance_groups"] <= 1
    assert (row["train/zero_variance_groups"] * PROMPTS) == pytest.approx(round(row["train/zero_variance_groups"] * PROMPTS))
    for key in ("train/clip_ratio_low", "train/clip_ratio_high"):
        assert 0 <= row[key] <= 1
    for key in ("time/generation", "time/scoring", "time/update"):
        assert row[key] >= 0


def test_the_metrics_of_a_grpo_fit():
    _, _, rows = fit(small(GRPO, beta=0.04), batches=2)  # one update per rollout: the ratio is 1
    for row in rows:
        missing = [key for key in COMMON_METRICS + ["train/kl_ref"] if key not in row]
        assert not missing, missing
        assert "train/entropy" not in row
        check_metric_values(row, max_new_tokens=4)
        assert row["train/clip_ratio_low"] == row["train/clip_ratio_high"] == row["train/approx_kl"] == 0
    assert rows[0]["train/kl_ref"] == pytest.approx(0, abs=1e-6)  # the reference is the policy at the start


def test_entropy_only_when_asked_and_kl_ref_only_with_a_kl_term():
    _, _, rows = fit(small(GRPO, beta=0.0, log_entropy=True, mini_batch_size=8, epochs=2), batches=2)
    for row in rows:
        missing = [key for key in COMMON_METRICS + ["train/entropy"] if key not in row]
        assert not missing, missing
        assert "train/kl_ref" not in row
        assert 0 < row["train/entropy"] <= math.log(100)  # the character vocabulary
        check_metric_values(row, max_new_tokens=4)
    assert any(row["train/approx_kl"] > 0 for row in rows)  # later mini-batches move away from the rollout policy


def test_the_metrics_of_a_dapo_fit():
    _, _, rows = fit(small(DAPO, max_resample_rounds=2), batches=2)
    for row in rows:
        missing = [key for key in COMMON_METRICS + ["train/groups_dropped", "train/resample_rounds",
                                                    "train/groups_filled", "train/overlong_penalty"] if key not in row]
        assert not missing, missing
        assert "train/kl_ref" not in row and "train/entropy" not in row
        check_metric_values(row, max_new_tokens=4)
        assert 0 <= row["train/resample_rounds"] <= 2
        assert row["train/groups_filled"] <= min(row["train/groups_dropped"], PROMPTS)
        assert row["train/zero_variance_groups"] * PROMPTS == pytest.approx(row["train/groups_filled"])
