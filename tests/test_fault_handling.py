"""Fault handling: nan/inf steps are skipped (both optimization modes, under DDP too), a hung
reward scores 0, Ctrl-C writes a checkpoint that resumes where the run stopped, and a
checkpoint is never left half-written."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from factories import ppo_settings, quiet_trainer, tiny_arithmetic, tiny_module
from ift.callbacks.atomic_checkpoint import (
    AtomicCheckpointIO,
    atomic_save,
    install_atomic_checkpoint_io,
    is_temporary,
    temporary_name,
)
from ift.callbacks.interrupt import InterruptCheckpoint
from ift.tasks.arithmetic import ArithmeticDataModule
from ift.modules import FineTuneModule
from ift.modules.nonfinite import NonFiniteLossError, NonFiniteLossWarning
from ift.objectives import PPO, SFT, Sequential, StepResult
from ift.rewards import AnswerMatchReward, Reward, RewardTimeoutWarning

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def restore_sigint():
    """Lightning ignores SIGINT after it caught a KeyboardInterrupt: give pytest Ctrl-C back."""
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------------------- helpers
class _InfGrad(torch.autograd.Function):
    """Adds 0 to the loss; its gradient is inf (a finite loss with a non-finite gradient)."""

    @staticmethod
    def forward(ctx, parameter):
        ctx.shape = parameter.shape
        return parameter.sum() * 0.0

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("inf"))


class FaultySFT(SFT):
    """SFT whose loss is nan at the chosen training calls (counted from 0), or whose gradient is inf."""

    def __init__(self, nan_calls=(), inf_grad_calls=(), always_nan: bool = False):
        super().__init__()
        self.nan_calls = tuple(nan_calls)
        self.inf_grad_calls = tuple(inf_grad_calls)
        self.always_nan = always_nan
        self.calls = 0

    def training_step(self, context, batch):
        result = super().training_step(context, batch)
        loss = result.loss
        call, self.calls = self.calls, self.calls + 1
        if self.always_nan or call in self.nan_calls:
            loss = loss * float("nan")  # the nan flows into every gradient if backward ran on it
        if call in self.inf_grad_calls:
            loss = loss + _InfGrad.apply(next(context.policy.parameters()))
        return StepResult(loss, result.metrics)


class Snapshots(pl.Callback):
    """Parameters and optimizer state at fit start and after every training batch, plus what was logged."""

    def __init__(self):
        self.states: List[Dict[str, Any]] = []
        self.skipped_logged: List[float] = []

    @staticmethod
    def _state(trainer, pl_module):
        optimizer = trainer.optimizers[0]
        return {
            "params": {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad},
            "optimizer": copy.deepcopy(optimizer.state_dict()["state"]),
            "global_step": trainer.global_step,
        }

    def on_train_start(self, trainer, pl_module):
        self.states.append(self._state(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append(self._state(trainer, pl_module))
        # The module logs after the callbacks: read it at the next batch start / fit end.

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "train/skipped_steps" in trainer.callback_metrics:
            self.skipped_logged.append(float(trainer.callback_metrics["train/skipped_steps"]))

    def on_train_end(self, trainer, pl_module):
        self.skipped_logged.append(float(trainer.callback_metrics["train/skipped_steps"]))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def unchanged(before, after) -> bool:
    return _same(before["params"], after["params"]) and _same(before["optimizer"], after["optimizer"])


def data(num_train: int = 48, batch_size: int = 8, **kwargs) -> ArithmeticDataModule:
    """48 examples in batches of 8 by default, 8 validation and 8 test examples."""
    return tiny_arithmetic(num_train, batch_size, num_val=8, num_test=8, **kwargs)


def trainer(tmp_path, callbacks=(), **kwargs) -> pl.Trainer:
    """No validation; writes (if anything) under ``tmp_path``."""
    kwargs.setdefault("limit_val_batches", 0)
    return quiet_trainer(tmp_path, callbacks, **kwargs)


def module_with(objective, seed: int = 0, **kwargs) -> FineTuneModule:
    """``tiny_module`` (no generation-based accuracy at validation: no AnswerAccuracy callback)."""
    return tiny_module(objective, seed=seed, **kwargs)


# ---------------------------------------------------------------------------- non-finite: automatic
def test_nan_loss_skips_the_step_in_automatic_optimization(tmp_path):
    module = module_with(FaultySFT(nan_calls=(0, 3)))
    assert module.automatic_optimization
    snaps = Snapshots()
    with pytest.warns(NonFiniteLossWarning, match=r"Non-finite loss \(nan\) at global step 3.*lower the learning rate"):
        trainer(tmp_path, [snaps], max_steps=6).fit(module, data())
    states = snaps.states  # states[i + 1] is after training call i
    assert trainer and module.trainer.global_step == 6  # a skipped step still counts as an attempt
    for call in range(6):
        skipped = call in (0, 3)
        assert unchanged(states[call], states[call + 1]) == skipped, call
    assert states[1]["optimizer"] == {}  # the very first step was skipped: AdamW has no state yet
    assert module.nonfinite.skipped_steps == 2 and module.nonfinite.consecutive == 0
    assert snaps.skipped_logged == [1, 1, 1, 2, 2, 2]  # cumulative, logged every step
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_inf_gradient_with_a_finite_loss_is_skipped_too(tmp_path):
    module = module_with(FaultySFT(inf_grad_calls=(2,)))
    snaps = Snapshots()
    with pytest.warns(NonFiniteLossWarning, match=r"Non-finite gradient norm \(inf\) at global step 2"):
        trainer(tmp_path, [snaps], max_steps=4).fit(module, data())
    assert [unchanged(snaps.states[i], snaps.states[i + 1]) for i in range(4)] == [False, False, True, False]
    assert module.nonfinite.skipped_steps == 1


def test_gradient_accumulation_skips_the_whole_window(tmp_path):
    # Windows of 2 batches: calls (0, 1), (2, 3), (4, 5). A nan in the first batch of the
    # second window must keep the second batch's gradients out of the weights as well.
    module = module_with(FaultySFT(nan_calls=(2,)))
    snaps = Snapshots()
    with pytest.warns(NonFiniteLossWarning, match="global step 1"):
        trainer(tmp_path, [snaps], max_steps=3, accumulate_grad_batches=2).fit(module, data())
    states = snaps.states
    assert module.trainer.global_step == 3
    assert not unchanged(states[0], states[2])  # window 1 stepped
    assert unchanged(states[2], states[4])  # window 2 (calls 2 and 3) skipped entirely
    assert not unchanged(states[4], states[6])  # window 3 stepped
    assert module.nonfinite.skipped_steps == 1


def test_consecutive_nan_losses_stop_with_a_clear_error(tmp_path):
    module = module_with(FaultySFT(always_nan=True), max_consecutive_skipped_steps=3)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with pytest.warns(NonFiniteLossWarning):
        with pytest.raises(NonFiniteLossError) as info:
            trainer(tmp_path, max_steps=20).fit(module, data())
    message = str(info.value)
    assert "3 optimizer steps in a row" in message and "global steps 0 to 2" in message
    for advice in ("lower the learning rate", "bf16 instead of fp16", "clip gradients", "check the data"):
        assert advice in message
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def test_zero_disables_the_stop(tmp_path):
    module = module_with(FaultySFT(always_nan=True), max_consecutive_skipped_steps=0)
    with pytest.warns(NonFiniteLossWarning, match="never stops"):
        trainer(tmp_path, max_steps=4).fit(module, data())
    assert module.nonfinite.skipped_steps == 4
    with pytest.raises(ValueError, match="max_consecutive_skipped_steps"):
        FineTuneModule(model="tiny-gpt2", max_consecutive_skipped_steps=-1)


def test_skipped_step_counter_survives_a_checkpoint(tmp_path):
    module = module_with(FaultySFT(nan_calls=(1,)))
    run = trainer(tmp_path, max_steps=3)
    with pytest.warns(NonFiniteLossWarning):
        run.fit(module, data())
    path = tmp_path / "skipped.ckpt"
    run.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["nonfinite_state"]["skipped_steps"] == 1

    resumed = module_with(FaultySFT(nan_calls=(0,)))  # its first call after resuming is nan
    snaps = Snapshots()
    with pytest.warns(NonFiniteLossWarning, match=r"global step 3.*2 skipped in total"):
        trainer(tmp_path, [snaps], max_steps=5).fit(resumed, data(), ckpt_path=str(path))
    assert resumed.nonfinite.skipped_steps == 2
    assert snaps.skipped_logged[-1] == 2


# ---------------------------------------------------------------------------- non-finite: manual
class NanPPO(PPO):
    """PPO whose loss is nan on the chosen mini-batch updates (counted from 0 over the fit)."""

    def __init__(self, nan_updates=(), **kwargs):
        super().__init__(**kwargs)
        self.nan_updates = tuple(nan_updates)
        self.updates_seen = 0

    def loss_on_rollout(self, context, rollout):
        loss, metrics = super().loss_on_rollout(context, rollout)
        update, self.updates_seen = self.updates_seen, self.updates_seen + 1
        if update in self.nan_updates:
            loss = loss * float("nan")
        return loss, metrics


class StepRecorder(FineTuneModule):
    """Records the state around every manual optimizer step and what the step returned."""

    def optimizer_step_manually(self, loss):
        optimizer = self.optimizers().optimizer
        before = {"params": {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad},
                  "optimizer": copy.deepcopy(optimizer.state_dict()["state"])}
        stepped = super().optimizer_step_manually(loss)
        after = {"params": {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad},
                 "optimizer": copy.deepcopy(optimizer.state_dict()["state"])}
        self.records = getattr(self, "records", []) + [(stepped, unchanged(before, after))]
        return stepped


def test_nan_loss_skips_a_ppo_update_in_manual_optimization(tmp_path):
    torch.manual_seed(0)
    module = StepRecorder(model="tiny-gpt2", objective=NanPPO(nan_updates=(1, 4), reward=AnswerMatchReward(), **ppo_settings()))
    assert not module.automatic_optimization
    logged = []

    class Metrics(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    with pytest.warns(NonFiniteLossWarning, match="Non-finite loss"):
        trainer(tmp_path, [Metrics()], max_epochs=1, limit_train_batches=3).fit(module, data(num_train=16, batch_size=4))
    # 3 batches x 8 rollouts / mini-batches of 4 = 6 updates; updates 1 and 4 were skipped.
    assert [stepped for stepped, _ in module.records] == [True, False, True, True, False, True]
    assert all(same != stepped for stepped, same in module.records)  # skipped <=> nothing changed
    assert module.trainer.global_step == 4  # manual optimization counts the steps taken
    assert module.nonfinite.skipped_steps == 2
    assert logged[0]["train/ppo_updates_step"] == 1 and logged[0]["train/ppo_skipped_updates_step"] == 1
    assert all(torch.isfinite(torch.tensor(row["train/loss_step"])) for row in logged)  # skipped losses left out


def test_nan_loss_of_a_batch_loss_stage_in_a_manual_fit(tmp_path):
    recipe = Sequential(stages=[{"objective": FaultySFT(nan_calls=(1,)), "steps": 3},
                                {"objective": PPO(reward=AnswerMatchReward(), **ppo_settings())}])
    torch.manual_seed(0)
    module = StepRecorder(model="tiny-gpt2", objective=recipe)
    assert not module.automatic_optimization
    with pytest.warns(NonFiniteLossWarning):
        trainer(tmp_path, max_steps=4).fit(module, data(num_train=16, batch_size=4))
    assert [stepped for stepped, _ in module.records][:3] == [True, False, True]
    assert all(same != stepped for stepped, same in module.records)
    assert module.nonfinite.skipped_steps == 1

    always = Sequential(stages=[{"objective": FaultySFT(always_nan=True), "steps": 50},
                                {"objective": PPO(reward=AnswerMatchReward(), **ppo_settings())}])
    stuck = module_with(always, max_consecutive_skipped_steps=2)
    with pytest.warns(NonFiniteLossWarning), pytest.raises(NonFiniteLossError, match="2 optimizer steps in a row"):
        trainer(tmp_path, max_steps=4).fit(stuck, data(num_train=16, batch_size=4))
    assert stuck.trainer.global_step == 0


# ---------------------------------------------------------------------------- non-finite: DDP
DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, pytorch_lightning as pl
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.modules import FineTuneModule
    from ift.objectives import SFT

    class NanOnRankOne(SFT):
        def training_step(self, context, batch):
            result = super().training_step(context, batch)
            if torch.distributed.get_rank() == 1 and context.global_step == 1:
                result.loss = result.loss * float("nan")
            return result

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            params = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
            self.states = getattr(self, "states", []) + [params]

        def on_train_end(self, trainer, pl_module):
            torch.save({"states": self.states, "skipped": pl_module.nonfinite.skipped_steps,
                        "step": trainer.global_step}, sys.argv[1] + f"/rank{trainer.global_rank}.pt")

    if __name__ == "__main__":
        pl.seed_everything(0)
        module = FineTuneModule(model="tiny-gpt2", objective=NanOnRankOne())
        data = ArithmeticDataModule(num_train=64, num_val=8, num_test=8, max_operand=19, batch_size=8)
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=3, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Record()],
                             default_root_dir=sys.argv[1])
        trainer.fit(module, data)
    """
)


def test_nan_on_one_ddp_rank_skips_the_step_on_every_rank(tmp_path):
    script = tmp_path / "ddp_nan.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for rank in ranks:
        assert rank["skipped"] == 1 and rank["step"] == 3
        states = rank["states"]
        assert _same(states[0], states[1])  # step 1 skipped on both ranks (the nan was on rank 1 only)
        assert not _same(states[1], states[2])
    for before, after in zip(ranks[0]["states"], ranks[1]["states"]):
        assert _same(before, after)  # the ranks never diverged


# ---------------------------------------------------------------------------- hanging reward
RELEASE = threading.Event()  # module-level: the hyper-parameters (which hold the reward) are deep-copied


class HangsOnce(Reward):
    """The first call blocks (much longer than the timeout); later calls score 1."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompts, responses, examples):
        self.calls += 1
        if self.calls == 1:
            RELEASE.wait(30)
        return [1.0] * len(responses)


def test_a_hanging_reward_is_scored_zero_counted_and_training_goes_on(tmp_path):
    reward = HangsOnce()
    module = module_with(PPO(reward=reward, reward_timeout_s=0.3, **ppo_settings()))
    seen = []

    class Grab(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    run = trainer(tmp_path, [Grab()], max_epochs=1, limit_train_batches=3)
    start = time.perf_counter()
    try:
        with pytest.warns(RewardTimeoutWarning, match=r"HangsOnce did not return within 0.3 s.*scored 0"):
            run.fit(module, data(num_train=16, batch_size=4))
    finally:
        RELEASE.set()
    assert time.perf_counter() - start < 25  # did not wait for the hung call
    assert [row["train/score_step"] for row in seen] == [0.0, 1.0, 1.0]
    assert [row["train/reward_timeouts_step"] for row in seen] == [1, 1, 1]
    assert run.global_step == 6  # every batch trained
    path = tmp_path / "ppo.ckpt"
    run.save_checkpoint(path)
    assert torch.load(path, weights_only=False)["objective_state"]["reward_timeouts"] == 1
    fresh = PPO(reward=AnswerMatchReward(), **ppo_settings())
    FineTuneModule.load_from_checkpoint(path, objective=fresh)
    assert fresh.state_dict()["reward_timeouts"] == 1


# ---------------------------------------------------------------------------- Ctrl-C
class Record(pl.Callback):
    """The prompts and the loss of every training batch; optionally interrupts at one of them."""

    def __init__(self, raise_at=None, sigint_at=None):
        self.raise_at, self.sigint_at = raise_at, sigint_at
        self.rows = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.sigint_at:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C was pressed during this step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.global_step, tuple(batch["prompt"]), round(float(outputs["loss"]), 6)))
        if trainer.global_step == self.raise_at:
            raise KeyboardInterrupt


class RaiseInStep(SFT):
    """SFT that raises KeyboardInterrupt inside the training step of one global step."""

    def __init__(self, at: int = -1):
        super().__init__()
        self.at = at

    def training_step(self, context, batch):
        if context.global_step == self.at:
            raise KeyboardInterrupt
        return super().training_step(context, batch)


def _interrupted_then_resumed(tmp_path, interrupt, objective=None, total_steps=9, **trainer_kwargs):
    """(uninterrupted rows, rows before the interrupt, rows after resuming, checkpoint path, step saved).

    ``objective`` is the interrupted run's (default SFT); the other two runs use SFT."""
    pl.seed_everything(0)
    reference = Record()
    trainer(tmp_path / "ref", [reference], max_steps=total_steps, **trainer_kwargs).fit(module_with(SFT()), data())

    pl.seed_everything(0)
    first = interrupt
    stopped = trainer(tmp_path / "run", [first], max_steps=total_steps, **trainer_kwargs)
    with pytest.raises(SystemExit):
        stopped.fit(module_with(objective or SFT()), data())
    saver = [cb for cb in stopped.callbacks if isinstance(cb, InterruptCheckpoint)]
    assert len(saver) == 1 and saver[0].last_path is not None
    path = saver[0].last_path
    saved_step = torch.load(path, weights_only=False)["global_step"]

    pl.seed_everything(123)  # the resumed run must not depend on the global seed
    after = Record()
    resumed = trainer(tmp_path / "resume", [after], max_steps=total_steps, **trainer_kwargs)
    resumed.fit(module_with(SFT(), seed=5), data(), ckpt_path=path)
    assert resumed.global_step == total_steps
    return reference.rows, first.rows, after.rows, path, saved_step


def test_keyboard_interrupt_writes_a_checkpoint_that_resumes_with_the_remaining_batches(tmp_path):
    # 48 examples, batches of 8: 6 per epoch; stop after step 4 (mid-epoch 0), run to step 9 (epoch 1).
    reference, before, after, path, saved = _interrupted_then_resumed(tmp_path, Record(raise_at=4))
    assert path == str(tmp_path / "run" / "interrupted.ckpt") and os.path.exists(path)
    assert saved == 4
    assert [row[0] for row in after] == list(range(5, 10))  # global_step continues from 4
    assert before + after == reference  # the same batches, in the same order, with the same losses


def test_ctrl_c_finishes_the_step_then_saves_and_resumes(tmp_path):
    reference, before, after, path, saved = _interrupted_then_resumed(tmp_path, Record(sigint_at=2))
    assert saved == 3  # the step during which Ctrl-C came was finished first
    assert [row[0] for row in before] == [1, 2, 3]
    assert before + after == reference


def test_keyboard_interrupt_inside_a_step_redoes_that_step(tmp_path):
    reference, before, after, path, saved = _interrupted_then_resumed(tmp_path, Record(), objective=RaiseInStep(at=7))
    assert saved == 7 and [row[0] for row in before] == list(range(1, 8))  # epoch 1, batch 1 was not done
    assert before + after == reference


def test_interrupt_checkpoint_goes_next_to_model_checkpoint_and_a_users_own_is_kept(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=str(tmp_path / "ckpts"), save_last=True)
    run = trainer(tmp_path, [Record(raise_at=2), checkpoints], max_steps=5, enable_checkpointing=True)
    with pytest.raises(SystemExit):
        run.fit(module_with(SFT()), data())
    assert (tmp_path / "ckpts" / "interrupted.ckpt").exists()

    mine = InterruptCheckpoint(dirpath=str(tmp_path / "mine"), filename="stop")
    run = trainer(tmp_path, [Record(raise_at=2), mine], max_steps=5)
    with pytest.raises(SystemExit):
        run.fit(module_with(SFT()), data())
    assert [cb for cb in run.callbacks if isinstance(cb, InterruptCheckpoint)] == [mine]
    assert mine.last_path == str(tmp_path / "mine" / "stop.ckpt") and os.path.exists(mine.last_path)

    off = trainer(tmp_path / "off", [Record(raise_at=2)], max_steps=5)
    with pytest.raises(SystemExit):
        off.fit(module_with(SFT(), checkpoint_on_interrupt=False), data())
    assert not any(isinstance(cb, InterruptCheckpoint) for cb in off.callbacks)
    assert not (tmp_path / "off" / "interrupted.ckpt").exists()


def test_other_exceptions_write_a_checkpoint_named_in_the_error_unless_turned_off(tmp_path):
    class Boom(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as raised:
        trainer(tmp_path, [Boom()], max_steps=3).fit(module_with(SFT()), data())
    path = tmp_path / "interrupted.ckpt"
    assert torch.load(path, weights_only=False)["global_step"] == 2
    assert f"resume with --ckpt_path {path}" in "\n".join(raised.value.__notes__)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # our handler was removed

    off = InterruptCheckpoint(dirpath=str(tmp_path / "off"), save_on_error=False)
    with pytest.raises(ValueError, match="boom"):
        trainer(tmp_path, [Boom(), off], max_steps=3).fit(module_with(SFT()), data())
    assert not (tmp_path / "off").exists()


def test_an_error_before_any_finished_batch_leaves_an_earlier_checkpoint_alone(tmp_path):
    class FailAtStart(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            raise ValueError("bad setting")

    earlier = tmp_path / "interrupted.ckpt"
    earlier.write_bytes(b"an earlier run's checkpoint")
    with pytest.raises(ValueError, match="bad setting"):
        trainer(tmp_path, [FailAtStart()], max_steps=3).fit(module_with(SFT()), data())
    assert earlier.read_bytes() == b"an earlier run's checkpoint"


# ---------------------------------------------------------------------------- atomic checkpoints
class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_save_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1, "weights": torch.arange(1000)}, path)
    assert torch.load(path)["step"] == 1
    # An error while serialising (after bytes were written to the temporary file).
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_save({"step": 2, "weights": torch.arange(1000), "bad": Unpicklable()}, path)
    assert torch.load(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # the temporary file was removed

    # An error in the middle of writing the bytes.
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 3}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path)["step"] == 1 and os.listdir(tmp_path) == ["last.ckpt"]


def test_leftover_temporary_files_are_never_checkpoints_and_are_cleaned(tmp_path):
    path = tmp_path / "last.ckpt"
    stale = Path(temporary_name(path))
    assert stale.parent == tmp_path and is_temporary(stale.name, "last.ckpt") and not stale.name.endswith(".ckpt")
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".notes.tmp"
    other.write_text("not ours")
    assert not is_temporary(other.name) and not is_temporary("last.ckpt")

    # Lightning's ckpt_path="last" search ignores the temporary file.
    checkpoints = ModelCheckpoint(dirpath=str(tmp_path), save_last=True, save_top_k=0)
    run = trainer(tmp_path, [checkpoints], max_steps=2, enable_checkpointing=True)
    assert checkpoints._find_last_checkpoints(run) == set()
    run.fit(module_with(SFT()), data())  # saves last.ckpt atomically
    assert isinstance(run.strategy.checkpoint_io, AtomicCheckpointIO)
    assert checkpoints._find_last_checkpoints(run) == {str(path)}
    assert torch.load(path, weights_only=False)["global_step"] == 2
    assert not stale.exists() and other.exists()  # the stale temporary was deleted by the next save


def test_install_leaves_a_custom_checkpoint_io_alone():
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    class Custom(TorchCheckpointIO):
        pass

    strategy = pl.Trainer(accelerator="cpu", logger=False, plugins=[Custom()]).strategy
    assert not install_atomic_checkpoint_io(strategy) and type(strategy.checkpoint_io) is Custom
    strategy = pl.Trainer(accelerator="cpu", logger=False).strategy
    assert install_atomic_checkpoint_io(strategy) and isinstance(strategy.checkpoint_io, AtomicCheckpointIO)
    wrapped = pl.Trainer(accelerator="cpu", logger=False, plugins=[AsyncCheckpointIO()]).strategy
    assert install_atomic_checkpoint_io(wrapped)
    assert isinstance(wrapped.checkpoint_io.checkpoint_io, AtomicCheckpointIO)


KILL_SCRIPT = textwrap.dedent(
    """
    import io, os, sys, time
    import pytorch_lightning as pl, torch
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
    from pytorch_lightning.callbacks import ModelCheckpoint
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.modules import FineTuneModule

    root, ready, mode, block_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    real_save, calls = torch.save, [0]

    def slow_save(obj, f, *args, **kwargs):
        # The block_at-th save writes half of its bytes to wherever it writes, says so, and hangs.
        calls[0] += 1
        if calls[0] < block_at:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
        handle.write(data[: len(data) // 2])
        handle.flush()
        if hasattr(handle, "fileno"):
            os.fsync(handle.fileno())
        with open(ready, "w") as signal_file:
            signal_file.write(str(calls[0]))
        time.sleep(600)

    torch.save = slow_save

    class NaiveIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(checkpoint, path)  # straight into the final file

    pl.seed_everything(0)
    module = FineTuneModule(model="tiny-gpt2")
    data = ArithmeticDataModule(num_train=48, num_val=8, num_test=8, max_operand=19, batch_size=8)
    checkpoints = ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=20, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[checkpoints], plugins=[NaiveIO()] if mode == "naive" else None,
                         default_root_dir=root)
    trainer.fit(module, data)
    """
)


def _kill_mid_save(tmp_path, mode: str) -> Path:
    script = tmp_path / "kill_mid_save.py"
    script.write_text(KILL_SCRIPT)
    root, ready = tmp_path / "ckpts", tmp_path / "ready"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, str(script), str(root), str(ready), mode, "3"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not ready.exists():
            if child.poll() is not None:
                raise AssertionError(f"the child exited early:\n{child.stderr.read().decode()[-4000:]}")
            assert time.time() < deadline, "the child never reached the third save"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)  # killed in the middle of writing the third last.ckpt
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return root


def test_killed_mid_save_leaves_the_previous_complete_last_ckpt_and_resumes(tmp_path):
    root = _kill_mid_save(tmp_path, "atomic")
    last = root / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)  # complete: it loads
    assert checkpoint["global_step"] == 2  # the one written before the killed save
    leftovers = [name for name in os.listdir(root) if name != "last.ckpt"]
    assert len(leftovers) == 1 and is_temporary(leftovers[0], "last.ckpt")  # the killed save's temporary

    checkpoints = ModelCheckpoint(dirpath=str(root), save_last=True, save_top_k=0, every_n_train_steps=1)
    resumed = trainer(tmp_path, [checkpoints], max_steps=4, enable_checkpointing=True)
    pl.seed_everything(0)
    resumed.fit(module_with(SFT()), data(), ckpt_path="last")  # "last" finds last.ckpt, not the temporary
    assert resumed.global_step == 4
    assert torch.load(last, weights_only=False)["global_step"] == 4
    assert os.listdir(root) == ["last.ckpt"]


def test_the_kill_test_catches_a_writer_that_is_not_atomic(tmp_path):
    """Control: the same kill against a CheckpointIO that writes straight into last.ckpt corrupts it."""
    root = _kill_mid_save(tmp_path, "naive")
    with pytest.raises(Exception):
        torch.load(root / "last.ckpt", weights_only=False)
