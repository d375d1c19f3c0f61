"""PPO for language models with a verifiable reward (ReFT). See docs/objectives.md, section PPO.

PPO is a :class:`~ift.objectives.RolloutObjective`: the base runs the iteration (sample on
the rollout's seeded stream, score, evaluate, ``ppo_epochs`` x mini-batch updates with
skipped-update accounting and the optional KL early stop, counters). What is PPO's own:

1. **Evaluate** (:meth:`PPO.evaluate_rollout`, no gradient): the log-probs of the sampled
   tokens under the policy ("old") and under the frozen reference, and the critic's values;
   per-token reward ``-beta KL_t`` plus the score on the token that emitted EOS (the last
   response token when there was none; nothing after EOS counts), GAE, returns, advantages
   whitened over valid tokens (over every process under DDP), the KL controller's update.
   The result is a :class:`PPORollout`.
2. **Loss** (:meth:`PPO.loss_on_rollout`): the clipped policy loss ``+ vf_coef *`` clipped
   value loss ``- entropy_coef *`` entropy, on each mini-batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import torch

from ift.core.distributed import mean_over_processes
from ift.core.model_factory import build_policy
from ift.core.sampling import HFSampler, Sampler
from ift.objectives import functional as Fn
from ift.objectives import ppo_rollout as steps
from ift.objectives import rollout_steps
from ift.core.arguments import check_integer, check_number
from ift.objectives.base import Metrics
from ift.objectives.contract import Capabilities, StepContext
from ift.objectives.kl_control import AdaptiveKLController, FixedKLController, resume_kl_controller
from ift.objectives.rollout import Rollout, RolloutLoss, RolloutObjective, ScoredSamples
from ift.objectives.value_functions import CriticModel, ValueFunction, ValueHead, hidden_size_of
from ift.rewards.base import Reward

VALUE_HEAD_KEY = "value_head"
CRITIC_KEY = "critic"


@dataclass(kw_only=True)
class PPORollout(Rollout):
    """A :class:`~ift.objectives.Rollout` with what PPO computes from it once."""

    #: ``B x R`` float32: value estimates at rollout time (state before each response token).
    values: torch.Tensor
    #: ``B x R`` float32: per-token rewards, ``-beta KL_t`` plus the score on the last valid token.
    rewards: torch.Tensor
    #: ``B x R`` float32: GAE advantages (whitened when the objective asks), 0 on masked tokens.
    advantages: torch.Tensor
    #: ``B x R`` float32: GAE returns (``advantages + values`` before whitening), the value targets.
    returns: torch.Tensor
    #: ``B x R`` float32: per-token KL estimate between policy and reference (before beta).
    kl: torch.Tensor
    #: the KL coefficient beta used for :attr:`rewards`.
    kl_coef: float = 0.0


class PPO(RolloutObjective):
    """Proximal policy optimization against a reward on sampled responses.

    Args:
        reward: scores responses, ``(prompts, responses, examples) -> list[float]``; required
            (there is no default: a ValueError lists the available rewards). Chosen in YAML by
            ``class_path``, which must name a subclass of ``ift.rewards.Reward`` (e.g.
            ``ift.rewards.AnswerMatchReward``: ReFT's 1 / 0.1 / 0). In Python any callable with
            that signature works.
        kl_coef: KL penalty coefficient beta in the per-token reward (ReFT: 0.05; 0.01 for code);
            the starting value when ``adaptive_kl``. On resume the configured value is used:
            a fixed coefficient has no state in the checkpoint, and an adaptive controller goes
            on from its adapted value only when ``kl_coef`` is unchanged (a changed one restarts
            it there, with a warning; see :func:`~ift.objectives.kl_control.resume_kl_controller`).
        kl_estimator: per-token KL estimate in the reward: ``k1`` (log-ratio), ``k2`` or ``k3``.
        adaptive_kl: adapt beta toward ``target_kl`` (Ziegler et al.) instead of keeping it fixed.
        target_kl: target KL per sequence (nats) of the adaptive controller (a changed one on
            resume steers the adapted beta from where it stands).
        kl_horizon: horizon (in samples) of the adaptive controller (likewise).
        gamma: GAE discount (ReFT: 1.0).
        gae_lambda: GAE lambda (ReFT: 0.95).
        clip_eps: policy ratio clip epsilon.
        value_clip_eps: value clip range around the rollout-time values; None: no clipping.
        vf_coef: weight of the value loss in the total loss.
        entropy_coef: weight of the entropy bonus (subtracted from the loss); 0 disables it.
        ppo_epochs: passes over each rollout.
        mini_batch_size: rollouts per optimizer step; None: the whole rollout in one step.
        samples_per_prompt: responses sampled for every prompt of the batch.
        max_new_tokens: longest response sampled.
        temperature: sampling temperature; log-probs are taken at the same temperature.
        top_p: nucleus sampling mass (1.0: off).
        use_cache: sample with the KV cache (False only for benchmarks).
        share_prompts: in the log-prob, value and update passes, run each distinct prompt of
            the rows once and reuse its KV cache for every sample of it
            (:mod:`ift.core.shared_prompts`): the same logits up to rounding, fewer tokens
            through the model when ``samples_per_prompt > 1``. Models that keep no KV cache
            (and gradient checkpointing) get the plain pass.
        whiten_advantages: normalise advantages to mean 0, variance 1 over valid tokens.
        early_stop_kl: stop the PPO epochs of an iteration once a mini-batch's approx-KL
            (between the rollout policy and the updated one) exceeds this; None: never.
        critic: None for a value head on the policy's last hidden state (shared trunk), or a
            separate critic model: a preset name, hub id / folder, or config dict with
            ``model_type`` (it must share the policy's tokenizer).
        reward_timeout_s: give up on a reward call after this many seconds: every response of that
            batch scores 0, a warning names the reward and ``train/reward_timeouts`` (cumulative, over
            all processes, checkpointed) counts it. The call is then stopped (a Python loop at once;
            one stuck in native code, e.g. a long sleep, when that returns: the warning says so).
            Default 300 s: well above a slow but working reward (a reward-model forward on a batch
            on CPU takes tens of seconds; the code config's 128 responses that all run into their
            5 s sandbox limit on 4 workers take 160 s), and short enough that a hung reward costs
            minutes per batch, not the run. Rewards that run code should time-limit it themselves
            in a subprocess (:mod:`ift.rewards.code`). None: wait for ever.
        seed: base seed of the sampling streams; None uses the ``seed_everything`` seed
            (``PL_GLOBAL_SEED``), else 0.
        sampler: the sampling engine (:class:`ift.core.sampling.Sampler`); None: Hugging Face
            ``generate`` with the KV cache.
        lam: deprecated name of ``gae_lambda`` (a FutureWarning; older configs still run).
    """

    capabilities = Capabilities(manual_optimization=True, reads_reference=True, adds_trainable_parts=True)
    update_metrics_prefix = "ppo_"
    #: Arguments that say what the value function's weights are: ``ift fit --ckpt_path``
    #: refuses a change (the checkpoint's critic would be loaded over the configured one).
    fixed_on_resume = ("critic",)

    def __init__(
        self,
        reward: Optional[Reward] = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        adaptive_kl: bool = False,
        target_kl: float = 6.0,
        kl_horizon: int = 10000,
        gamma: float = 1.0,
        gae_lambda: float = 0.95,
        clip_eps: float = 0.2,
        value_clip_eps: Optional[float] = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        ppo_epochs: int = 2,
        mini_batch_size: Optional[int] = None,
        samples_per_prompt: int = 1,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        use_cache: bool = True,
        share_prompts: bool = True,
        whiten_advantages: bool = True,
        early_stop_kl: Optional[float] = None,
        critic: Optional[Union[str, Dict[str, Any]]] = None,
        reward_timeout_s: Optional[float] = 300.0,
        seed: Optional[int] = None,
        sampler: Optional[Sampler] = None,
        lam: Optional[float] = None,
    ):
        if lam is not None:
            warnings.warn("PPO(lam=...) is deprecated: GAE's lambda is now called gae_lambda "
                          "(in YAML: `gae_lambda:` under the objective's init_args)", FutureWarning, stacklevel=2)
            gae_lambda = lam
        if kl_estimator not in Fn.KL_ESTIMATORS:
            raise ValueError(f"PPO: kl_estimator {kl_estimator!r} is not one of {Fn.KL_ESTIMATORS}")
        check_number("PPO", "gamma", gamma, "[0, 1]")
        check_number("PPO", "gae_lambda" if lam is None else "lam (gae_lambda)", gae_lambda, "[0, 1]")
        check_number("PPO", "kl_coef", kl_coef, "[0, inf)")
        check_number("PPO", "clip_eps", clip_eps, "(0, inf)")
        check_number("PPO", "vf_coef", vf_coef, "[0, inf)")
        check_number("PPO", "entropy_coef", entropy_coef, "(-inf, inf)")
        check_integer("PPO", "ppo_epochs", ppo_epochs, minimum=1)
        check_number("PPO", "kl_horizon", kl_horizon, "(0, inf)")
        check_number("PPO", "target_kl", target_kl, "(0, inf)")
        check_number("PPO", "value_clip_eps", value_clip_eps, "(0, inf)", optional=True)
        if adaptive_kl and kl_coef <= 0:
            raise ValueError("PPO: adaptive_kl needs kl_coef > 0 (its starting value)")
        super().__init__(
            reward, samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, use_cache=use_cache, share_prompts=share_prompts, epochs=ppo_epochs,
            mini_batch_size=mini_batch_size, early_stop_kl=early_stop_kl, reward_timeout_s=reward_timeout_s,
            seed=seed, sampler=sampler,
        )
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.adaptive_kl = adaptive_kl
        self.target_kl = target_kl
        self.kl_horizon = kl_horizon
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.clip_eps = clip_eps
        self.value_clip_eps = value_clip_eps
        self.vf_coef = vf_coef
        self.entropy_coef = entropy_coef
        self.whiten_advantages = whiten_advantages
        self.critic = critic
        self.kl_controller = (
            AdaptiveKLController(kl_coef, target_kl, kl_horizon) if adaptive_kl else FixedKLController(kl_coef)
        )

    @property
    def ppo_epochs(self) -> int:
        """Passes over each rollout (the loop's ``epochs``)."""
        return self.epochs

    @ppo_epochs.setter
    def ppo_epochs(self, value: int) -> None:
        self.epochs = value

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Unpickle, also a PPO pickled before the rollout loop moved to the base class
        (``lam``, ``ppo_epochs`` and no sampler in its attributes)."""
        state = dict(state)
        if "lam" in state:
            state.setdefault("gae_lambda", state.pop("lam"))
        if "ppo_epochs" in state:
            state.setdefault("epochs", state.pop("ppo_epochs"))
        if state.get("sampler") is None:
            state["sampler"] = HFSampler()
        controller = state.get("kl_controller")
        if isinstance(controller, AdaptiveKLController) and "init_coef" not in vars(controller):
            controller.init_coef = float(state.get("kl_coef", controller.value))  # pickled before it kept one
        self.__dict__.update(state)

    # ------------------------------------------------------------------ Objective hooks
    def attach(self, context: StepContext) -> None:
        """Register the value function as a trainable part of the module (optimized, checkpointed)."""
        if self.critic is None:
            if context.trainable_part(VALUE_HEAD_KEY) is None:
                context.add_trainable_part(VALUE_HEAD_KEY, ValueHead(hidden_size_of(context.policy)))
        elif context.trainable_part(CRITIC_KEY) is None:
            backbone = build_policy(self.critic, context.tokenizer)
            device = next(context.policy.parameters()).device
            context.add_trainable_part(CRITIC_KEY, CriticModel(backbone).to(device))

    def value_function(self, context: StepContext) -> ValueFunction:
        """The value function :meth:`attach` registered."""
        part = context.trainable_part(VALUE_HEAD_KEY if self.critic is None else CRITIC_KEY)
        if part is None:
            raise RuntimeError("PPO: no value function registered; the module calls PPO.attach when it builds the policy")
        return part

    def state_dict(self) -> Dict[str, Any]:
        return {"kl_controller": self.kl_controller.state_dict(), **super().state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the counters and, as far as this run's KL settings allow, the adaptive KL
        controller: the configured ``kl_coef``/``adaptive_kl``/``target_kl``/``kl_horizon``
        win over the checkpoint's, with a warning where that changes the coefficient."""
        if "kl_controller" in state:
            note = resume_kl_controller(self.kl_controller, state["kl_controller"])
            if note:
                warnings.warn(f"PPO on resume: {note}", UserWarning, stacklevel=2)
        super().load_state_dict(state)

    # ------------------------------------------------------------------ the rollout's PPO fields
    def evaluate_rollout(self, context: StepContext, scored: ScoredSamples) -> PPORollout:
        """Old and reference log-probs and values (one policy pass with the value head), the
        KL penalty, per-token rewards, GAE advantages and returns; then the KL controller
        takes the rollout's KL. Runs without gradient."""
        samples = scored.samples
        old_logprobs, ref_logprobs, values = steps.logprobs_and_values(
            context, self.value_function(context), scored.input_ids, scored.attention_mask, samples,
            self.temperature, self.share_prompts,
        )
        kl_coef = float(self.kl_controller.value)
        kl = torch.where(samples.mask, Fn.kl_penalty(old_logprobs, ref_logprobs, self.kl_estimator), 0.0)
        rewards, advantages, returns = steps.advantages_and_returns(
            scored.scores, kl, values, samples.mask, kl_coef, self.gamma, self.gae_lambda, self.whiten_advantages
        )
        rollout = PPORollout(
            **scored.rollout_fields(), old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
            values=values, rewards=rewards, advantages=advantages, returns=returns, kl=kl, kl_coef=kl_coef,
        )
        self.kl_controller.update(mean_over_processes(kl.sum(-1).mean()), rollout.batch_size)
        return rollout

    def rollout_metrics(self, rollout: PPORollout) -> Metrics:
        """KL, the KL coefficient and the value function's explained variance."""
        return steps.ppo_rollout_metrics(rollout)

    def loss_on_rollout(self, context: StepContext, rollout: PPORollout) -> RolloutLoss:
        """PPO loss (with gradient) of the current policy on (a mini-batch of) a rollout.

        ``policy_loss + vf_coef * value_loss - entropy_coef * entropy``; on the rollout's
        first update the ratio is 1, so this is then the plain policy-gradient loss.
        """
        rollout = rollout_steps.trim_right(rollout)
        logits, values = self.value_function(context).logits_and_values(
            context.policy, rollout.input_ids, rollout.attention_mask, rollout.prompt_length, self.share_prompts
        )
        mask = rollout.response_mask
        logprobs = rollout_steps.sampled_logprobs(logits, rollout.response_ids, self.temperature)
        policy = Fn.ppo_policy_loss(logprobs, rollout.old_logprobs, rollout.advantages, mask, self.clip_eps)
        value = Fn.ppo_value_loss(values, rollout.values, rollout.returns, mask, self.value_clip_eps)
        scaled = logits if self.temperature == 1.0 else logits.float() / self.temperature
        entropy_rows = Fn.sequence_mean(Fn.entropy_from_logits(scaled), mask)  # of the sampling distribution
        entropy = Fn.batch_mean_of_rows(entropy_rows, mask.any(-1))
        loss = policy.loss + self.vf_coef * value.loss
        if self.entropy_coef:
            loss = loss - self.entropy_coef * entropy
        metrics = {
            "policy_loss": policy.loss.detach(),
            "value_loss": value.loss.detach(),
            "entropy": entropy.detach(),
            "clipfrac": policy.clipfrac,
            "approx_kl": policy.approx_kl,
            "value_clipfrac": value.clipfrac,
        }
        return RolloutLoss(loss, metrics)
