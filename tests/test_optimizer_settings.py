"""The optimizer a run builds has exactly the arguments its config gives plus that class's own
defaults: no argument of the module's default optimizer (AdamW's ``weight_decay: 0.01``,
``lr: 0.001``) is carried into another class.

For every shipped config (overlays laid over the config their header names): the resolved
config ``ift fit --print_config`` shows, and the optimizer that ``configure_optimizers``
builds from it (a FineTuneModule built by jsonargparse from the resolved ``optimizer`` on a
tiny local model, since some configs name hub models), are compared with the class's
signature defaults updated by the ``init_args`` written in the YAML files. Then the same for
a class swap on the command line, built by the ``ift`` CLI itself.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningArgumentParser

from ift.cli import IFTCLI, main
from ift.cli.resume_differences import config_differences, resolve_class
from ift.modules import FineTuneModule

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
OVERLAY_BASE = re.compile(r"ift fit --config (\S+\.yaml) --config (\S+\.yaml)")


def run_configs() -> List[List[Path]]:
    """Every shipped config that makes a run with a ``model`` section: a config with ``model``
    and ``data``, or an overlay with ``model`` laid over the config its header's command names."""
    runs = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict) or "model" not in config:
            continue
        if "data" in config and "seed_everything" in config:
            runs.append([path])
            continue
        relative = str(path.relative_to(ROOT))
        bases = [base for base, overlay in OVERLAY_BASE.findall(path.read_text()) if overlay == relative]
        assert bases, f"{relative}: an overlay whose header names no base config"
        runs.append([ROOT / bases[0], path])
    return runs


RUNS = run_configs()


def signature_defaults(cls: type) -> Dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def written_optimizer(paths: List[Path]) -> Dict[str, Any]:
    """The optimizer the YAML files write, laid over each other: class and given init_args
    (the module's documented default, AdamW with nothing given, when no file names one)."""
    class_path, given = "torch.optim.AdamW", {}
    for path in paths:
        spec = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("optimizer")
        if not spec:
            continue
        if resolve_class(spec["class_path"]) is not resolve_class(class_path):
            class_path, given = spec["class_path"], {}
        given.update(spec.get("init_args") or {})
    return {"class_path": class_path, "init_args": given}


def expected_arguments(written: Dict[str, Any]) -> Dict[str, Any]:
    cls = resolve_class(written["class_path"])
    assert inspect.isclass(cls), written
    return {**signature_defaults(cls), **written["init_args"]}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def assert_optimizer_has(optimizer, cls: type, expected: Dict[str, Any], where: str) -> None:
    assert type(optimizer) is cls, f"{where}: {type(optimizer).__name__}, not {cls.__name__}"
    compared = [key for key in expected if key in optimizer.defaults]
    assert {"lr"} <= set(compared), f"{where}: nothing compared ({sorted(optimizer.defaults)})"
    wrong = {key: (optimizer.defaults[key], expected[key]) for key in compared
             if not same(optimizer.defaults[key], expected[key])}
    assert not wrong, f"{where}: built with (value, expected) {wrong}"


def printed_config(capsys, args: List[str]) -> Dict[str, Any]:
    with pytest.raises(SystemExit) as stop:
        main(args + ["--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def module_from_resolved(optimizer_spec: Optional[Dict[str, Any]]) -> FineTuneModule:
    """A FineTuneModule on the tiny local model, built by jsonargparse (as the CLI builds the
    run's) from the resolved ``optimizer``."""
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_class_arguments(FineTuneModule, "model")
    config = parser.parse_object({"model": {"model": "tiny-gpt2", "optimizer": optimizer_spec}})
    return parser.instantiate(config).model


@pytest.mark.parametrize("paths", RUNS, ids=["+".join(str(p.relative_to(CONFIGS)) for p in paths) for paths in RUNS])
def test_every_shipped_config_builds_exactly_its_optimizer(paths, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name their data files relative to the repository
    args = ["fit"] + [word for path in paths for word in ("--config", str(path.relative_to(ROOT)))]
    resolved = printed_config(capsys, args)["model"]["optimizer"]
    written = written_optimizer(paths)
    expected = expected_arguments(written)
    where = " + ".join(str(p.relative_to(ROOT)) for p in paths)
    if resolved is not None:  # optimizer: null is the module's default, AdamW with its defaults
        assert resolve_class(resolved["class_path"]) is resolve_class(written["class_path"]), where
        invented = {key: (value, expected.get(key)) for key, value in (resolved.get("init_args") or {}).items()
                    if key not in expected or not same(value, expected[key])}
        assert not invented, f"{where}: --print_config shows (value, expected) {invented}"
    else:
        assert written["init_args"] == {} and resolve_class(written["class_path"]) is resolve_class("torch.optim.AdamW")
    optimizer = module_from_resolved(resolved).configure_optimizers()
    assert_optimizer_has(optimizer, resolve_class(written["class_path"]), expected, where)


def test_the_shipped_configs_are_all_checked():
    names = {paths[-1].name for paths in RUNS}
    assert {"dpo.yaml", "ift_ultrachat.yaml", "smollm2_local.yaml", "reft_gsm8k.yaml", "sft.yaml"} <= names
    assert len(RUNS) >= 30


def built_by_the_cli(args: List[str]) -> FineTuneModule:
    cli = IFTCLI(FineTuneModule, pl.LightningDataModule, subclass_mode_data=True, run=False, save_config_callback=None,
                 args=args + ["--data", "ift.tasks.arithmetic.ArithmeticDataModule", "--trainer.logger", "false"])
    return cli.model


@pytest.mark.parametrize("swap", [
    ["--model.optimizer", "torch.optim.RMSprop", "--model.optimizer.lr", "0.01"],
    ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.1"],
    ["--model.optimizer", "RMSprop"],  # no lr given: RMSprop's own, not AdamW's
    ["--model.optimizer", '{"class_path": "torch.optim.Adagrad", "init_args": {"lr": 0.05}}'],
])
def test_a_class_swap_on_the_command_line_builds_exactly_what_was_given(swap):
    module = built_by_the_cli(swap)
    class_path = swap[1] if not swap[1].startswith("{") else yaml.safe_load(swap[1])["class_path"]
    cls = resolve_class(class_path if "." in class_path else f"torch.optim.{class_path}")
    given = {}
    if swap[1].startswith("{"):
        given = yaml.safe_load(swap[1])["init_args"]
    for flag, value in zip(swap[2::2], swap[3::2]):
        given[flag.rsplit(".", 1)[1]] = float(value)
    expected = {**signature_defaults(cls), **given}
    assert_optimizer_has(module.configure_optimizers(), cls, expected, " ".join(swap))


def test_no_optimizer_given_is_adamw_with_its_own_defaults():
    module = built_by_the_cli([])
    import torch

    assert_optimizer_has(module.configure_optimizers(), torch.optim.AdamW, signature_defaults(torch.optim.AdamW),
                         "no optimizer")


def test_resume_compares_the_default_optimizer_as_adamw_with_its_defaults():
    """A checkpoint's run config may record the default as ``optimizer: null`` (now) or as
    AdamW with every default spelled out (before): both are the same optimizer, and another
    class beside either is refused."""
    import torch

    spelled = {"optimizer": {"class_path": "torch.optim.AdamW",
                             "init_args": {key: list(value) if isinstance(value, tuple) else value
                                           for key, value in signature_defaults(torch.optim.AdamW).items()}}}
    null = {"optimizer": None}
    for saved, current in ((spelled, null), (null, spelled), (null, null)):
        assert config_differences(saved, current) == ([], [])
    sgd = {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}}
    for saved, current in ((null, sgd), (sgd, null)):
        refused, _ = config_differences(saved, current)
        assert [entry[0] for entry in refused] == ["model.optimizer.class_path"]
    # A learning rate given on resume is a difference from the default's, and honoured.
    adamw_lr = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-4}}}
    refused, honoured = config_differences(null, adamw_lr)
    assert refused == [] and [entry[0] for entry in honoured] == ["model.optimizer.init_args.lr"]


def test_an_optimizer_argument_without_a_class_says_to_name_the_class(capsys):
    """No default class (see ift/modules/default_optimizer.py): ``--model.optimizer.lr`` alone
    cannot be parsed, and the error says how to write it instead of leaving jsonargparse's
    Union error alone."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--model.model", "tiny-gpt2", "--data", "ift.tasks.arithmetic.ArithmeticDataModule",
              "--model.optimizer.lr", "0.01", "--print_config"])
    assert stop.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "ift: model.optimizer names no class" in err and "--model.optimizer torch.optim.AdamW" in err, err


@pytest.mark.parametrize("flags", [["--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.1"],
                                   ["--lr_scheduler", "torch.optim.lr_scheduler.ConstantLR"]])
def test_lightnings_top_level_optimizer_flags_are_refused_not_left_to_replace_the_modules(flags, tmp_path):
    """Lightning's ``--optimizer`` would silently drop the config's ``model.optimizer``."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(CONFIGS / "arithmetic" / "sft.yaml"), "--trainer.max_steps", "1",
              "--trainer.default_root_dir", str(tmp_path), *flags])
    assert f"{flags[0]} -> --model.{flags[0][2:]}" in str(stop.value.code)
