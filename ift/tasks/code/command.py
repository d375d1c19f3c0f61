"""``ift code-pass-rate``: the held-out pass rate of a checkpoint on the built-in code task."""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional

import torch

from ift.modules import FineTuneModule
from ift.tasks.code.data import CodeTaskDataModule
from ift.tasks.code.evaluate import pass_rate


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """``ift code-pass-rate --ckpt run.ckpt`` (or ``python -m ift.tasks.code.command``): held-out
    pass rate of a checkpoint on the built-in code task, greedy decoding, printed as JSON."""
    parser = argparse.ArgumentParser(prog="ift code-pass-rate", description=main.__doc__)
    parser.add_argument("--ckpt", help="checkpoint of a FineTuneModule; omit for an untrained tiny-gpt2")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="held-out split to score (default: val)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="most tokens generated per problem (default: 48)")
    parser.add_argument("--task", default="{}", help="JSON of CodeTaskDataModule arguments (default: its defaults)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    module = FineTuneModule.load_from_checkpoint(args.ckpt) if args.ckpt else FineTuneModule("tiny-gpt2")
    data = CodeTaskDataModule(tokenizer=module.tokenizer, eval_batch_size=100, **json.loads(args.task))
    result = pass_rate(module, data, args.split, max_new_tokens=args.max_new_tokens)
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
