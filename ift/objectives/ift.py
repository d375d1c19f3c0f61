"""Intuitive Fine-Tuning (arXiv 2405.11870): SFT on a temporally-mixed input, with
relation-propagation token weights. See docs/objectives.md, section IFT."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ift.core.constants import TRAINS_ON_RESPONSES
from ift.objectives import functional as Fn
from ift.objectives.base import Metrics, Objective
from ift.core.forward import accepts_true_input_ids, policy_logits
from ift.core.arguments import check_integer, check_number
from ift.objectives.lambda_schedule import LAMBDA_SCHEDULES, ift_lambda

PREDICTIONS = ("greedy", "sample")


class IFT(Objective):
    """Intuitive Fine-Tuning.

    Pass 1 (no gradient) predicts every next token from the ground truth; pass 2 (with
    gradient) reads inputs whose embeddings mix the truth with those predictions,
    ``e_t = (1 - lam) E(x_t) + lam E(x~_t)``, and is trained with relation-propagation
    weights on its token losses. ``lam = 0, gamma = 0`` is exactly SFT.

    Args:
        lam: weight of the model's own prediction in the input embeddings (paper: 0.2).
        min_lam: start value of the ``linear`` schedule (0 when None); refused with ``static``.
        lam_schedule: ``static`` (always ``lam``) or ``linear`` (``min_lam`` to ``lam`` over ``lam_warmup_steps``).
        lam_warmup_steps: optimizer steps of the ``linear`` warm-up (at least 1 with ``linear``;
            refused with ``static``).
        lam_noise_std: paper's noisy lambda, ``lam * (1 + std * N(0, 1))`` clamped to [0, 1] (paper: 0.5); 0 disables.
        lam_noise_seed: seed of that noise (the same step always gets the same noise).
        gamma: relation-propagation discount in [0, 1]; 0 gives uniform weights (paper: 0.95).
        propagation_side: ``left`` (weight by discounted future loss) or ``right``.
        propagation_norm: ``L1``, ``L2``, ``softmax`` or ``log``.
        propagation_type: what is propagated: ``loss``, ``mask`` or ``logps``.
        propagation_grad: let gradient flow through the weights (the reference code does;
            default True to match it). False detaches them, a plain re-weighted NLL.
        prediction: how pass 1 picks the predicted token: ``greedy`` (argmax) or ``sample``.
        temperature: sampling temperature when ``prediction="sample"`` (refused with ``greedy``).

    Every number is checked when the objective is built: nan, inf or a value outside its
    range raises a ValueError naming the argument and the range.
    """

    trains_on = TRAINS_ON_RESPONSES
    disables_dropout = True  # pass 1 and pass 2 must run the same network, not two dropout masks (ift.modules.dropout)

    def __init__(
        self,
        lam: float = 0.2,
        min_lam: float | None = None,
        lam_schedule: str = "static",
        lam_warmup_steps: int = 0,
        lam_noise_std: float = 0.0,
        lam_noise_seed: int = 0,
        gamma: float = 0.95,
        propagation_side: str = "left",
        propagation_norm: str = "L1",
        propagation_type: str = "loss",
        propagation_grad: bool = True,
        prediction: str = "greedy",
        temperature: float = 1.0,
    ):
        lam = check_number("IFT", "lam", lam, "[0, 1]")
        min_lam = check_number("IFT", "min_lam", min_lam, "[0, 1]", optional=True)
        lam_warmup_steps = check_integer("IFT", "lam_warmup_steps", lam_warmup_steps)
        lam_noise_std = check_number("IFT", "lam_noise_std", lam_noise_std, "[0, inf)")
        lam_noise_seed = check_integer("IFT", "lam_noise_seed", lam_noise_seed)
        gamma = check_number("IFT", "gamma", gamma, "[0, 1]")
        temperature = check_number("IFT", "temperature", temperature, "(0, inf)")
        if lam_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"IFT: lam_schedule {lam_schedule!r} is not one of {LAMBDA_SCHEDULES}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"IFT: prediction {prediction!r} is not one of {PREDICTIONS}")
        for value, allowed, name in (
            (propagation_side, Fn.PROPAGATION_SIDES, "propagation_side"),
            (propagation_norm, Fn.PROPAGATION_NORMS, "propagation_norm"),
            (propagation_type, Fn.PROPAGATION_TYPES, "propagation_type"),
        ):
            if value not in allowed:
                raise ValueError(f"IFT: {name} {value!r} is not one of {allowed}")
        # Settings that only act together with another one: refused rather than silently unused.
        if lam_schedule == "static" and (min_lam is not None or lam_warmup_steps > 0):
            raise ValueError("IFT: min_lam and lam_warmup_steps act only with lam_schedule: linear (the static "
                             f"schedule is always lam); got min_lam={min_lam!r}, lam_warmup_steps={lam_warmup_steps}. "
                             "Set lam_schedule: linear, or leave them out")
        if lam_schedule == "linear" and lam_warmup_steps == 0:
            raise ValueError("IFT: lam_schedule: linear needs lam_warmup_steps >= 1 (the optimizer steps from "
                             "min_lam to lam); with 0 it would be the static schedule")
        if prediction == "greedy" and temperature != 1.0:
            raise ValueError(f"IFT: temperature={temperature!r} acts only with prediction: sample (greedy takes "
                             "the argmax); set prediction: sample, or leave temperature out")
        self.lam = lam
        self.min_lam = min_lam
        self.lam_schedule = lam_schedule
        self.lam_warmup_steps = lam_warmup_steps
        self.lam_noise_std = lam_noise_std
        self.lam_noise_seed = lam_noise_seed
        self.gamma = gamma
        self.propagation_side = propagation_side
        self.propagation_norm = propagation_norm
        self.propagation_type = propagation_type
        self.propagation_grad = propagation_grad
        self.prediction = prediction
        self.temperature = temperature
        self._step = 0

    def set_step(self, step: int) -> None:
        self._step = step

    def current_lambda(self, training: bool = True) -> float:
        """Lambda of the current optimizer step; evaluation uses the noise-free value."""
        return ift_lambda(
            self._step,
            self.lam,
            self.min_lam,
            self.lam_schedule,
            self.lam_warmup_steps,
            self.lam_noise_std if training else 0.0,
            self.lam_noise_seed,
        )

    @torch.no_grad()
    def predict_next_tokens(
        self,
        policy: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Pass 1: the token predicted at every position from ground-truth inputs (``B x (T-1)``).

        With ``labels``, the LM head runs only on the columns where some row is supervised
        (the prediction elsewhere is never used: the residual input keeps the ground truth
        there), which saves most of the head's cost and the ``B x T x V`` logits of the
        prompt. Other positions then hold the ground-truth next token.
        """
        if labels is None:
            columns = None
        else:
            columns = Fn.label_mask(labels).any(0).nonzero().squeeze(-1)
            if columns.numel() == 0:
                return input_ids[:, 1:].clone()
        try:
            logits = policy_logits(policy, input_ids, attention_mask, logits_to_keep=columns) if columns is not None \
                else policy_logits(policy, input_ids, attention_mask)[:, :-1]
        except TypeError:  # a model without ``logits_to_keep``: compute every column
            logits = policy_logits(policy, input_ids, attention_mask)[:, :-1]
            logits = logits if columns is None else logits[:, columns]
        if self.prediction == "greedy":
            chosen = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / self.temperature, dim=-1)
            chosen = torch.multinomial(probs.reshape(-1, probs.size(-1)), 1).view(probs.shape[:-1])
        if columns is None:
            return chosen
        predictions = input_ids[:, 1:].clone()
        predictions[:, columns] = chosen
        return predictions

    def residual_inputs(self, input_ids: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """``x~``: predictions shifted right by one, ground truth wherever the label is masked."""
        shifted = Fn.shift_predictions_right(input_ids[:, 0], predictions)
        return torch.where(labels != Fn.IGNORE_INDEX, shifted, input_ids)

    def loss(self, policy: torch.nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Metrics]:
        input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        lam = self.current_lambda(training=policy.training)
        metrics: Metrics = {"lambda": torch.tensor(lam)}
        if lam > 0:
            predictions = self.predict_next_tokens(policy, input_ids, attention_mask, labels)
            residual = self.residual_inputs(input_ids, labels, predictions)
            embed = policy.get_input_embeddings()
            # The prediction is a constant: no gradient reaches the embeddings of predicted tokens.
            mixed = Fn.mix_embeddings(embed(input_ids), embed(residual).detach(), lam)
            # A model whose next-token space depends on the current token reads it beside the mix.
            truth = {"true_input_ids": input_ids} if accepts_true_input_ids(policy) else {}
            logits = policy_logits(policy, None, attention_mask, inputs_embeds=mixed, **truth)
            hits = (predictions == labels[:, 1:]) & Fn.label_mask(labels)
            metrics["prediction_accuracy"] = hits.sum().float() / Fn.label_mask(labels).sum().clamp(min=1)
        else:
            # lam == 0: the mixed input is the ground truth; skip the extra pass entirely.
            logits = policy_logits(policy, input_ids, attention_mask)
        token_nll, mask = Fn.token_losses_and_mask(logits, labels)
        weights = Fn.ift_token_weights(
            token_nll if self.propagation_grad else token_nll.detach(),
            mask,
            self.gamma,
            side=self.propagation_side,
            norm=self.propagation_norm,
            kind=self.propagation_type,
        )
        loss = Fn.weighted_token_loss(token_nll, mask, weights)
        metrics["nll"] = Fn.weighted_token_loss(token_nll.detach(), mask)
        metrics["weight_max"] = weights.detach().max() if weights.numel() else torch.tensor(0.0)
        return loss, metrics

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self._step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._step = int(state.get("step", 0))
