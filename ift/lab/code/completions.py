"""Completions of code prompts by a policy: generation, and the code taken from each text.

Two ways to ask:

* **code prefix** (base models, the HumanEval default): the prompt is the start of a
  file, the model continues it, and the continuation is cut at the first line that
  starts a new top-level statement (:data:`CODEX_STOPS`, as the Codex paper evaluates),
  because what follows the function is not part of the answer;
* **chat** (``chat=True``): the prompt goes in a user turn, rendered with the tokenizer's
  chat template (:func:`chat_request` says what is asked), and the code is taken from the
  answer by :func:`completion_from_answer`.

Generation is :func:`ift.core.generation.generate_responses` on left-padded batches.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, List, Optional, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ift.core.generation import generate_responses
from ift.data.collate import lengths_mask, pad_sequences
from ift.data.encoding import encode_prompt, render_prompt
from ift.data import fit_checks
from ift.rewards.code import extract_code

#: Where a code-prefix completion ends: a line that opens a new top-level block, comment
#: or statement (the stop sequences of the Codex paper's HumanEval evaluation).
CODEX_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def cut_at_stops(text: str, stops: Sequence[str] = CODEX_STOPS) -> str:
    """``text`` up to (without) the earliest of ``stops``; the whole text when none occurs."""
    end = len(text)
    for stop in stops:
        found = text.find(stop)
        if found != -1:
            end = min(end, found)
    return text[:end]


def chat_request(prompt: str) -> str:
    """The user turn that asks a chat model for a HumanEval prompt's function."""
    return ("Complete the following Python function. Reply with the whole function in one ```python code "
            f"block.\n\n```python\n{prompt.rstrip()}\n```")


def defines_function(code: str, name: str) -> bool:
    """True when ``code`` has a top-level ``def name(`` (it redefines the prompt's function)."""
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def completion_from_answer(answer: str, entry_point: str) -> str:
    """The completion (what is appended to the prompt) that a chat answer gives.

    The code is the answer's first Python block, else the whole answer
    (:func:`ift.rewards.code.extract_code`). When it defines ``entry_point`` at top level,
    it is placed after the prompt on its own lines: the prompt's function (its signature
    and docstring, a valid body on its own) is then replaced by the answer's, while the
    prompt's imports stay in force, so an answer that leaves out ``from typing import
    List`` still runs. Otherwise the code is taken as the function's body, as a base
    model's continuation would be.
    """
    code = extract_code(answer)
    if defines_function(code, entry_point):
        return "\n" + code + "\n"
    return code


@dataclasses.dataclass
class Generated:
    """The texts of one generation run.

    Attributes:
        texts: per prompt, its ``samples`` generated texts (decoded, special tokens dropped).
        cut: prompts cut from the left to leave room for the new tokens.
        unfinished: texts that reached ``max_new_tokens`` before EOS.
        prompt_cut: per prompt, whether it was cut.
        finished: per prompt, for each text, whether it ended with EOS.
    """

    texts: List[List[str]]
    cut: int
    unfinished: int
    prompt_cut: List[bool] = dataclasses.field(default_factory=list)
    finished: List[List[bool]] = dataclasses.field(default_factory=list)


def prompt_room(policy: torch.nn.Module, max_new_tokens: int) -> Optional[int]:
    """The most prompt tokens that leave ``max_new_tokens`` positions (None: no limit known)."""
    return fit_checks.prompt_room(policy, max_new_tokens, option="--max-new-tokens")


def _decode_continuation(tokenizer: PreTrainedTokenizerBase, prompt_ids: List[int], new_ids: List[int]) -> str:
    """The text ``new_ids`` add after ``prompt_ids``.

    Decoded together with the prompt, then the prompt's text removed: tokenizers that drop
    a leading space when decoding from the start of a sequence (SentencePiece) would
    otherwise take one space of indentation off the first line of a completion.
    """
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if whole.startswith(head):
        return whole[len(head):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


@torch.no_grad()
def generate_texts(policy: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
                   chat: bool = False, samples: int = 1, temperature: float = 0.0, max_new_tokens: int = 256,
                   batch_size: int = 8, device: str = "cpu",
                   progress: Optional[Callable[[int, int], None]] = None) -> Generated:
    """``samples`` texts per prompt: greedy when ``temperature`` is 0, else sampled at it.

    With ``chat`` each prompt is sent as :func:`chat_request` in a user turn of the
    tokenizer's chat template. The caller seeds ``torch`` for reproducible samples.
    ``progress(done, total)`` is called after each batch (texts generated, texts asked for).
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, so no completion could end; give one with --tokenizer")
    if samples > 1 and temperature == 0:
        raise ValueError(f"--samples {samples} with greedy decoding (--temperature 0) gives the same completion "
                         f"{samples} times; set --temperature above 0 to sample")
    room = prompt_room(policy, max_new_tokens)
    encoded, prompt_cut = [], []
    for prompt in prompts:
        text = render_prompt(tokenizer, chat_request(prompt), True) if chat else prompt
        ids = encode_prompt(tokenizer, text, chat)
        prompt_cut.append(room is not None and len(ids) > room)
        if prompt_cut[-1]:
            ids = ids[len(ids) - room:]  # the end of the prompt is what the next tokens follow
        encoded.append(ids)
    rows = [index for index in range(len(prompts)) for _ in range(samples)]
    texts: List[List[str]] = [[] for _ in prompts]
    finished_flags: List[List[bool]] = [[] for _ in prompts]
    unfinished = 0
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    policy = policy.to(device)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        ids = [encoded[index] for index in batch]
        responses, _ = generate_responses(
            policy, pad_sequences(ids, pad, "left").to(device), lengths_mask(ids, "left").to(device),
            eos_token_id=eos, pad_token_id=pad, max_new_tokens=max_new_tokens,
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
        )
        for index, response in zip(batch, responses.tolist()):
            finished = eos in response
            unfinished += not finished
            finished_flags[index].append(finished)
            new = response[:response.index(eos)] if finished else response
            texts[index].append(_decode_continuation(tokenizer, encoded[index], new))
        if progress is not None:
            progress(min(start + batch_size, len(rows)), len(rows))
    return Generated(texts=texts, cut=sum(prompt_cut), unfinished=unfinished, prompt_cut=prompt_cut,
                     finished=finished_flags)


__all__ = ["CODEX_STOPS", "Generated", "chat_request", "completion_from_answer", "cut_at_stops", "defines_function",
           "generate_texts", "prompt_room"]
