"""The ``ift`` command through ``ift.cli.main``: every shipped config trains one step,
``--print_config`` shows the objective's class_path, short names resolve, and unknown
objective names fail with the list of valid ones."""

import sys
from pathlib import Path

import pytest
import yaml

from ift.cli import main
from ift.objectives import available_objectives

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs" / "arithmetic").glob("*.yaml"))
SFT_CONFIG = ROOT / "configs" / "arithmetic" / "sft.yaml"
IFT_CONFIG = ROOT / "configs" / "arithmetic" / "ift.yaml"


def run_cli(args):
    """``main(args)``; returns the SystemExit code (None when it returned normally)."""
    try:
        main([str(a) for a in args])
    except SystemExit as stop:
        return stop.code
    return None


def test_shipped_configs_include_sft_and_ift():
    names = {path.name for path in CONFIGS}
    assert {"sft.yaml", "ift.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[path.name for path in CONFIGS])
def test_fit_fast_dev_run_with_every_config(config, tmp_path):
    cli = main(["fit", "--config", str(config), "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path)])
    trainer = cli.trainer
    assert trainer.state.finished
    assert trainer.global_step >= 1 or not cli.model.automatic_optimization
    logged = trainer.callback_metrics
    assert "train/loss" in logged or any(key.startswith("train/") for key in logged)
    for key, value in logged.items():
        assert value.isfinite().all(), f"{config.name}: {key} = {value}"
    # The objective named in the YAML is the one that trained.
    written = yaml.safe_load(config.read_text())["model"]["objective"]["class_path"]
    assert type(cli.model.objective).__name__ == written.split(".")[-1]


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_subcommands(subcommand, tmp_path):
    cli = main([subcommand, "--config", str(SFT_CONFIG), "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", str(tmp_path), "--data.init_args.num_train", "64"])
    stage = "val" if subcommand == "validate" else "test"
    assert f"{stage}/loss" in cli.trainer.callback_metrics


def test_print_config_shows_the_objective_class_path(capsys):
    assert run_cli(["fit", "--config", IFT_CONFIG, "--print_config"]) in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    objective = printed["model"]["objective"]
    assert objective["class_path"].split(".")[-1] == "IFT"
    assert objective["class_path"].startswith("ift.")
    assert objective["init_args"]["lam"] == pytest.approx(0.2)
    assert objective["init_args"]["gamma"] == pytest.approx(0.95)
    assert printed["data"]["class_path"].endswith("ArithmeticDataModule")


@pytest.mark.parametrize("short", ["SFT", "IFT"])
def test_short_objective_names_resolve(short, capsys):
    assert run_cli(["fit", "--config", SFT_CONFIG, "--model.objective", short, "--print_config"]) in (0, None)
    objective = yaml.safe_load(capsys.readouterr().out)["model"]["objective"]
    assert objective["class_path"].startswith("ift.") and objective["class_path"].split(".")[-1] == short


def test_short_name_with_init_args_on_the_command_line(capsys):
    args = ["fit", "--config", SFT_CONFIG, "--model.objective", "IFT", "--model.objective.init_args.lam", "0.35",
            "--model.objective.init_args.propagation_side", "right", "--print_config"]
    assert run_cli(args) in (0, None)
    init_args = yaml.safe_load(capsys.readouterr().out)["model"]["objective"]["init_args"]
    assert init_args["lam"] == pytest.approx(0.35)
    assert init_args["propagation_side"] == "right"


def _assert_lists_valid_objectives(text):
    for name in available_objectives():
        assert name in text, f"{name} missing from: {text}"
    assert "SFT" in text and "IFT" in text


def test_unknown_objective_on_the_command_line(capsys):
    code = run_cli(["fit", "--config", SFT_CONFIG, "--model.objective", "Foo", "--trainer.fast_dev_run", "true"])
    assert code not in (0, None)
    message = (code if isinstance(code, str) else "") + capsys.readouterr().err
    assert "Foo" in message
    _assert_lists_valid_objectives(message)


def test_unknown_objective_in_a_yaml_config(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"objective": {"class_path": "Foo"}}}))
    code = run_cli(["fit", "--config", SFT_CONFIG, "--config", bad, "--trainer.fast_dev_run", "true",
                    "--trainer.default_root_dir", tmp_path])
    assert code not in (0, None)
    message = (code if isinstance(code, str) else "") + capsys.readouterr().err
    assert "Foo" in message
    _assert_lists_valid_objectives(message)


def test_help_lists_the_subcommands(capsys):
    assert run_cli(["--help"]) in (0, None)
    out = capsys.readouterr().out
    for word in ("fit", "validate", "test"):
        assert word in out


def test_an_extra_command_run_from_the_console_exits_with_status_0(monkeypatch):
    import types

    import ift.cli as cli

    fake = types.ModuleType("fake_extra_command")
    fake.main = lambda argv: {"result": 1.0}  # what ift frozen-lake and code-pass-rate return
    monkeypatch.setitem(sys.modules, "fake_extra_command", fake)
    monkeypatch.setitem(cli.EXTRA_COMMANDS, "fake", "fake_extra_command:main")
    monkeypatch.setattr(sys, "argv", ["ift", "fake"])
    assert cli.main() is None  # sys.exit(None) is status 0
    assert cli.main(["fake"]) == {"result": 1.0}  # called from Python: the result
