"""Critic-free policy optimization: the GRPO family on the rollout loop.

One configurable objective, :class:`CriticFreeRL`, in the vocabulary of TRL's GRPO options;
each named algorithm (:class:`~ift.objectives.GRPO`, ``DrGRPO``, ``DAPO``, ``GSPO``,
``CISPO``, ``RLOO``, ``ReinforcePlusPlus``) is a thin subclass that sets its paper's
defaults. Every formula is a pure function in :mod:`ift.objectives.functional`; the maths is
in ``docs/objectives.md`` ("Critic-free RL"). One iteration::

    batch of P prompts
      -> sample     G = num_generations responses per prompt (one group per prompt)
      -> score      every reward function (weighted sum; an unscorable response is left out
                    of its group's baseline and not trained on, counted in reward_nan);
                    DAPO: soft overlong penalty, dynamic sampling of flat groups
      -> evaluate   reference log-probs (only when beta > 0), old log-probs (only when a
                    rollout gets more than one update, or the KL goes in the reward),
                    advantages (group-normalised, mean-only, leave-one-out, REINFORCE++)
      -> update     epochs x mini-batches of whole groups, each one optimizer step, in
                    micro-batches whose losses share the step's token/sequence totals
                    (summed over processes), so accumulation and DDP leave the loss unchanged
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch

from ift.core.distributed import all_reduce_sum_fn, any_process, world_size
from ift.core.sampling import Sampler
from ift.core.shared_prompts import response_outputs
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps as steps
from ift.core.arguments import check_integer, check_number
from ift.objectives.contract import Capabilities, Metrics, StepContext
from ift.objectives.group_sampling import dynamic_sampling
from ift.objectives.rollout import (Rollout, RolloutLoss, RolloutObjective, RolloutScores, ScoredSamples,
                                    missing_reward_error)
from ift.rewards.base import Reward, reward_name, score_safely

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce++", "reinforce++-baseline")
POLICY_LOSSES = ("clip", "cispo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence", "sequence-token")
KL_PLACEMENTS = ("loss", "reward")
OVERLONG_HANDLING = ("none", "mask", "soft")
#: The type of the ``reward`` argument: one reward or a list of them (the variants repeat it,
#: so that the command line parses their ``reward`` as a reward, not as any value).
RewardArgument = Union[Reward, List[Reward], None]


@dataclass(kw_only=True)
class GroupRollout(Rollout):
    """A :class:`~ift.objectives.Rollout` with what a critic-free objective computes once."""

    #: ``B`` (one per response) or ``B x R`` (REINFORCE++: per token) float32 advantages.
    advantages: torch.Tensor
    #: ``B x R`` bool: the tokens trained on (the response mask, less rows the reward could
    #: not score and, with ``overlong="mask"``, truncated responses).
    loss_mask: torch.Tensor
    #: tokens and sequences (with a token in ``loss_mask``) of the whole optimizer step this
    #: (micro-)batch belongs to, over every process; None: this batch is the whole step.
    step_tokens: Optional[float] = None
    step_sequences: Optional[float] = None


class CriticFreeRL(RolloutObjective):
    """Policy optimization without a critic: GRPO and its relatives, every choice a named option.

    The named algorithms are subclasses that change only defaults: use them in YAML
    (``class_path: GRPO``); use this class to mix options freely.

    Args:
        reward: one reward, or a list of them (their scores are summed with ``reward_weights``
            and each is logged as ``reward_<name>``, or ``reward_<name>_<i>`` where two share a
            name); each is ``(prompts, responses, examples)
            -> list[float]``. A nan/inf score or a timed-out call leaves that response out of
            its group's baseline and out of the loss (counted in ``reward_nan``), never a 0.
        reward_weights: one weight per reward (default: all 1).
        num_generations: responses sampled per prompt, the group ``G`` (>= 2 for every group
            baseline; REINFORCE++ without baseline accepts 1).
        advantage_estimator: ``grpo`` (``(r - mean) / (std + eps)``, see ``scale_rewards``),
            ``rloo`` (leave-one-out mean), ``reinforce++`` (per-token returns with the KL in
            the reward, whitened over the batch) or ``reinforce++-baseline`` (the group mean
            subtracted from the score first).
        scale_rewards: for ``grpo``: divide by the group's std (``group``), the whole batch's
            std (``batch``: this process's batch; not reduced over processes) or not at all
            (``none``: Dr.GRPO's mean-only advantage).
        advantage_eps: added to the std before dividing (TRL's 1e-4).
        loss_aggregation: ``seq-mean-token-mean`` (mean over a response's tokens, then over
            responses), ``token-mean`` (over every token of the optimizer step) or
            ``seq-mean-token-sum-norm`` (Dr.GRPO: token sum over responses x ``max_new_tokens``).
        policy_loss: ``clip`` (PPO's clipped ratio) or ``cispo`` (a stop-gradient clipped
            ratio weighting the log-prob; upper bound ``epsilon_high``).
        importance_sampling_level: ``token`` (a ratio per token), ``sequence`` (GSPO: one
            length-normalised ratio per response, the loss averaged per response) or
            ``sequence-token`` (GSPO-token: the sequence ratio's value, one token's gradient).
        epsilon_low: lower clip range, ``ratio >= 1 - epsilon_low``.
        epsilon_high: upper clip range, ``ratio <= 1 + epsilon_high`` (``clip``), or the
            largest weight (``cispo``).
        dual_clip: for negative advantages, bound the loss by ``dual_clip * |A|`` (> 1; None: off).
        log_ratio_clamp: log-ratios are clamped to +-this before ``exp``.
        beta: KL coefficient against the frozen reference; 0 runs no reference pass at all.
        kl_estimator: ``k1``, ``k2`` or ``k3`` (docs/objectives.md says what each one's
            gradient is).
        kl_placement: ``loss`` (per token, with gradient, added before aggregation) or
            ``reward`` (detached, subtracted from the reward: per response for grpo/rloo,
            per token for REINFORCE++).
        dynamic_sampling: DAPO's dynamic sampling: groups whose rewards all agree are drawn
            again (the same prompts, new streams) up to ``max_resample_rounds`` times.
        max_resample_rounds: cap on the extra rounds of dynamic sampling.
        overlong: ``none``; ``mask`` (truncated responses are not trained on); ``soft``
            (DAPO's length penalty added to the score).
        overlong_cache_tokens: the soft penalty's ramp length ``L_cache``; None: a fifth of
            ``max_new_tokens`` (DAPO: 4,096 of 20,480).
        log_entropy: log the policy's entropy over trained tokens (costs a softmax pass).
        epochs: updates per rollout (GRPO's mu); with 1 and one mini-batch the ratio is 1.
        mini_batch_size: responses per optimizer step (a multiple of ``num_generations``);
            None: the whole rollout.
        micro_batch_size: responses per forward/backward pass within a step (gradient
            accumulation, a divisor of the mini-batch is not needed); None: all at once.
        max_new_tokens: longest response sampled (also Dr.GRPO's constant and DAPO's L_max).
        temperature: sampling temperature; log-probs are taken at the same temperature.
        top_p: nucleus sampling mass (1.0: off).
        use_cache: sample with the KV cache (False only for benchmarks).
        share_prompts: run each distinct prompt once in the forward passes and reuse its KV
            cache for its ``G`` responses.
        early_stop_kl: stop an iteration's updates once a mini-batch's approx-KL to the
            rollout policy exceeds this; None: never.
        reward_timeout_s: give up on a reward call after this many seconds (its responses
            are left out, counted in ``reward_timeouts``); None: wait for ever.
        seed: base seed of the sampling streams; None: the ``seed_everything`` seed.
        sampler: the sampling engine; None: Hugging Face ``generate`` with the KV cache.
    """

    keeps_groups_together = True

    def __init__(
        self,
        reward: RewardArgument = None,
        *,
        reward_weights: Optional[List[float]] = None,
        num_generations: int = 8,
        advantage_estimator: str = "grpo",
        scale_rewards: str = "group",
        advantage_eps: float = 1e-4,
        loss_aggregation: str = "seq-mean-token-mean",
        policy_loss: str = "clip",
        importance_sampling_level: str = "token",
        epsilon_low: float = 0.2,
        epsilon_high: float = 0.2,
        dual_clip: Optional[float] = None,
        log_ratio_clamp: float = 20.0,
        beta: float = 0.04,
        kl_estimator: str = "k3",
        kl_placement: str = "loss",
        dynamic_sampling: bool = False,
        max_resample_rounds: int = 3,
        overlong: str = "none",
        overlong_cache_tokens: Optional[int] = None,
        log_entropy: bool = False,
        epochs: int = 1,
        mini_batch_size: Optional[int] = None,
        micro_batch_size: Optional[int] = None,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        use_cache: bool = True,
        share_prompts: bool = True,
        early_stop_kl: Optional[float] = None,
        reward_timeout_s: Optional[float] = 300.0,
        seed: Optional[int] = None,
        sampler: Optional[Sampler] = None,
    ):
        name = type(self).__name__
        rewards = list(reward) if isinstance(reward, (list, tuple)) else ([] if reward is None else [reward])
        if not rewards:
            raise missing_reward_error(name)
        weights = [1.0] * len(rewards) if reward_weights is None else list(reward_weights)
        if len(weights) != len(rewards):
            raise ValueError(f"{name}: {len(weights)} reward_weights for {len(rewards)} rewards; give one weight per reward")
        choices = (
            ("advantage_estimator", advantage_estimator, ADVANTAGE_ESTIMATORS),
            ("scale_rewards", scale_rewards, Fn.ADVANTAGE_SCALES),
            ("loss_aggregation", loss_aggregation, Fn.AGGREGATIONS),
            ("policy_loss", policy_loss, POLICY_LOSSES),
            ("importance_sampling_level", importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS),
            ("kl_estimator", kl_estimator, Fn.KL_ESTIMATORS),
            ("kl_placement", kl_placement, KL_PLACEMENTS),
            ("overlong", overlong, OVERLONG_HANDLING),
        )
        for option, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"{name}: {option}={value!r} is not one of {allowed}")
        if num_generations < 2 and advantage_estimator != "reinforce++":
            raise ValueError(f"{name}: advantage_estimator={advantage_estimator!r} compares the responses of one "
                             f"prompt and needs num_generations >= 2 (got {num_generations}); set "
                             "num_generations: 2 or more, or use advantage_estimator: reinforce++")
        if dynamic_sampling and num_generations < 2:
            raise ValueError(f"{name}: dynamic_sampling drops groups whose rewards all agree, which needs "
                             f"num_generations >= 2 (got {num_generations})")
        if mini_batch_size is not None and mini_batch_size % num_generations:
            raise ValueError(f"{name}: mini_batch_size={mini_batch_size} must hold whole groups: a multiple of "
                             f"num_generations={num_generations}")
        if importance_sampling_level == "sequence" and loss_aggregation != "seq-mean-token-mean":
            raise ValueError(
                f"{name}: importance_sampling_level='sequence' (GSPO) has one loss per response, averaged over "
                f"responses; loss_aggregation={loss_aggregation!r} would weight responses by length. Use "
                "loss_aggregation: seq-mean-token-mean, or importance_sampling_level: sequence-token")
        if policy_loss == "cispo" and importance_sampling_level != "token":
            raise ValueError(f"{name}: policy_loss='cispo' weights each token by its own ratio; "
                             "set importance_sampling_level: token")
        weights = [check_number(name, f"reward_weights[{index}]", weight) for index, weight in enumerate(weights)]
        check_integer(name, "num_generations", num_generations, minimum=1)
        check_number(name, "beta", beta, "[0, inf)")
        check_number(name, "advantage_eps", advantage_eps, "[0, inf)")
        check_number(name, "epsilon_low", epsilon_low, "[0, 1)")
        check_number(name, "epsilon_high", epsilon_high, "[0, inf)")
        check_number(name, "dual_clip", dual_clip, "(1, inf)", optional=True)
        check_number(name, "log_ratio_clamp", log_ratio_clamp, "(0, inf)")
        check_integer(name, "max_resample_rounds", max_resample_rounds, minimum=0)
        check_integer(name, "overlong_cache_tokens", overlong_cache_tokens, minimum=1, optional=True)
        if overlong_cache_tokens is not None and overlong_cache_tokens > max_new_tokens:
            raise ValueError(f"{name}: overlong_cache_tokens={overlong_cache_tokens} must be at most "
                             f"max_new_tokens={max_new_tokens}")
        super().__init__(
            rewards[0], samples_per_prompt=num_generations, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, use_cache=use_cache, share_prompts=share_prompts, epochs=epochs,
            mini_batch_size=mini_batch_size, micro_batch_size=micro_batch_size, early_stop_kl=early_stop_kl,
            reward_timeout_s=reward_timeout_s, seed=seed, sampler=sampler,
        )
        self.reward = reward
        self.rewards = rewards
        self.reward_weights = reward_weights
        self.weights = weights
        self.num_generations = num_generations
        self.advantage_estimator = advantage_estimator
        self.scale_rewards = scale_rewards
        self.advantage_eps = advantage_eps
        self.loss_aggregation = loss_aggregation
        self.policy_loss = policy_loss
        self.importance_sampling_level = importance_sampling_level
        self.epsilon_low = epsilon_low
        self.epsilon_high = epsilon_high
        self.dual_clip = dual_clip
        self.log_ratio_clamp = log_ratio_clamp
        self.beta = beta
        self.kl_estimator = kl_estimator
        self.kl_placement = kl_placement
        self.dynamic_sampling = dynamic_sampling
        self.max_resample_rounds = max_resample_rounds
        self.overlong = overlong
        self.overlong_cache_tokens = overlong_cache_tokens
        self.log_entropy = log_entropy

    # ------------------------------------------------------------------ what it needs
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """Manual optimization; the frozen reference only when ``beta > 0``."""
        return Capabilities(manual_optimization=True, reads_reference=self.beta > 0)

    @property
    def uses_reference(self) -> bool:
        return self.beta > 0

    def begin(self, context: StepContext) -> None:
        """Make the frozen reference exist only when the KL term reads it (``beta > 0``). Resumed
        with ``beta > 0`` from a run with ``beta = 0``, which kept no reference, the reference is
        the policy as resumed: a warning says so."""
        if self.uses_reference:
            # (A recipe stage that had not started yet takes the policy at its switch, as always.)
            if getattr(self, "_checkpoint_had_reference", None) is False and self.rollouts_taken > 0:
                warnings.warn(
                    f"{type(self).__name__} on resume: beta={self.beta:g}, but the checkpoint's run had beta 0 and "
                    f"kept no reference model; the KL term compares with the policy as resumed (after "
                    f"{self.rollouts_taken} rollouts), not with the one training started from",
                    UserWarning, stacklevel=2)
                self._checkpoint_had_reference = None
            context.ensure_reference()

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "reference": self.uses_reference}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._checkpoint_had_reference = state.get("reference")  # None: not recorded

    def _updates_per_rollout(self, size: int) -> int:
        mini = min(self.mini_batch_size or size, size)
        return self.epochs * -(-size // mini)

    # ------------------------------------------------------------------ scoring
    def episode_reward(self) -> Any:
        """The reward that says where episodes end (the first one with ``response_ends``)."""
        for reward in self.rewards:
            if hasattr(reward, "response_ends"):
                return reward
        return self.rewards[0]

    def reward_metric_names(self) -> List[str]:
        """``reward_<class name>`` of each reward (``reward_<name>_<i>`` where two share a name)."""
        names = [reward_name(reward) for reward in self.rewards]
        return [f"reward_{name}" if names.count(name) == 1 else f"reward_{name}_{i}" for i, name in enumerate(names)]

    def score(self, prompts: steps.Prompts, samples: steps.Samples) -> RolloutScores:
        """Every reward function on every response, summed with the weights; a response that
        any reward could not score (nan/inf, timed out) is invalid. With several rewards each
        one's scores are kept (``components``) for their metrics."""
        device = prompts.ids.device
        total = torch.zeros(len(samples.texts), dtype=torch.float32, device=device)
        valid = torch.ones(len(samples.texts), dtype=torch.bool, device=device)
        columns: List[torch.Tensor] = []
        n_nan = 0
        for reward, weight in zip(self.rewards, self.weights):
            values, nan_here, timed_out = score_safely(reward, prompts.texts, samples.texts, prompts.examples,
                                                       timeout_s=self.reward_timeout_s, keep_non_finite=True)
            self.count_reward_timeouts(timed_out, device)
            scores = torch.tensor(values, dtype=torch.float32, device=device)
            ok = torch.isfinite(scores) & (not timed_out)
            n_nan += nan_here
            valid &= ok
            total += weight * torch.where(ok, scores, 0.0)
            columns.append(torch.where(ok, scores, float("nan")))
        components = torch.stack(columns, dim=-1) if len(columns) > 1 else None
        return RolloutScores(torch.where(valid, total, 0.0), n_nan, valid, {}, components)

    def sample_and_score(self, context: StepContext, batch: Dict[str, Any]) -> ScoredSamples:
        """Sample and score; with ``overlong="soft"`` the length penalty joins the score, and
        with ``dynamic_sampling`` flat groups are drawn again (logged: ``groups_dropped``,
        ``resample_rounds``, ``groups_filled``)."""
        first = self._sample_once(context, batch)
        if not self.dynamic_sampling:
            return self._with_scoring_metrics(first)
        device = first.scores.device

        def idle_round() -> None:  # the collectives of a draw, on a process with nothing to draw
            self._rollouts += 1
            for _ in self.rewards:
                self.count_reward_timeouts(False, device)

        result = dynamic_sampling(
            first, batch, self.num_generations, self.max_resample_rounds,
            is_flat=lambda scored: Fn.zero_variance_groups(scored.scores, self.num_generations, scored.score_valid),
            draw=lambda sub_batch: self._sample_once(context, sub_batch), idle_round=idle_round,
            any_process=lambda flag: any_process(flag, device), pad_token_id=context.tokenizer.pad_token_id,
        )
        result.scored.metrics.update({
            "groups_dropped": torch.tensor(float(result.dropped)),
            "resample_rounds": torch.tensor(float(result.rounds)),
            "groups_filled": torch.tensor(float(result.filled)),
        })
        return self._with_scoring_metrics(result.scored)

    def _with_scoring_metrics(self, scored: ScoredSamples) -> ScoredSamples:
        """Each reward's mean (several rewards) and the mean overlong penalty, over the
        responses the rollout keeps (after dynamic sampling)."""
        if scored.reward_components is not None:
            for column, key in enumerate(self.reward_metric_names()):
                values = scored.reward_components[:, column]
                scored.metrics[key] = Fn.masked_mean(values, torch.isfinite(values))
        if self.overlong == "soft":
            valid = scored.score_valid if scored.score_valid is not None else torch.ones_like(scored.scores, dtype=torch.bool)
            scored.metrics["overlong_penalty"] = Fn.masked_mean(self._overlong_penalty(scored), valid)
        return scored

    def _overlong_penalty(self, scored: ScoredSamples) -> torch.Tensor:
        """DAPO's soft length penalty of every response of ``scored``."""
        cache = self.overlong_cache_tokens or max(1, self.max_new_tokens // 5)
        lengths = scored.samples.mask.sum(-1)
        return Fn.soft_overlong_penalty(lengths, self.max_new_tokens, cache).to(scored.scores.device)

    def _sample_once(self, context: StepContext, batch: Dict[str, Any]) -> ScoredSamples:
        scored = super().sample_and_score(context, batch)
        if self.overlong == "soft":
            valid = scored.score_valid if scored.score_valid is not None else torch.ones_like(scored.scores, dtype=torch.bool)
            scored.scores = torch.where(valid, scored.scores + self._overlong_penalty(scored), 0.0)
        return scored

    # ------------------------------------------------------------------ evaluation
    def evaluate_rollout(self, context: StepContext, scored: ScoredSamples) -> GroupRollout:
        """Old log-probs (when needed), reference log-probs (when ``beta > 0``), the loss mask
        and the advantages. Runs without gradient."""
        samples = scored.samples
        size = int(samples.ids.shape[0])
        kl_in_reward = self.kl_placement == "reward" and self.uses_reference
        needs_old = self._updates_per_rollout(size) > 1 or kl_in_reward
        old, ref = self.policy_and_reference_logprobs(context, scored, policy=needs_old, reference=self.uses_reference)
        valid = scored.score_valid if scored.score_valid is not None else torch.ones(size, dtype=torch.bool)
        valid = valid.to(samples.mask.device)
        loss_mask = samples.mask & valid.unsqueeze(-1)
        if self.overlong == "mask":
            loss_mask = loss_mask & samples.ended_with_eos.to(loss_mask.device).unsqueeze(-1)
        kl = torch.where(samples.mask, Fn.kl_penalty(old, ref, self.kl_estimator), 0.0) if kl_in_reward else None
        advantages = self._advantages(scored.scores, samples.mask, kl, valid)
        return GroupRollout(**scored.rollout_fields(), old_logprobs=old, ref_logprobs=ref, advantages=advantages,
                            loss_mask=loss_mask)

    def _advantages(self, scores: torch.Tensor, mask: torch.Tensor, kl: Optional[torch.Tensor],
                    valid: torch.Tensor) -> torch.Tensor:
        """``B`` (or ``B x R`` for REINFORCE++) advantages of one rollout."""
        G = self.num_generations
        if self.advantage_estimator.startswith("reinforce++"):
            if self.advantage_estimator == "reinforce++-baseline":
                scores = Fn.group_mean_baseline(scores, G, valid)
            return Fn.reinforce_pp_advantages(scores, mask, kl=kl, kl_coef=self.beta if kl is not None else 0.0,
                                              valid=valid, all_reduce=all_reduce_sum_fn())
        if kl is not None:  # the KL in the reward, per response: r - beta * sum_t KL_t
            scores = scores - self.beta * kl.sum(-1)
        if self.advantage_estimator == "rloo":
            return Fn.leave_one_out_advantages(scores, G, valid)
        return Fn.group_normalized_advantages(scores, G, self.scale_rewards, self.advantage_eps, valid)

    def rollout_metrics(self, rollout: GroupRollout) -> Metrics:
        """Zero-variance groups, advantage spread, completion lengths, truncation, tokens sampled."""
        lengths = rollout.response_mask.sum(-1).float()
        valid = rollout.score_valid if rollout.score_valid is not None else torch.ones_like(rollout.scores, dtype=torch.bool)
        flat = Fn.zero_variance_groups(rollout.scores, self.num_generations, valid) if self.num_generations > 1 else None
        advantage_rows = rollout.advantages if rollout.advantages.dim() == 1 else Fn.masked_mean(
            rollout.advantages, rollout.loss_mask, dim=-1)
        kept = rollout.scores[valid]
        metrics = {
            "score_std": kept.std() if kept.numel() > 1 else torch.tensor(0.0),
            "completion_length_max": lengths.max(),
            "truncated_share": (~rollout.ended_with_eos).float().mean(),
            "tokens_sampled": lengths.sum(),
            "advantage_abs": advantage_rows.abs().mean(),
        }
        if flat is not None:
            metrics["zero_variance_groups"] = flat.float().mean()
        return metrics

    # ------------------------------------------------------------------ the update
    def prepare_update(self, context: StepContext, batch: GroupRollout) -> GroupRollout:
        """``batch`` with the step's token and sequence totals (over every process, one
        all-reduce on the batch's device: NCCL reduces only GPU tensors): each micro-batch's
        loss is then its exact share of the step's loss."""
        tokens, sequences = Fn.step_totals(batch.loss_mask)
        stats = torch.tensor([float(tokens), float(sequences)], dtype=torch.float64, device=batch.loss_mask.device)
        reduce = all_reduce_sum_fn()
        if reduce is not None:
            reduce(stats)
        return dataclasses.replace(batch, step_tokens=float(stats[0]), step_sequences=float(stats[1]))

    def loss_on_rollout(self, context: StepContext, rollout: GroupRollout) -> RolloutLoss:
        """The surrogate (+ ``beta`` x KL in the loss), aggregated with the step's totals and
        multiplied by the number of processes (DDP averages gradients over them)."""
        if rollout.step_tokens is None:  # the whole step in one batch (a Mix calls this directly)
            rollout = self.prepare_update(context, rollout)
        rollout = steps.trim_right(rollout)
        mask = rollout.loss_mask
        logits = response_outputs(context.policy, rollout.input_ids, rollout.attention_mask, rollout.prompt_length,
                                  share_prompts=self.share_prompts).logits
        logprobs = steps.sampled_logprobs(logits, rollout.response_ids, self.temperature)
        old = rollout.old_logprobs if rollout.old_logprobs is not None else logprobs.detach()
        loss, flags = self._policy_loss(logprobs, old, rollout, mask)
        metrics: Metrics = {"policy_loss": loss.detach()}
        kl_ref = None
        if rollout.ref_logprobs is not None:
            kl_ref = torch.where(mask, Fn.kl_penalty(logprobs, rollout.ref_logprobs, self.kl_estimator), 0.0)
            metrics["kl_ref"] = Fn.masked_mean(kl_ref.detach(), mask)
        if kl_ref is not None and self.kl_placement == "loss":
            loss = loss + self.beta * self._aggregate(kl_ref, rollout)
        scale = world_size()
        metrics.update({
            "clip_ratio_low": Fn.masked_mean(flags[0].float(), mask),
            "clip_ratio_high": Fn.masked_mean(flags[1].float(), mask),
            "approx_kl": Fn.masked_mean(0.5 * (logprobs.detach() - old).square(), mask),
        })
        if self.log_entropy:
            scaled = logits.float() / self.temperature if self.temperature != 1.0 else logits.float()
            metrics["entropy"] = Fn.masked_mean(Fn.entropy_from_logits(scaled.detach()), mask)
        return RolloutLoss(loss * scale, metrics)

    def _aggregate(self, per_token: torch.Tensor, rollout: GroupRollout) -> torch.Tensor:
        return Fn.aggregate_token_losses(per_token, rollout.loss_mask, self.loss_aggregation,
                                         token_total=rollout.step_tokens, sequence_total=rollout.step_sequences,
                                         max_length=self.max_new_tokens)

    def _policy_loss(self, logprobs: torch.Tensor, old: torch.Tensor, rollout: GroupRollout, mask: torch.Tensor):
        """``(loss, (clipped_low, clipped_high))``: the aggregated surrogate of the chosen
        policy loss and importance-sampling level, and its clip flags per token."""
        advantages = rollout.advantages
        if self.policy_loss == "cispo":
            surrogate = Fn.cispo_surrogate(logprobs, old, advantages, mask, self.epsilon_high, self.log_ratio_clamp)
        elif self.importance_sampling_level == "sequence":
            sequence = Fn.sequence_ratio_surrogate(logprobs, old, advantages, mask, self.epsilon_low,
                                                   self.epsilon_high, self.log_ratio_clamp)
            loss = Fn.aggregate_sequence_losses(sequence.loss, mask.any(-1), rollout.step_sequences)
            flags = (sequence.clipped_low.unsqueeze(-1) & mask, sequence.clipped_high.unsqueeze(-1) & mask)
            return loss, flags
        elif self.importance_sampling_level == "sequence-token":
            surrogate = Fn.sequence_token_surrogate(logprobs, old, advantages, mask, self.epsilon_low,
                                                    self.epsilon_high, self.log_ratio_clamp)
        else:
            surrogate = Fn.clipped_surrogate(logprobs, old, advantages, mask, self.epsilon_low, self.epsilon_high,
                                             self.dual_clip, self.log_ratio_clamp)
        return self._aggregate(surrogate.loss, rollout), (surrogate.clipped_low, surrogate.clipped_high)
