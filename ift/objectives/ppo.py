"""PPO for language models with a verifiable reward (ReFT). See docs/objectives.md, section PPO.

One training batch of prompts is one PPO *iteration*:

1. **Rollout** (no gradient): sample ``samples_per_prompt`` responses per prompt with
   the KV cache; decode them and score them with the reward (through
   :func:`~ift.rewards.score_safely`); compute, once, the log-probs of the sampled
   tokens under the policy ("old") and under the frozen reference, and the values.
2. **Advantages**: per-token reward ``-beta KL_t`` plus the score on the token that
   emitted EOS (the last response token when there was none; nothing after EOS counts),
   GAE, returns, advantages whitened over valid tokens (over every process under DDP).
3. **Update**: ``ppo_epochs`` passes over shuffled mini-batches of the rollout; each
   mini-batch is one optimizer step (``StepContext.optimizer_step``) on the clipped
   policy loss ``+ vf_coef *`` clipped value loss ``- entropy_coef *`` entropy.

Sampling is reproducible and resumable: each rollout draws from its own random stream,
seeded from ``(seed, rollout index, process rank)``, never from the global RNG.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ift.core.distributed import mean_over_processes, process_rank, sum_over_processes
from ift.core.model_factory import build_policy
from ift.objectives import functional as Fn
from ift.objectives import ppo_rollout as steps
from ift.objectives.base import Metrics
from ift.objectives.contract import Capabilities, StepContext, StepResult
from ift.objectives.kl_control import AdaptiveKLController, FixedKLController
from ift.objectives.rollout import Rollout, RolloutObjective
from ift.objectives.value_functions import CriticModel, ValueFunction, ValueHead, hidden_size_of
from ift.rewards.answer import AnswerMatchReward
from ift.rewards.base import Reward, score_safely

VALUE_HEAD_KEY = "value_head"
CRITIC_KEY = "critic"


class PPO(RolloutObjective):
    """Proximal policy optimization against a reward on sampled responses.

    Args:
        reward: scores responses, ``(prompts, responses, examples) -> list[float]``; chosen in
            YAML by ``class_path``, which must name a subclass of ``ift.rewards.Reward`` (default
            ``AnswerMatchReward``: ReFT's 1 / 0.1 / 0). In Python any callable with that signature
            works.
        kl_coef: KL penalty coefficient beta in the per-token reward (ReFT: 0.05; 0.01 for code);
            the starting value when ``adaptive_kl``.
        kl_estimator: per-token KL estimate in the reward: ``k1`` (log-ratio), ``k2`` or ``k3``.
        adaptive_kl: adapt beta toward ``target_kl`` (Ziegler et al.) instead of keeping it fixed.
        target_kl: target KL per sequence (nats) of the adaptive controller.
        kl_horizon: horizon (in samples) of the adaptive controller.
        gamma: GAE discount (ReFT: 1.0).
        lam: GAE lambda (ReFT: 0.95).
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
    """

    capabilities = Capabilities(manual_optimization=True, reads_reference=True, adds_trainable_parts=True)

    def __init__(
        self,
        reward: Optional[Reward] = None,
        kl_coef: float = 0.05,
        kl_estimator: str = "k1",
        adaptive_kl: bool = False,
        target_kl: float = 6.0,
        kl_horizon: int = 10000,
        gamma: float = 1.0,
        lam: float = 0.95,
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
    ):
        if kl_estimator not in Fn.KL_ESTIMATORS:
            raise ValueError(f"PPO: kl_estimator {kl_estimator!r} is not one of {Fn.KL_ESTIMATORS}")
        for name, value in (("gamma", gamma), ("lam", lam)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PPO: {name} must be in [0, 1], got {value}")
        checks = (
            ("kl_coef", kl_coef >= 0), ("clip_eps", clip_eps > 0), ("vf_coef", vf_coef >= 0),
            ("ppo_epochs", ppo_epochs >= 1), ("samples_per_prompt", samples_per_prompt >= 1),
            ("max_new_tokens", max_new_tokens >= 1), ("temperature", temperature > 0),
            ("top_p", 0 < top_p <= 1), ("kl_horizon", kl_horizon > 0), ("target_kl", target_kl > 0),
            ("value_clip_eps", value_clip_eps is None or value_clip_eps > 0),
            ("mini_batch_size", mini_batch_size is None or mini_batch_size >= 1),
            ("early_stop_kl", early_stop_kl is None or early_stop_kl > 0),
            ("reward_timeout_s", reward_timeout_s is None or reward_timeout_s > 0),
        )
        for name, ok in checks:
            if not ok:
                raise ValueError(f"PPO: invalid {name}={locals()[name]!r}")
        if adaptive_kl and kl_coef <= 0:
            raise ValueError("PPO: adaptive_kl needs kl_coef > 0 (its starting value)")
        self.reward = reward if reward is not None else AnswerMatchReward()
        self.kl_coef = kl_coef
        self.kl_estimator = kl_estimator
        self.adaptive_kl = adaptive_kl
        self.target_kl = target_kl
        self.kl_horizon = kl_horizon
        self.gamma = gamma
        self.lam = lam
        self.clip_eps = clip_eps
        self.value_clip_eps = value_clip_eps
        self.vf_coef = vf_coef
        self.entropy_coef = entropy_coef
        self.ppo_epochs = ppo_epochs
        self.mini_batch_size = mini_batch_size
        self.samples_per_prompt = samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.use_cache = use_cache
        self.share_prompts = share_prompts
        self.whiten_advantages = whiten_advantages
        self.early_stop_kl = early_stop_kl
        self.critic = critic
        self.reward_timeout_s = reward_timeout_s
        self.seed = seed
        self.kl_controller = (
            AdaptiveKLController(kl_coef, target_kl, kl_horizon) if adaptive_kl else FixedKLController(kl_coef)
        )
        self._rollouts = 0  # rollouts taken so far: the index of the next sampling stream
        self._reward_timeouts = 0  # reward batches that timed out (scored 0), over all processes
        self._step = 0

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

    def begin(self, context: StepContext) -> None:
        """Make sure the frozen reference exists (a copy of the policy as it stands now,
        unless one was restored from a checkpoint or taken by a recipe at its switch)."""
        context.ensure_reference()

    def set_step(self, step: int) -> None:
        self._step = step

    def state_dict(self) -> Dict[str, Any]:
        return {
            "kl_controller": self.kl_controller.state_dict(),
            "rollouts": self._rollouts,
            "reward_timeouts": self._reward_timeouts,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if "kl_controller" in state:
            self.kl_controller.load_state_dict(state["kl_controller"])
        self._rollouts = int(state.get("rollouts", 0))
        self._reward_timeouts = int(state.get("reward_timeouts", 0))

    # ------------------------------------------------------------------ one iteration
    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        """Roll out, then ``ppo_epochs`` passes of mini-batch updates; the loss is detached."""
        rollout = self.rollout(context, batch)
        metrics = dict(rollout.metrics)
        start = time.perf_counter()
        size = rollout.batch_size
        mini = min(self.mini_batch_size or size, size)
        generator = torch.Generator().manual_seed(self._stream_seed(self._rollouts - 1, salt=1))
        sums: Dict[str, float] = {}
        updates = skipped = 0
        stop = False
        for _ in range(self.ppo_epochs):
            order = torch.randperm(size, generator=generator)
            for first in range(0, size, mini):
                loss, step_metrics = self.loss_on_rollout(context, rollout.select(order[first:first + mini]))
                if not context.optimizer_step(loss):
                    skipped += 1  # nan/inf loss or gradient: no update, metrics left out of the means
                else:
                    updates += 1
                    step_metrics["loss"] = loss.detach()
                    for key, value in step_metrics.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                if self.early_stop_kl is not None:
                    stop = mean_over_processes(step_metrics["approx_kl"]) > self.early_stop_kl
                    if stop:
                        break
            if stop:
                break
        for key, total in sums.items():
            metrics[key] = torch.tensor(total / updates)
        metrics["ppo_updates"] = torch.tensor(float(updates))
        if skipped:
            metrics["ppo_skipped_updates"] = torch.tensor(float(skipped))
        metrics["time/update"] = torch.tensor(time.perf_counter() - start)
        loss = metrics.pop("loss", torch.tensor(float("nan")))  # nan: every update was skipped
        return StepResult(loss, metrics, stepped=True)

    def loss_on_rollout(self, context: StepContext, rollout: Rollout) -> Tuple[torch.Tensor, Metrics]:
        """PPO loss (with gradient) of the current policy on (a mini-batch of) a rollout.

        ``policy_loss + vf_coef * value_loss - entropy_coef * entropy``; on the rollout's
        first update the ratio is 1, so this is then the plain policy-gradient loss.
        """
        rollout = steps.trim_right(rollout)
        logits, values = self.value_function(context).logits_and_values(
            context.policy, rollout.input_ids, rollout.attention_mask, rollout.prompt_length, self.share_prompts
        )
        mask = rollout.response_mask
        logprobs = steps.sampled_logprobs(logits, rollout.response_ids, self.temperature)
        policy_loss, clipfrac, approx_kl = Fn.ppo_policy_loss(
            logprobs, rollout.old_logprobs, rollout.advantages, mask, self.clip_eps
        )
        value_loss, value_clipfrac = Fn.ppo_value_loss(
            values, rollout.values, rollout.returns, mask, self.value_clip_eps
        )
        scaled = logits if self.temperature == 1.0 else logits.float() / self.temperature
        entropy_rows = Fn.sequence_mean(Fn.entropy_from_logits(scaled), mask)  # of the sampling distribution
        entropy = Fn.batch_mean_of_rows(entropy_rows, mask.any(-1))
        loss = policy_loss + self.vf_coef * value_loss
        if self.entropy_coef:
            loss = loss - self.entropy_coef * entropy
        metrics = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "clipfrac": clipfrac,
            "approx_kl": approx_kl,
            "value_clipfrac": value_clipfrac,
        }
        return loss, metrics

    # ------------------------------------------------------------------ the rollout
    @torch.no_grad()
    def rollout(self, context: StepContext, batch: Dict[str, Any]) -> Rollout:
        """Sample, score, evaluate and credit one batch of prompts (no gradient); see
        :class:`Rollout`. Its ``metrics`` hold the rollout's statistics and timings."""
        prompts = steps.repeated_prompts(batch, context.tokenizer, self.samples_per_prompt)
        count = int(prompts.ids.shape[0])
        with context.progress(total=count, desc="rollout") as bar:
            bar.set_phase("generation")
            start = time.perf_counter()
            response_ids = self.generate(context, prompts.ids, prompts.mask)
            self._rollouts += 1
            generated = time.perf_counter()
            bar.update(count)
            bar.set_phase("scoring")
            samples = steps.samples_from_ids(response_ids, context.tokenizer)
            scores, n_nan = self._score(prompts, samples)
            samples = steps.cut_at_episode_ends(samples, self.reward, prompts, context.tokenizer)
            scored = time.perf_counter()
            bar.set_postfix(score=round(float(scores.sum()) / max(count, 1), 3))
        input_ids, attention_mask = steps.sequences(prompts, samples)
        old_logprobs, ref_logprobs, values = steps.logprobs_and_values(
            context, self.value_function(context), input_ids, attention_mask, samples, self.temperature,
            self.share_prompts,
        )
        kl_coef = float(self.kl_controller.value)
        kl = torch.where(samples.mask, Fn.kl_penalty(old_logprobs, ref_logprobs, self.kl_estimator), 0.0)
        rewards, advantages, returns = steps.advantages_and_returns(
            scores, kl, values, samples.mask, kl_coef, self.gamma, self.lam, self.whiten_advantages
        )
        forwarded = time.perf_counter()
        rollout = Rollout(
            input_ids=input_ids, attention_mask=attention_mask, response_ids=samples.ids,
            response_mask=samples.mask, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
            values=values, rewards=rewards, advantages=advantages, returns=returns, kl=kl,
            scores=scores, ended_with_eos=samples.ended_with_eos, prompts=prompts.texts, responses=samples.texts,
            examples=prompts.examples, n_nan_rewards=n_nan, kl_coef=kl_coef,
        )
        self.kl_controller.update(mean_over_processes(kl.sum(-1).mean()), rollout.batch_size)
        timings = {"generation": generated - start, "scoring": scored - generated, "logprobs": forwarded - scored}
        rollout.metrics = steps.rollout_metrics(rollout, self._reward_timeouts, timings)
        return rollout

    def generate(self, context: StepContext, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """``B x R`` sampled response ids (pad after EOS), drawn from the current rollout's stream."""
        return steps.sample_on_stream(context, prompt_ids, prompt_mask, self._stream_seed(self._rollouts),
                                      self.max_new_tokens, self.temperature, self.top_p, self.use_cache)

    def _score(self, prompts: "steps.Prompts", samples: "steps.Samples") -> Tuple[torch.Tensor, int]:
        """``(scores, n_nan)``: the reward of every response (nan/inf and failures scored 0),
        counting reward batches that timed out over every process."""
        scores, n_nan, timed_out = score_safely(
            self.reward, prompts.texts, samples.texts, prompts.examples, timeout_s=self.reward_timeout_s
        )
        if self.reward_timeout_s is not None:  # same branch on every rank: the sum is a collective
            timed_out_here = torch.tensor(float(timed_out), device=prompts.ids.device)
            self._reward_timeouts += round(sum_over_processes(timed_out_here))
        return torch.tensor(scores, dtype=torch.float32, device=prompts.ids.device), n_nan

    def _stream_seed(self, index: int, salt: int = 0) -> int:
        """Seed of rollout ``index``'s random stream: a function of (seed, index, rank, salt)."""
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = process_rank()
        return (((base * 1_000_003 + index) * 1_009 + rank) * 7 + salt) % (2**63 - 1)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "kl_controller"
        )
        return f"{type(self).__name__}({fields})"
