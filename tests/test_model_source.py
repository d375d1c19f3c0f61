"""A model name that is a typo of a preset or a missing folder is refused at once, naming the
presets and the folder looked for, before any hub access."""

from __future__ import annotations

import time

import pytest

from ift.core.model_factory import MODEL_PRESETS, build_tokenizer
from ift.core.model_source import check_pretrained_source, looks_like_a_path
from ift.modules import FineTuneModule


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Any hub access fails the test (the refusal must come first)."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the hub was tried")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_a_preset_typo_says_it_is_not_a_preset_and_lists_them_quickly():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"'tiny-gtp2' is not a preset \(did you mean 'tiny-gpt2'\?.*tiny-llama.*no folder"):
        FineTuneModule(model="tiny-gtp2")
    assert time.perf_counter() - start < 10


def test_a_missing_local_folder_is_named(tmp_path):
    missing = tmp_path / "checkpoints" / "export" / "final"
    with pytest.raises(FileNotFoundError, match=r"no folder .*export/final.* exists .*not a preset: "):
        FineTuneModule(model=str(missing))
    with pytest.raises(FileNotFoundError, match=r"tokenizer './nowhere/tok'"):
        build_tokenizer("./nowhere/tok", "tiny-gpt2")


def test_an_existing_folder_and_hub_ids_pass_the_check(tmp_path):
    check_pretrained_source(str(tmp_path), MODEL_PRESETS)
    for hub_id in ("gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        check_pretrained_source(hub_id, MODEL_PRESETS)


@pytest.mark.parametrize("name, is_path", [("./models/x", True), ("/abs/x", True), ("runs/export/final", True),
                                           ("x/", True), ("bad name", True), ("gpt2", False),
                                           ("owner/model-1.5B", False)])
def test_what_counts_as_a_path(name, is_path):
    assert looks_like_a_path(name) is is_path
