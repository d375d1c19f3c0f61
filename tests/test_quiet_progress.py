"""``ift fit`` is quiet by default (``--verbose`` brings third-party notices back, project
warnings always show), prints plain progress lines when stderr is not a terminal, and PPO's
rollout progress lives in the postfix of Lightning's own training bar."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

from factories import ppo_settings, quiet_trainer, tiny_arithmetic, tiny_module
from ift.callbacks import AnswerAccuracy, RolloutProgress, rollout_progress
from ift.callbacks.line_progress import LineProgressBar, line_progress_unless_terminal
from ift.callbacks.rollout_progress import RolloutBar
from ift.cli import main
from ift.modules.nonfinite import NonFiniteLossWarning
from ift.objectives import PPO
from ift.rewards import AnswerMatchReward
from ift.cli.quiet import take_verbose_flag

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

ROOT = Path(__file__).resolve().parent.parent
SFT_CONFIG = ROOT / "configs" / "arithmetic" / "sft.yaml"
TINY_RUN = ["--data.init_args.num_train", "16", "--data.init_args.num_val", "4", "--data.init_args.batch_size", "8",
            "--data.init_args.eval_batch_size", "4"]

# A piece of each third-party notice that a plain `ift fit` used to print.
NOTICES = {
    "Lightning tip": "💡 Tip",
    "GPU banner": "GPU available",
    "TPU banner": "TPU available",
    "tensorboardX notice": "`tensorboardX` has been removed",
    "LeafSpec deprecation": "LeafSpec",
    "eval-mode modules": "module(s) in eval mode",
    "transformers attention-mask advice": "attention mask is not set",
}
PROBE_WARNING = "probe: a project warning that must show"


class NoiseProbe(pl.Callback):
    """Used by the ``ift fit`` subprocesses below (``--trainer.callbacks+=test_quiet_progress.NoiseProbe``):
    makes the two notices a tiny SFT run does not cause by itself happen for real (a module in
    eval mode, ``generate`` on a batch without an attention mask where pad is EOS), and raises a
    project warning."""

    def on_fit_start(self, trainer, pl_module):
        pl_module.policy.lm_head.eval()  # as the reference of PPO/DPO is; Lightning warns about it

    def on_train_start(self, trainer, pl_module):
        import torch

        eos = pl_module.tokenizer.eos_token_id
        pl_module.policy.generate(input_ids=torch.tensor([[5, 6], [7, 8]]), max_new_tokens=1, do_sample=False,
                                  pad_token_id=eos, eos_token_id=eos)
        warnings.warn(PROBE_WARNING, NonFiniteLossWarning)


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """stderr+stdout of a tiny one-step ``ift fit`` through a pipe (not a terminal), plain and
    with ``--verbose``; both processes run at the same time."""
    root = tmp_path_factory.mktemp("quiet_cli")
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    processes = {}
    for mode, extra in (("plain", []), ("verbose", ["--verbose"])):
        args = [sys.executable, "-c", "import sys; from ift.cli import main; sys.exit(main())", "fit",
                "--config", str(SFT_CONFIG), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                "--trainer.default_root_dir", str(root / mode),
                "--trainer.callbacks+=test_quiet_progress.NoiseProbe", *TINY_RUN, *extra]
        processes[mode] = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
    outputs = {}
    for mode, process in processes.items():
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out
        outputs[mode] = out
    return outputs


def test_plain_fit_hides_third_party_notices(cli_outputs):
    shown = [name for name, text in NOTICES.items() if text in cli_outputs["plain"]]
    assert not shown, cli_outputs["plain"]


def test_verbose_brings_every_notice_back(cli_outputs):
    missing = [name for name, text in NOTICES.items() if text not in cli_outputs["verbose"]]
    assert not missing, cli_outputs["verbose"]


def test_project_warnings_still_show_by_default(cli_outputs):
    assert PROBE_WARNING in cli_outputs["plain"] and "NonFiniteLossWarning" in cli_outputs["plain"]


def test_piped_fit_prints_a_plain_progress_line_and_no_carriage_returns(cli_outputs):
    assert re.search(r"^step 1/1 \| epoch 1/100 \| loss [\d.]+ \|", cli_outputs["plain"], re.M), cli_outputs["plain"]
    assert "\r" not in cli_outputs["plain"]


def test_verbose_flag_is_taken_out_before_lightningcli_parses():
    assert take_verbose_flag(["fit", "--verbose", "--config", "x.yaml"]) == (["fit", "--config", "x.yaml"], True)
    assert take_verbose_flag(["fit", "--config", "x.yaml"]) == (["fit", "--config", "x.yaml"], False)


def test_quiet_filters_are_put_back_after_the_command(tmp_path):
    before = list(warnings.filters)
    main(["fit", "--config", str(SFT_CONFIG), "--trainer.fast_dev_run", "true",
          "--trainer.default_root_dir", str(tmp_path), *TINY_RUN])
    assert warnings.filters == before


# ---------------------------------------------------------------------------- plain progress lines
LINE = re.compile(r"^step (\d+)/(\d+) \| epoch (\d+)/(\d+) \| loss [-\d.e+]+ (\| val/accuracy [\d.]+ )?"
                  r"\| [\d.e+]+ steps/s \| ETA \d+:\d\d:\d\d$")


def fit_with_lines(stream, max_steps, every_n_steps=None, **trainer_args):
    bar = LineProgressBar(every_n_steps=every_n_steps, stream=stream)
    options = dict(max_steps=max_steps, enable_progress_bar=True, limit_val_batches=0)
    options.update(trainer_args)
    trainer = quiet_trainer(callbacks=[bar, AnswerAccuracy()], **options)
    trainer.fit(tiny_module(), datamodule=tiny_arithmetic())
    return [line for line in stream.getvalue().splitlines() if line]


def test_line_progress_prints_about_thirty_lines_with_step_epoch_loss_metric_speed_and_eta():
    # 4 batches an epoch; validation (val/accuracy) after epochs 5 and 10.
    lines = fit_with_lines(io.StringIO(), max_steps=40, max_epochs=1000, limit_val_batches=1,
                           check_val_every_n_epoch=5)
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == 20  # every ceil(40 / 30) = 2 steps
    matches = [LINE.match(line) for line in step_lines]
    assert all(matches), step_lines
    assert [int(m.group(1)) for m in matches] == list(range(2, 41, 2))
    assert {int(m.group(2)) for m in matches} == {40}
    assert int(matches[-1].group(3)) == 10 and int(matches[-1].group(4)) == 1000
    assert "val/accuracy" not in step_lines[0] and "val/accuracy" in step_lines[-1]
    validations = [line for line in lines if line.startswith("validation at step ")]
    assert len(validations) == 2 and "val/loss" in validations[0] and "val/accuracy" in validations[0]


def test_progress_every_sets_the_interval():
    lines = fit_with_lines(io.StringIO(), max_steps=10, every_n_steps=5)
    assert [line.split(" | ")[0] for line in lines] == ["step 5/10", "step 10/10"]


def test_line_progress_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="progress_every"):
        LineProgressBar(every_n_steps=0)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_keeps_lightnings_bar_and_a_pipe_gets_plain_lines():
    assert line_progress_unless_terminal({}, [], stream=FakeTerminal()) == []
    piped = line_progress_unless_terminal({}, [], every_n_steps=7, stream=io.StringIO())
    assert len(piped) == 1 and isinstance(piped[0], LineProgressBar) and piped[0].every_n_steps == 7
    # Switched off, or a bar of the user's own: nothing added.
    assert line_progress_unless_terminal({"enable_progress_bar": False}, [], stream=io.StringIO()) == []
    assert line_progress_unless_terminal({"callbacks": [TQDMProgressBar()]}, [], stream=io.StringIO()) == []


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_cli_picks_the_bar_by_whether_stdout_is_a_terminal(terminal, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeTerminal() if terminal else io.StringIO())
    cli = main(["fit", "--config", str(SFT_CONFIG), "--trainer.fast_dev_run", "true", "--progress_every", "3",
                "--trainer.default_root_dir", str(tmp_path), *TINY_RUN])
    bar = cli.trainer.progress_bar_callback
    if terminal:
        assert isinstance(bar, (TQDMProgressBar, RichProgressBar))
    else:
        assert isinstance(bar, LineProgressBar) and bar.every_n_steps == 3


def test_cli_adds_no_bar_when_the_progress_bar_is_switched_off(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cli = main(["fit", "--config", str(SFT_CONFIG), "--trainer.fast_dev_run", "true",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path), *TINY_RUN])
    assert cli.trainer.progress_bar_callback is None


# ---------------------------------------------------------------------------- PPO rollout progress
def ppo_module():
    return tiny_module(PPO(reward=AnswerMatchReward(), **ppo_settings()))


def test_rollout_bar_reports_phase_and_counts_then_the_update():
    shown = []
    with RolloutBar(shown.append, total=4) as bar:
        bar.set_phase("generation")
        bar.update(4)
        bar.set_phase("scoring")
        bar.set_postfix(score=0.5)
    assert shown == ["0/4", "generation 0/4", "generation 4/4", "scoring 4/4", "scoring 4/4, score 0.5",
                     "update 4/4, score 0.5"]


def test_rollout_progress_stays_on_the_training_bar_line_in_a_terminal(capsys):
    trainer = quiet_trainer(max_steps=6, enable_progress_bar=True, limit_val_batches=0,
                            callbacks=[TQDMProgressBar(), RolloutProgress()])
    trainer.fit(ppo_module(), datamodule=tiny_arithmetic())
    captured = capsys.readouterr()
    err = captured.out + captured.err  # Lightning's tqdm bar writes to stdout, the old rollout bar to stderr
    segments = [segment for segment in re.split(r"[\r\n]", err) if segment.strip()]
    rollout = [segment for segment in segments if "rollout" in segment]
    assert rollout, err
    # Every rollout update redraws Lightning's training bar ("Epoch 0: ..."), never a bar of its own.
    assert all(segment.startswith("Epoch ") for segment in rollout), rollout
    assert any("rollout=generation 0/" in segment for segment in rollout)
    assert any("rollout=update" in segment for segment in rollout)
    assert err.count("\n") <= 2  # the training bar's own final line(s), not lines per rollout


def test_rollout_progress_annotates_the_rich_bar_metrics(monkeypatch):
    shown = []
    original = RichProgressBar.refresh

    def recording_refresh(self, hard=False):
        if self._metric_component is not None and "rollout" in self._metric_component._metrics:
            shown.append(self._metric_component._metrics["rollout"])
        return original(self, hard)

    monkeypatch.setattr(RichProgressBar, "refresh", recording_refresh)
    trainer = quiet_trainer(max_steps=2, enable_progress_bar=True, limit_val_batches=0, callbacks=[RichProgressBar()])
    trainer.fit(ppo_module(), datamodule=tiny_arithmetic())
    assert shown and shown[0].startswith("0/") and any(text.startswith("update ") for text in shown)


def test_rollout_shows_nothing_extra_with_plain_lines():
    seen = []

    class Peek(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(type(rollout_progress(pl_module, total=2)))

    stream = io.StringIO()
    trainer = quiet_trainer(max_steps=4, enable_progress_bar=True, limit_val_batches=0,
                            callbacks=[LineProgressBar(every_n_steps=2, stream=stream), Peek()])
    trainer.fit(ppo_module(), datamodule=tiny_arithmetic())
    assert seen and RolloutBar not in seen
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("step ") for line in lines) and "rollout" not in stream.getvalue()


def test_rollout_progress_leave_is_accepted_with_a_warning():
    with pytest.warns(FutureWarning, match="leave"):
        RolloutProgress(leave=True)
