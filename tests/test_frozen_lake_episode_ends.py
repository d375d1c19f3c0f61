"""The environment, not the transformer, ends a Frozen Lake episode: no EOS among its outputs or
in its data, and PPO neither credits nor trains on the moves sampled after a hole or G."""

import pytest
import torch

from ift.modules import FineTuneModule
from ift.objectives import PPO
from ift.objectives import rollout_steps as steps
from ift.tasks.frozen_lake import VOCAB, FrozenLakeDataModule, FrozenLakeReward, FrozenLakeTask
from ift.tasks.frozen_lake.reward import action_episode_ends
from ift.tasks.frozen_lake.state_policy import STATE_TOKENIZER

TOKENIZER = "char:" + VOCAB
PROMPT = FrozenLakeTask().prompt()  # SFFF/FFHG/FHHH/FFFF: optimal RRRD, a hole below (0, 2)


def brute_force_tokens(ids, tokenizer, chars):
    """The fewest leading tokens whose text has ``chars`` characters, by trying every prefix."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= chars:
            return k
    return len(ids)


def test_tokens_covering_matches_a_brute_force_search(tokenizer):
    texts = ["RRRDLL", "D", "LDRULDRU", "UU"]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[t < len(row) for t in range(width)] for row in rows])
    chars = [4, 1, 0, None]
    got = steps.tokens_covering(ids, mask, tokenizer, chars)
    assert got == [brute_force_tokens(rows[0], tokenizer, 4), 1, 0, None]
    assert got[0] == 4


class EndsAfterTwo:
    """A reward whose episodes are the first two characters of every response."""

    def __call__(self, prompts, responses, examples):
        return [0.0] * len(responses)

    def response_ends(self, prompts, responses, examples):
        return [min(2, len(text)) for text in responses]


def samples_of(tokenizer, texts):
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    return steps.samples_from_ids(ids, tokenizer)


def test_a_reward_without_response_ends_leaves_the_samples_whole(tokenizer):
    samples = samples_of(tokenizer, ["RRRD", "LD"])
    prompts = steps.Prompts(ids=torch.zeros(2, 1, dtype=torch.long), mask=torch.ones(2, 1, dtype=torch.long),
                            texts=["p", "p"], examples=[{}, {}])
    assert steps.cut_at_episode_ends(samples, lambda p, r, e: [0.0, 0.0], prompts, tokenizer) is samples


def test_tokens_after_the_episode_no_longer_count_and_empty_columns_go(tokenizer):
    samples = samples_of(tokenizer, ["RRRD", "LD", "U"])
    prompts = steps.Prompts(ids=torch.zeros(3, 1, dtype=torch.long), mask=torch.ones(3, 1, dtype=torch.long),
                            texts=["p"] * 3, examples=[{}] * 3)
    cut = steps.cut_at_episode_ends(samples, EndsAfterTwo(), prompts, tokenizer)
    assert cut.mask.tolist() == [[True, True], [True, True], [True, False]]
    assert torch.equal(cut.ids, samples.ids[:, :2])
    assert cut.texts == samples.texts  # the reward saw the whole text


def test_response_ends_of_the_wrong_length_are_refused(tokenizer):
    class Short(EndsAfterTwo):
        def response_ends(self, prompts, responses, examples):
            return [1]

    samples = samples_of(tokenizer, ["RRRD", "LD"])
    prompts = steps.Prompts(ids=torch.zeros(2, 1, dtype=torch.long), mask=torch.ones(2, 1, dtype=torch.long),
                            texts=["p", "p"], examples=[{}, {}])
    with pytest.raises(ValueError, match="1 ends for 2 responses"):
        steps.cut_at_episode_ends(samples, Short(), prompts, tokenizer)


# ------------------------------------------------------------------ Frozen Lake's episodes
def test_frozen_lake_episodes_end_at_the_goal_a_hole_or_the_text():
    examples = [{"representation": "actions", "map": "SFFF/FFHG/FHHH/FFFF"}] * 4
    responses = ["RRRDLLUU", "RRDUU", "LLLL", ""]  # goal after 4; hole after 3; never ends; empty
    assert FrozenLakeReward().response_ends([PROMPT] * 4, responses, examples) == [4, 3, 4, 0]
    state_example = {"representation": "states", "map": "SFFF,FFHG,FHHH,FFFF"}
    assert action_episode_ends(["0"], ["123"], [state_example]) == [None]  # the state policy's own EOS ends it


def test_action_strings_are_encoded_without_eos_and_state_paths_with_it():
    actions = FrozenLakeDataModule(objective_data="preference", tokenizer=TOKENIZER, num_copies=1)
    actions.setup("fit")
    item = actions.datasets["train"][0]
    tokenizer = actions.tokenizer
    for side, text in (("chosen", "RRRD"), ("rejected", "DDDRRRU")):
        response = [t for t in item[f"{side}_labels"] if t != -100]
        assert tokenizer.decode(response) == text and tokenizer.eos_token_id not in response
    states = FrozenLakeDataModule(representation="states", num_copies=1, tokenizer=STATE_TOKENIZER)
    states.setup("fit")
    assert states.datasets["train"][0]["labels"][-1] == states.tokenizer.eos_token_id


def test_without_output_eos_a_policy_cannot_stop():
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER, output_tokens="LDRU", output_eos=False)
    tokenizer = module.tokenizer
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    logits = module.policy(ids).logits[0, -1]
    assert logits[tokenizer.eos_token_id] < -1e3
    samples = module.policy.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=12,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert samples.shape[1] - ids.shape[1] == 12
    assert set(tokenizer.decode(samples[0, ids.shape[1]:])) <= set("LDRU")


def test_ppo_trains_on_no_move_after_the_episode_ended():
    torch.manual_seed(0)
    ppo = PPO(reward=FrozenLakeReward(), kl_coef=0.0, vf_coef=0.0, samples_per_prompt=16, max_new_tokens=16,
              whiten_advantages=False, seed=0)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER, output_tokens="LDRU", output_eos=False, objective=ppo)
    data = FrozenLakeDataModule(objective_data="prompts", tokenizer=module.tokenizer, num_copies=1)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rollout = ppo.rollout(module.step_context, batch)
    task = FrozenLakeTask()
    lengths = rollout.response_mask.sum(-1).tolist()
    assert lengths == [task.run(text).steps for text in rollout.responses]
    assert min(lengths) < 16  # some episodes end early (a hole), so the cut is exercised
    assert rollout.response_ids.shape[1] == max(lengths)
    for row, length in enumerate(lengths):  # the score sits on the episode's last move
        assert rollout.rewards[row, length:].abs().sum() == 0
        assert rollout.rewards[row, length - 1] == rollout.scores[row]
