"""Direct Preference Optimization (Rafailov et al., 2023), a baseline of the IFT paper."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ift.objectives import functional as Fn
from ift.core.arguments import check_number
from ift.objectives.base import Metrics
from ift.objectives.contract import Capabilities, StepContext, StepResult
from ift.objectives.preference import _PreferenceObjective, check_preference_batch, pair_logprobs

#: Keys of precomputed reference log-probs a batch may carry instead of a reference model.
REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


class DPO(_PreferenceObjective):
    """DPO on preference pairs (docs/objectives.md, "DPO and ORPO").

    ``-log σ(β [(logπ(y_w) - logπ_ref(y_w)) - (logπ(y_l) - logπ_ref(y_l))])`` with sequence
    log-probs summed over response tokens, averaged over pairs.

    **The reference.** π_ref is the policy as it stands when DPO starts training (at fit
    start, or at the switch to this stage in a recipe); with LoRA it is the policy with its
    adapters disabled. :meth:`training_step` reads it through the step context's
    ``reference_model()`` and hands :meth:`loss` its log-probs in the batch. Used on its own,
    outside a :class:`~ift.modules.FineTuneModule`, call :meth:`loss` on batches that carry
    ``reference_chosen_logps`` and ``reference_rejected_logps`` (``B`` float tensors).

    Args:
        beta: inverse temperature β of the implicit reward, > 0 (paper: 0.1).
        label_smoothing: share ε of preferences assumed flipped (conservative DPO), in [0, 0.5);
            0 is plain DPO.
    """

    capabilities = Capabilities(reads_reference=True)
    disables_dropout = True  # as TRL's DPO: the policy is compared with the dropout-free reference

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        self.beta = check_number("DPO", "beta", beta, "(0, inf)")
        self.label_smoothing = check_number("DPO", "label_smoothing", label_smoothing, "[0, 0.5)")
        self._started = False

    def begin(self, context: StepContext) -> None:
        """Take the policy as it stands now as the reference (kept when resuming mid-DPO)."""
        context.ensure_reference(refresh=not self._started)
        self._started = True

    @torch.no_grad()
    def with_reference_logprobs(self, context: StepContext, batch: Dict[str, Any]) -> Dict[str, Any]:
        """``batch`` with the reference's summed log-probs of both sides (unchanged if it has them)."""
        if all(key in batch for key in REFERENCE_KEYS):
            return batch
        check_preference_batch(batch, "DPO")
        with context.reference_model() as reference:
            chosen, rejected = pair_logprobs(reference, batch, average=False)
        return {**batch, REFERENCE_KEYS[0]: chosen, REFERENCE_KEYS[1]: rejected}

    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        loss, metrics = self.loss(context.policy, self.with_reference_logprobs(context, batch))
        return StepResult(loss, metrics)

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        check_preference_batch(batch, "DPO")
        if not all(key in batch for key in REFERENCE_KEYS):
            raise RuntimeError(
                f"DPO.loss needs the reference's log-probs in the batch ({REFERENCE_KEYS[0]!r}, "
                f"{REFERENCE_KEYS[1]!r}); inside a FineTuneModule, DPO.training_step adds them from the frozen reference"
            )
        ref_chosen, ref_rejected = batch[REFERENCE_KEYS[0]], batch[REFERENCE_KEYS[1]]
        chosen, rejected = pair_logprobs(policy, batch, average=False)
        losses, chosen_rewards, rejected_rewards = Fn.dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, self.beta, self.label_smoothing
        )
        margin = chosen_rewards - rejected_rewards
        metrics: Metrics = {
            "reward_chosen": chosen_rewards.mean(),
            "reward_rejected": rejected_rewards.mean(),
            "reward_margin": margin.mean(),
            "reward_accuracy": (margin > 0).float().mean(),
            "logp_chosen": chosen.detach().mean(),
            "logp_rejected": rejected.detach().mean(),
        }
        return losses.mean(), metrics

    def state_dict(self) -> Dict[str, Any]:
        return {"started": self._started}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._started = bool(state.get("started", False))
