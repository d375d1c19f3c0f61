"""Turn the ``model`` / ``tokenizer`` arguments of FineTuneModule into real objects.

``model`` may be a preset name (``tiny-gpt2``, ``tiny-llama``, ``gpt2-100m``: built
locally with random weights), a hub id or local folder (``AutoModelForCausalLM.from_pretrained``),
a GGUF model (a ``.gguf`` path, ``{folder: ..., gguf_file: ...}`` or a pretrained preset
such as ``smollm2-135m-instruct``: :mod:`ift.core.gguf_source`), a dict holding a
``model_type`` plus config fields (built locally with random weights), or a ready
``nn.Module``.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional, Union

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ift.core.gguf_source import PRETRAINED_PRESETS, gguf_source, is_gguf_spec, load_gguf_policy, load_gguf_tokenizer
from ift.core.model_source import ModelFolderError, check_model_folder, check_pretrained_source, check_tokenizer_folder
from ift.core.tokenizer import build_char_tokenizer

CHAR_TOKENIZER = "char"

# Small, dropout-free configs: tests, defaults and benchmarks run on a laptop CPU.
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny-gpt2": dict(
        model_type="gpt2", n_layer=2, n_embd=64, n_head=2, n_positions=512,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
    ),
    "tiny-llama": dict(
        model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False,
    ),
    "small-gpt2": dict(
        model_type="gpt2", n_layer=4, n_embd=128, n_head=4, n_positions=512,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    ),
    # About 100M parameters with a 50k vocabulary (GPT-2 small without dropout).
    "gpt2-100m": dict(
        model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024,
        vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    ),
}

ModelSpec = Union[str, Dict[str, Any], torch.nn.Module]


def preset_names() -> list:
    """Every preset name: the untrained configs, then the pretrained (GGUF) ones."""
    return [*MODEL_PRESETS, *PRETRAINED_PRESETS]


def is_local_config(model: ModelSpec) -> bool:
    """True when the model is built from a config here rather than loaded from weights."""
    if is_gguf_spec(model):
        return False
    return isinstance(model, dict) or (isinstance(model, str) and model in MODEL_PRESETS)


def check_model_spec(model: ModelSpec, what: str = "model") -> None:
    """Check, without loading anything, that ``model`` can be found: a GGUF file exists (a
    preset's package is installed), a local folder holds ``config.json``, a name written as a
    path exists, a name is not a typo of a preset. A hub id passes (it cannot be checked
    offline). Raises what :func:`gguf_source` and :mod:`ift.core.model_source` raise, naming
    ``what`` (the setting) and the path."""
    if isinstance(model, torch.nn.Module) or (isinstance(model, dict) and not is_gguf_spec(model)):
        return  # built here, nothing to find
    if is_gguf_spec(model):
        gguf_source(model, what)
        return
    if not isinstance(model, str) or model in MODEL_PRESETS:
        return
    if os.path.isfile(os.path.expanduser(model)):
        raise ModelFolderError(
            f"{what} {model!r} is a file, not a model folder or a .gguf file; a Lightning checkpoint (.ckpt) is "
            f"resumed with --ckpt_path, read by ift predict, or exported with ift.callbacks.ExportPretrained")
    check_pretrained_source(model, preset_names(), what)
    if os.path.isdir(os.path.expanduser(model)):
        check_model_folder(model, what)


def check_tokenizer_spec(tokenizer: Any, what: str = "tokenizer") -> None:
    """The same for a ``tokenizer`` argument (None: the model's, checked with the model):
    ``char``/``char:...``, a GGUF file, a local folder holding a tokenizer, or a hub id."""
    if not isinstance(tokenizer, (str, dict)) or (
            isinstance(tokenizer, str) and (tokenizer == CHAR_TOKENIZER or tokenizer.startswith(CHAR_TOKENIZER + ":"))):
        return
    if isinstance(tokenizer, str) and tokenizer in MODEL_PRESETS:
        raise ValueError(f"{what} {tokenizer!r} is an untrained model preset, which has no tokenizer of its own: give "
                         f"'char' (what the presets use when tokenizer is left out), a folder, a .gguf file or a hub id")
    if is_gguf_spec(tokenizer):
        gguf_source(tokenizer, what)
        return
    if not isinstance(tokenizer, str):
        return
    check_pretrained_source(tokenizer, preset_names(), what)
    if os.path.isdir(os.path.expanduser(tokenizer)):
        check_tokenizer_folder(tokenizer, what)


def build_tokenizer(tokenizer: Optional[Union[str, PreTrainedTokenizerBase]], model: ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer named by ``tokenizer``, or the one that goes with ``model``.

    ``"char"`` is the built-in character tokenizer; ``"char:CHARS"`` the same over exactly
    the characters ``CHARS`` (plus pad/eos/bos/unk), e.g. ``"char:SFHG/:LDRU0123456789"``.
    A GGUF model (a ``.gguf`` path, ``{folder, gguf_file}`` or a pretrained preset) names
    the tokenizer stored in that file, chat template included.
    ``None`` means: the model's own tokenizer when ``model`` is a hub id, folder or GGUF
    model, else the built-in character tokenizer. A tokenizer without a pad token pads with EOS.
    """
    gguf = gguf_source(tokenizer, "tokenizer") if tokenizer is not None else (
        gguf_source(model) if isinstance(model, (str, dict)) else None)
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        result = tokenizer
    elif gguf is not None:
        result = load_gguf_tokenizer(gguf, "tokenizer" if tokenizer is not None else "model")
    elif isinstance(tokenizer, str) and tokenizer.startswith(CHAR_TOKENIZER + ":"):
        # "char:ABC..." = the character tokenizer over exactly these characters (e.g. Frozen Lake's).
        characters = tokenizer[len(CHAR_TOKENIZER) + 1:]
        if not characters:
            raise ValueError("tokenizer 'char:' needs the characters after the colon, e.g. 'char:SFHG/:LDRU'")
        result = build_char_tokenizer(characters)
    elif tokenizer == CHAR_TOKENIZER or (tokenizer is None and not isinstance(model, str)) or (
        tokenizer is None and is_local_config(model)
    ):
        result = build_char_tokenizer()
    else:
        source = tokenizer if tokenizer is not None else model
        if tokenizer is None:
            check_model_spec(model)
        check_tokenizer_spec(source, "tokenizer" if tokenizer is not None else "model")
        result = AutoTokenizer.from_pretrained(source)
    if result.pad_token_id is None:
        result.pad_token = result.eos_token
    return result


def build_policy(model: ModelSpec, tokenizer: PreTrainedTokenizerBase, torch_dtype: Optional[str] = None) -> torch.nn.Module:
    """A causal LM from any accepted ``model`` spec (see module docstring)."""
    if isinstance(model, torch.nn.Module):
        return model
    dtype = getattr(torch, torch_dtype) if torch_dtype else None
    gguf = gguf_source(model)
    if gguf is not None:
        return load_gguf_policy(gguf, dtype)
    if is_local_config(model):
        fields = copy.deepcopy(MODEL_PRESETS[model] if isinstance(model, str) else dict(model))
        if "model_type" not in fields:
            raise ValueError(
                f"model config {model!r} needs a 'model_type' (e.g. 'gpt2' or 'llama') "
                f"or use a preset: {sorted(MODEL_PRESETS)}; a GGUF file is given as "
                f"{{folder: ..., gguf_file: ...}}"
            )
        model_type = fields.pop("model_type")
        fields.setdefault("vocab_size", len(tokenizer))
        if fields["vocab_size"] < len(tokenizer):
            raise ValueError(f"model vocab_size {fields['vocab_size']} < tokenizer size {len(tokenizer)}")
        fields.update(
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        )
        config = AutoConfig.for_model(model_type, **fields)
        policy = AutoModelForCausalLM.from_config(config)
        return policy.to(dtype) if dtype is not None else policy
    if not isinstance(model, str):
        raise TypeError(f"model must be a preset name, hub id, folder, config dict or nn.Module, got {type(model)}")
    check_model_spec(model)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    try:
        return AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except OSError as error:
        where = "folder" if os.path.isdir(model) else "hub id"
        raise OSError(
            f"could not load model {model!r} as a {where}: {error}. Use a preset "
            f"({', '.join(preset_names())}), a config dict with 'model_type', a .gguf file, or a folder "
            f"written by save_pretrained."
        ) from error
