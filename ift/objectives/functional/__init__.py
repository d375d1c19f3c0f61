"""Pure tensor maths behind every objective: no Lightning, no models, no state.

Every function here has a slow Python-loop twin in ``tests/reference_impls.py`` and a
test comparing the two; the formulas are in ``docs/objectives.md``. Shapes: ``B`` batch,
``T`` sequence length, ``V`` vocabulary. Token-level quantities are *aligned with the
shifted labels*: position ``t`` of a ``B x (T-1)`` tensor is about predicting token
``t+1`` from tokens ``0..t``.

The maths is split by concern; this package re-exports all of it, so objectives write
``from ift.objectives import functional as Fn`` and call ``Fn.<name>``:

* :mod:`~ift.objectives.functional.token_losses`: label log-probs and masks, sequence
  means, the weighted token loss, entropy;
* :mod:`~ift.objectives.functional.discounting`: discounted cumulative sums;
* :mod:`~ift.objectives.functional.ift_propagation`: IFT's propagation weights and
  temporal residual input;
* :mod:`~ift.objectives.functional.masked_stats`: masked mean, variance and whitening;
* :mod:`~ift.objectives.functional.ppo_losses`: KL estimators, per-token rewards, GAE,
  EOS masks, clipped policy/value losses (typed results: ``PolicyLoss``, ``ValueLoss``,
  ``AdvantagesAndReturns``), explained variance;
* :mod:`~ift.objectives.functional.group_advantages`: critic-free advantages (GRPO's
  group-normalised, Dr.GRPO's mean-only, RLOO's leave-one-out, REINFORCE++'s whitened
  returns), zero-variance groups, DAPO's soft overlong penalty;
* :mod:`~ift.objectives.functional.policy_surrogates`: per-token policy surrogates (PPO/
  GRPO clipping with clip-higher and dual clip, GSPO sequence and token variants, CISPO),
  typed results ``TokenSurrogate`` and ``SequenceSurrogate``;
* :mod:`~ift.objectives.functional.loss_aggregation`: reducing per-token losses
  (token-mean, seq-mean-token-mean, Dr.GRPO's constant normaliser) with step-wide totals
  so gradient accumulation and DDP stay exact;
* :mod:`~ift.objectives.functional.preference_losses`: DPO and ORPO;
* :mod:`~ift.objectives.functional.reward_losses`: reward models (last-token pick,
  Bradley–Terry loss).
"""

from ift.core.constants import IGNORE_INDEX
from ift.core.forward import position_ids_from_mask
from ift.objectives.functional.discounting import discounted_cumsum
from ift.objectives.functional.engine_mismatch import engine_correction
from ift.objectives.functional.ift_propagation import (
    PROPAGATION_NORMS,
    PROPAGATION_SIDES,
    PROPAGATION_TYPES,
    ift_token_weights,
    mix_embeddings,
    shift_predictions_right,
)
from ift.objectives.functional.group_advantages import (
    ADVANTAGE_SCALES,
    group_mean_baseline,
    group_normalized_advantages,
    leave_one_out_advantages,
    reinforce_pp_advantages,
    soft_overlong_penalty,
    zero_variance_groups,
)
from ift.objectives.functional.loss_aggregation import (
    AGGREGATIONS,
    StepTotals,
    aggregate_sequence_losses,
    aggregate_token_losses,
    step_totals,
)
from ift.objectives.functional.masked_stats import masked_mean, masked_var, masked_whiten
from ift.objectives.functional.ppo_losses import (
    KL_ESTIMATORS,
    AdvantagesAndReturns,
    PolicyLoss,
    ValueLoss,
    ended_with_eos,
    explained_variance,
    gae,
    kl_penalty,
    mask_first_tokens,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    response_mask_after_eos,
)
from ift.objectives.functional.policy_surrogates import (
    SequenceSurrogate,
    TokenSurrogate,
    cispo_surrogate,
    clipped_surrogate,
    sequence_ratio_surrogate,
    sequence_token_surrogate,
)
from ift.objectives.functional.preference_losses import (
    ORPO_MAX_PROB_GAP,
    dpo_loss,
    log1mexp,
    log_odds,
    orpo_loss,
    sequence_logprobs,
)
from ift.objectives.functional.reward_losses import (
    bradley_terry_loss,
    drop_trailing_token,
    gather_last_token,
    last_token_index,
)
from ift.objectives.functional.token_losses import (
    batch_mean_of_rows,
    entropy_from_logits,
    label_logprobs,
    label_mask,
    sequence_mean,
    token_losses_and_mask,
    weighted_token_loss,
)

__all__ = [
    "engine_correction",
    # shared constants and helpers, re-exported because objectives read them here
    "IGNORE_INDEX",
    "position_ids_from_mask",
    # token losses (SFT, IFT)
    "label_logprobs",
    "label_mask",
    "sequence_mean",
    "batch_mean_of_rows",
    "weighted_token_loss",
    "entropy_from_logits",
    "token_losses_and_mask",
    # discounting and IFT's propagation
    "discounted_cumsum",
    "PROPAGATION_SIDES",
    "PROPAGATION_NORMS",
    "PROPAGATION_TYPES",
    "ift_token_weights",
    "shift_predictions_right",
    "mix_embeddings",
    # masked statistics
    "masked_mean",
    "masked_var",
    "masked_whiten",
    # PPO
    "KL_ESTIMATORS",
    "kl_penalty",
    "mask_first_tokens",
    "per_token_rewards",
    "gae",
    "ended_with_eos",
    "response_mask_after_eos",
    "ppo_policy_loss",
    "ppo_value_loss",
    "explained_variance",
    "AdvantagesAndReturns",
    "PolicyLoss",
    "ValueLoss",
    # critic-free advantages (GRPO family)
    "ADVANTAGE_SCALES",
    "group_normalized_advantages",
    "leave_one_out_advantages",
    "group_mean_baseline",
    "reinforce_pp_advantages",
    "zero_variance_groups",
    "soft_overlong_penalty",
    # policy surrogates
    "clipped_surrogate",
    "sequence_ratio_surrogate",
    "sequence_token_surrogate",
    "cispo_surrogate",
    "TokenSurrogate",
    "SequenceSurrogate",
    # loss aggregation
    "AGGREGATIONS",
    "StepTotals",
    "step_totals",
    "aggregate_token_losses",
    "aggregate_sequence_losses",
    # DPO and ORPO
    "ORPO_MAX_PROB_GAP",
    "sequence_logprobs",
    "dpo_loss",
    "log1mexp",
    "log_odds",
    "orpo_loss",
    # reward models
    "last_token_index",
    "drop_trailing_token",
    "gather_last_token",
    "bradley_terry_loss",
]
