"""Do SFT and IFT learn held-out addition? Several seeds, accuracy at several budgets.

A tiny GPT-2 (2 layers, 64 dims, character tokenizer) learns two-operand addition with
operands in ``[0, max_operand]`` from ``num_train`` problems and is scored by greedy exact
match on ``num_val`` problems it never saw. Accuracy is measured before training and after
each budget in ``eval_steps``, in one run per (objective, seed).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch

from ift.core.workers import map_in_processes

#: The objectives compared, by name.
OBJECTIVES = ("SFT", "IFT")


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
    """

    max_operand: int = 29
    num_train: int = 700
    num_val: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    eval_steps: Tuple[int, ...] = (770, 1100)
    lam: float = 0.2
    gamma: float = 0.95


def make_objective(name: str, settings: LearningSettings):
    """SFT, or IFT with the settings' lambda and gamma."""
    from ift.objectives import IFT, SFT

    if name == "SFT":
        return SFT()
    if name == "IFT":
        return IFT(lam=settings.lam, gamma=settings.gamma)
    raise ValueError(f"arithmetic learning: unknown objective {name!r}; choose one of {OBJECTIVES}")


class AccuracyAt(pl.Callback):
    """Held-out greedy accuracy each time ``trainer.global_step`` reaches one of ``steps``."""

    def __init__(self, steps: Sequence[int], data):
        self.steps, self.data = sorted(steps), data
        self.accuracy: Dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, *args):
        step = trainer.global_step
        if step in self.steps and step not in self.accuracy:
            self.accuracy[step] = held_out_accuracy(pl_module, self.data)


def held_out_accuracy(module, data) -> float:
    """Greedy exact match of ``module`` on the held-out split of ``data`` (the liberal answer
    rule of ``val/accuracy``)."""
    from ift.tasks.code import pass_rate
    from ift.rewards import AnswerMatchReward

    return pass_rate(module, data, "val", AnswerMatchReward(), module.eval_max_new_tokens)["pass_rate"]


def learn(job: Tuple[str, int, LearningSettings]) -> Dict[str, Any]:
    """Train one (objective, seed); accuracy before training and at every ``eval_steps``."""
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.modules import FineTuneModule

    name, seed, settings = job
    pl.seed_everything(seed, verbose=False)
    module = FineTuneModule(
        model="tiny-gpt2", objective=make_objective(name, settings),
        optimizer=lambda params: torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0),
        eval_max_new_tokens=4,
    )
    data = ArithmeticDataModule(num_train=settings.num_train, num_val=settings.num_val, num_test=0,
                                max_operand=settings.max_operand, operators="+", batch_size=settings.batch_size,
                                eval_batch_size=settings.num_val, seed=seed, tokenizer=module.tokenizer)
    data.setup("fit")
    module.configure_model()
    before = held_out_accuracy(module, data)
    probe = AccuracyAt(settings.eval_steps, data)
    trainer = pl.Trainer(max_steps=max(settings.eval_steps), max_epochs=-1, accelerator="cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[probe])
    trainer.fit(module, data)
    return {"objective": name, "seed": seed, "before": before, "after": dict(probe.accuracy)}


def run(settings: LearningSettings, seeds: Sequence[int], objectives: Sequence[str] = OBJECTIVES,
        workers: int = 2) -> List[Dict[str, Any]]:
    """:func:`learn` for every (objective, seed), over ``workers`` processes."""
    return map_in_processes(learn, [(name, seed, settings) for name in objectives for seed in seeds], workers)

