"""A class named over a config's other class keeps the config's shared arguments
(jsonargparse's rule); ``ift`` says which, before the run (ift/cli/class_swaps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ift.cli import main
from ift.cli.class_swaps import carried_arguments_notices

ROOT = Path(__file__).resolve().parent.parent
PPO_CONFIG = "configs/arithmetic/ppo.yaml"


def printed_objective(capsys, args):
    with pytest.raises(SystemExit) as stop:
        main(["fit", *args, "--print_config"])
    assert stop.value.code in (0, None)
    captured = capsys.readouterr()
    return yaml.safe_load(captured.out)["model"]["objective"], captured.err


def test_every_argument_the_swap_keeps_is_named_with_its_value(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    objective, err = printed_objective(capsys, ["--config", PPO_CONFIG, "--model.objective", "GRPO"])
    notice = [line for line in err.splitlines() if line.startswith("ift: model.objective: GRPO")]
    assert len(notice) == 1, err
    # What the notice names is what the run gets: GRPO's own defaults are k3 and no mini-batches.
    assert objective["init_args"]["kl_estimator"] == "k1" and 'kl_estimator="k1"' in notice[0]
    assert objective["init_args"]["mini_batch_size"] == 64 and "mini_batch_size=64" in notice[0]
    assert "PPO (configs/arithmetic/ppo.yaml)" in notice[0]
    assert "vf_coef" not in notice[0]  # PPO's own, dropped by the swap: nothing to say


def test_an_argument_given_again_is_not_called_carried(monkeypatch):
    monkeypatch.chdir(ROOT)
    notices = carried_arguments_notices(["--config", PPO_CONFIG, "--model.objective", "GRPO",
                                         "--model.objective.kl_estimator", "k3"])
    assert len(notices) == 1 and "kl_estimator" not in notices[0] and "mini_batch_size" in notices[0]


def test_a_swap_between_configs_is_named_too(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    overlay = tmp_path / "rmsprop.yaml"
    overlay.write_text("model:\n  optimizer:\n    class_path: torch.optim.RMSprop\n")
    notices = carried_arguments_notices(["--config", "configs/arithmetic/sft.yaml", "--config", str(overlay)])
    assert len(notices) == 1 and "RMSprop" in notices[0] and "lr=" in notices[0]


def test_no_notice_without_a_swap(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert carried_arguments_notices(["--config", PPO_CONFIG]) == []
    assert carried_arguments_notices(["--config", PPO_CONFIG, "--model.objective.kl_coef", "0.1"]) == []
    assert carried_arguments_notices(["--config", PPO_CONFIG, "--model.objective", "PPO"]) == []
