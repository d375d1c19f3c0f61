"""The normaliser test of the critic-free (GRPO-family) update: the gradient of ONE optimizer
step is the same whether the step's rows are processed

(a) whole, in one ``prepare_update`` + ``loss_on_rollout`` (or in one ``loss_on_rollout``
    alone, as a ``Mix`` calls it);
(b) in gradient-accumulation micro-batches through the real ``update_on_rollout`` ->
    ``prepare_update`` -> ``_accumulated_step`` path, on uneven splits (46 loss tokens in one
    micro-batch, 6 in the other; three micro-batches that cut a group; one row each);
(c) on two gloo processes on CPU, each holding half of the rows (the long group on one,
    the short group on the other), whole or one row per micro-batch, with the gradients
    summed over the ranks and divided by the world size, as DDP does;

for every loss aggregation (``token-mean``, ``seq-mean-token-mean``,
``seq-mean-token-sum-norm``) and GSPO's per-sequence one, with the clip active on some
tokens (old log-probs perturbed away from the policy) and the KL in the loss in several
cases. The known bug (verl, ms-swift): a normaliser local to a micro-batch or a rank
silently changes the objective; the negative controls show that this test sees it.

The rollout, the model and the gradient recorder are in ``critic_free_ddp_probe.py``,
which the two ranks run as a script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import critic_free_ddp_probe as probe
from conftest import DISTRIBUTED_VARIABLES
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps

#: float64 weights: whole and accumulated gradients agree to ~1e-16 (the sums' order); a
#: normaliser that is off by one token (1/46 against 1/47) is a 2% error.
TOLERANCE = dict(rtol=1e-9, atol=1e-12)
#: the same comparison with float32 weights (max |difference| seen: 2.4e-7 on gradients of norm 3-5).
FLOAT32_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
#: the smallest relative change a wrong normaliser must make to the step's gradient.
VISIBLE = 0.05
CASES = list(probe.CASES)
TESTS = Path(__file__).resolve().parent


def relative_change(gradient: torch.Tensor, reference: torch.Tensor) -> float:
    return float((gradient - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def context():
    return probe.make_context()


@pytest.fixture(scope="module")
def whole(context):
    """Per case: the rollout, and the gradient and metrics of the whole step in one pass."""
    out = {}
    for case in CASES:
        objective = probe.make_objective(case)
        rollout = probe.build_rollout(objective, context)
        gradient, metrics = probe.whole_step(objective, context, rollout)
        out[case] = (rollout, gradient, metrics)
    return out


def test_the_rollout_is_uneven_and_exercises_clip_and_kl(whole):
    """The premises: very different lengths, an unscored row, the clip active on some tokens
    (not all), the KL in the loss, and gradients far from zero."""
    for case, (rollout, gradient, metrics) in whole.items():
        tokens = rollout.loss_mask.sum(-1).tolist()
        assert tokens == [16, 13, 10, 7, 1, 3, 2, 0], case
        assert gradient.dtype == torch.float64 and float(gradient.norm()) > 0.5, case
        if probe.make_objective(case).policy_loss == "clip":
            clipped = float(metrics["clip_ratio_low"] + metrics["clip_ratio_high"])
            assert 0.05 < clipped < 0.9, f"{case}: clipped share {clipped}"
        if probe.make_objective(case).beta > 0:
            assert rollout.ref_logprobs is not None and abs(float(metrics["kl_ref"])) > 1e-3, case  # k1 may be < 0
    with_kl = [case for case in CASES if probe.make_objective(case).beta > 0]
    assert {probe.make_objective(case).loss_aggregation for case in with_kl} == {
        "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"}


#: the clip cases with one ratio per token: their whole-step loss written out below.
TOKEN_CLIP_CASES = [case for case in CASES if probe.make_objective(case).policy_loss == "clip"
                    and probe.make_objective(case).importance_sampling_level == "token"]


@pytest.mark.parametrize("case", TOKEN_CLIP_CASES)
def test_the_whole_step_gradient_is_that_of_the_objective_written_out(case, context, whole):
    """The anchor of the comparisons below (which all go through ``prepare_update``): the
    step's totals are those of the loss mask (52 tokens, 7 responses with a token; the
    unscored row has a response token but no loss token) and the loss is the formula's."""
    rollout, reference, _ = whole[case]
    objective = probe.make_objective(case)
    mask = rollout.loss_mask
    logprobs = rollout_steps.policy_logprobs(context, rollout.input_ids, rollout.attention_mask, rollout.response_ids,
                                             objective.temperature, share_prompts=False)  # the plain pass
    ratio = torch.exp(logprobs.double() - rollout.old_logprobs.double())
    advantage = rollout.advantages.double().unsqueeze(-1)
    per_token = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1 - objective.epsilon_low,
                                                                           1 + objective.epsilon_high))
    if objective.dual_clip is not None:
        per_token = torch.where(advantage < 0, torch.minimum(per_token, -objective.dual_clip * advantage), per_token)
    if objective.beta > 0:
        per_token = per_token + objective.beta * Fn.kl_penalty(logprobs.double(), rollout.ref_logprobs.double(),
                                                               objective.kl_estimator)
    per_token = torch.where(mask, per_token, 0.0)
    if objective.loss_aggregation == "token-mean":
        loss = per_token.sum() / 52
    elif objective.loss_aggregation == "seq-mean-token-mean":
        loss = (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / 7
    else:
        loss = per_token.sum() / (7 * probe.R)
    torch.testing.assert_close(probe.gradient_of(context, loss), reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES)
def test_micro_batching_leaves_the_step_gradient_unchanged(case, context, whole):
    rollout, reference, _ = whole[case]
    # (a) the whole step in one loss_on_rollout, without prepare_update (a Mix's call).
    objective = probe.make_objective(case)
    loss, _ = objective.loss_on_rollout(context, probe.fresh(rollout))
    torch.testing.assert_close(probe.gradient_of(context, loss), reference, **TOLERANCE)
    # (b) through update_on_rollout in micro-batches: 2 uneven ones, 3 that cut a group, 1 row each.
    for micro in (4, 3, 1):
        gradient, seen = probe.accumulated_step(probe.make_objective(case), context, rollout, micro)
        assert len(seen) == -(-probe.B // micro) and sum(seen) == 52, f"{case}: micro-batches of {micro}: {seen}"
        if micro == 4:  # the shuffle moves whole groups: the long group in one micro-batch, the short one in the other
            assert sorted(seen) == [6, 46], seen
        torch.testing.assert_close(gradient, reference, **TOLERANCE,
                                   msg=lambda m: f"{case}, micro_batch_size={micro} ({seen} tokens): {m}")


@pytest.mark.parametrize("case", CASES)
def test_micro_batch_local_normaliser_changes_the_gradient(case, context, whole):
    """Negative control: each micro-batch aggregated with its own totals, the losses averaged
    over the micro-batches, differs measurably from the step's gradient on the uneven split."""
    rollout, reference, _ = whole[case]
    gradient = probe.local_normaliser_step(probe.make_objective(case), context, rollout, micro=4)
    change = relative_change(gradient, reference)
    assert change > VISIBLE, f"{case}: a micro-batch-local normaliser changed the gradient by only {change:.3g}"
    with pytest.raises(AssertionError):
        torch.testing.assert_close(gradient, reference, **TOLERANCE)


@pytest.mark.parametrize("case", ["token-mean-grpo-k3-kl", "seq-mean-token-sum-norm-dr-grpo"])
def test_the_same_holds_with_float32_weights(case):
    context = probe.make_context(torch.float32)
    objective = probe.make_objective(case)
    rollout = probe.build_rollout(objective, context)
    reference, _ = probe.whole_step(objective, context, rollout)
    gradient, seen = probe.accumulated_step(probe.make_objective(case), context, rollout, micro=4)
    assert sorted(seen) == [6, 46]
    torch.testing.assert_close(gradient, reference, **FLOAT32_TOLERANCE)
    local = probe.local_normaliser_step(probe.make_objective(case), context, rollout, micro=4)
    assert relative_change(local, reference) > VISIBLE


# ---------------------------------------------------------------------------- two gloo processes
@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Runs the two ranks of ``critic_free_ddp_probe.py`` (gloo, CPU, a file rendezvous: no
    port) and returns what each saved."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    folder = tmp_path_factory.mktemp("critic_free_ddp")
    # A fresh launch: no rank variables inherited from this process.
    env = {name: value for name, value in os.environ.items() if name not in DISTRIBUTED_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    logs = [folder / f"rank{rank}.log" for rank in range(2)]
    processes = []
    for rank in range(2):
        with open(logs[rank], "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, str(TESTS / "critic_free_ddp_probe.py"), str(rank), "2", str(folder / "rendezvous"),
                 str(folder)], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = "\n".join(f"--- rank {rank}\n{log.read_text()[-4000:]}" for rank, log in enumerate(logs))
    assert codes == [0, 0], f"the gloo ranks failed (exit codes {codes}):\n{output}"
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_both_ranks_built_this_model_and_agree(ranks, context):
    expected = probe.weight_fingerprint(context.policy)
    for result in ranks:
        assert torch.equal(result["fingerprint"], expected)
    for case in CASES:
        for key in ("whole", "micro", "rank_local"):
            assert torch.equal(ranks[0][case][key], ranks[1][case][key]), f"{case}: ranks disagree on {key}"


@pytest.mark.parametrize("case", CASES)
def test_two_processes_give_the_single_process_gradient(case, ranks, whole):
    _, reference, _ = whole[case]
    result = ranks[0][case]
    # (c) each rank its half (the long group on rank 0, the short one on rank 1), whole.
    torch.testing.assert_close(result["whole"], reference, **TOLERANCE)
    # (c) and (b) together: each rank its half in one-row micro-batches.
    assert sorted(ranks[0][case]["micro_tokens"]) == [7, 10, 13, 16]
    assert sorted(ranks[1][case]["micro_tokens"]) == [0, 1, 2, 3]
    torch.testing.assert_close(result["micro"], reference, **TOLERANCE)


@pytest.mark.parametrize("case", CASES)
def test_rank_local_normaliser_changes_the_ddp_gradient(case, ranks, whole):
    """Negative control: each rank aggregating with its own totals (not summed over the
    ranks) gives a measurably different gradient."""
    _, reference, _ = whole[case]
    change = relative_change(ranks[0][case]["rank_local"], reference)
    assert change > VISIBLE, f"{case}: a rank-local normaliser changed the gradient by only {change:.3g}"
