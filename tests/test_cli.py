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


def test_help_lists_the_other_commands(capsys):
    from ift.cli.commands import COMMANDS

    assert run_cli(["--help"]) in (0, None)
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"ift {name} --help" in out


# ---------------------------------------------------------------- the commands of ift.cli.commands
# Each command: options to parse, a phrase of one field's docstring and that field's default
# as --help shows it, and the values the options give.
COMMAND_CASES = {
    "predict": (["--policy", "tiny-gpt2", "--data", "prompts.jsonl", "--max_new_tokens", "8", "--overwrite",
                 "--answer_trigger", "####", "The answer is", "--device", "cpu"],
                "most tokens generated per response", "default: 64",
                {"max_new_tokens": 8, "overwrite": True, "answer_trigger": ["####", "The answer is"]}),
    "frozen-lake": (["--policy", "mlp", "--seeds", "3", "--objectives", "SFT,DPO", "--eval_every", "5"],
                    "seeds per objective", "default: 5", {"policy": "mlp", "seeds": 3, "eval_every": 5}),
    "code-pass-rate": (["--benchmark", "humaneval", "--model", "tiny-gpt2", "--samples", "4", "--temperature",
                        "0.8", "--k", "1", "4", "--chat", "--no_stops"],
                       "completions per problem", "default: builtin",
                       {"samples": 4, "k": [1, 4], "chat": True, "stops": False}),
    "code-pairs": (["--strong", "tiny-gpt2", "--weak", "other", "--output", "pairs.jsonl", "--samples", "2",
                    "--split", "val", "--strong_temperature", "0.4"],
                   "programs sampled per problem from each source", "default: 4",
                   {"samples": 2, "split": "val", "strong_temperature": 0.4, "weak": "other"}),
}


def _command(name):
    from ift.cli.commands import COMMANDS

    return COMMANDS[name]


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_command_help_comes_from_the_field_docstrings(name, capsys):
    _, phrase, default, _ = COMMAND_CASES[name]
    assert run_cli([name, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"usage: ift {name}" in out and phrase in out and default in out
    assert "--config CONFIG" in out and "--print_config" in out


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_command_options_parse_to_their_values(name):
    options, _, _, values = COMMAND_CASES[name]
    parsed = _command(name).parse(options)
    assert {key: getattr(parsed, key) for key in values} == values


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_print_config_is_a_config_file_that_gives_the_same_settings(name, tmp_path, capsys):
    options = COMMAND_CASES[name][0]
    assert run_cli([name, *options, "--print_config"]) == 0  # printed, nothing run
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)  # YAML
    config = tmp_path / "settings.yaml"
    config.write_text(printed)
    assert _command(name).parse(["--config", config]) == _command(name).parse(options)


def test_a_config_file_gives_the_same_settings_as_the_flags(tmp_path):
    config = tmp_path / "predict.yaml"
    config.write_text(yaml.safe_dump({"policy": "tiny-gpt2", "data": "prompts.jsonl", "max_new_tokens": 8,
                                      "answer_trigger": ["####"], "overwrite": True}))
    flags = ["--policy", "tiny-gpt2", "--data", "prompts.jsonl", "--max_new_tokens", "8", "--answer_trigger", "####",
             "--overwrite"]
    predict = _command("predict")
    assert predict.parse(["--config", str(config)]) == predict.parse(flags)
    # Options after --config override it.
    assert predict.parse(["--config", str(config), "--max_new_tokens", "3"]).max_new_tokens == 3


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_an_unknown_option_is_rejected_by_name(name, capsys):
    assert run_cli([name, *COMMAND_CASES[name][0], "--no_such_option", "1"]) == 2
    assert "--no_such_option" in capsys.readouterr().err


def test_options_may_be_spelt_with_dashes():
    pairs = _command("code-pairs")
    dashed = pairs.parse(["--strong", "a", "--output", "p.jsonl", "--max-new-tokens", "9", "--strong-temperature",
                          "0.3", "--max-pairs-per-problem=2"])
    assert (dashed.max_new_tokens, dashed.strong_temperature, dashed.max_pairs_per_problem) == (9, 0.3, 2)
    assert _command("code-pass-rate").parse(["--benchmark", "humaneval", "--model", "m", "--no-stops"]).stops is False


def test_a_command_is_an_entry_of_the_registry(monkeypatch, capsys):
    import dataclasses

    import ift.cli as cli
    from ift.cli.commands import COMMANDS, Command

    @dataclasses.dataclass
    class Twice:
        """Doubles a number.

        Attributes:
            number: the number doubled.
        """

        number: int = 2

        def __post_init__(self):
            if self.number < 0:
                raise ValueError("--number must be >= 0")

    monkeypatch.setitem(COMMANDS, "twice", Command("twice", Twice, lambda args: {"result": 2 * args.number},
                                                   summary="doubles a number"))
    assert cli.main(["twice", "--number", "4"]) == {"result": 8}  # called from Python: the result
    monkeypatch.setattr(sys, "argv", ["ift", "twice"])
    assert cli.main() is None  # the console script: sys.exit(None) is status 0
    assert run_cli(["twice", "--number", "-1"]) == 2
    assert "--number must be >= 0" in capsys.readouterr().err
    assert run_cli(["twice", "--help"]) == 0
    assert "the number doubled. (type: int, default: 2)" in " ".join(capsys.readouterr().out.split())
