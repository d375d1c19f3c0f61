"""The paper's Frozen Lake policy: a two-layer fully connected network over grid states as a
causal LM over state tokens (ift/tasks/frozen_lake/state_policy.py).

IFT's eq. 37 on a hand-worked map, SFT = IFT(λ=0, γ=0), the next-state distribution against
a loop over the environment, save/load, generation of legal paths, and a few training steps
of every objective through FineTuneModule.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoModelForCausalLM

from factories import quiet_trainer
from ift.core.forward import accepts_true_input_ids
from ift.core.generation import generate_responses
from ift.data.datamodule import ExamplesDataModule
from ift.modules import FineTuneModule, build_policy, build_tokenizer
from ift.modules.output_mask import MASK_VALUE
from ift.objectives import DPO, IFT, ORPO, PPO, SFT
from ift.objectives import functional as Fn
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.state_policy import (
    STATE_CHARS,
    STATE_TOKENIZER,
    FrozenLakeStateConfig,
    FrozenLakeStatePolicy,
    state_text,
    state_token_id,
    states_from_text,
)

IGNORE = Fn.IGNORE_INDEX
PAD, EOS = 0, 1
WALL_MAP = "SFFF,FFHF,FFHG,FFFF"
OPTIMAL = [0, 1, 2, 3, 7, 11]  # RRRDD on the wall map
DETOUR = [0, 4, 8, 12, 13, 14, 15, 11]  # DDDRRRU
MAPS = [WALL_MAP, "SFG", "SFF,FHF,FFG", "4x4"]


@pytest.fixture(scope="module")
def state_tokenizer():
    return build_tokenizer(STATE_TOKENIZER, None)


def make_policy(tokenizer, map_spec=WALL_MAP, hidden_size=16, seed=0) -> FrozenLakeStatePolicy:
    torch.manual_seed(seed)
    config = {"model_type": "frozen_lake_state_mlp", "map": map_spec, "hidden_size": hidden_size}
    policy = build_policy(config, tokenizer)
    policy.train()
    return policy


def path_batch(paths: List[List[int]]) -> Dict[str, torch.Tensor]:
    """Right-padded rows ``start state | later states + EOS``; labels on the response."""
    rows = [[state_token_id(s) for s in path] + [EOS] for path in paths]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), PAD)
    attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE)
    for b, row in enumerate(rows):
        input_ids[b, :len(row)] = torch.tensor(row)
        attention_mask[b, :len(row)] = 1
        labels[b, 1:len(row)] = torch.tensor(row[1:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ---------------------------------------------------------------------------- state tokens
def test_state_tokens_and_text(state_tokenizer):
    assert len(STATE_CHARS) == 64 == len(set(STATE_CHARS))
    assert len(state_tokenizer) == 68
    assert (state_tokenizer.pad_token_id, state_tokenizer.eos_token_id, state_tokenizer.bos_token_id,
            state_tokenizer.unk_token_id) == (0, 1, 2, 3)
    ids = state_tokenizer(STATE_CHARS, add_special_tokens=False)["input_ids"]
    assert ids == [state_token_id(k) for k in range(64)] == list(range(4, 68))
    assert state_text(OPTIMAL) == "01237b"
    assert states_from_text(state_text(range(64))) == list(range(64))
    assert states_from_text(state_tokenizer.decode(ids, skip_special_tokens=True)) == list(range(64))
    with pytest.raises(ValueError, match="not a state"):
        states_from_text("01 2")
    with pytest.raises(ValueError):
        state_text([64])


# ---------------------------------------------------------------------------- eq. 37 by hand
def test_ift_loss_is_eq_37_on_a_hand_worked_map(state_tokenizer):
    """1x3 map ``SFG`` (states 0, 1, 2 = tokens 4, 5, 6), hidden size 2, weights set by hand.

    From S every move but R bumps back into S, so S's next-state distribution combines three
    actions. The model's greedy move from S is a bump (s̃ = S although the path goes to 1),
    so pass 2 mixes state 1 with state 0."""
    lam = 0.5
    task = FrozenLakeTask("SFG")
    E = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [0.5, 0.5]}
    b1 = np.array([0.1, -0.05])
    W2 = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # L, D, R, U
    b2 = np.array([0.0, 0.1, 0.0, -0.1])
    policy = make_policy(state_tokenizer, "SFG", hidden_size=2)
    with torch.no_grad():
        policy.embed.weight.zero_()
        for state, row in E.items():
            policy.embed.weight[state_token_id(state)] = torch.tensor(row)
        policy.embed_bias.copy_(torch.tensor(b1))
        policy.action_head.weight.copy_(torch.tensor(W2))
        policy.action_head.bias.copy_(torch.tensor(b2))

    def next_state_probs(x: np.ndarray, state: int) -> Dict[int, float]:
        """Next-state probabilities at true state ``state`` from first-layer input ``x``."""
        a = W2 @ np.maximum(x + b1, 0.0) + b2
        p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        out: Dict[int, float] = {}
        for action in range(4):
            nxt = task.step(state, action)[0]
            out[nxt] = out.get(nxt, 0.0) + p[action]
        return out

    def greedy(state: int) -> int:
        probs = next_state_probs(np.array(E[state]), state)
        return max(probs, key=probs.get)

    assert greedy(0) == 0 and greedy(1) == 2  # the greedy move from S bumps
    paths = [[0, 1, 2], [0, 0, 1, 2]]
    expected_rows, expected_mixed = [], []
    for path in paths:
        losses, mixed = [], [np.array(E[path[0]])]  # the prompt keeps its true state
        for t in range(len(path) - 1):
            x = np.array(E[path[t]])
            if t > 0:  # eq. 37: the true state mixed with the greedy move's state from s_{t-1}
                x = (1 - lam) * x + lam * np.array(E[greedy(path[t - 1])])
                mixed.append(x)
            losses.append(-math.log(next_state_probs(x, path[t])[path[t + 1]]))
        losses.append(0.0)  # EOS after G is certain
        expected_rows.append(sum(losses) / len(losses))
        expected_mixed.append(mixed)
    expected = sum(expected_rows) / len(expected_rows)
    # By hand: at S the logits are a = (2.2, 0.1, 0, -0.1), -log p(1 | S) = log 12.035 = 2.488 and
    # -log p(S | S) = 0.087; at δ(1) = (0.5, 0.5) they are (1.2, 0.1, 0.45, -0.1), -log p(G) = 1.481.
    # Rows: (2.488 + 1.481 + 0) / 3 and (0.087 + 2.488 + 1.481 + 0) / 4; their mean is 1.1685.
    assert expected == pytest.approx(1.1685, abs=2e-4)

    seen = []
    policy.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    batch = path_batch(paths)
    loss, metrics = IFT(lam=lam, gamma=0.0).loss(policy, batch)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # pass 2 ran on the mixed inputs (before b1), with the true states beside them
    second = seen[-1]
    assert torch.equal(second["true_input_ids"], batch["input_ids"])
    for b, mixed in enumerate(expected_mixed):
        for t, x in enumerate(mixed):
            assert np.allclose(second["inputs_embeds"][b, t].detach().numpy(), x, atol=1e-6), (b, t)
    # without the mix the loss differs: the check above is not vacuous
    plain = SFT().loss(policy, batch)[0]
    assert abs(plain.item() - expected) > 1e-2


# ---------------------------------------------------------------------------- IFT(0, 0) = SFT
def test_ift_lambda0_gamma0_equals_sft_loss_and_gradients(state_tokenizer):
    policy = make_policy(state_tokenizer)
    batch = path_batch([OPTIMAL, DETOUR, [0, 0, 1, 5, 6]])
    results = []
    for objective in (SFT(), IFT(lam=0.0, gamma=0.0)):
        policy.zero_grad(set_to_none=True)
        loss, _ = objective.loss(policy, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in policy.named_parameters()}))
    (sft_loss, sft_grads), (ift_loss, ift_grads) = results
    assert torch.equal(sft_loss, ift_loss)
    for name, grad in sft_grads.items():
        assert torch.equal(grad, ift_grads[name]), name


def test_ift_needs_and_gets_the_true_states(state_tokenizer):
    policy = make_policy(state_tokenizer)
    batch = path_batch([OPTIMAL, DETOUR])
    loss, metrics = IFT(lam=0.2, gamma=0.95).loss(policy, batch)
    assert torch.isfinite(loss) and 0.0 <= float(metrics["prediction_accuracy"]) <= 1.0
    with pytest.raises(ValueError, match="true_input_ids"):
        policy(inputs_embeds=policy.embed(batch["input_ids"]))


class PassThrough(torch.nn.Module):
    """A wrapper that hands every keyword to its ``.module`` (as DDP and FSDP do)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_only_models_that_take_true_input_ids_get_them(state_tokenizer, tokenizer):
    policy = make_policy(state_tokenizer)
    assert accepts_true_input_ids(policy) and accepts_true_input_ids(PassThrough(policy))
    assert not accepts_true_input_ids(build_policy("tiny-gpt2", tokenizer))


# ---------------------------------------------------------------------------- the distribution
@pytest.mark.parametrize("map_spec", MAPS)
def test_next_state_distribution_covers_only_the_moves(state_tokenizer, map_spec):
    task = FrozenLakeTask(map_spec)
    policy = make_policy(state_tokenizer, map_spec, seed=3)
    with torch.no_grad():  # larger weights: unequal actions, so a wrong combination would show
        policy.action_head.weight.mul_(20.0)
    tokens = torch.arange(len(state_tokenizer))
    probs = policy(input_ids=tokens[None]).logits[0].softmax(-1)
    actions = policy.action_probs(tokens[4:4 + task.n_states])
    assert torch.allclose(actions.sum(-1), torch.ones(task.n_states))
    for token in tokens.tolist():
        state = token - 4
        expected = torch.zeros(len(tokens))
        if 0 <= state < task.n_states and not task.is_terminal(state):
            for action in range(4):  # border bumps add up on the state itself
                expected[state_token_id(task.step(state, action)[0])] += actions[state, action]
        else:  # H, G, pad, eos, bos, unk and tokens of no state of this map
            expected[EOS] = 1.0
        assert torch.allclose(probs[token], expected, atol=1e-6), (map_spec, token)
    logits = policy(input_ids=tokens[None]).logits[0]
    assert torch.isfinite(logits).all() and logits.min() >= MASK_VALUE


def test_logits_to_keep_and_hidden_states(state_tokenizer):
    policy = make_policy(state_tokenizer)
    batch = path_batch([OPTIMAL, DETOUR])
    out = policy(**batch, output_hidden_states=True)
    assert out.logits.shape == (2, 9, 68) and out.logits.dtype == torch.float32
    assert len(out.hidden_states) == 2 and out.hidden_states[-1].shape == (2, 9, policy.config.hidden_size)
    assert torch.equal(policy(input_ids=batch["input_ids"], logits_to_keep=1).logits, out.logits[:, -1:])
    columns = torch.tensor([0, 3, 5])
    assert torch.equal(policy(input_ids=batch["input_ids"], logits_to_keep=columns).logits, out.logits[:, columns])
    nll, mask = Fn.token_losses_and_mask(out.logits, batch["labels"])
    assert out.loss.item() == pytest.approx((nll.sum() / mask.sum()).item(), rel=1e-6)


def test_initial_policy_is_near_uniform_and_seeded(state_tokenizer):
    first, again, other = (make_policy(state_tokenizer, hidden_size=64, seed=s) for s in (0, 0, 1))
    tokens = torch.arange(4, 20)
    probs = first.action_probs(tokens)
    assert (probs - 0.25).abs().max() < 0.05
    assert (probs - 0.25).abs().max() > 1e-3
    assert torch.equal(probs, again.action_probs(tokens))
    assert not torch.equal(probs, other.action_probs(tokens))
    assert torch.equal(first.embed_bias, torch.zeros(64)) and torch.equal(first.action_head.bias, torch.zeros(4))


# ---------------------------------------------------------------------------- save and load
def config_fields(model) -> Dict[str, Any]:
    """The config as a dict, without where it was loaded from."""
    return {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}


def test_save_and_load_round_trip(state_tokenizer, tmp_path):
    policy = make_policy(state_tokenizer, "SFF,FHF,FFG", hidden_size=8)
    with torch.no_grad():
        policy.embed_bias.add_(0.3)  # a trained-looking value, not the init
    policy.save_pretrained(tmp_path)
    ids = torch.arange(len(state_tokenizer))[None]
    for loaded in (FrozenLakeStatePolicy.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, FrozenLakeStatePolicy)
        assert config_fields(loaded) == config_fields(policy)
        assert torch.equal(loaded(input_ids=ids).logits, policy(input_ids=ids).logits)
        assert torch.equal(loaded.moves.next_token, policy.moves.next_token)
        assert torch.equal(loaded.moves.terminal, policy.moves.terminal)
    assert isinstance(FrozenLakeStateConfig.from_pretrained(tmp_path), FrozenLakeStateConfig)
    assert FrozenLakeStateConfig.from_pretrained(tmp_path).map == "SFF,FHF,FFG"


# ---------------------------------------------------------------------------- generation
def assert_legal_paths(task: FrozenLakeTask, prompts: List[List[int]], responses: torch.Tensor, mask: torch.Tensor):
    for prompt, row, keep in zip(prompts, responses.tolist(), mask.tolist()):
        state = prompt[-1]
        for token, valid in zip(row, keep):
            if not valid:
                assert token == PAD
                continue
            if task.is_terminal(state):
                assert token == EOS
                state = None
                continue
            assert state is not None, "tokens after EOS"
            moves = {task.step(state, action)[0] for action in range(4)}
            assert token - 4 in moves, (prompt, row)
            state = token - 4


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("do_sample", [True, False])
def test_generate_samples_only_legal_paths(state_tokenizer, use_cache, do_sample):
    task = FrozenLakeTask(WALL_MAP)
    policy = make_policy(state_tokenizer, seed=1)
    prompts = [[0], [0, 1, 5], [4, 8]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + [state_token_id(s) for s in p] for p in prompts]).repeat(8, 1)
    attention = (ids != PAD).long()
    torch.manual_seed(0)
    responses, mask = generate_responses(policy, ids, attention, EOS, PAD, max_new_tokens=10,
                                         do_sample=do_sample, use_cache=use_cache)
    assert_legal_paths(task, prompts * 8, responses, mask)
    if not do_sample:  # greedy: the same as following the argmax next state by hand
        tokens = torch.arange(len(state_tokenizer))
        best = policy(input_ids=tokens[None]).logits[0].argmax(-1)
        for prompt, row in zip(prompts, responses.tolist()):
            token = state_token_id(prompt[-1])
            for generated in row:
                token = PAD if token in (EOS, PAD) else int(best[token])  # pad after EOS
                assert generated == token


# ---------------------------------------------------------------------------- training
class PathData(ExamplesDataModule):
    """One Frozen Lake example written as states, repeated."""

    def __init__(self, example: Dict[str, Any], copies: int = 8, **kwargs: Any):
        super().__init__(batch_size=2, **kwargs)
        self.example, self.copies = example, copies

    def load_examples(self, split: str):
        if split != "train":
            return None
        return [(f"path[{index}]", dict(self.example)) for index in range(self.copies)]


def visited_reward(prompts, responses, examples) -> List[float]:
    """Distinct states a sampled path visits, over 16 (a reward that varies between samples)."""
    return [len(set(states_from_text(text))) / 16 for text in responses]


PROMPT, CHOSEN, REJECTED = state_text(OPTIMAL[:1]), state_text(OPTIMAL[1:]), state_text(DETOUR[1:])
RUNS = {
    "SFT": (SFT, {}, {"prompt": PROMPT, "response": CHOSEN}),
    "IFT": (IFT, {"lam": 0.2, "gamma": 0.95}, {"prompt": PROMPT, "response": CHOSEN}),
    "DPO": (DPO, {"beta": 0.5}, {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}),
    "ORPO": (ORPO, {"beta": 0.25}, {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}),
    "PPO": (PPO, dict(reward=visited_reward, kl_coef=0.0, samples_per_prompt=4, mini_batch_size=4, ppo_epochs=1,
                      max_new_tokens=8), {"prompt": PROMPT}),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_every_objective_trains_the_state_policy(name):
    cls, args, example = RUNS[name]
    torch.manual_seed(0)
    module = FineTuneModule(model={"model_type": "frozen_lake_state_mlp", "map": WALL_MAP, "hidden_size": 16},
                            objective=cls(**args), tokenizer=STATE_TOKENIZER,
                            optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    assert isinstance(module.policy, FrozenLakeStatePolicy)
    before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    losses: List[float] = []

    class Grab(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(trainer.callback_metrics["train/loss_step"]))

    trainer = quiet_trainer(callbacks=[Grab()], max_steps=3, limit_val_batches=0)
    trainer.fit(module, PathData(example))
    assert losses and all(math.isfinite(value) for value in losses), losses
    after = module.policy.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert {"embed.weight", "action_head.weight"} <= set(moved), moved
