"""Shared helpers of the ecosystem tests (formats, W&B, sweeps, export, LoRA, real configs).

Everything is local: tiny models from presets, the character tokenizer (or a BPE trained
here on a few sentences), data written to ``tmp_path``. The quiet Trainer, the tiny arithmetic
task and the tiny module are in ``factories.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import pytorch_lightning as pl

from ift.data import build_char_tokenizer
from ift.core.model_factory import build_policy

ROOT = Path(__file__).resolve().parent.parent

# A ChatML template like Qwen2.5's: a default system turn, <|im_start|>role\n...<|im_end|>\n.
CHATML_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>{{ '\\n' }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}{{ '\\n' }}{{ m['content'] }}<|im_end|>{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)


def write_jsonl(path: Path, rows: Iterable[Dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_parquet(path: Path, rows: List[Dict[str, Any]]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def save_tiny_model(path: Path, preset: str = "tiny-gpt2", chat_template: Optional[str] = None) -> str:
    """A tiny policy and the character tokenizer saved like a hub model (``save_pretrained``)."""
    tokenizer = build_char_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    pl.seed_everything(0, verbose=False)
    policy = build_policy(preset, tokenizer)
    policy.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return str(path)


def bpe_chatml_tokenizer():
    """A byte-level BPE tokenizer trained here on a few sentences, with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [
        "You are helpful. What is the capital of France? The capital of France is Paris.",
        "Hello there! How are you today? I am fine, thanks for asking.",
        "Please add 17 and 25. 17 + 25 = 42, so the answer is 42.",
        "system user assistant\n\n",
    ] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def chat_rows(count: int = 8) -> List[Dict[str, Any]]:
    """UltraChat-like rows: ``prompt``, ``prompt_id`` and a multi-turn ``messages`` list."""
    rows = []
    for i in range(count):
        a, b = i + 2, 3 * i + 1
        rows.append({
            "prompt": f"add {a} and {b}",
            "prompt_id": f"id{i}",
            "messages": [
                {"role": "user", "content": f"add {a} and {b}"},
                {"role": "assistant", "content": f"{a}+{b}={a + b}"},
                {"role": "user", "content": "and times 2?"},
                {"role": "assistant", "content": f"{2 * (a + b)}"},
            ],
        })
    return rows
