"""The arms of the SFT-vs-RL code study (arXiv 2406.10305's three findings), one job each.

* ``mix`` (finding 1): SFT from the model on one training mix (``atomic``, ``atomic+k``,
  ``synthetic``) for ``sft_steps``; held-out and target-domain pass rates.
* ``after_sft`` (finding 2): an SFT warm-up on atomic + ``warmup_synthetic`` synthetic
  functions, then, on the *same* training prompts and for the same optimizer steps, GRPO,
  PPO (the sandbox's unit-test reward) or more SFT.
* ``scratch`` (finding 3): from the base (the pretrained model, or the tiny model after SFT
  on the atomic functions), GRPO on synthetic prompts against SFT on the same prompts at
  equal training samples, with the train and held-out pass rates measured along the way.

Seeds change the initialisation (tiny model), the shuffle and the sampling; the problems
are the same for every seed (``split_seed``). Jobs run in worker processes with one CPU
thread each (:func:`run_jobs`), so a job's numbers do not depend on how many run at once.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch

from ift.lab.code_study.measure import PassRateCurve, response_budget, sampled_pass_at_k, split_scores
from ift.lab.code_study.settings import CodeStudySettings
from ift.lab.reft_arms import CountingReward
from ift.lab.trainer import quiet_trainer
from ift.lab.workers import map_in_processes

#: Finding 2's arms after the warm-up, in table order.
SECOND_STAGES = ("sft+grpo", "sft+ppo", "sft+sft")
#: Finding 3's arms, in table order.
SCRATCH_ARMS = ("grpo", "sft")


def mix_arms(settings: CodeStudySettings) -> List[str]:
    """Finding 1's arms: ``atomic``, ``atomic+k`` for each k > 0, ``synthetic``."""
    arms = ["atomic" if k == 0 else f"atomic+{k}" for k in settings.synthetic_counts]
    return arms + (["synthetic"] if settings.synthetic_only else [])


def _mix(settings: CodeStudySettings, arm: str) -> Tuple[str, int]:
    if arm == "atomic":
        return "atomic", 0
    if arm == "synthetic":
        return "synthetic", settings.synthetic_only
    if arm.startswith("atomic+") and arm[len("atomic+"):].isdigit():
        return "atomic+synthetic", int(arm[len("atomic+"):])
    raise ValueError(f"code study: unknown training mix {arm!r}; choose from {mix_arms(settings)}")


def data_module(settings: CodeStudySettings, seed: int, train_mix: str, num_synthetic: int, tokenizer):
    """The task's splits with one training mix; the shuffle follows ``seed``."""
    from ift.tasks.code import CompositionCodeDataModule

    split = settings.split_settings
    return CompositionCodeDataModule(
        train_mix=train_mix, num_synthetic=num_synthetic, split_seed=split.split_seed,
        num_synthetic_train=split.num_synthetic_train, num_held_out=split.num_held_out, num_target=split.num_target,
        batch_size=settings.batch_size, eval_batch_size=settings.eval_batch_size, seed=seed, tokenizer=tokenizer)


def code_reward(settings: CodeStudySettings):
    """The sandbox's unit-test reward: the share of the problem's tests that pass."""
    from ift.rewards import CodeTestsReward

    return CodeTestsReward(timeout_s=5.0, memory_mb=256, max_workers=settings.reward_workers)


def _module(model, tokenizer, objective, lr: float):
    from ift.modules import FineTuneModule

    return FineTuneModule(model=model, tokenizer=tokenizer, objective=objective, max_grad_norm=1.0,
                          optimizer=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
                          checkpoint_on_interrupt=False)


def _sft():
    from ift.objectives import SFT

    return SFT()


class _Measure:
    """Greedy pass rates on named splits of one data module, with each split's response budget."""

    def __init__(self, settings: CodeStudySettings, tokenizer, data, splits: Dict[str, str]):
        self.settings, self.tokenizer, self.data, self.splits = settings, tokenizer, data, splits
        self.reward = code_reward(settings)
        self.budgets = {name: response_budget(tokenizer, data, [split]) for name, split in splits.items()}

    def __call__(self, policy) -> Dict[str, float]:
        """``{<name>: greedy pass@1, <name>_score: mean greedy reward}`` for every split."""
        measured: Dict[str, float] = {}
        for name, split in self.splits.items():
            scores = [row[0] for row in split_scores(policy, self.tokenizer, self.data, split, self.reward,
                                                     self.budgets[name])]
            measured[name] = sum(score >= 1.0 for score in scores) / max(len(scores), 1)
            measured[f"{name}_score"] = sum(scores) / max(len(scores), 1)
        return measured

    def pass_at_k(self, policy, seed: int) -> Dict[str, Dict[str, float]]:
        """Sampled pass@k on the held-out and target splits (empty when the settings sample none)."""
        s = self.settings
        if not s.pass_at_k_samples:
            return {}
        return {name: sampled_pass_at_k(policy, self.tokenizer, self.data, split, self.reward, self.budgets[name],
                                        s.pass_at_k_samples, s.pass_at_k, s.temperature, seed)
                for name, split in self.splits.items() if name in ("held_out", "target")}


def _sft_run(settings: CodeStudySettings, seed: int, model, tokenizer, data, steps: int, lr: float, callbacks=()):
    pl.seed_everything(seed, verbose=False)
    module = _module(model, tokenizer, _sft(), lr)
    start = time.perf_counter()
    quiet_trainer(steps, list(callbacks)).fit(module, data)
    return module, time.perf_counter() - start


def run_mix(settings: CodeStudySettings, seed: int, arm: str) -> Dict[str, Any]:
    """Finding 1: SFT from the model on one training mix."""
    train_mix, k = _mix(settings, arm)
    pl.seed_everything(seed, verbose=False)
    module = _module(settings.model, None, _sft(), settings.lr)
    data = data_module(settings, seed, train_mix, k, module.tokenizer)
    start = time.perf_counter()
    quiet_trainer(settings.sft_steps).fit(module, data)
    seconds = time.perf_counter() - start
    measure = _Measure(settings, module.tokenizer, data, {"held_out": "val", "target": "test"})
    return {"finding": "mix", "seed": seed, "arm": arm, "train_problems": len(data.split_examples()["train"]),
            **measure(module.policy), "optimizer_steps": settings.sft_steps,
            "sequences_trained": settings.sft_steps * settings.batch_size, "tokens_sampled": 0, "seconds": seconds}


def _rl_objective(kind: str, settings: CodeStudySettings, reward, seed: int, max_new_tokens: int, beta: float):
    from ift.objectives import GRPO, PPO

    if kind == "grpo":  # one optimizer step per rollout: the whole group batch
        return GRPO(reward=reward, num_generations=settings.num_generations, beta=beta, epochs=1,
                    max_new_tokens=max_new_tokens, temperature=settings.temperature, seed=seed)
    return PPO(reward=reward, kl_coef=settings.kl_coef, vf_coef=settings.vf_coef,
               samples_per_prompt=settings.num_generations, ppo_epochs=1, mini_batch_size=settings.rollout_samples,
               max_new_tokens=max_new_tokens, temperature=settings.temperature, seed=seed)


def _rl_run(kind: str, settings: CodeStudySettings, seed: int, policy, tokenizer, data, steps: int, lr: float,
            beta: float, callbacks=()):
    """An RL stage from ``policy``: (module, seconds, the counting reward, optimizer steps made)."""
    pl.seed_everything(seed, verbose=False)
    reward = CountingReward(code_reward(settings), tokenizer)
    budget = response_budget(tokenizer, data, ["train"])
    module = _module(policy, tokenizer, _rl_objective(kind, settings, reward, seed, budget, beta), lr)
    trainer = quiet_trainer(steps, list(callbacks))
    start = time.perf_counter()
    trainer.fit(module, data)
    return module, time.perf_counter() - start, reward, int(trainer.global_step)


def _base_policy(settings: CodeStudySettings, seed: int):
    """The model as loaded (pretrained) or freshly initialised from ``seed`` (a preset), and its tokenizer."""
    pl.seed_everything(seed, verbose=False)
    module = _module(settings.model, None, _sft(), settings.lr)
    return module.policy, module.tokenizer


def run_after_sft(settings: CodeStudySettings, seed: int) -> Dict[str, Any]:
    """Finding 2: the warm-up, then GRPO, PPO or more SFT on the same prompts for as many steps."""
    policy, tokenizer = _base_policy(settings, seed)
    data = data_module(settings, seed, "atomic+synthetic", settings.warmup_synthetic, tokenizer)
    warm, warm_seconds = _sft_run(settings, seed, policy, tokenizer, data, settings.warmup_steps, settings.lr)
    splits = {"held_out": "val", "target": "test", **({"train": "train"} if settings.measure_train else {})}
    measure = _Measure(settings, tokenizer, data, splits)
    results: Dict[str, Any] = {"finding": "after_sft", "seed": seed, "train_problems": len(data.split_examples()["train"]),
                               "warmup": {**measure(warm.policy), "pass_at_k": measure.pass_at_k(warm.policy, seed),
                                          "optimizer_steps": settings.warmup_steps, "seconds": warm_seconds},
                               "arms": {}}
    made = settings.second_stage_steps
    for arm in SECOND_STAGES:
        start_policy = copy.deepcopy(warm.policy)
        if arm == "sft+sft":
            module, seconds = _sft_run(settings, seed, start_policy, tokenizer, data, made, settings.second_stage_lr)
            sampled, tokens = 0, 0
        else:
            module, seconds, reward, made_here = _rl_run(arm.split("+")[1], settings, seed, start_policy, tokenizer,
                                                         data, settings.second_stage_steps, settings.second_stage_lr,
                                                         settings.beta)
            if made_here != settings.second_stage_steps:
                raise RuntimeError(f"code study: {arm} made {made_here} optimizer steps, not {settings.second_stage_steps}")
            sampled, tokens = len(reward.scores), reward.tokens
        results["arms"][arm] = {**measure(module.policy), "pass_at_k": measure.pass_at_k(module.policy, seed),
                                "optimizer_steps": settings.warmup_steps + made, "samples_drawn": sampled,
                                "tokens_sampled": tokens, "seconds": seconds}
        if arm != "sft+sft":  # the mean training reward of every rollout
            results["arms"][arm]["rollout_scores"] = reward.batch_means
    return results


def run_scratch(settings: CodeStudySettings, seed: int) -> Dict[str, Any]:
    """Finding 3: GRPO from the base against SFT from the base at equal training samples."""
    policy, tokenizer = _base_policy(settings, seed)
    base_seconds = 0.0
    if settings.rl_base == "atomic":
        atomic = data_module(settings, seed, "atomic", 0, tokenizer)
        base, base_seconds = _sft_run(settings, seed, policy, tokenizer, atomic, settings.sft_steps, settings.lr)
        policy = base.policy
    data = data_module(settings, seed, "synthetic", settings.scratch_synthetic, tokenizer)
    measure = _Measure(settings, tokenizer, data, {"train": "train", "held_out": "val"})
    results: Dict[str, Any] = {"finding": "scratch", "seed": seed, "base": {**measure(policy), "seconds": base_seconds},
                               "arms": {}}
    for arm in SCRATCH_ARMS:
        start_policy = copy.deepcopy(policy)
        if arm == "grpo":
            curve = PassRateCurve(max(1, settings.scratch_rl_steps // settings.curve_points), settings.rollout_samples,
                                  measure)
            module, seconds, reward, _ = _rl_run("grpo", settings, seed, start_policy, tokenizer, data,
                                                 settings.scratch_rl_steps, settings.scratch_lr, settings.beta, [curve])
            steps, samples, tokens = settings.scratch_rl_steps, settings.scratch_rl_steps * settings.rollout_samples, reward.tokens
            rollout_scores = reward.batch_means
        else:
            steps = settings.scratch_sft_steps
            curve = PassRateCurve(max(1, steps // settings.curve_points), settings.batch_size, measure)
            module, seconds = _sft_run(settings, seed, start_policy, tokenizer, data, steps, settings.scratch_lr, [curve])
            samples, tokens, rollout_scores = steps * settings.batch_size, 0, None
        final = measure(module.policy)
        if curve.points[-1]["step"] != steps:  # the last measurement falls short of the end
            curve.points.append({"step": steps, "samples": samples, **final})
        results["arms"][arm] = {**final, "gap": final["train"] - final["held_out"], "curve": curve.points,
                                "optimizer_steps": steps, "training_samples": samples, "tokens_sampled": tokens,
                                "seconds": seconds - curve.seconds}
        if rollout_scores is not None:  # the mean training reward of every rollout
            results["arms"][arm]["rollout_scores"] = rollout_scores
    return results


def run_job(job: Tuple) -> Dict[str, Any]:
    """``("mix", settings, seed, arm)``, ``("after_sft", settings, seed)`` or ``("scratch", settings, seed)``."""
    kind, *args = job
    runners = {"mix": run_mix, "after_sft": run_after_sft, "scratch": run_scratch}
    if kind not in runners:
        raise ValueError(f"code study: unknown job kind {kind!r}; choose from {sorted(runners)}")
    return runners[kind](*args)


def run_indexed_job(item: Tuple[int, Tuple]) -> Tuple[int, Dict[str, Any]]:
    """``(index, job)`` -> ``(index, run_job(job))``: results that arrive out of order keep their job."""
    index, job = item
    return index, run_job(job)


def study_jobs(settings: CodeStudySettings, seeds: Sequence[int], findings: Sequence[str]) -> List[Tuple]:
    """Every job of ``findings`` (``mix``, ``after_sft``, ``scratch``) for every seed, longest first."""
    unknown = set(findings) - {"mix", "after_sft", "scratch"}
    if unknown:
        raise ValueError(f"code study: unknown finding(s) {sorted(unknown)}; choose from mix, after_sft, scratch")
    jobs: List[Tuple] = []
    for seed in seeds:
        jobs += [("after_sft", settings, seed)] if "after_sft" in findings else []
        jobs += [("scratch", settings, seed)] if "scratch" in findings else []
    for seed in seeds:
        jobs += [("mix", settings, seed, arm) for arm in mix_arms(settings)] if "mix" in findings else []
    return jobs


def run_jobs(jobs: Sequence[Tuple], workers: int = 2) -> List[Dict[str, Any]]:
    """:func:`run_job` over ``workers`` processes (one CPU thread each), results in job order."""
    return map_in_processes(run_job, list(jobs), workers)


__all__ = ["SCRATCH_ARMS", "SECOND_STAGES", "code_reward", "data_module", "mix_arms", "run_after_sft", "run_job",
           "run_indexed_job", "run_jobs", "run_mix", "run_scratch", "study_jobs"]
