"""Do SFT, IFT and SFT -> PPO learn held-out addition? Several seeds, accuracy at several budgets.

A model (by default a tiny GPT-2: 2 layers, 64 dims, character tokenizer; or a real
pretrained one such as ``smollm2-135m-instruct`` in its chat template) learns two-operand
addition with operands in ``[0, max_operand]`` from ``num_train`` problems and is scored by
greedy exact match on ``num_val`` problems it never saw. Accuracy is measured before
training and after each budget in ``eval_steps``, in one run per (objective, seed).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytorch_lightning as pl
import torch

from ift.lab.workers import imap_in_processes
from ift.lab.trainer import quiet_trainer

#: The objectives compared, by name.
OBJECTIVES = ("SFT", "IFT")
#: Every objective :func:`make_objective` builds: SFT->PPO is ReFT's recipe (SFT for
#: ``warmup_steps`` batches, then PPO on the answer's exact match until the last budget).
ALL_OBJECTIVES = ("SFT", "IFT", "SFT->PPO")


@dataclasses.dataclass
class LearningSettings:
    """The task and the training budget (every objective and seed uses it).

    Args:
        max_operand: operands are drawn from ``[0, max_operand]``.
        num_train: training problems.
        num_val: held-out problems (disjoint from the training ones).
        batch_size: training batch.
        lr: AdamW learning rate.
        eval_steps: optimizer steps after which held-out accuracy is measured; the last one
            is the length of the run.
        lam: IFT's lambda.
        gamma: IFT's gamma.
        model: the model spec of FineTuneModule (a preset, folder, hub id or ``.gguf`` file).
        tokenizer: FineTuneModule's tokenizer (None: the model's own, or the character one).
        use_chat_template: render problems in the tokenizer's chat template (instruct models).
        lora: LoRA settings of FineTuneModule (None: train every weight).
        max_length: longest encoded sequence (prompt + response) in tokens.
        eval_max_new_tokens: tokens generated to read an answer.
        eval_batch_size: held-out prompts generated together.
        warmup_steps: SFT batches before PPO in the SFT->PPO arm.
        ppo_lr: the PPO stage's learning rate (below SFT's, as in ReFT).
        samples_per_prompt: PPO responses sampled per prompt.
    """

    max_operand: int = 29
    num_train: int = 700
    num_val: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    eval_steps: Tuple[int, ...] = (770, 1100)
    lam: float = 0.2
    gamma: float = 0.95
    model: str = "tiny-gpt2"
    tokenizer: Optional[str] = None
    use_chat_template: bool = False
    lora: Optional[Dict[str, Any]] = None
    max_length: int = 64
    eval_max_new_tokens: int = 4
    eval_batch_size: Optional[int] = None
    warmup_steps: int = 0
    ppo_lr: float = 1e-4
    samples_per_prompt: int = 4


def make_objective(name: str, settings: LearningSettings):
    """SFT, IFT with the settings' lambda and gamma, or SFT -> PPO (see :data:`ALL_OBJECTIVES`)."""
    from ift.objectives import IFT, PPO, SFT, Sequential, Stage
    from ift.rewards import AnswerMatchReward

    if name == "SFT":
        return SFT()
    if name == "IFT":
        return IFT(lam=settings.lam, gamma=settings.gamma)
    if name == "SFT->PPO":
        if not 0 < settings.warmup_steps < max(settings.eval_steps):
            raise ValueError(f"SFT->PPO needs 0 < warmup_steps < the last budget ({max(settings.eval_steps)}), "
                             f"got warmup_steps={settings.warmup_steps}")
        ppo = PPO(reward=AnswerMatchReward(), samples_per_prompt=settings.samples_per_prompt,
                  max_new_tokens=settings.eval_max_new_tokens, kl_coef=0.05, ppo_epochs=2,
                  mini_batch_size=settings.batch_size * settings.samples_per_prompt)
        return Sequential([Stage(SFT(), steps=settings.warmup_steps, name="sft-warmup"),
                           Stage(ppo, name="ppo", lr=settings.ppo_lr)])
    raise ValueError(f"arithmetic learning: unknown objective {name!r}; choose one of {ALL_OBJECTIVES}")


class AccuracyAt(pl.Callback):
    """Held-out greedy accuracy each time ``trainer.global_step`` reaches one of ``steps``.

    A batch may take several optimizer steps (PPO: ``ppo_epochs`` x its mini-batches), so
    ``global_step`` can jump over a budget: it is measured at the first batch end at or past
    it (:attr:`measured_at` keeps the step it was measured at)."""

    def __init__(self, steps: Sequence[int], data, max_new_tokens: int = 4):
        self.steps, self.data, self.max_new_tokens = sorted(steps), data, max_new_tokens
        self.accuracy: Dict[int, float] = {}
        self.measured_at: Dict[int, int] = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        step = trainer.global_step
        due = [budget for budget in self.steps if budget <= step and budget not in self.accuracy]
        if due:
            accuracy = held_out_accuracy(pl_module, self.data, self.max_new_tokens)
            for budget in due:
                self.accuracy[budget], self.measured_at[budget] = accuracy, step


def held_out_accuracy(module, data, max_new_tokens: int = 4) -> float:
    """Greedy exact match of ``module`` on the held-out split of ``data`` (the liberal answer
    rule, :class:`~ift.callbacks.AnswerAccuracy`'s default), responses of at most
    ``max_new_tokens`` tokens."""
    from ift.tasks.code import pass_rate
    from ift.rewards import AnswerMatchReward

    return pass_rate(module, data, "val", AnswerMatchReward(), max_new_tokens)["pass_rate"]


def learn(job: Tuple[str, int, LearningSettings]) -> Dict[str, Any]:
    """Train one (objective, seed); accuracy before training and at every ``eval_steps``."""
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.modules import FineTuneModule

    name, seed, settings = job
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    module = FineTuneModule(
        model=settings.model, tokenizer=settings.tokenizer, objective=make_objective(name, settings),
        optimizer=lambda params: torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0),
        lora=settings.lora,
        # SFT and IFT unclipped, the recipe with PPO clipped at norm 1: how the published tables
        # were measured (the module's max_grad_norm then clipped manual-optimization fits only).
        max_grad_norm=None if name in ("SFT", "IFT") else 1.0,
        checkpoint_on_interrupt=False,  # workers share one folder: the parent reports a stop
    )
    data = ArithmeticDataModule(num_train=settings.num_train, num_val=settings.num_val, num_test=0,
                                max_operand=settings.max_operand, operators="+", batch_size=settings.batch_size,
                                eval_batch_size=settings.eval_batch_size or settings.num_val, seed=seed,
                                tokenizer=module.tokenizer, max_length=settings.max_length,
                                use_chat_template=settings.use_chat_template)
    data.setup("fit")
    module.configure_model()
    before = held_out_accuracy(module, data, settings.eval_max_new_tokens)
    probe = AccuracyAt(settings.eval_steps, data, settings.eval_max_new_tokens)
    trainer = quiet_trainer(max(settings.eval_steps), callbacks=[probe])
    trainer.fit(module, data)
    missing = [budget for budget in settings.eval_steps if budget not in probe.accuracy]
    if missing:
        raise RuntimeError(f"arithmetic learning: {name} seed {seed} stopped at step {trainer.global_step} before "
                           f"the budgets {missing} were measured")
    return {"objective": name, "seed": seed, "before": before, "after": dict(probe.accuracy),
            "measured_at": dict(probe.measured_at), "seconds": round(time.perf_counter() - start, 1)}


def run(settings: LearningSettings, seeds: Sequence[int], objectives: Sequence[str] = OBJECTIVES,
        workers: int = 2, on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
    """:func:`learn` for every (objective, seed), over ``workers`` processes, in that order.

    ``on_result(run)`` is called as each run finishes (e.g. to save it: a long experiment
    keeps what it measured if a later run fails)."""
    jobs = [(name, seed, settings) for name in objectives for seed in seeds]
    results = []
    for result in imap_in_processes(learn, jobs, workers):
        results.append(result)
        if on_result is not None:
            on_result(result)
    order = {(name, seed): index for index, (name, seed, _) in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["objective"], r["seed"])])

