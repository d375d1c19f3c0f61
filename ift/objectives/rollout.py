"""Rollout objectives: the typed container of one rollout, and the base class that owns the
loop every objective learning from its own samples runs (PPO, and any critic-free one).

One training batch of prompts is one *iteration* of :class:`RolloutObjective`::

    batch of prompts
      -> sample     samples_per_prompt responses per prompt, through the sampler
                    (ift.core.sampling; HFSampler by default) on the rollout's own seeded stream
      -> score      the reward on the decoded responses (timeouts and nan/inf counted, scored 0)
      -> evaluate   the subclass's evaluate_rollout: old/reference log-probs + its own fields
                    (PPO: values, KL, per-token rewards, GAE) -> a Rollout (subclass)
      -> update     epochs x shuffled mini-batches: loss_on_rollout -> one optimizer step each;
                    skipped (non-finite) updates counted, optional early stop on approx-KL
      -> counters   rollouts taken, reward timeouts (checkpointed by state_dict)

A new algorithm subclasses :class:`RolloutObjective` and :class:`Rollout` and writes two
hooks: :meth:`RolloutObjective.evaluate_rollout` and :meth:`RolloutObjective.loss_on_rollout`.

Shapes: ``B`` rollouts (prompts x samples per prompt), ``P`` prompt length (left-padded),
``R`` response length (right-padded after EOS), ``T = P + R``. Position ``t`` of a
``B x R`` tensor is about response token ``t``: its log-prob, the value of the state
that emitted it, its reward.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

import torch

from ift.core.constants import TRAINS_ON_PROMPTS
from ift.core.distributed import mean_over_processes, process_rank, sum_over_processes
from ift.core.sampling import HFSampler, Sampler, SamplingSettings
from ift.core.subclasses import all_subclasses
from ift.objectives import functional as Fn
from ift.objectives import rollout_steps as steps
from ift.core.arguments import check_integer, check_number
from ift.objectives.base import Objective
from ift.objectives.contract import Capabilities, Metrics, StepContext, StepResult
from ift.rewards.base import Reward, score_safely


@dataclass(kw_only=True)
class Rollout:
    """One batch of sampled responses, scored, with the log-probs every algorithm needs.

    An algorithm adds its own fields by subclassing (:class:`~ift.objectives.ppo.PPORollout`:
    values, returns, per-token rewards, advantages, KL); :meth:`select` and
    :func:`~ift.objectives.rollout_steps.trim_right` keep the subclass and its fields.
    """

    #: ``B x T`` long: left-padded prompt followed by the response (pad after EOS).
    input_ids: torch.Tensor
    #: ``B x T`` long: 1 on real prompt tokens and valid response tokens (up to and with EOS).
    attention_mask: torch.Tensor
    #: ``B x R`` long: the generated tokens only; pad id after a row's first EOS.
    response_ids: torch.Tensor
    #: ``B x R`` bool: tokens that count (up to and including the first EOS; all when no EOS).
    response_mask: torch.Tensor
    #: ``B x R`` float32: log-probs of the sampled tokens under the policy at rollout time.
    old_logprobs: torch.Tensor
    #: ``B x R`` float32: the same under the frozen reference policy (None when the
    #: objective reads no reference, e.g. a critic-free one with ``beta = 0``).
    ref_logprobs: Optional[torch.Tensor]
    #: ``B`` float32: the reward's score of each response (nan/inf already replaced by 0).
    scores: torch.Tensor
    #: ``B`` bool: whether the response emitted EOS (False: it hit ``max_new_tokens``).
    ended_with_eos: torch.Tensor
    #: ``B`` prompt texts (repeated once per sample).
    prompts: List[str] = field(default_factory=list)
    #: ``B`` decoded responses (special tokens removed), as the reward saw them.
    responses: List[str] = field(default_factory=list)
    #: ``B`` data rows the prompts came from (gold ``answer`` etc.).
    examples: List[Dict[str, Any]] = field(default_factory=list)
    #: how many scores were nan/inf and replaced by 0.
    n_nan_rewards: int = 0
    #: ``B`` bool: False where the reward could not score the response (nan/inf, timed out);
    #: None: every score counts.
    score_valid: Optional[torch.Tensor] = None
    #: statistics of the whole rollout (``score``, ``eos_rate``, timings, ...), for logging.
    metrics: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def prompt_length(self) -> int:
        """``P``: the response starts at column ``P`` of :attr:`input_ids`."""
        return int(self.input_ids.shape[1] - self.response_ids.shape[1])

    def select(self, index: torch.Tensor) -> "Rollout":
        """The rollouts at ``index`` (a mini-batch), of the same class; list fields follow the
        tensors, other fields (counts, metrics) are kept as they are."""
        picked: Dict[str, Any] = {}
        rows = index.tolist()
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, torch.Tensor):
                picked[item.name] = value[index.to(value.device)]
            elif isinstance(value, list):
                picked[item.name] = [value[i] for i in rows] if value else []
        return dataclasses.replace(self, **picked)


@dataclass
class ScoredSamples:
    """What the loop hands :meth:`RolloutObjective.evaluate_rollout`: the sampled, scored
    responses and their sequences, before any forward pass."""

    #: the prompts (repeated once per sample) and the sampled responses (cut at episode ends).
    prompts: steps.Prompts
    samples: steps.Samples
    #: ``B x T`` prompt followed by response, and its attention mask.
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    #: ``B`` float32 scores (nan/inf replaced by 0) and how many were replaced.
    scores: torch.Tensor
    n_nan_rewards: int
    #: ``B`` bool: False where the reward could not score the response (nan/inf, timed out).
    score_valid: Optional[torch.Tensor] = None
    #: statistics of the scoring and the timings of sampling and scoring.
    metrics: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: ``B x K`` float32: each of ``K`` reward functions' score (nan where it could not
    #: score); None with a single reward.
    reward_components: Optional[torch.Tensor] = None
    #: ``B x R`` float32: the sampled tokens' log-probs under the engine that sampled them, when
    #: it reports them (vLLM); None otherwise (Hugging Face ``generate``).
    engine_logprobs: Optional[torch.Tensor] = None

    def rollout_fields(self) -> Dict[str, Any]:
        """The keyword arguments of :class:`Rollout` known before evaluation (all but the
        log-probs): ``RolloutSubclass(**scored.rollout_fields(), old_logprobs=..., ...)``."""
        return dict(
            input_ids=self.input_ids, attention_mask=self.attention_mask, response_ids=self.samples.ids,
            response_mask=self.samples.mask, scores=self.scores, ended_with_eos=self.samples.ended_with_eos,
            prompts=self.prompts.texts, responses=self.samples.texts, examples=self.prompts.examples,
            n_nan_rewards=self.n_nan_rewards, score_valid=self.score_valid,
        )


class RolloutScores(NamedTuple):
    """What :meth:`RolloutObjective.score` returns."""

    #: ``B`` float32 scores, 0 where the reward could not score a response.
    scores: torch.Tensor
    #: how many scores were nan/inf.
    n_nan: int
    #: ``B`` bool: False where the reward could not score the response (nan/inf, timed out).
    valid: torch.Tensor
    #: statistics of the scoring, logged with the rollout.
    metrics: Dict[str, torch.Tensor]
    #: ``B x K`` scores of each of several reward functions (nan where one failed), or None.
    components: Optional[torch.Tensor] = None


class RolloutLoss(NamedTuple):
    """What :meth:`RolloutObjective.loss_on_rollout` returns (unpacks as ``loss, metrics``)."""

    #: the loss with gradient, one optimizer step's worth.
    loss: torch.Tensor
    #: detached scalars; ``approx_kl`` is required when the objective early-stops on KL.
    metrics: Metrics


def available_rewards() -> List[str]:
    """Class paths of every :class:`~ift.rewards.Reward` subclass imported so far (a task's
    reward shows once its task is imported), by their shortest importable path."""
    return sorted({_public_path(sub) for sub in all_subclasses(Reward)
                   if not sub.__name__.startswith("_") and "<locals>" not in sub.__qualname__})


def _public_path(cls: type) -> str:
    """``package.Name`` for the shortest package prefix of ``cls``'s module that exports it."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module = sys.modules.get(".".join(parts[:end]))
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return f"{'.'.join(parts[:end])}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def missing_reward_error(objective: str) -> ValueError:
    """The error of a rollout objective built without a reward: names the rewards there are."""
    return ValueError(
        f"{objective}: no reward given; a rollout objective has no default reward. Pass one, in YAML "
        f"`reward: {{class_path: ift.rewards.AnswerMatchReward}}` under the objective's init_args, or in "
        f"Python any callable (prompts, responses, examples) -> list[float]. Available Reward subclasses: "
        f"{', '.join(available_rewards())}"
    )


class RolloutObjective(Objective):
    """Base of objectives that learn from responses they sample themselves: it owns the
    iteration (sample, score, evaluate, epochs x mini-batch updates, counters); see the
    module docstring for the diagram.

    A subclass implements two hooks:

    - :meth:`evaluate_rollout` ``(context, scored) -> Rollout`` (no gradient): the old and
      reference log-probs (:meth:`policy_and_reference_logprobs` computes both) and the
      algorithm's own fields, returned as its :class:`Rollout` subclass;
    - :meth:`loss_on_rollout` ``(context, rollout) -> RolloutLoss``: the loss (with gradient)
      of the current policy on a mini-batch of that rollout.

    and optionally :meth:`rollout_metrics` (statistics of its own fields). :meth:`training_step`
    takes one optimizer step per mini-batch; a :class:`~ift.objectives.Mix` recognises this
    base and uses one :meth:`rollout` and one :meth:`loss_on_rollout` per batch instead.

    Args:
        reward: scores responses, ``(prompts, responses, examples) -> list[float]``; required
            (a ValueError lists the :class:`~ift.rewards.Reward` subclasses otherwise).
        samples_per_prompt: responses sampled for every prompt of the batch.
        max_new_tokens: longest response sampled.
        temperature: sampling temperature; log-probs are taken at the same temperature.
        top_p: nucleus sampling mass (1.0: off).
        use_cache: sample with the KV cache (False only for benchmarks).
        share_prompts: in the forward passes over rollouts, run each distinct prompt once and
            reuse its KV cache for all its samples (:mod:`ift.core.shared_prompts`).
        epochs: passes over each rollout.
        mini_batch_size: rollouts per optimizer step; None: the whole rollout in one step.
        micro_batch_size: rollouts per forward/backward pass within one optimizer step
            (gradient accumulation); None: the whole mini-batch at once. Only for objectives
            whose loss on a micro-batch is its share of the step's loss (the critic-free ones).
        early_stop_kl: stop the epochs of an iteration once a mini-batch's ``approx_kl`` (mean
            over processes) exceeds this; None: never.
        reward_timeout_s: give up on a reward call after this many seconds (its batch scores
            0, counted in ``reward_timeouts``); None: wait for ever.
        seed: base seed of the sampling streams; None uses the ``seed_everything`` seed
            (``PL_GLOBAL_SEED``), else 0.
        sampler: the sampling engine (:class:`~ift.core.sampling.Sampler`); None: Hugging Face
            ``generate`` with the KV cache (:class:`~ift.core.sampling.HFSampler`).
    """

    trains_on = TRAINS_ON_PROMPTS

    capabilities = Capabilities(manual_optimization=True, reads_reference=True)
    disables_dropout = True  # the update's probabilities are divided by the rollout's (ift.modules.dropout)
    #: A base to build on, not an objective to train with (left out of the list of objectives).
    is_base = True
    #: Prefix of the loop's update counters in the metrics (``<prefix>updates``,
    #: ``<prefix>skipped_updates``); PPO keeps its ``ppo_`` names.
    update_metrics_prefix = ""
    #: Shuffle and cut mini-batches by whole groups (a prompt's ``samples_per_prompt``
    #: responses), as the group-baseline objectives want.
    keeps_groups_together = False

    def __init__(
        self,
        reward: Optional[Reward] = None,
        *,
        samples_per_prompt: int = 1,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        use_cache: bool = True,
        share_prompts: bool = True,
        epochs: int = 1,
        mini_batch_size: Optional[int] = None,
        micro_batch_size: Optional[int] = None,
        early_stop_kl: Optional[float] = None,
        reward_timeout_s: Optional[float] = 300.0,
        seed: Optional[int] = None,
        sampler: Optional[Sampler] = None,
    ):
        owner = type(self).__name__
        check_integer(owner, "samples_per_prompt", samples_per_prompt, minimum=1)
        check_integer(owner, "max_new_tokens", max_new_tokens, minimum=1)
        check_number(owner, "temperature", temperature, "(0, inf)")
        check_number(owner, "top_p", top_p, "(0, 1]")
        check_integer(owner, "epochs", epochs, minimum=1)
        check_integer(owner, "mini_batch_size", mini_batch_size, minimum=1, optional=True)
        check_integer(owner, "micro_batch_size", micro_batch_size, minimum=1, optional=True)
        check_number(owner, "early_stop_kl", early_stop_kl, "(0, inf)", optional=True)
        check_number(owner, "reward_timeout_s", reward_timeout_s, "(0, inf)", optional=True)
        if reward is None:
            raise missing_reward_error(type(self).__name__)
        self.reward = reward
        self.samples_per_prompt = samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.use_cache = use_cache
        self.share_prompts = share_prompts
        self.epochs = epochs
        self.mini_batch_size = mini_batch_size
        self.micro_batch_size = micro_batch_size
        self.early_stop_kl = early_stop_kl
        self.reward_timeout_s = reward_timeout_s
        self.seed = seed
        self.sampler = sampler if sampler is not None else HFSampler()
        self._rollouts = 0  # rollouts taken so far: the index of the next sampling stream
        self._reward_timeouts = 0  # reward batches that timed out (scored 0), over all processes

    # ------------------------------------------------------------------ hooks of a subclass
    def evaluate_rollout(self, context: StepContext, scored: ScoredSamples) -> Rollout:
        """The :class:`Rollout` (subclass) of ``scored``: old and reference log-probs plus the
        algorithm's own fields. Runs without gradient."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate_rollout(context, scored)")

    def loss_on_rollout(self, context: StepContext, rollout: Rollout) -> RolloutLoss:
        """:class:`RolloutLoss` ``(loss, metrics)`` of the current policy on ``rollout`` (a
        mini-batch of one), the loss with gradient."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss_on_rollout(context, rollout)")

    def rollout_metrics(self, rollout: Rollout) -> Metrics:
        """Statistics of the algorithm's own fields of ``rollout``, logged with the core ones."""
        return {}

    # ------------------------------------------------------------------ helpers for the hooks
    def policy_and_reference_logprobs(self, context: StepContext, scored: ScoredSamples,
                                      policy: bool = True, reference: bool = True):
        """``(old_logprobs, ref_logprobs)``, ``B x R`` each, no gradient: the sampled tokens'
        log-probs under the current policy and under the frozen reference; a pass not asked
        for is not run and its entry is None."""
        old = ref = None
        with torch.no_grad():
            if policy:
                old = steps.policy_logprobs(context, scored.input_ids, scored.attention_mask, scored.samples.ids,
                                            self.temperature, self.share_prompts)
            if reference:
                ref = steps.reference_logprobs(context, scored.input_ids, scored.attention_mask, scored.samples.ids,
                                               self.temperature, self.share_prompts)
        return old, ref

    def stream_seed(self, index: int, salt: int = 0) -> int:
        """Seed of rollout ``index``'s random stream: a function of (seed, index, rank, salt).
        Salt 0 samples the responses, salt 1 shuffles the mini-batches."""
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        rank = process_rank()
        return (((base * 1_000_003 + index) * 1_009 + rank) * 7 + salt) % (2**63 - 1)

    @property
    def rollouts_taken(self) -> int:
        """Rollouts sampled so far (the index of the next sampling stream)."""
        return self._rollouts

    @property
    def reward_timeouts(self) -> int:
        """Reward batches that timed out so far, over every process."""
        return self._reward_timeouts

    # ------------------------------------------------------------------ Objective hooks
    def begin(self, context: StepContext) -> None:
        """Make sure the frozen reference exists (a copy of the policy as it stands now,
        unless one was restored from a checkpoint or taken by a recipe at its switch)."""
        context.ensure_reference()

    def state_dict(self) -> Dict[str, Any]:
        return {"rollouts": self._rollouts, "reward_timeouts": self._reward_timeouts}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._rollouts = int(state.get("rollouts", 0))
        self._reward_timeouts = int(state.get("reward_timeouts", 0))

    def validation_loss(self, context: StepContext, batch: Dict[str, Any]) -> Optional[StepResult]:
        return None  # no loss on a fixed batch; the module logs the NLL and accuracy

    # ------------------------------------------------------------------ one iteration
    def training_step(self, context: StepContext, batch: Dict[str, Any]) -> StepResult:
        """Roll out, then ``epochs`` passes of mini-batch updates; the loss is detached (nan
        when every update was skipped)."""
        rollout = self.rollout(context, batch)
        metrics = dict(rollout.metrics)
        start = time.perf_counter()
        metrics.update(self.update_on_rollout(context, rollout))
        metrics["time/update"] = torch.tensor(time.perf_counter() - start)
        loss = metrics.pop("loss", torch.tensor(float("nan")))  # nan: every update was skipped
        return StepResult(loss, metrics, stepped=True)

    def update_on_rollout(self, context: StepContext, rollout: Rollout) -> Metrics:
        """``epochs`` passes over shuffled mini-batches of ``rollout``, one optimizer step each.

        With :attr:`keeps_groups_together` the shuffle moves whole groups (the
        ``samples_per_prompt`` responses of one prompt) and a mini-batch holds whole groups.
        Each mini-batch goes through :meth:`prepare_update` (a critic-free objective records
        the token and sequence totals of the step there), then, with ``micro_batch_size``, is
        split into micro-batches whose losses are accumulated into one step (each loss is
        that micro-batch's share of the step's loss).

        An update whose loss or gradient is not finite is skipped by the module and counted
        (``<prefix>skipped_updates``); its metrics are left out of the means. With
        ``early_stop_kl`` the passes stop after the first mini-batch whose ``approx_kl`` (mean
        over processes) exceeds it. Returns the means of the taken updates' metrics (``loss``
        among them) and the update counts.
        """
        size = rollout.batch_size
        mini = min(self.mini_batch_size or size, size)
        group = self.samples_per_prompt if self.keeps_groups_together else 1
        generator = torch.Generator().manual_seed(self.stream_seed(self._rollouts - 1, salt=1))
        sums: Dict[str, float] = {}
        updates = skipped = 0
        stop = False
        for _ in range(self.epochs):
            order = (torch.randperm(size // group, generator=generator).unsqueeze(-1) * group
                     + torch.arange(group)).flatten()
            for first in range(0, size, mini):
                batch = self.prepare_update(context, rollout.select(order[first:first + mini]))
                loss, step_metrics = self._accumulated_step(context, batch)
                if loss is None:
                    skipped += 1  # nan/inf loss or gradient: no update, metrics left out of the means
                else:
                    updates += 1
                    step_metrics["loss"] = loss
                    for key, value in step_metrics.items():
                        sums[key] = sums.get(key, 0.0) + float(value)
                if self.early_stop_kl is not None:
                    if "approx_kl" not in step_metrics:
                        raise KeyError(f"{type(self).__name__}: early_stop_kl needs an 'approx_kl' in the "
                                       "metrics of loss_on_rollout")
                    stop = mean_over_processes(step_metrics["approx_kl"]) > self.early_stop_kl
                    if stop:
                        break
            if stop:
                break
        metrics = {key: torch.tensor(total / updates) for key, total in sums.items()}
        prefix = self.update_metrics_prefix
        metrics[f"{prefix}updates"] = torch.tensor(float(updates))
        if skipped:
            metrics[f"{prefix}skipped_updates"] = torch.tensor(float(skipped))
        return metrics

    def prepare_update(self, context: StepContext, batch: Rollout) -> Rollout:
        """The mini-batch of one optimizer step, before it is split into micro-batches; a
        subclass adds what every micro-batch must know about its whole step (the default
        returns it as it is)."""
        return batch

    def _accumulated_step(self, context: StepContext, batch: Rollout):
        """One optimizer step on ``batch``, in micro-batches of ``micro_batch_size`` when set:
        ``(loss, metrics)``, the loss the sum of the micro-batches' losses and the metrics
        their means; ``(None, metrics)`` when the step was skipped."""
        size = batch.batch_size
        micro = min(self.micro_batch_size or size, size)
        results: List[RolloutLoss] = []

        def part(rows: torch.Tensor):
            def compute() -> torch.Tensor:
                # A (loss, metrics) pair is accepted as well as a RolloutLoss.
                result = RolloutLoss(*self.loss_on_rollout(context, batch.select(rows) if micro < size else batch))
                results.append(result)
                return result.loss
            return compute

        parts = [part(torch.arange(first, min(first + micro, size))) for first in range(0, size, micro)]
        stepped = context.optimizer_step(parts if len(parts) > 1 else parts[0]())
        metrics: Dict[str, torch.Tensor] = {}
        for key in results[0].metrics:
            metrics[key] = torch.stack([torch.as_tensor(r.metrics[key], dtype=torch.float32) for r in results]).mean()
        loss = torch.stack([r.loss.detach().float() for r in results]).sum() if stepped else None
        return loss, metrics

    # ------------------------------------------------------------------ the rollout
    @torch.no_grad()
    def rollout(self, context: StepContext, batch: Dict[str, Any]) -> Rollout:
        """Sample, score and evaluate one batch of prompts (no gradient). The rollout's
        ``metrics`` hold its statistics and timings."""
        scored = self.sample_and_score(context, batch)
        start = time.perf_counter()
        rollout = self.evaluate_rollout(context, scored)
        engine_metrics = self.correct_for_engine(context, scored, rollout)
        evaluated = time.perf_counter()
        metrics = steps.core_rollout_metrics(rollout, self._reward_timeouts)
        metrics.update(scored.metrics)
        metrics.update(engine_metrics)
        metrics.update(self.rollout_metrics(rollout))
        metrics["time/logprobs"] = torch.tensor(evaluated - start)
        rollout.metrics = metrics
        return rollout

    @torch.no_grad()
    def sample_and_score(self, context: StepContext, batch: Dict[str, Any]) -> ScoredSamples:
        """Sample ``samples_per_prompt`` responses to every prompt of ``batch`` on the next
        sampling stream and score them; ``metrics`` of the result hold the timings
        (``time/generation``, ``time/scoring``) and the scoring's statistics."""
        prompts = steps.repeated_prompts(batch, context.tokenizer, self.samples_per_prompt)
        count = int(prompts.ids.shape[0])
        with context.progress(total=count, desc="rollout") as bar:
            bar.set_phase("generation")
            start = time.perf_counter()
            self._engine_logprobs = None
            response_ids = self.generate(context, prompts.ids, prompts.mask)
            engine_logprobs, self._engine_logprobs = self._engine_logprobs, None
            self._rollouts += 1
            generated = time.perf_counter()
            bar.update(count)
            bar.set_phase("scoring")
            samples = steps.samples_from_ids(response_ids, context.tokenizer)
            scores = self.score(prompts, samples)
            samples = steps.cut_at_episode_ends(samples, self.episode_reward(), prompts, context.tokenizer)
            scored_at = time.perf_counter()
            bar.set_postfix(score=round(float(scores.scores.sum()) / max(count, 1), 3))
        input_ids, attention_mask = steps.sequences(prompts, samples)
        metrics = dict(scores.metrics)
        metrics.update({"time/generation": torch.tensor(generated - start),
                        "time/scoring": torch.tensor(scored_at - generated)})
        if engine_logprobs is not None:  # the columns the episode cut kept
            engine_logprobs = engine_logprobs[:, :samples.ids.shape[1]].to(samples.ids.device)
        return ScoredSamples(prompts=prompts, samples=samples, input_ids=input_ids, attention_mask=attention_mask,
                             scores=scores.scores, n_nan_rewards=scores.n_nan, score_valid=scores.valid,
                             metrics=metrics, reward_components=scores.components, engine_logprobs=engine_logprobs)

    def generate(self, context: StepContext, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """``B x R`` sampled response ids (pad after EOS), drawn by the sampler from the current
        rollout's stream."""
        settings = SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                    seed=self.stream_seed(self._rollouts), use_cache=self.use_cache)
        synced = time.perf_counter()
        self.sampler.load_weights(context.policy)
        self._weight_sync_seconds = time.perf_counter() - synced
        sampled = self.sampler.sample(context.policy, context.tokenizer, prompt_ids, prompt_mask, settings)
        self._engine_logprobs = sampled.logprobs
        return sampled.ids

    def correct_for_engine(self, context: StepContext, scored: ScoredSamples, rollout: Rollout) -> Metrics:
        """Measure how far the engine's log-probs are from the trainer's and, when the sampler
        has a ``tis_cap``, multiply the advantages by the truncated importance-sampling weight
        (:func:`ift.objectives.functional.engine_correction`); returns the metrics. Nothing to
        do for an engine that reports no log-probs (Hugging Face ``generate``)."""
        if scored.engine_logprobs is None:
            return {}
        if rollout.old_logprobs is None:  # a single on-policy update skipped the trainer's pass: run it
            rollout.old_logprobs, _ = self.policy_and_reference_logprobs(context, scored, reference=False)
        level = "sequence" if getattr(self, "importance_sampling_level", "token") == "sequence" else "token"
        weights, metrics = Fn.engine_correction(rollout.old_logprobs, scored.engine_logprobs, rollout.response_mask,
                                                getattr(self.sampler, "tis_cap", None), level)
        if weights is not None and hasattr(rollout, "advantages"):
            advantages = rollout.advantages
            if advantages.dim() == 1 and level == "token":
                advantages = advantages.unsqueeze(-1)
            rollout.advantages = advantages * weights
        metrics["time/weight_sync"] = torch.tensor(getattr(self, "_weight_sync_seconds", 0.0))
        return metrics

    def score(self, prompts: steps.Prompts, samples: steps.Samples) -> RolloutScores:
        """The reward of every response (:class:`RolloutScores`): nan/inf scores and every
        score of a batch that timed out are 0 and marked invalid; reward batches that timed
        out are counted over every process."""
        values, n_nan, timed_out = score_safely(
            self.reward, prompts.texts, samples.texts, prompts.examples, timeout_s=self.reward_timeout_s,
            keep_non_finite=True,
        )
        self.count_reward_timeouts(timed_out, prompts.ids.device)
        scores = torch.tensor(values, dtype=torch.float32, device=prompts.ids.device)
        valid = torch.isfinite(scores) & (not timed_out)
        return RolloutScores(torch.where(valid, scores, 0.0), n_nan, valid, {})

    def episode_reward(self) -> Any:
        """The reward whose optional ``response_ends`` says where episodes end."""
        return self.reward

    def count_reward_timeouts(self, timed_out: bool, device: torch.device) -> None:
        """Add this process's timed-out reward call (if any) to the count over every process.
        A collective when a time limit is set: every process calls it as often as the others."""
        if self.reward_timeout_s is not None:  # same branch on every rank: the sum is a collective
            timed_out_here = torch.tensor(float(timed_out), device=device)
            self._reward_timeouts += round(sum_over_processes(timed_out_here))

    def __repr__(self) -> str:
        names = [name for name in inspect.signature(type(self).__init__).parameters if name != "self"]
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names if hasattr(self, name))
        return f"{type(self).__name__}({fields})"
