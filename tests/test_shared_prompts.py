"""Each distinct prompt run once (ift.core.shared_prompts): the same logits, hidden states
and gradients as the plain pass over every row, on GPT-2 and Llama, with prompts
left-padded to different lengths and responses right-padded; and PPO with and without it."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from factories import tiny_module
from ift.core.forward import policy_outputs
from ift.core.shared_prompts import distinct_prompts, response_outputs
from ift.objectives import PPO
from ift.rewards import AnswerMatchReward
from ift.tasks.frozen_lake import FrozenLakeTask
from ift.tasks.frozen_lake.state_policy import FrozenLakeStateConfig, FrozenLakeStatePolicy
from test_ppo import make_batch

VOCAB = 40


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0))


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))


def grouped_rows(samples: int = 3, prompt_length: int = 7, response_length: int = 5, seed: int = 1):
    """Three prompts (the second left-padded by 2, the third by 4), each repeated
    ``samples`` times, with random responses of which some end early (right padding)."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, VOCAB, (3, prompt_length), generator=generator)
    prompt_mask = torch.ones(3, prompt_length, dtype=torch.long)
    for row, pad in ((1, 2), (2, 4)):
        prompts[row, :pad], prompt_mask[row, :pad] = 0, 0
    responses = torch.randint(3, VOCAB, (3 * samples, response_length), generator=generator)
    response_mask = torch.ones_like(responses)
    response_mask[0, -2:] = 0
    response_mask[samples + 1, 1:] = 0
    responses[response_mask == 0] = 0
    input_ids = torch.cat([prompts.repeat_interleave(samples, 0), responses], dim=1)
    attention_mask = torch.cat([prompt_mask.repeat_interleave(samples, 0), response_mask], dim=1)
    return input_ids, attention_mask, prompt_length


def plain_response_outputs(model, input_ids, attention_mask, prompt_length):
    """The reference: one plain pass over every row, sliced to the response positions."""
    outputs = policy_outputs(model, input_ids, attention_mask, output_hidden_states=True)
    return outputs.logits[:, prompt_length - 1:-1], outputs.hidden_states[-1][:, prompt_length - 1:-1]


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("response_length", [1, 5])
def test_shared_prompt_pass_gives_the_plain_pass_logits_hidden_states_and_gradients(build, response_length):
    model = build()
    model.train()
    input_ids, attention_mask, prompt_length = grouped_rows(response_length=response_length)
    plain_logits, plain_hidden = plain_response_outputs(model, input_ids, attention_mask, prompt_length)
    shared = response_outputs(model, input_ids, attention_mask, prompt_length, output_hidden_states=True)
    assert shared.logits.shape == plain_logits.shape == (9, response_length, VOCAB)
    valid = attention_mask[:, prompt_length:].bool()  # the positions a loss reads
    assert torch.allclose(shared.logits[valid], plain_logits[valid], atol=1e-5)
    assert torch.allclose(shared.hidden[valid], plain_hidden[valid], atol=1e-5)
    weights = torch.randn(plain_logits.shape, generator=torch.Generator().manual_seed(3)) * valid.unsqueeze(-1)
    parameters = [p for p in model.parameters() if p.requires_grad]
    plain_grads = torch.autograd.grad((plain_logits * weights).sum(), parameters, allow_unused=True)
    shared_grads = torch.autograd.grad((shared.logits * weights).sum(), parameters, allow_unused=True)
    compared = 0
    for plain, mine in zip(plain_grads, shared_grads):
        assert (plain is None) == (mine is None)
        if plain is not None:
            assert torch.allclose(mine, plain, atol=1e-5, rtol=1e-4)
            compared += 1
    assert compared > 0


def test_the_prompt_pass_runs_once_per_distinct_prompt():
    model = gpt2()
    input_ids, attention_mask, prompt_length = grouped_rows(samples=4)
    batch_sizes = []
    hook = model.transformer.wte.register_forward_hook(lambda module, args, output: batch_sizes.append(output.shape))
    try:
        response_outputs(model, input_ids, attention_mask, prompt_length)
    finally:
        hook.remove()
    # 3 distinct prompts of 7 tokens, then 12 rows of 4 response tokens (the last one predicts nothing).
    assert batch_sizes == [torch.Size([3, 7, 32]), torch.Size([12, 4, 32])]


def test_gradient_checkpointing_gets_the_plain_pass_without_a_wasted_prompt_pass():
    model = gpt2()
    model.gradient_checkpointing_enable()
    model.train()
    input_ids, attention_mask, prompt_length = grouped_rows(samples=4)
    calls = []
    hook = model.transformer.wte.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    try:
        shared = response_outputs(model, input_ids, attention_mask, prompt_length).logits
    finally:
        hook.remove()
    assert calls == [torch.Size([12, 7 + 5, 32])]  # one plain pass over every row
    plain, _ = plain_response_outputs(model, input_ids, attention_mask, prompt_length)
    assert torch.equal(shared, plain)


def test_distinct_prompts_tells_apart_the_same_ids_with_other_padding():
    ids = torch.tensor([[0, 5, 6, 9], [0, 5, 6, 9], [0, 5, 6, 8], [7, 7, 7, 7]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    first_rows, inverse = distinct_prompts(ids, mask, prompt_length=3)
    # Rows 0 and 2 share ids and mask over the prompt; row 1 has the same ids, unpadded.
    assert inverse[0] == inverse[2] and len({int(inverse[0]), int(inverse[1]), int(inverse[3])}) == 3
    assert sorted(first_rows.tolist()) == [0, 1, 3]
    assert distinct_prompts(ids[[0, 1, 3]], mask[[0, 1, 3]], prompt_length=3) is None


def test_rows_that_share_no_prompt_and_models_without_a_cache_get_the_plain_pass():
    model = gpt2()
    input_ids, attention_mask, prompt_length = grouped_rows(samples=1)
    logits, _ = plain_response_outputs(model, input_ids, attention_mask, prompt_length)
    assert torch.equal(response_outputs(model, input_ids, attention_mask, prompt_length).logits, logits)
    # The Frozen Lake state policy keeps no KV cache: the plain pass, exactly.
    task = FrozenLakeTask("SFFF,FFHG,FHHH,FFFF")
    torch.manual_seed(0)
    policy = FrozenLakeStatePolicy(FrozenLakeStateConfig(map=",".join(task.rows), hidden_size=8))
    start = 4  # the token of state 0
    ids = torch.tensor([[start, 5, 6], [start, 8, 12], [start, 5, 6]])
    mask = torch.ones_like(ids)
    plain = policy_outputs(policy, ids, mask).logits[:, 0:-1]
    assert torch.equal(response_outputs(policy, ids, mask, prompt_length=1).logits, plain)


def test_ppo_with_and_without_shared_prompts_gives_the_same_rollout_and_update():
    results = []
    for share in (True, False):
        module = tiny_module(PPO(reward=AnswerMatchReward(), samples_per_prompt=3, max_new_tokens=6, share_prompts=share, ppo_epochs=1))
        batch = make_batch(module)
        module.ensure_reference()
        rollout = module.objective.rollout(module.step_context, batch)
        loss, _ = module.objective.loss_on_rollout(module.step_context, rollout)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.policy.parameters() if p.grad is not None])
        results.append((rollout, loss.detach(), grads))
    (shared, shared_loss, shared_grads), (plain, plain_loss, plain_grads) = results
    assert torch.equal(shared.response_ids, plain.response_ids)  # the same samples
    mask = plain.response_mask
    for name in ("old_logprobs", "ref_logprobs", "values", "advantages"):
        assert torch.allclose(getattr(shared, name)[mask], getattr(plain, name)[mask], atol=1e-5), name
    assert torch.allclose(shared_loss, plain_loss, atol=1e-6)
    assert torch.allclose(shared_grads, plain_grads, atol=1e-5, rtol=1e-4)
