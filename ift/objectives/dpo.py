"""Direct Preference Optimization (Rafailov et al., 2023), a baseline of the IFT paper."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch

from ift.objectives import functional as Fn
from ift.objectives.base import Metrics
from ift.objectives.preference import _PreferenceObjective, check_preference_batch, pair_logprobs

if TYPE_CHECKING:  # pragma: no cover
    from ift.modules.finetune import FineTuneModule

#: Keys of precomputed reference log-probs a batch may carry instead of a reference model.
REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")


class DPO(_PreferenceObjective):
    """DPO on preference pairs (docs/objectives.md, "DPO and ORPO").

    ``-log σ(β [(logπ(y_w) - logπ_ref(y_w)) - (logπ(y_l) - logπ_ref(y_l))])`` with sequence
    log-probs summed over response tokens, averaged over pairs.

    **The reference.** π_ref is the policy as it stands when DPO starts training (at fit
    start, or at the switch to this stage in a recipe); with LoRA it is the policy with its
    adapters disabled. It is always read through ``module.reference_model()``. Because
    :meth:`loss` receives only the policy, the objective keeps a plain (unregistered, not
    pickled, not in checkpoints' hyper-parameters) handle to the module it was attached to.
    Used on its own, outside a :class:`~ift.modules.FineTuneModule`, call :meth:`loss` on
    batches that carry ``reference_chosen_logps`` and ``reference_rejected_logps``
    (``B`` float tensors) instead.

    Args:
        beta: inverse temperature β of the implicit reward (paper: 0.1).
        label_smoothing: share ε of preferences assumed flipped (conservative DPO); 0 is plain DPO.
    """

    #: DPO reads a frozen reference: a recipe switching into it refreshes the reference.
    needs_reference = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        if beta <= 0:
            raise ValueError(f"DPO: beta must be > 0, got {beta}")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"DPO: label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta = beta
        self.label_smoothing = label_smoothing
        self._module: Optional["FineTuneModule"] = None
        self._started = False

    # The module handle is a back-reference, not state: never pickle or copy it.
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None
        return state

    def attach(self, module: "FineTuneModule") -> None:
        self._module = module

    def begin(self, module: "FineTuneModule") -> None:
        """Take the policy as it stands now as the reference (kept when resuming mid-DPO)."""
        self._module = module
        module.ensure_reference(refresh=not self._started)
        self._started = True

    @torch.no_grad()
    def reference_logprobs(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(chosen, rejected)`` summed log-probs under π_ref (from the batch if it has them)."""
        if all(key in batch for key in REFERENCE_KEYS):
            return batch[REFERENCE_KEYS[0]], batch[REFERENCE_KEYS[1]]
        if self._module is None:
            raise RuntimeError(
                "DPO needs a reference policy: train it inside a FineTuneModule (which attaches it), "
                f"or pass batches with {REFERENCE_KEYS[0]!r} and {REFERENCE_KEYS[1]!r}"
            )
        with self._module.reference_model() as reference:
            return pair_logprobs(reference, batch, average=False)

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        check_preference_batch(batch, "DPO")
        chosen, rejected = pair_logprobs(policy, batch, average=False)
        ref_chosen, ref_rejected = self.reference_logprobs(batch)
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
