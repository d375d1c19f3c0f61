"""Every path a run reads is checked before anything is built (issue 26, item 5).

The whole class: every shipped config is resolved as ``ift fit`` resolves it, its
path-valued settings are found by walking the resolved config (not listed by hand), and each
input among them, replaced by a missing path, is refused by the pre-flight with a message
naming the setting and the path. Then the reported case end to end: the PPO config run
before the reward model exists stops before the policy loads, naming the command that
writes the folder.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import pytorch_lightning as pl
import yaml

from eco_helpers import ROOT
from ift.cli import IFTCLI, main
from ift.modules import FineTuneModule

CONFIGS = ROOT / "configs"
#: Suffixes of files a config may name.
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gguf", ".ckpt", ".safetensors", ".yaml")
#: Arguments that name a folder the run writes (checked for writability by ift.cli.outputs, not for existence).
OUTPUT_ARGUMENTS = {"dirpath", "output_dir", "default_root_dir", "save_dir"}
CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # one per resolved config


# ---------------------------------------------------------------------------- resolving the shipped configs
class _Parsed(Exception):
    pass


class _ParseOnly(IFTCLI):
    """``ift fit``'s parser, stopped where the classes would be built (and the pre-flight run)."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config[self.subcommand])


def resolve(config_files: List[str]) -> Tuple[Dict[str, Any], list]:
    """The resolved config of ``ift fit --config A [--config B]`` (as a dict), and its config files."""
    args = ["fit"] + [word for path in config_files for word in ("--config", path)]
    with pytest.raises(_Parsed) as parsed:
        _ParseOnly(FineTuneModule, pl.LightningDataModule, subclass_mode_data=True, args=args)
    namespace = parsed.value.args[0]
    return namespace.as_dict(), namespace.get("config")


def shipped_runs() -> List[List[str]]:
    """One ``--config`` list per shipped ``ift fit`` config; an overlay (a file laid over
    another) as its header's command gives it, e.g. ``reft_gsm8k.yaml`` + ``smollm2_local.yaml``."""
    runs = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        relative = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        top = set(yaml.safe_load(text) or {})
        if not top & {"trainer", "model", "data"}:
            continue  # a W&B sweep, not an ift fit config
        command = [relative]
        for match in re.finditer(r"ift fit((?:\s+--config\s+\S+)+)", text):
            files = re.findall(r"--config\s+(\S+)", match.group(1))
            if relative in files:
                command = files
                break
        runs.append(command)
    return runs


RUNS = shipped_runs()


@pytest.fixture(scope="module")
def resolved() -> Dict[str, Tuple[Dict[str, Any], list]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # the configs' relative paths start at the repository root
        return {" + ".join(run): resolve(run) for run in RUNS}


def looks_like_a_path(value: Any) -> bool:
    """This test's own notion of a path-valued setting: a file suffix, or a slash that a hub
    id (``owner/name``, owner not a folder here) would not have."""
    if not isinstance(value, str) or "\n" in value:
        return False
    if value.lower().endswith(FILE_SUFFIXES):
        return True
    if "/" not in value:
        return False
    return (value.startswith(("./", "../", "/", "~", "runs/")) or value.count("/") > 1
            or (ROOT / value.split("/", 1)[0]).is_dir())


def path_settings(node: Any, key: str = "", where: tuple = ()) -> Iterator[Tuple[str, tuple, str]]:
    """``(dotted setting, location in the dict, value)`` for every path-valued leaf."""
    if isinstance(node, dict):
        for name, value in node.items():
            if not key and name == "config":
                continue  # the config files themselves
            yield from path_settings(value, f"{key}.{name}" if key else str(name), where + (name,))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from path_settings(value, f"{key}[{index}]", where + (index,))
    elif looks_like_a_path(node):
        yield key, where, node


def replaced(config: Dict[str, Any], where: tuple, value: str) -> Dict[str, Any]:
    changed = copy.deepcopy(config)
    node = changed
    for step in where[:-1]:
        node = node[step]
    if isinstance(node, tuple):
        raise AssertionError(f"a path inside a tuple at {where}")
    node[where[-1]] = value
    return changed


def is_output(setting: str) -> bool:
    return re.split(r"[.\[]", setting)[-1] in OUTPUT_ARGUMENTS


# ---------------------------------------------------------------------------- the whole class
def test_the_walk_finds_the_path_settings_of_the_shipped_configs(resolved):
    found = {setting for config, _ in resolved.values() for setting, _, _ in path_settings(config)}
    inputs = {setting for setting in found if not is_output(setting)}
    # A guard on the walk, not the list the checks run over: it must reach each kind of input.
    assert "model.objective.init_args.reward.init_args.model_name_or_path" in inputs
    assert {"data.init_args.train_data", "data.init_args.val_data"} <= inputs
    assert any(".dataset_kwargs.data_files." in setting for setting in inputs)
    assert any(is_output(setting) for setting in found)


def test_every_input_path_of_every_shipped_config_is_checked_before_the_run(resolved, tmp_path, monkeypatch):
    from ift.cli.input_paths import InputPathError, check_input_paths, input_path_problems

    monkeypatch.chdir(ROOT)
    checked = 0
    for name, (config, files) in resolved.items():
        # As shipped: nothing that exists is refused (hub ids and presets pass offline).
        for setting, value, why in input_path_problems(config):
            assert not (ROOT / str(value)).exists(), f"{name}: {setting} = {value} exists but was refused: {why}"
        for setting, where, value in path_settings(config):
            missing = str(tmp_path / "missing" / Path(value).name)
            problems = input_path_problems(replaced(config, where, missing))
            named = [problem for problem in problems if problem[0] == setting]
            if is_output(setting):
                assert not named, f"{name}: {setting} is written by the run, yet refused when missing: {named}"
                continue
            assert named, f"{name}: {setting} = {missing} (missing) passed the pre-flight"
            with pytest.raises(InputPathError) as stop:
                check_input_paths(replaced(config, where, missing), files)
            message = str(stop.value.code)
            assert setting in message and missing in message, message
            checked += 1
    # The generated tasks (arithmetic, Frozen Lake, code) read no files; the reward, chat and math configs do.
    assert checked >= 6


# ---------------------------------------------------------------------------- the reported case, end to end
@pytest.fixture
def no_model_loading(monkeypatch):
    """Building the module's tokenizer or policy fails the test: the pre-flight must come first."""
    import ift.modules.finetune as finetune

    def loaded(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the paths were checked")

    monkeypatch.setattr(finetune, "build_tokenizer", loaded)
    monkeypatch.setattr(finetune, "build_policy", loaded)


def absolute_data(config: Path) -> list:
    init = yaml.safe_load(config.read_text())["data"]["init_args"]
    return [word for key in ("train_data", "val_data") if init.get(key)
            for word in (f"--data.init_args.{key}", str(ROOT / init[key]))]


def test_ppo_before_its_reward_model_stops_before_loading_naming_the_command_that_writes_it(
        tmp_path, monkeypatch, no_model_loading):
    monkeypatch.chdir(tmp_path)  # no runs/reward_model/final here
    config = CONFIGS / "reward" / "ppo_with_reward_model.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), *CPU, "--trainer.fast_dev_run", "true",
              "--trainer.default_root_dir", str(tmp_path / "run"), *absolute_data(config)])
    message = str(stop.value.code)
    assert "model.objective.init_args.reward.init_args.model_name_or_path" in message
    assert str(tmp_path / "runs" / "reward_model" / "final") in message
    assert f"ift fit --config {CONFIGS / 'reward' / 'reward_model.yaml'}" in message


def test_the_command_is_given_as_typed_from_the_folder_holding_the_configs(tmp_path, monkeypatch):
    import shutil

    from ift.cli.input_paths import InputPathError, check_input_paths

    shutil.copytree(CONFIGS / "reward", tmp_path / "configs" / "reward")
    monkeypatch.chdir(tmp_path)  # as a user in a checkout: configs/ here, no runs/ yet
    config, files = resolve(["configs/reward/ppo_with_reward_model.yaml"])
    with pytest.raises(InputPathError) as stop:
        check_input_paths(config, files)
    message = str(stop.value.code)
    assert "model_name_or_path = runs/reward_model/final" in message
    assert "It is written by `ift fit --config configs/reward/reward_model.yaml`" in message
    reward = ("model", "objective", "init_args", "reward", "init_args", "model_name_or_path")
    with pytest.raises(InputPathError) as stop:
        check_input_paths(replaced(config, reward, "runs/other_reward_model/final"), files)
    assert "It looks like the output of an earlier `ift fit` run" in str(stop.value.code)


def test_the_reward_model_checks_its_folder_when_built_from_python(tmp_path, monkeypatch):
    from ift.rewards import RewardModelScore

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"RewardModelScore 'runs/reward_model/final': no folder .*"
                                                r"runs/reward_model/final exists.*RewardModeling"):
        RewardModelScore("runs/reward_model/final")
    RewardModelScore("owner/reward-model")  # a hub id: left to from_pretrained, nothing loaded yet


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_missing_data_files_are_all_named_before_the_model_loads(tmp_path, monkeypatch, no_model_loading):
    monkeypatch.chdir(tmp_path)
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "1+1=", "response": "2"}])
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--model.model", "tiny-gpt2", *CPU, "--data", "ift.data.PromptResponseDataModule",
              "--data.train_data", train, "--data.val_data", "data/val.jsonl"])
    message = str(stop.value.code)
    assert "data.init_args.val_data" in message and str(tmp_path / "data" / "val.jsonl") in message
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--model.model", "tiny-gpt2", *CPU, "--data", "ift.data.PromptResponseDataModule",
              "--data.train_data", "json", "--data.dataset_kwargs", json.dumps({"data_files": {"train": "t.jsonl"}})])
    message = str(stop.value.code)
    assert "data.init_args.dataset_kwargs.data_files.train" in message and str(tmp_path / "t.jsonl") in message


def test_a_missing_data_files_entry_is_named_by_the_data_module_not_as_train_data(tmp_path):
    from ift.data import PromptResponseDataModule

    data = PromptResponseDataModule(train_data="json", dataset_kwargs={"data_files": {"train": str(tmp_path / "t.jsonl")}},
                                    tokenizer="char")
    with pytest.raises(FileNotFoundError) as error:
        data.setup("fit")
    assert "data_files.train" in str(error.value) and "fix data.init_args.train_data" not in str(error.value)


def test_a_name_written_as_a_local_path_must_exist_and_a_hub_id_is_left_to_the_hub(tmp_path, monkeypatch):
    from ift.cli.input_paths import input_path_problems

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for local in ("models/tiny", "./tiny", "runs/export", str(tmp_path / "tiny"), "~/no-such-ift-model-folder"):
        problems = input_path_problems({"model": {"model": local}})
        assert [setting for setting, _, _ in problems] == ["model.model"], local
    for hub_id in ("owner/tiny", "gpt2", "Qwen/Qwen2.5-0.5B-Instruct"):
        assert input_path_problems({"model": {"model": hub_id}, "data": {"init_args": {"train_data": hub_id}}}) == []
