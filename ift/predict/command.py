"""``ift predict``: generate responses of a policy to a file of prompts, one JSONL line per
prompt and sample, scored where a prompt has an answer.

    ift predict --policy lightning_logs/version_0/checkpoints/last.ckpt --data prompts.jsonl
    ift predict --policy lightning_logs/version_0/export/final --data chats.jsonl --output -
    ift predict --policy run.ckpt --data val.jsonl --temperature 0.7 --num_samples 4 --seed 1

The options are the fields of :class:`PredictArguments` (``ift predict --help``); the
command is registered in :mod:`ift.cli.commands`. Errors in the arguments, the policy path
or the data stop with ``ift predict: error: ...`` (the path or ``file:line`` and the fix),
before anything is generated.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import List, Optional

from ift.data.records import file_format
from ift.predict.generate import Prediction, PredictSettings, predict, prompt_room
from ift.core.stop_signals import describe as describe_signal
from ift.core.stop_signals import stopping_signal
from ift.predict.output import PredictionOutput, default_output
from ift.predict.policy import PredictError, load_policy
from ift.predict.prompts import read_prompts

_NONE = ("none", "null", "")


@dataclasses.dataclass(kw_only=True)
class PredictArguments(PredictSettings):
    """Generate responses of a policy to a file of prompts: one JSONL line per prompt and
    sample (location, sample, prompt, response, finished; with an answer also answer,
    extracted, correct, score), then a one-line summary on stderr.

    The options of ``ift predict``: how it generates (those of :class:`PredictSettings`),
    and what generates, from which prompts, to which file.

    Attributes:
        policy: what generates: a checkpoint written by `ift fit` (*.ckpt), a folder written by
            ExportPretrained or save_pretrained, a preset (tiny-gpt2, ...: untrained) or a hub id.
        data: the prompts: .jsonl/.json/.csv/.parquet, or a datasets name or folder; each record
            has a prompt string or chat messages, and optionally an answer.
        output: the JSONL written, one line per prompt and sample; '-' for stdout; null: next to
            the prompts file (prompts.jsonl -> prompts.predictions.jsonl).
        overwrite: replace an existing --output.
        split: split of a datasets source.
        prompt_key: field of the prompt string, or of a message list.
        messages_key: field of chat messages, rendered with the tokenizer's chat template and the
            assistant header, in records without --prompt_key.
        answer_key: field of the reference answer scored against each response; the default is read
            where a record has it, another name must be in every record; 'none' reads none.
        use_chat_template: render prompt strings as a user turn with the tokenizer's chat template
            (as the data modules' use_chat_template): give it when the policy was trained so.
        tokenizer: tokenizer to use instead of the policy's own (char, char:CHARS, a folder or hub
            id); null: the policy's own (a checkpoint's: the one its run recorded).
        answer_trigger: read the answer as the first number after the last of these phrases
            (ReFT's rule; several phrases after one flag: --answer_trigger '####' 'The answer is'),
            as AnswerAccuracy's answer_trigger; null: the answer_trigger a checkpoint's run validated
            with (its AnswerAccuracy callback), else the liberal rule of val/accuracy.
        device: where to generate: cpu, cuda, cuda:1; null: cuda when available, else cpu.
    """

    policy: str
    data: str
    output: Optional[str] = None
    overwrite: bool = False
    split: str = "test"
    prompt_key: str = "prompt"
    messages_key: str = "messages"
    answer_key: str = "answer"
    use_chat_template: bool = False
    tokenizer: Optional[str] = None
    answer_trigger: Optional[List[str]] = None
    device: Optional[str] = None


def run(args: PredictArguments) -> Prediction:
    """Run ``ift predict`` with these arguments; returns what was done (errors raise
    :class:`~ift.predict.PredictError` or :class:`~ift.data.DataFormatError`)."""
    settings = PredictSettings(**{field.name: getattr(args, field.name)
                                  for field in dataclasses.fields(PredictSettings)})
    settings.device = args.device or _default_device()
    settings.check()
    _check_source(args.data)
    output = PredictionOutput(args.output or default_output(args.data, args.split), args.overwrite, args.data).open()
    try:
        import torch

        torch.manual_seed(settings.seed)  # a preset's untrained weights, too, follow the seed
        loaded = load_policy(args.policy, args.tokenizer)
        if args.answer_trigger is None and loaded.answer_trigger is not None:
            settings.answer_trigger = loaded.answer_trigger
            print(f"ift predict: answers read with the checkpoint's answer_trigger {loaded.answer_trigger!r} "
                  f"(--answer_trigger to change)", file=sys.stderr)
        answer_key = None if str(args.answer_key).lower() in _NONE else args.answer_key
        prompts = read_prompts(args.data, loaded.tokenizer, prompt_room(loaded.policy, settings.max_new_tokens),
                               prompt_key=args.prompt_key, messages_key=args.messages_key, answer_key=answer_key,
                               use_chat_template=args.use_chat_template, split=args.split)
        result = predict(loaded, prompts, settings, output)
    except BaseException as error:
        kept = output.abort()
        if kept is not None:
            signum = stopping_signal(error)
            why = describe_signal(signum) if signum is not None else type(error).__name__
            print(f"ift predict: stopped after {output.lines} lines ({why}); they are in {kept}", file=sys.stderr)
        raise
    print(result.summary(), file=sys.stderr)
    return result


def _check_source(source: str) -> None:
    """A prompts file that is not there stops before the model is loaded or the output opened."""
    if file_format(source) is not None and not os.path.isfile(source):
        raise PredictError(f"--data {source}: no such file")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
