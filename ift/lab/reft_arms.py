"""The ReFT claim on a built-in task (arithmetic, or code), measured at equal data over seeds.

ReFT (arXiv 2401.08967) claims that an SFT warm-up followed by PPO on the *same training
questions* beats SFT alone on held-out accuracy. This module trains, for each seed, three
arms that share one SFT warm-up and see the same training questions:

* ``sft``: SFT for the whole budget, one uninterrupted run (warm-up steps + the PPO arm's
  optimizer steps, same learning rate and optimizer state throughout);
* ``sft+ppo``: the warm-up, then PPO against the task's reward at the second stage's
  learning rate (arithmetic: ReFT's answer rule, the answer must follow the trigger
  ``answer:``; code: the sandboxed share of the problem's tests that pass);
* ``sft+sft``: the warm-up, then more SFT for exactly as many optimizer steps as the PPO
  stage made, at the PPO stage's learning rate with a fresh optimizer (so the only
  difference from ``sft+ppo`` is the objective).

Held-out accuracy is greedy exact match under the same answer rule as the reward (code:
the share of held-out problems whose tests all pass). Each
arm's compute is counted: optimizer steps, sequences trained on, tokens sampled, and the
wall seconds it spent after the warm-up.

Seeds run in parallel in worker processes with one CPU thread each, so a seed's numbers do
not depend on how many workers there are. ``benchmarks/reft_arms.py`` prints the table;
the slow learning tests (``tests/test_ppo_learning.py``) assert on the same arithmetic runs
over fewer seeds, plus :func:`run_sequential`, the same recipe as one ``Sequential`` fit.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch

from ift.lab.workers import map_in_processes
from ift.lab.trainer import quiet_trainer

#: The arms, in table order.
ARMS = ("sft", "sft+ppo", "sft+sft")


@dataclasses.dataclass
class ReftSettings:
    """One configuration of the experiment (every arm and seed uses it).

    Args:
        task: ``arithmetic`` (the built-in arithmetic task, answer reward) or ``code`` (the
            built-in code task, the sandboxed test-pass reward; :data:`CODE_SETTINGS`).
        max_operand: operands are drawn from ``[0, max_operand]`` (arithmetic).
        operators: operators of the two-operand problems (arithmetic).
        num_train: training questions (a multiple of ``batch_size`` keeps every PPO
            iteration the same number of updates).
        num_val: held-out questions on which accuracy is measured.
        worked_solution: SFT targets are worked paths (``17+25=42 answer: 42``; arithmetic).
        trigger: the answer trigger of the reward and of held-out accuracy (ReFT's rule:
            no trigger, no answer; arithmetic).
        batch_size: SFT batch and PPO prompts per iteration.
        warmup_steps: SFT optimizer steps of the shared warm-up.
        sft_lr: AdamW learning rate of the warm-up and of the ``sft`` arm.
        ppo_iterations: PPO iterations (rollouts of ``batch_size`` prompts) after the warm-up.
        second_stage_lr: learning rate of the ``sft+ppo`` and ``sft+sft`` stages.
        kl_coef: PPO's KL coefficient (ReFT: 0.05 for natural-language answers).
        vf_coef: PPO's value-loss coefficient.
        samples_per_prompt: PPO samples per question.
        ppo_epochs: PPO passes over each rollout.
        mini_batch_size: rollouts per PPO optimizer step.
        temperature: PPO sampling temperature.
        max_new_tokens: longest sampled or greedy response.
    """

    task: str = "arithmetic"
    max_operand: int = 29
    operators: str = "+-"
    num_train: int = 1536
    num_val: int = 264
    worked_solution: bool = True
    trigger: str = "answer:"
    batch_size: int = 64
    warmup_steps: int = 800
    sft_lr: float = 3e-3
    ppo_iterations: int = 48
    second_stage_lr: float = 1e-4
    kl_coef: float = 0.05
    vf_coef: float = 0.1
    samples_per_prompt: int = 4
    ppo_epochs: int = 2
    mini_batch_size: int = 64
    temperature: float = 1.0
    max_new_tokens: int = 20

    def __post_init__(self):
        if self.task not in ("arithmetic", "code"):
            raise ValueError(f"ReFT arms: unknown task {self.task!r}; 'arithmetic' or 'code'")

    @property
    def updates_per_iteration(self) -> int:
        """Optimizer steps one PPO iteration makes on a full batch."""
        return self.ppo_epochs * math.ceil(self.batch_size * self.samples_per_prompt / self.mini_batch_size)


#: The code task as the shipped configs/code/sft_then_ppo.yaml trains it, with a weaker
#: warm-up (25 epochs of 16 batches) so that there is something left for PPO to learn, then
#: 6 epochs of PPO (96 iterations).
CODE_SETTINGS = ReftSettings(task="code", num_train=512, num_val=100, batch_size=32, warmup_steps=400,
                             ppo_iterations=96, second_stage_lr=5e-4, max_new_tokens=40)


def answer_reward(settings: ReftSettings):
    """The task's reward: ReFT's answer reward (1 / 0.1 / 0) with the settings' trigger, or
    the sandboxed fraction of the code task's tests that pass."""
    if settings.task == "code":
        from ift.rewards import CodeTestsReward

        return CodeTestsReward(timeout_s=5.0, memory_mb=256, max_workers=2)
    from ift.rewards import AnswerMatchReward

    return AnswerMatchReward(trigger=settings.trigger)


def data_module(settings: ReftSettings, seed: int, tokenizer=None):
    """The task's data; the questions are the same for every seed (``task_seed`` 0), the
    shuffle follows ``seed``."""
    loader = dict(batch_size=settings.batch_size, eval_batch_size=settings.num_val, seed=seed, tokenizer=tokenizer)
    if settings.task == "code":
        from ift.tasks.code import CodeTaskDataModule

        return CodeTaskDataModule(num_train=settings.num_train, num_val=settings.num_val, num_test=0, **loader)
    from ift.tasks.arithmetic import ArithmeticDataModule

    return ArithmeticDataModule(
        num_train=settings.num_train, num_val=settings.num_val, num_test=0, max_operand=settings.max_operand,
        operators=settings.operators, worked_solution=settings.worked_solution, **loader,
    )


def held_out_accuracy(policy, tokenizer, settings: ReftSettings, data) -> float:
    """Greedy exact match on the held-out split, under the reward's answer rule (code: the
    share of problems whose tests all pass): the reward's full score counts as a hit."""
    from ift.tasks.code import pass_rate
    from ift.modules import FineTuneModule

    probe = FineTuneModule(model=policy, tokenizer=tokenizer)
    return pass_rate(probe, data, "val", answer_reward(settings), settings.max_new_tokens)["pass_rate"]


def _adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


class SnapshotAt(pl.Callback):
    """Keeps a copy of the policy's weights once ``trainer.global_step`` reaches ``step``."""

    def __init__(self, step: int):
        self.step, self.state, self.time = step, None, None

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.state is None and trainer.global_step >= self.step:
            self.state = copy.deepcopy(pl_module.policy.state_dict())
            self.time = time.perf_counter()


class CountingReward:
    """Wraps a reward: records every training score and the tokens of every sampled response."""

    def __init__(self, reward, tokenizer):
        self.reward, self.tokenizer = reward, tokenizer
        self.scores: List[float] = []
        self.batch_means: List[float] = []  # one per rollout: the training reward's trajectory
        self.tokens = 0

    def __call__(self, prompts, responses, examples):
        scores = self.reward(prompts, responses, examples)
        self.scores.extend(float(score) for score in scores)
        self.batch_means.append(sum(float(score) for score in scores) / max(len(scores), 1))
        self.tokens += sum(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in responses)
        return scores

    def mean_score(self) -> Optional[float]:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def quarter_means(self) -> Dict[str, Optional[float]]:
        """Mean training score over the first and the last quarter of the rollouts."""
        quarter = max(1, len(self.batch_means) // 4)
        first, last = self.batch_means[:quarter], self.batch_means[-quarter:]
        mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
        return {"first_quarter": mean(first), "last_quarter": mean(last)}


def run_seed(settings: ReftSettings, seed: int, arms: Sequence[str] = ARMS) -> Dict[str, Any]:
    """Train the arms for one seed; held-out accuracies and each arm's compute.

    Without ``sft`` in ``arms`` the shared run stops at the end of the warm-up (cheaper).
    """
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"ReFT arms: unknown arm(s) {sorted(unknown)}; choose from {ARMS}")
    if "sft+ppo" not in arms:  # the other arms' step counts are the PPO arm's
        raise ValueError(f"ReFT arms: {tuple(arms)} lacks 'sft+ppo', which every comparison is made against")
    from ift.modules import FineTuneModule
    from ift.objectives import SFT

    start = time.perf_counter()
    ppo_steps = settings.ppo_iterations * settings.updates_per_iteration
    pl.seed_everything(seed, verbose=False)
    # The SFT arms unclipped, PPO and the Sequential recipe clipped at norm 1: how the published
    # tables were measured (the module's max_grad_norm then clipped manual-optimization fits only).
    whole = FineTuneModule(model="tiny-gpt2", objective=SFT(), optimizer=_adamw(settings.sft_lr), max_grad_norm=None,
                           checkpoint_on_interrupt=False)
    tokenizer = whole.tokenizer
    snapshot = SnapshotAt(settings.warmup_steps)
    whole_steps = settings.warmup_steps + (ppo_steps if "sft" in arms else 0)
    quiet_trainer(whole_steps, [snapshot]).fit(whole, data_module(settings, seed, tokenizer))
    after_warmup_seconds = time.perf_counter() - snapshot.time
    warm_policy = copy.deepcopy(whole.policy)
    warm_policy.load_state_dict(snapshot.state)

    results: Dict[str, Any] = {"seed": seed, "arms": {}}
    eval_data = data_module(settings, seed, tokenizer)
    results["warmup_accuracy"] = held_out_accuracy(warm_policy, tokenizer, settings, eval_data)
    if "sft" in arms:
        results["arms"]["sft"] = {
            "accuracy": held_out_accuracy(whole.policy, tokenizer, settings, eval_data),
            "optimizer_steps": whole_steps,
            "sequences_trained": whole_steps * settings.batch_size,
            "tokens_sampled": 0,
            "seconds": after_warmup_seconds,
        }

    pl.seed_everything(seed, verbose=False)
    reward = CountingReward(answer_reward(settings), tokenizer)
    ppo = _ppo(settings, reward, seed)
    rl = FineTuneModule(model=copy.deepcopy(warm_policy), tokenizer=tokenizer, objective=ppo,
                        optimizer=_adamw(settings.second_stage_lr), checkpoint_on_interrupt=False)
    seconds = time.perf_counter()
    rl_trainer = quiet_trainer(ppo_steps)
    rl_trainer.fit(rl, data_module(settings, seed, tokenizer))
    seconds = time.perf_counter() - seconds
    made = int(rl_trainer.global_step)
    results["arms"]["sft+ppo"] = {
        "accuracy": held_out_accuracy(rl.policy, tokenizer, settings, eval_data),
        "optimizer_steps": settings.warmup_steps + made,
        "sequences_trained": settings.warmup_steps * settings.batch_size + made * settings.mini_batch_size,
        "tokens_sampled": reward.tokens,
        "mean_train_score": reward.mean_score(),
        "train_score": reward.quarter_means(),
        "seconds": seconds,
    }

    if "sft+sft" not in arms:
        return _finish(results, settings, start)
    pl.seed_everything(seed, verbose=False)
    more = FineTuneModule(model=copy.deepcopy(warm_policy), tokenizer=tokenizer, objective=SFT(),
                          optimizer=_adamw(settings.second_stage_lr), max_grad_norm=None, checkpoint_on_interrupt=False)
    seconds = time.perf_counter()
    quiet_trainer(made).fit(more, data_module(settings, seed, tokenizer))
    seconds = time.perf_counter() - seconds
    results["arms"]["sft+sft"] = {
        "accuracy": held_out_accuracy(more.policy, tokenizer, settings, eval_data),
        "optimizer_steps": settings.warmup_steps + made,
        "sequences_trained": (settings.warmup_steps + made) * settings.batch_size,
        "tokens_sampled": 0,
        "seconds": seconds,
    }
    return _finish(results, settings, start)


def run_sequential(settings: ReftSettings, seed: int) -> Dict[str, Any]:
    """The ``sft+ppo`` arm as the library's recipe: ``Sequential`` SFT -> PPO in ONE fit.

    The warm-up is ``warmup_steps`` SFT batches; the PPO stage runs ``ppo_iterations``
    iterations at ``second_stage_lr`` (the optimizer carries over the switch, as in a user's
    run of ``configs/arithmetic/sft_then_ppo.yaml``). The accuracy at the switch is that of
    the reference policy, which is the policy as it stood at the switch.
    """
    from ift.modules import FineTuneModule
    from ift.objectives import Sequential, SFT

    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    reward = CountingReward(answer_reward(settings), tokenizer=None)
    recipe = Sequential(stages=[
        {"objective": SFT(), "steps": settings.warmup_steps, "name": "sft"},
        {"objective": _ppo(settings, reward, seed), "lr": settings.second_stage_lr, "name": "ppo"},
    ])
    module = FineTuneModule(model="tiny-gpt2", objective=recipe, optimizer=_adamw(settings.sft_lr),
                            checkpoint_on_interrupt=False)
    reward.tokenizer = module.tokenizer
    trainer = quiet_trainer(settings.warmup_steps + settings.ppo_iterations * settings.updates_per_iteration)
    trainer.fit(module, data_module(settings, seed, module.tokenizer))
    eval_data = data_module(settings, seed, module.tokenizer)
    return _finish({
        "seed": seed,
        "stage_batches": module.objective.stage_batches,
        "switch_accuracy": held_out_accuracy(module.reference_policy, module.tokenizer, settings, eval_data),
        "accuracy": held_out_accuracy(module.policy, module.tokenizer, settings, eval_data),
        "train_score": reward.quarter_means(),
    }, settings, start)


def _ppo(settings: ReftSettings, reward, seed: int):
    from ift.objectives import PPO

    return PPO(reward=reward, kl_coef=settings.kl_coef, vf_coef=settings.vf_coef,
               samples_per_prompt=settings.samples_per_prompt, max_new_tokens=settings.max_new_tokens,
               ppo_epochs=settings.ppo_epochs, mini_batch_size=settings.mini_batch_size,
               temperature=settings.temperature, seed=seed)


def _finish(results: Dict[str, Any], settings: ReftSettings, start: float) -> Dict[str, Any]:
    results["warmup_steps"] = settings.warmup_steps
    results["seconds"] = time.perf_counter() - start
    return results


def run_job(job) -> Dict[str, Any]:
    """``("arms", settings, seed, arms)`` -> :func:`run_seed`; ``("sequential", settings, seed)``
    -> :func:`run_sequential`. One job kind for both, so one pool of workers can run a mix."""
    kind, *args = job
    if kind == "arms":
        return run_seed(*args)
    if kind == "sequential":
        return run_sequential(*args)
    raise ValueError(f"ReFT arms: unknown job kind {kind!r}; 'arms' or 'sequential'")


def run_seeds(settings: ReftSettings, seeds: Sequence[int], workers: int = 2,
              arms: Sequence[str] = ARMS) -> List[Dict[str, Any]]:
    """:func:`run_seed` for every seed, over ``workers`` processes; in the order of ``seeds``."""
    return map_in_processes(run_job, [("arms", settings, seed, tuple(arms)) for seed in seeds], workers)

