"""Slow, obviously-correct Python-loop twins of the functions in the package ift/objectives/functional/."""


# ======================================================================================
# PPO references (tests/test_ppo_functional.py): plain Python loops over nested lists of
# floats, one row and one token at a time, in float64. Slow and obviously correct.
# ======================================================================================

import math as _ppo_math  # noqa: E402


def _ppo_rows(t):
    """A tensor (or nested list) as a list of rows of Python numbers."""
    return t.tolist() if hasattr(t, "tolist") else [list(r) for r in t]


def loop_masked_mean(x, mask):
    vals = [v for row_x, row_m in zip(_ppo_rows(x), _ppo_rows(mask)) for v, m in zip(row_x, row_m) if m]
    return sum(vals) / len(vals) if vals else 0.0


def loop_masked_var(x, mask, unbiased=True):
    vals = [v for row_x, row_m in zip(_ppo_rows(x), _ppo_rows(mask)) for v, m in zip(row_x, row_m) if m]
    n = len(vals)
    denom = n - 1 if unbiased else n
    if denom <= 0:
        return 0.0
    mean = sum(vals) / n
    return sum((v - mean) ** 2 for v in vals) / denom


def loop_masked_whiten(x, mask, shift_mean=True, eps=1e-8, unbiased=True):
    mean = loop_masked_mean(x, mask)
    std = _ppo_math.sqrt(loop_masked_var(x, mask, unbiased) + eps)
    out = []
    for row_x, row_m in zip(_ppo_rows(x), _ppo_rows(mask)):
        row = []
        for v, m in zip(row_x, row_m):
            if not m:
                row.append(0.0)
            else:
                w = (v - mean) / std
                row.append(w if shift_mean else w + mean)
        out.append(row)
    return out


def loop_gae(rewards, values, mask, gamma, lam):
    """Backwards recursion per row: A_t = delta_t + gamma*lam*A_{t+1}; V after the end = 0."""
    advantages, returns = [], []
    for r, v, m in zip(_ppo_rows(rewards), _ppo_rows(values), _ppo_rows(mask)):
        n = sum(1 for x in m if x)  # valid tokens form a prefix
        adv = [0.0] * len(r)
        next_value, next_adv = 0.0, 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * next_value - v[t]
            next_adv = delta + gamma * lam * next_adv
            adv[t] = next_adv
            next_value = v[t]
        advantages.append(adv)
        returns.append([adv[t] + v[t] if t < n else 0.0 for t in range(len(r))])
    return advantages, returns


def loop_per_token_rewards(scores, kl, mask, kl_coef):
    out = []
    for score, row_kl, row_m in zip(list(scores), _ppo_rows(kl), _ppo_rows(mask)):
        row = [(-kl_coef * k if m else 0.0) for k, m in zip(row_kl, row_m)]
        last = None
        for t, m in enumerate(row_m):
            if m:
                last = t
        if last is not None:
            row[last] += float(score)
        out.append(row)
    return out


def loop_response_mask_after_eos(ids, eos_ids, pad_id):
    """Walk each row: valid until (and including) the first EOS; without EOS, until the last non-pad."""
    eos_ids = set(eos_ids)
    out = []
    for row in _ppo_rows(ids):
        first_eos = next((t for t, tok in enumerate(row) if tok in eos_ids), None)
        if first_eos is not None:
            out.append([t <= first_eos for t in range(len(row))])
        else:
            real = [t for t, tok in enumerate(row) if pad_id is None or tok != pad_id]
            last = real[-1] if real else -1
            out.append([t <= last for t in range(len(row))])
    return out


def _loop_row_then_batch_mean(per_token, mask):
    row_means = []
    for row_v, row_m in zip(per_token, _ppo_rows(mask)):
        vals = [v for v, m in zip(row_v, row_m) if m]
        if vals:
            row_means.append(sum(vals) / len(vals))
    return sum(row_means) / len(row_means) if row_means else 0.0


def loop_ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps):
    per_token, clipped_flags, kls = [], [], []
    for lp, old, adv, m in zip(_ppo_rows(logprobs), _ppo_rows(old_logprobs), _ppo_rows(advantages), _ppo_rows(mask)):
        row = []
        for a, b, A, valid in zip(lp, old, adv, m):
            if not valid:
                row.append(0.0)
                continue
            ratio = _ppo_math.exp(a - b)
            unclipped = -A * ratio
            clipped = -A * min(max(ratio, 1 - clip_eps), 1 + clip_eps)
            row.append(max(unclipped, clipped))
            clipped_flags.append(1.0 if clipped > unclipped else 0.0)
            kls.append(0.5 * (a - b) ** 2)
        per_token.append(row)
    loss = _loop_row_then_batch_mean(per_token, mask)
    clipfrac = sum(clipped_flags) / len(clipped_flags) if clipped_flags else 0.0
    approx_kl = sum(kls) / len(kls) if kls else 0.0
    return loss, clipfrac, approx_kl


def loop_ppo_value_loss(values, old_values, returns, mask, clip_eps):
    per_token, flags = [], []
    for v, vo, ret, m in zip(_ppo_rows(values), _ppo_rows(old_values), _ppo_rows(returns), _ppo_rows(mask)):
        row = []
        for a, b, R, valid in zip(v, vo, ret, m):
            if not valid:
                row.append(0.0)
                continue
            unclipped = (a - R) ** 2
            clipped = (min(max(a, b - clip_eps), b + clip_eps) - R) ** 2
            row.append(0.5 * max(unclipped, clipped))
            flags.append(1.0 if clipped > unclipped else 0.0)
        per_token.append(row)
    return _loop_row_then_batch_mean(per_token, mask), (sum(flags) / len(flags) if flags else 0.0)


def loop_explained_variance(values, returns, mask):
    rets, resid = [], []
    for v, r, m in zip(_ppo_rows(values), _ppo_rows(returns), _ppo_rows(mask)):
        for a, b, valid in zip(v, r, m):
            if valid:
                rets.append(b)
                resid.append(b - a)

    def var(xs):
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs) / len(xs)

    if len(rets) < 2 or var(rets) == 0:
        return float("nan")
    return 1 - var(resid) / var(rets)


# ======================================================================================
# SFT / IFT references (tests/test_functional.py, tests/test_ift_objective.py): plain
# Python loops in float64 over one row and one token at a time, written straight from
# docs/objectives.md (sections "SFT" and "IFT"). Inputs may be tensors or nested lists; outputs are
# nested lists of Python floats (callers turn them into tensors to compare).
# ======================================================================================

import math as _sft_math  # noqa: E402

REF_IGNORE_INDEX = -100


def _sft_rows(t):
    """A tensor or nested list as nested Python lists (float64 numbers)."""
    if hasattr(t, "detach"):
        t = t.detach()
        if t.is_floating_point():
            t = t.double()
        return t.tolist()
    return [list(r) if isinstance(r, (list, tuple)) else r for r in t]


def ref_log_softmax_at(row, index):
    """``log softmax(row)[index]`` with the max subtracted first, in Python floats."""
    top = max(row)
    total = 0.0
    for v in row:
        total += _sft_math.exp(v - top)
    return row[index] - top - _sft_math.log(total)


def ref_label_logprobs(logits, labels):
    """``out[b][t] = log p(labels[b][t+1] | logits[b][t])``, 0 where that label is -100."""
    logits, labels = _sft_rows(logits), _sft_rows(labels)
    out = []
    for b in range(len(labels)):
        row = []
        for t in range(len(labels[b]) - 1):
            target = labels[b][t + 1]
            row.append(0.0 if target == REF_IGNORE_INDEX else ref_log_softmax_at(logits[b][t], target))
        out.append(row)
    return out


def ref_discounted_cumsum(x, gamma, reverse=True):
    """Along the last axis of a 1-D or 2-D input.

    ``reverse=True``: ``S_t = sum_{j >= t} gamma^(j-t) x_j`` computed by the backward
    recursion ``S_t = x_t + gamma S_{t+1}``; ``reverse=False``: ``S_t = sum_{j <= t}
    gamma^(t-j) x_j`` by ``S_t = x_t + gamma S_{t-1}``. Returns the same nesting as given.
    """
    rows = _sft_rows(x)
    one_d = len(rows) == 0 or not isinstance(rows[0], list)
    if one_d:
        rows = [rows]
    out = []
    for row in rows:
        n = len(row)
        sums = [0.0] * n
        running = 0.0
        order = range(n - 1, -1, -1) if reverse else range(n)
        for t in order:
            running = float(row[t]) + gamma * running
            sums[t] = running
        out.append(sums)
    return out[0] if one_d else out


def ref_discounted_cumsum_direct(x, gamma, reverse=True):
    """The same as :func:`ref_discounted_cumsum` by the double sum of the definition (short rows)."""
    rows = _sft_rows(x)
    one_d = len(rows) == 0 or not isinstance(rows[0], list)
    if one_d:
        rows = [rows]
    out = []
    for row in rows:
        n = len(row)
        sums = []
        for t in range(n):
            total = 0.0
            for j in range(n):
                if (reverse and j >= t) or (not reverse and j <= t):
                    total += (gamma ** abs(j - t)) * float(row[j])  # 0 ** 0 == 1 in Python
            sums.append(total)
        out.append(sums)
    return out[0] if one_d else out


def ref_ift_token_weights(token_losses, mask, gamma, side="left", norm="L1", kind="loss"):
    """IFT relation-propagation weights, one row at a time (docs/objectives.md, IFT step 4).

    items ``c_t``: ``m_t l_t / N`` (loss), ``m_t`` (mask), ``m_t l_t`` (logps).
    left: ``S_t = sum_{j>=t} gamma^(j-t) c_j``; L1 ``S``, L2 ``S^2``, softmax over the
    valid positions, log ``log(S + 1)``.
    right: ``S_t = sum_{j<=t} gamma^(t-j) c_j`` plus the smallest non-zero ``S`` among the
    row's valid positions (plus 1 if there is none); L1 ``1/S``, L2 ``1/S^2``, softmax of
    ``1/S`` over the valid positions, log ``1/log(S + 1)``.
    Then zero on masked positions and rescale so the row sums to its ``N`` valid tokens
    (a row whose raw weights sum to 0 becomes uniform). ``gamma == 0``: ones on valid.
    """
    losses, masks = _sft_rows(token_losses), _sft_rows(mask)
    out = []
    for loss_row, mask_row in zip(losses, masks):
        valid = [bool(m) for m in mask_row]
        n_valid = sum(valid)
        width = len(valid)
        if gamma == 0 or n_valid == 0:
            out.append([1.0 if v else 0.0 for v in valid])
            continue
        items = []
        for t in range(width):
            if not valid[t]:
                items.append(0.0)
            elif kind == "loss":
                items.append(float(loss_row[t]) / n_valid)
            elif kind == "mask":
                items.append(1.0)
            elif kind == "logps":
                items.append(float(loss_row[t]))
            else:
                raise ValueError(kind)
        sums = ref_discounted_cumsum(items, gamma, reverse=(side == "left"))
        raw = [0.0] * width
        if side == "left":
            for t in range(width):
                if not valid[t]:
                    continue
                s = sums[t]
                if norm == "L1":
                    raw[t] = s
                elif norm == "L2":
                    raw[t] = s * s
                elif norm == "log":
                    raw[t] = _sft_math.log(s + 1)
                elif norm == "softmax":
                    raw[t] = s  # exponentiated below
                else:
                    raise ValueError(norm)
        elif side == "right":
            nonzero = [sums[t] for t in range(width) if valid[t] and sums[t] != 0]
            shift = min(nonzero) if nonzero else 1.0
            for t in range(width):
                if not valid[t]:
                    continue
                s = sums[t] + shift
                if norm == "L1":
                    raw[t] = 1 / s
                elif norm == "L2":
                    raw[t] = 1 / (s * s)
                elif norm == "log":
                    raw[t] = 1 / _sft_math.log(s + 1)
                elif norm == "softmax":
                    raw[t] = 1 / s  # exponentiated below
                else:
                    raise ValueError(norm)
        else:
            raise ValueError(side)
        if norm == "softmax":
            top = max(raw[t] for t in range(width) if valid[t])
            exps = [_sft_math.exp(raw[t] - top) if valid[t] else 0.0 for t in range(width)]
            denom = sum(exps)
            raw = [e / denom for e in exps]
        total = sum(raw[t] for t in range(width) if valid[t])
        if total == 0:
            out.append([1.0 if v else 0.0 for v in valid])
        else:
            out.append([raw[t] * n_valid / total if valid[t] else 0.0 for t in range(width)])
    return out


def ref_weighted_token_loss(token_nll, mask, weights=None):
    """``mean over rows with a valid token of (1/N) sum_t w_t m_t l_t`` (0 if no such row)."""
    nll, masks = _sft_rows(token_nll), _sft_rows(mask)
    w = _sft_rows(weights) if weights is not None else None
    per_row = []
    for b, (nll_row, mask_row) in enumerate(zip(nll, masks)):
        total, count = 0.0, 0
        for t, m in enumerate(mask_row):
            if m:
                total += (1.0 if w is None else w[b][t]) * nll_row[t]
                count += 1
        if count:
            per_row.append(total / count)
    return sum(per_row) / len(per_row) if per_row else 0.0


def ref_sft_loss(logits, labels):
    """SFT (docs/objectives.md): per-sequence token-mean NLL of the supervised labels, mean over sequences."""
    logps = ref_label_logprobs(logits, labels)
    labels = _sft_rows(labels)
    mask = [[lab != REF_IGNORE_INDEX for lab in row[1:]] for row in labels]
    nll = [[-v for v in row] for row in logps]
    return ref_weighted_token_loss(nll, mask)


def ref_ift_lambda(step, lam, min_lam=None, schedule="static", warmup_steps=0):
    """Noise-free lambda: ``lam``, or linear from ``min_lam`` (0 if None) to ``lam`` over the warm-up."""
    if schedule == "static" or warmup_steps <= 0:
        return lam
    start = 0.0 if min_lam is None else min_lam
    if step >= warmup_steps:
        return lam
    return start + (lam - start) * step / warmup_steps


def loop_mask_first_tokens(mask, counts):
    """Walk each row: a position counts if the mask has it and it is among the first ``counts[b]`` (None: all)."""
    out = []
    for row, count in zip(mask.tolist(), counts):
        out.append([bool(valid) and (count is None or t < count) for t, valid in enumerate(row)])
    return out


# ======================================================================================
# Critic-free references (tests/test_critic_free_functional.py): GRPO-family advantages,
# policy surrogates and loss aggregation, as plain Python loops over lists of floats, one
# group, row and token at a time. Inputs may be tensors or nested lists.
# ======================================================================================

import math as _cf_math  # noqa: E402


def _cf_list(t):
    """A tensor (any dtype) or a list as nested Python lists of floats/bools."""
    if hasattr(t, "detach"):
        t = t.detach()
        if t.is_floating_point():
            t = t.double()
        return t.tolist()
    return list(t)


def _cf_groups(scores, group_size, valid):
    """Yield ``(row indices, valid scores by index)`` for each group of consecutive rows."""
    scores = _cf_list(scores)
    valid = [True] * len(scores) if valid is None else [bool(v) for v in _cf_list(valid)]
    for start in range(0, len(scores), group_size):
        rows = list(range(start, start + group_size))
        yield rows, {i: scores[i] for i in rows if valid[i]}


def _cf_sample_std(xs):
    """Unbiased (n-1) standard deviation; 0 with fewer than 2 values."""
    if len(xs) < 2:
        return 0.0
    mean = sum(xs) / len(xs)
    return _cf_math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def loop_zero_variance_groups(scores, group_size, valid=None):
    out = []
    for _, members in _cf_groups(scores, group_size, valid):
        vals = list(members.values())
        out.append(len(vals) < 2 or max(vals) - min(vals) <= 1e-12)
    return out


def loop_group_normalized_advantages(scores, group_size, scale="group", eps=1e-4, valid=None):
    """Per group: (r - mean of valid) / (std + eps); std of the group, of the batch, or 1 (no division)."""
    all_valid = [v for _, members in _cf_groups(scores, group_size, valid) for v in members.values()]
    batch_std = _cf_sample_std(all_valid)
    out = []
    for rows, members in _cf_groups(scores, group_size, valid):
        vals = list(members.values())
        flat = len(vals) < 2 or max(vals) - min(vals) <= 1e-12
        mean = sum(vals) / len(vals) if vals else 0.0
        if scale == "group":
            divisor = _cf_sample_std(vals) + eps
        elif scale == "batch":
            divisor = batch_std + eps
        else:
            divisor = 1.0
        for i in rows:
            out.append(0.0 if flat or i not in members else (members[i] - mean) / divisor)
    return out


def loop_leave_one_out(scores, group_size, valid=None):
    """RLOO: r_i minus the mean of the other valid members (a direct loop over the others)."""
    out = []
    for rows, members in _cf_groups(scores, group_size, valid):
        for i in rows:
            others = [v for j, v in members.items() if j != i]
            if i not in members or not others:
                out.append(0.0)
            else:
                out.append(members[i] - sum(others) / len(others))
    return out


def loop_group_mean_baseline(scores, group_size, valid=None):
    out = []
    for rows, members in _cf_groups(scores, group_size, valid):
        vals = list(members.values())
        for i in rows:
            out.append(members[i] - sum(vals) / len(vals) if i in members and len(vals) >= 2 else 0.0)
    return out


def loop_reinforce_pp(scores, mask, kl=None, kl_coef=0.0, valid=None, eps=1e-8):
    """Token rewards -beta*kl (+ score on the last valid token), returns by a backward walk, whitened."""
    scores, mask = _cf_list(scores), _cf_list(mask)
    kl = [[0.0] * len(row) for row in mask] if kl is None else _cf_list(kl)
    valid = [True] * len(scores) if valid is None else [bool(v) for v in _cf_list(valid)]
    returns = []
    for b, row_m in enumerate(mask):
        width = len(row_m)
        ok = [bool(m) and valid[b] for m in row_m]
        positions = [t for t in range(width) if ok[t]]
        rewards = [(-kl_coef * kl[b][t] if ok[t] else 0.0) for t in range(width)]
        if positions:
            rewards[positions[-1]] += scores[b]
        row, running = [0.0] * width, 0.0
        for t in reversed(range(width)):
            if ok[t]:
                running += rewards[t]
                row[t] = running
        returns.append((row, ok))
    vals = [v for row, ok in returns for v, m in zip(row, ok) if m]
    mean = sum(vals) / len(vals) if vals else 0.0
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) >= 2 else 0.0
    return [[(v - mean) / _cf_math.sqrt(var + eps) if m else 0.0 for v, m in zip(row, ok)] for row, ok in returns]


def _cf_token_advantages(advantages, mask):
    adv = _cf_list(advantages)
    return [a if isinstance(a, list) else [a] * len(m) for a, m in zip(adv, _cf_list(mask))]


def _cf_clip(x, low, high):
    return min(max(x, low), high)


def loop_clipped_surrogate(logprobs, old_logprobs, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=None, clamp=20.0):
    """Per token: ``(loss, ratio, clipped_low, clipped_high, dual_clipped)`` as nested lists."""
    lp, old, mask = _cf_list(logprobs), _cf_list(old_logprobs), _cf_list(mask)
    adv = _cf_token_advantages(advantages, mask)
    out = [[[] for _ in lp] for _ in range(5)]
    for b in range(len(lp)):
        for t in range(len(lp[b])):
            if not mask[b][t]:
                for k, v in enumerate((0.0, 1.0, False, False, False)):
                    out[k][b].append(v)
                continue
            A = adv[b][t]
            ratio = _cf_math.exp(_cf_clip(lp[b][t] - old[b][t], -clamp, clamp))
            objective = min(ratio * A, _cf_clip(ratio, 1 - eps_low, 1 + eps_high) * A)
            dual = False
            if dual_clip is not None and A < 0 and dual_clip * A > objective:
                objective, dual = dual_clip * A, True
            values = (-objective, ratio, A < 0 and ratio < 1 - eps_low, A > 0 and ratio > 1 + eps_high, dual)
            for k, v in enumerate(values):
                out[k][b].append(v)
    return tuple(out)


def _cf_sequence_ratio(lp_row, old_row, m_row, clamp):
    diffs = [_cf_clip(a - b, -clamp, clamp) for a, b, m in zip(lp_row, old_row, m_row) if m]
    return _cf_math.exp(sum(diffs) / len(diffs)) if diffs else 1.0, bool(diffs)


def loop_sequence_surrogate(logprobs, old_logprobs, advantages, mask, eps_low=3e-4, eps_high=4e-4, clamp=20.0):
    """GSPO per row: ``(loss, ratio, clipped_low, clipped_high)`` lists."""
    lp, old, mask, adv = _cf_list(logprobs), _cf_list(old_logprobs), _cf_list(mask), _cf_list(advantages)
    losses, ratios, lows, highs = [], [], [], []
    for b in range(len(lp)):
        s, any_valid = _cf_sequence_ratio(lp[b], old[b], mask[b], clamp)
        A = adv[b]
        if not any_valid:
            losses.append(0.0), ratios.append(1.0), lows.append(False), highs.append(False)
            continue
        losses.append(-min(s * A, _cf_clip(s, 1 - eps_low, 1 + eps_high) * A))
        ratios.append(s)
        lows.append(A < 0 and s < 1 - eps_low)
        highs.append(A > 0 and s > 1 + eps_high)
    return losses, ratios, lows, highs


def loop_sequence_token_surrogate(logprobs, old_logprobs, advantages, mask, eps_low=3e-4, eps_high=4e-4, clamp=20.0):
    """GSPO-token values per token: the row's sequence ratio with the token's advantage."""
    lp, old, mask = _cf_list(logprobs), _cf_list(old_logprobs), _cf_list(mask)
    adv = _cf_token_advantages(advantages, mask)
    losses = []
    for b in range(len(lp)):
        s, _ = _cf_sequence_ratio(lp[b], old[b], mask[b], clamp)
        row = []
        for t in range(len(lp[b])):
            A = adv[b][t]
            row.append(-min(s * A, _cf_clip(s, 1 - eps_low, 1 + eps_high) * A) if mask[b][t] else 0.0)
        losses.append(row)
    return losses


def loop_cispo(logprobs, old_logprobs, advantages, mask, eps_high=5.0, clamp=20.0):
    """CISPO per token: ``(loss, grad wrt logprob, clipped_high)`` nested lists."""
    lp, old, mask = _cf_list(logprobs), _cf_list(old_logprobs), _cf_list(mask)
    adv = _cf_token_advantages(advantages, mask)
    losses, grads, flags = [], [], []
    for b in range(len(lp)):
        lr, gr, fr = [], [], []
        for t in range(len(lp[b])):
            if not mask[b][t]:
                lr.append(0.0), gr.append(0.0), fr.append(False)
                continue
            ratio = _cf_math.exp(_cf_clip(lp[b][t] - old[b][t], -clamp, clamp))
            weight = min(ratio, eps_high)
            lr.append(-weight * adv[b][t] * lp[b][t])
            gr.append(-weight * adv[b][t])
            fr.append(ratio > eps_high)
        losses.append(lr), grads.append(gr), flags.append(fr)
    return losses, grads, flags


def loop_aggregate(per_token, mask, mode, token_total=None, sequence_total=None, max_length=None):
    """Reduce per-token losses one row at a time (see loss_aggregation's modes)."""
    per_token, mask = _cf_list(per_token), _cf_list(mask)
    rows = [[v for v, m in zip(row, row_m) if m] for row, row_m in zip(per_token, mask)]
    n_tokens = sum(len(r) for r in rows)
    n_seqs = sum(1 for r in rows if r)
    tokens = max(n_tokens if token_total is None else token_total, 1)
    seqs = max(n_seqs if sequence_total is None else sequence_total, 1)
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / tokens
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows if r) / seqs
    if mode == "seq-mean-token-sum-norm":
        return sum(sum(r) for r in rows) / (seqs * max_length)
    raise ValueError(mode)


def loop_aggregate_sequences(per_sequence, row_valid, sequence_total=None):
    vals = [v for v, ok in zip(_cf_list(per_sequence), _cf_list(row_valid)) if ok]
    return sum(vals) / max(len(vals) if sequence_total is None else sequence_total, 1)


def loop_soft_overlong(lengths, max_length, cache_length):
    out = []
    for L in _cf_list(lengths):
        if L <= max_length - cache_length:
            out.append(0.0)
        elif L <= max_length:
            out.append(((max_length - cache_length) - L) / cache_length)
        else:
            out.append(-1.0)
    return out


# ======================================================================================
# Engine-mismatch reference (tests/test_engine_mismatch.py): the truncated importance-sampling
# weights of Fn.engine_correction, one number at a time.
# ======================================================================================

import math as _em_math  # noqa: E402

import torch as _em_torch  # noqa: E402


def loop_engine_correction(old, engine, mask, cap, level):
    """``Fn.engine_correction`` one number at a time: ``(weights, mean |diff|, max |diff|)``."""
    B, R = old.shape
    diffs = [abs(float(old[b, t]) - float(engine[b, t])) for b in range(B) for t in range(R) if mask[b, t]]
    weights = [[0.0] * R for _ in range(B)] if level == "token" else [0.0] * B
    for b in range(B):
        if level == "token":
            for t in range(R):
                if mask[b, t]:
                    weights[b][t] = min(_em_math.exp(float(old[b, t]) - float(engine[b, t])), cap)
        else:
            valid = [t for t in range(R) if mask[b, t]]
            if valid:
                mean = sum(float(old[b, t]) - float(engine[b, t]) for t in valid) / len(valid)
                weights[b] = min(_em_math.exp(mean), cap)
    mean_diff = sum(diffs) / len(diffs) if diffs else 0.0
    return _em_torch.tensor(weights), mean_diff, max(diffs) if diffs else 0.0
