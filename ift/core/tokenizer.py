"""A character-level tokenizer built locally with ``tokenizers`` (no hub access).

It is a real :class:`~transformers.PreTrainedTokenizerFast`: ``save_pretrained`` and
``AutoTokenizer.from_pretrained`` round-trip it like any Hugging Face tokenizer.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
DEFAULT_CHARACTERS = string.digits + string.ascii_letters + string.punctuation + " \n"
# Roles are rendered as plain text so the character vocabulary covers them.
CHAR_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}"
    # The newline is an expression: transformers renders templates with trim_blocks, which
    # would swallow a literal newline right after ``{% endif %}``.
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_char_tokenizer(characters: str = DEFAULT_CHARACTERS) -> PreTrainedTokenizerFast:
    """Tokenizer with one token per character of ``characters`` plus pad/eos/bos/unk.

    Ids are stable: specials first (pad 0, eos 1, bos 2, unk 3), then characters in the
    order given (duplicates dropped). Padding differs from EOS on purpose, so padding is
    never mistaken for the end of a response.
    """
    vocab = {PAD: 0, EOS: 1, BOS: 2, UNK: 3}
    for char in characters:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=EOS, bos_token=BOS, unk_token=UNK
    )
    tokenizer.chat_template = CHAR_CHAT_TEMPLATE
    return tokenizer
