"""``ift predict``: generate responses of a policy to a file of prompts, one JSONL line per
prompt and sample, scored where a prompt has an answer.

    ift predict --policy lightning_logs/version_0/checkpoints/last.ckpt --data prompts.jsonl
    ift predict --policy lightning_logs/version_0/export/final --data chats.jsonl --output -
    ift predict --policy run.ckpt --data val.jsonl --temperature 0.7 --num_samples 4 --seed 1

Errors in the arguments, the policy path or the data stop with ``ift predict: error: ...``
(the path or ``file:line`` and the fix), before anything is generated.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import List, Optional, Sequence

from ift.data.records import DataFormatError, file_format
from ift.predict.generate import Prediction, PredictSettings, predict, prompt_room
from ift.predict.output import STDOUT, PredictionOutput, default_output
from ift.predict.policy import PredictError, load_policy
from ift.predict.prompts import read_prompts

_NONE = ("none", "null", "")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``ift predict`` (each also spelt with dashes, ``--max-new-tokens``)."""
    parser = argparse.ArgumentParser(
        prog="ift predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Generate responses of a policy to a file of prompts: one JSONL line per prompt and sample "
                    "(location, sample, prompt, response, finished; with an answer also answer, extracted, correct, "
                    "score), then a one-line summary on stderr.", 79),
        epilog="examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.startswith("    ift ")))

    def option(name: str, **kwargs) -> None:
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*spellings, dest=name, **kwargs)

    option("policy", required=True, metavar="PATH_OR_NAME",
           help="what generates: a checkpoint written by `ift fit` (*.ckpt), a folder written by ExportPretrained "
                "or save_pretrained, a preset (tiny-gpt2, ...: untrained) or a hub id")
    option("data", required=True, metavar="SOURCE",
           help="the prompts: .jsonl/.json/.csv/.parquet, or a datasets name or folder; each record has a prompt "
                "string or chat messages, and optionally an answer")
    option("output", metavar="FILE",
           help=f"JSONL written, one line per prompt and sample; '{STDOUT}' for stdout (default: next to the prompts "
                "file, prompts.jsonl -> prompts.predictions.jsonl)")
    option("overwrite", action="store_true", help="replace an existing --output")
    option("split", default="test", help="split of a datasets source (default: test)")
    option("prompt_key", default="prompt", help="field of the prompt string, or of a message list (default: prompt)")
    option("messages_key", default="messages",
           help="field of chat messages, rendered with the tokenizer's chat template and the assistant header, in "
                "records without --prompt_key (default: messages)")
    option("answer_key", default="answer",
           help="field of the reference answer scored against each response; the default is read where a record "
                "has it, another name must be in every record; 'none' reads none (default: answer)")
    option("use_chat_template", action="store_true",
           help="render prompt strings as a user turn with the tokenizer's chat template (as the data modules' "
                "use_chat_template): give it when the policy was trained so")
    option("tokenizer", help="tokenizer to use instead of the policy's own (char, char:CHARS, a folder or hub id); "
                             "a checkpoint's default is the one its run recorded")
    option("max_new_tokens", type=int, default=64, help="most tokens generated per response (default: 64)")
    option("temperature", type=float, default=0.0,
           help="0 decodes greedily (default); above 0 samples at this temperature")
    option("top_p", type=float, default=1.0, help="nucleus sampling's probability mass, with sampling (default: 1)")
    option("num_samples", type=int, default=1, help="responses per prompt; more than 1 needs --temperature > 0")
    option("batch_size", type=int, default=16, help="responses generated together (default: 16)")
    option("seed", type=int, default=0,
           help="seed of the sampling: the same seed, options and prompts give the same output (default: 0)")
    option("answer_trigger", action="append", metavar="PHRASE",
           help="read the answer as the first number after the last PHRASE (ReFT's rule; repeat for several "
                "phrases), as the module's eval_answer_trigger; default: a checkpoint's eval_answer_trigger, "
                "else the liberal rule of val/accuracy")
    option("device", default=None, help="where to generate: cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    return parser


def run(argv: Optional[Sequence[str]] = None) -> Prediction:
    """Run ``ift predict`` with these arguments; returns what was done (errors raise
    :class:`~ift.predict.PredictError` or :class:`~ift.data.DataFormatError`)."""
    args = build_parser().parse_args(argv)
    settings = PredictSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                               num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                               answer_trigger=args.answer_trigger, device=args.device or _default_device())
    settings.check()
    _check_source(args.data)
    output = PredictionOutput(args.output or default_output(args.data, args.split), args.overwrite, args.data).open()
    try:
        import torch

        torch.manual_seed(settings.seed)  # a preset's untrained weights, too, follow the seed
        loaded = load_policy(args.policy, args.tokenizer)
        if args.answer_trigger is None and loaded.answer_trigger is not None:
            settings.answer_trigger = loaded.answer_trigger
            print(f"ift predict: answers read with the checkpoint's eval_answer_trigger {loaded.answer_trigger!r} "
                  f"(--answer_trigger to change)", file=sys.stderr)
        answer_key = None if str(args.answer_key).lower() in _NONE else args.answer_key
        prompts = read_prompts(args.data, loaded.tokenizer, prompt_room(loaded.policy, settings.max_new_tokens),
                               prompt_key=args.prompt_key, messages_key=args.messages_key, answer_key=answer_key,
                               use_chat_template=args.use_chat_template, split=args.split)
        result = predict(loaded, prompts, settings, output)
    except BaseException as error:
        kept = output.abort()
        if kept is not None:
            print(f"ift predict: stopped after {output.lines} lines ({type(error).__name__}); they are in {kept}",
                  file=sys.stderr)
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


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``ift predict`` (returns None, so the console script exits 0)."""
    try:
        run(argv)
    except (PredictError, DataFormatError, FileNotFoundError) as error:
        raise SystemExit(f"ift predict: error: {error}") from None


if __name__ == "__main__":  # pragma: no cover
    main()
