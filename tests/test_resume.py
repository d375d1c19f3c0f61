"""Runs a user can trust, through ``ift fit`` (``ift.cli.main``): resuming keeps the config's
valid changes and refuses the others, ``--ckpt_path last`` finds the previous run's
checkpoint, a cut-short checkpoint is named as such, an error mid-training leaves a
resumable checkpoint, unwritable output folders stop the run before its first step, the
objective hint comes only with objective errors, and PPO's logs count the steps its
checkpoint names count."""

from __future__ import annotations

import csv
import glob
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from ift.cli import main
from ift.objectives import SFT

pytestmark = [pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = Path(__file__).resolve().parent.parent
SFT_CONFIG = ROOT / "configs" / "arithmetic" / "sft.yaml"
IFT_CONFIG = ROOT / "configs" / "arithmetic" / "ift.yaml"
PPO_CONFIG = ROOT / "configs" / "arithmetic" / "ppo.yaml"

# 16 examples in batches of 4: 4 steps an epoch; one validation batch every epoch; no max_steps
# (the shipped configs set one, and Lightning 2.6 then resumes an end-of-epoch checkpoint
# without training the next epoch).
TINY = ["--trainer.max_steps", "-1",
        "--data.init_args.num_train", "16", "--data.init_args.num_val", "4", "--data.init_args.batch_size", "4",
        "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps",
        "1", "--trainer.enable_progress_bar", "false"]


def fit(config, root, *extra):
    """``ift fit --config config`` at tiny size in ``root``; returns the CLI object."""
    return main(["fit", "--config", str(config), "--trainer.default_root_dir", str(root), *TINY,
                 *[str(word) for word in extra]])


def exit_message(capsys, *args) -> str:
    """The SystemExit text plus stderr of a ``fit`` expected to stop."""
    with pytest.raises(SystemExit) as stop:
        fit(*args)
    code = stop.value.code
    return (code if isinstance(code, str) else "") + capsys.readouterr().err


def only_checkpoint(root) -> str:
    found = glob.glob(os.path.join(str(root), "lightning_logs", "*", "checkpoints", "*.ckpt"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def ift_checkpoint(tmp_path_factory):
    """An IFT run of one epoch (4 steps, lam 0.2, lr 0.003); its checkpoint's path."""
    root = tmp_path_factory.mktemp("ift_run")
    fit(IFT_CONFIG, root, "--trainer.max_epochs", "1")
    return only_checkpoint(root)


# ---------------------------------------------------------------------------- 1. settings on resume
def test_resume_trains_with_the_configs_objective_hyper_parameters(ift_checkpoint, tmp_path, capsys):
    cli = fit(IFT_CONFIG, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", ift_checkpoint,
              "--model.objective.init_args.lam", "0.9")
    assert cli.trainer.global_step == 8  # resumed at 4
    assert cli.model.objective.lam == pytest.approx(0.9)
    assert float(cli.trainer.callback_metrics["train/lambda_epoch"]) == pytest.approx(0.9)
    saved = yaml.safe_load(Path(cli.trainer.log_dir, "config.yaml").read_text())
    assert saved["model"]["objective"]["init_args"]["lam"] == pytest.approx(0.9)
    err = capsys.readouterr().err
    assert "model.objective.init_args.lam = 0.9 (the checkpoint's run had 0.2)" in err


def test_resume_uses_the_configs_learning_rate_not_the_checkpoints(ift_checkpoint, tmp_path):
    cli = fit(IFT_CONFIG, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", ift_checkpoint,
              "--model.optimizer.init_args.lr", "0.0001")
    group = cli.trainer.optimizers[0].param_groups[0]
    assert group["lr"] == pytest.approx(1e-4)
    assert int(group_state_steps(cli.trainer.optimizers[0])) == 8  # Adam's moments came from the checkpoint


def group_state_steps(optimizer) -> float:
    state = next(iter(optimizer.state.values()))
    return float(state["step"])


def test_resume_refuses_another_model_or_objective_and_lists_each_difference(ift_checkpoint, tmp_path, capsys):
    message = exit_message(capsys, IFT_CONFIG, tmp_path, "--ckpt_path", ift_checkpoint,
                           "--model.objective", "SFT", "--model.model", "tiny-llama")
    assert ift_checkpoint in message and "cannot change on resume" in message
    assert re.search(r"model\.model: checkpoint 'tiny-gpt2', config 'tiny-llama'", message), message
    assert re.search(r"model\.objective\.class_path: checkpoint '[\w.]*IFT', config '[\w.]*SFT'", message), message
    assert "without --ckpt_path" in message and "--model.model" in message
    assert "config.yaml" in message  # points at the checkpoint run's own config
    assert not glob.glob(str(tmp_path / "lightning_logs" / "*" / "metrics.csv"))  # nothing trained


def test_resume_refuses_another_optimizer_class(ift_checkpoint, tmp_path, capsys):
    message = exit_message(capsys, IFT_CONFIG, tmp_path, "--ckpt_path", ift_checkpoint,
                           "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.1")
    assert re.search(r"model\.optimizer\.class_path: checkpoint 'torch\.optim\.AdamW', config 'torch\.optim\.SGD'",
                     message), message


# ---------------------------------------------------------------------------- 2. --ckpt_path last
def test_ckpt_path_last_resumes_from_the_previous_runs_checkpoint(tmp_path, capsys):
    fit(SFT_CONFIG, tmp_path, "--trainer.max_epochs", "1")
    first = only_checkpoint(tmp_path)
    capsys.readouterr()
    cli = fit(SFT_CONFIG, tmp_path, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert f"resuming from {first}" in capsys.readouterr().err
    assert cli.trainer.global_step == 8  # 4 steps of the first run, then 4 more


def test_ckpt_path_last_without_an_earlier_checkpoint_stops_and_says_where_it_looked(tmp_path, capsys):
    message = exit_message(capsys, SFT_CONFIG, tmp_path, "--trainer.max_epochs", "1", "--ckpt_path", "last")
    assert "no checkpoint of an earlier run" in message
    assert str(tmp_path / "lightning_logs") in message


# ---------------------------------------------------------------------------- 3. cut-short file
def test_a_truncated_checkpoint_is_named_and_called_incomplete(ift_checkpoint, tmp_path, capsys):
    data = Path(ift_checkpoint).read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    message = exit_message(capsys, IFT_CONFIG, tmp_path, "--ckpt_path", cut)
    assert f"{cut} is not a complete checkpoint" in message


# ---------------------------------------------------------------------------- 4. an error mid-training
class FailingSFT(SFT):
    """SFT whose training step raises at global step ``fail_at`` (-1: never); records the steps it ran."""

    steps_seen: list = []

    def __init__(self, fail_at: int = -1):
        super().__init__()
        self.fail_at = fail_at

    def training_step(self, context, batch):
        if context.global_step == self.fail_at:
            raise RuntimeError("reward server went away")
        FailingSFT.steps_seen.append(context.global_step)
        return super().training_step(context, batch)


def test_an_error_mid_training_leaves_a_checkpoint_that_resumes_at_that_step(tmp_path):
    objective = ["--model.objective", f"{__name__}.FailingSFT"]
    with pytest.raises(RuntimeError, match="reward server went away") as raised:
        fit(SFT_CONFIG, tmp_path / "run", "--trainer.max_steps", "6", "--trainer.max_epochs", "3", *objective,
            "--model.objective.init_args.fail_at", "3")
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    path = re.search(r"saved to (\S+); resume with --ckpt_path (\S+)", notes)
    assert path and path.group(1) == path.group(2) and os.path.isfile(path.group(1)), notes
    assert torch.load(path.group(1), weights_only=False)["global_step"] == 3

    FailingSFT.steps_seen = []
    cli = fit(SFT_CONFIG, tmp_path / "resume", "--trainer.max_steps", "6", "--trainer.max_epochs", "3", *objective,
              "--ckpt_path", path.group(1))
    assert FailingSFT.steps_seen == [3, 4, 5]  # the step that raised is run again, then the rest
    assert cli.trainer.global_step == 6


# ---------------------------------------------------------------------------- 5. unwritable folders
def test_an_unwritable_default_root_dir_stops_before_the_first_step(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a path under a regular file cannot be created, even by root
    message = exit_message(capsys, SFT_CONFIG, blocker / "runs", "--trainer.max_epochs", "1")
    assert str(blocker / "runs") in message and "trainer.default_root_dir" in message
    assert "is a file" in message


def test_an_unwritable_checkpoint_folder_stops_before_the_first_step(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(blocker / "ckpts")}}]}}))
    message = exit_message(capsys, SFT_CONFIG, tmp_path / "out", "--config", callbacks, "--trainer.max_epochs", "1")
    assert str(blocker / "ckpts") in message and "ModelCheckpoint" in message and "dirpath" in message
    assert str(tmp_path / "out") not in message.split("\n", 1)[1].split("Give")[0]  # only the bad folder is listed
    assert not (tmp_path / "out" / "lightning_logs").exists() or not glob.glob(
        str(tmp_path / "out" / "lightning_logs" / "*" / "metrics.csv"))


def test_a_read_only_folder_is_reported_when_permissions_apply(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes (the file case covers it)")
        message = exit_message(capsys, SFT_CONFIG, locked / "runs", "--trainer.max_epochs", "1")
        assert str(locked / "runs") in message and "cannot create a file" in message
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------- 6. the objective hint
def test_the_objective_hint_is_not_printed_for_other_errors(tmp_path, capsys):
    message = exit_message(capsys, SFT_CONFIG, tmp_path, "--trainer.max_epochs", "not_a_number")
    assert "max_epochs" in message
    assert "valid objectives" not in message


class InterruptedSFT(SFT):
    """SFT that raises KeyboardInterrupt (as Ctrl-C pressed twice would) in its second step."""

    def training_step(self, context, batch):
        if context.global_step == 1:
            raise KeyboardInterrupt
        return super().training_step(context, batch)


def test_the_objective_hint_is_not_printed_after_ctrl_c(tmp_path, capsys):
    message = exit_message(capsys, SFT_CONFIG, tmp_path, "--trainer.max_epochs", "1",
                           "--model.objective", f"{__name__}.InterruptedSFT")
    assert "valid objectives" not in message


def test_an_unknown_objective_argument_lists_the_objectives_arguments(tmp_path, capsys):
    message = exit_message(capsys, IFT_CONFIG, tmp_path, "--model.objective.init_args.lamda", "0.1")
    assert "IFT does not accept 'lamda'" in message
    for name in ("lam", "gamma", "propagation_side"):
        assert re.search(rf"\b{name}\b", message.split("does not accept", 1)[1]), name
    assert "valid objectives" not in message


# ---------------------------------------------------------------------------- 7. one step count
def test_ppo_checkpoint_name_and_metrics_csv_count_the_same_steps(tmp_path):
    # 4 prompts x 2 samples in mini-batches of 4: 2 optimizer updates per training batch.
    ppo = ["--model.objective.init_args.samples_per_prompt", "2", "--model.objective.init_args.mini_batch_size", "4",
           "--model.objective.init_args.ppo_epochs", "1", "--model.objective.init_args.max_new_tokens", "3",
           "--trainer.callbacks.init_args.max_new_tokens", "3", "--trainer.logger", "CSVLogger",
           "--trainer.logger.init_args.save_dir", str(tmp_path)]
    cli = fit(PPO_CONFIG, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", *ppo)
    assert cli.trainer.global_step == 6
    name = os.path.basename(only_checkpoint(tmp_path))
    assert name == "epoch=0-step=6.ckpt"
    with open(Path(cli.trainer.log_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train_steps = [int(float(row["step"])) for row in rows if row.get("train/loss_step")]
    assert train_steps == [2, 4, 6]  # updates done after each batch, as in the checkpoint name
    assert max(int(float(row["step"])) for row in rows) == 6
    assert all(row["epoch"] != "" for row in rows)
