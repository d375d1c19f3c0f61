"""A generated, seeded function-synthesis task for code rewards, small enough for a
character-level 2-layer model.

A prompt describes a function of ``x`` in words, one to ``max_steps`` steps applied in
order; the response is the Python function; the tests are ``assert`` lines on random
inputs::

    prompt:   "# f(x): add 3, times 2\\n"
    response: "def f(x):\\n    return (x+3)*2"
    tests:    ["assert f(4) == 14", "assert f(-2) == 2", ...]

Steps: ``add K`` (``+K``), ``subtract K`` (``-K``), ``times K`` (``*K``, K >= 2) and
``square`` (``**2``), with constants 1..``max_constant``. Problems are drawn uniformly
from all problems, so the training and held-out splits have the same mix of lengths. The reference code uses the
fewest parentheses. Examples carry ``tests`` (read by :class:`ift.rewards.CodeTestsReward`)
and no ``answer`` (``val/accuracy`` is a numeric match and does not apply); measure the
held-out pass rate with :func:`pass_rate` or ``ift code-pass-rate --ckpt ...``.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.data.datamodule import ExamplesDataModule
from ift.data.generated import GeneratedTaskDataModule

Step = Tuple[str, int]
_PRECEDENCE = {"atom": 4, "power": 3, "product": 2, "sum": 1}


def describe_steps(steps: Sequence[Step]) -> str:
    """``[("add", 3), ("mul", 2)]`` -> ``"add 3, times 2"``."""
    words = {"add": "add {}", "sub": "subtract {}", "mul": "times {}", "square": "square"}
    return ", ".join(words[op].format(k) for op, k in steps)


def steps_to_code(steps: Sequence[Step], name: str = "f") -> str:
    """The reference function: ``def f(x):\\n    return <expression>`` with minimal parentheses."""
    expr, level = "x", "atom"
    for op, k in steps:
        if op in ("add", "sub"):
            expr, level = f"{expr}{'+' if op == 'add' else '-'}{k}", "sum"
        elif op == "mul":
            left = expr if _PRECEDENCE[level] >= _PRECEDENCE["product"] else f"({expr})"
            expr, level = f"{left}*{k}", "product"
        elif op == "square":
            left = expr if level == "atom" else f"({expr})"
            expr, level = f"{left}**2", "power"
        else:
            raise ValueError(f"unknown step {op!r}")
    return f"def {name}(x):\n    return {expr}"


def apply_steps(steps: Sequence[Step], x: int) -> int:
    """The function's value at ``x``, computed step by step (not from the code)."""
    for op, k in steps:
        if op == "add":
            x = x + k
        elif op == "sub":
            x = x - k
        elif op == "mul":
            x = x * k
        elif op == "square":
            x = x * x
    return x


def step_options(max_constant: int) -> List[Step]:
    """Every single step: ``add``/``subtract`` 1..max_constant, ``times`` 2..max(2, max_constant), ``square``."""
    return ([("add", k) for k in range(1, max_constant + 1)] + [("sub", k) for k in range(1, max_constant + 1)]
            + [("mul", k) for k in range(2, max(2, max_constant) + 1)] + [("square", 0)])


def _draw_steps(rng: random.Random, max_steps: int, max_constant: int) -> List[Step]:
    """One problem drawn uniformly from all problems of 1..max_steps steps.

    The number of steps is weighted by how many problems have it (``len(options) ** n``):
    drawing it uniformly would exhaust the few one-step problems within the first draws,
    so the held-out splits (cut from the first draws) would be mostly one-step problems
    that training hardly contains.
    """
    options = step_options(max_constant)
    lengths = list(range(1, max_steps + 1))
    length = rng.choices(lengths, weights=[len(options) ** n for n in lengths])[0]
    return [rng.choice(options) for _ in range(length)]


def code_examples(
    count: int,
    seed: int,
    max_steps: int = 2,
    max_constant: int = 9,
    num_tests: int = 4,
    min_input: int = -9,
    max_input: int = 9,
    exclude: Optional[set] = None,
) -> List[Dict[str, Any]]:
    """``count`` distinct problems (by prompt), deterministic in ``seed``."""
    if max_steps < 1 or max_constant < 1:
        raise ValueError(f"code task: max_steps and max_constant must be >= 1, got {max_steps}, {max_constant}")
    inputs = list(range(min_input, max_input + 1))
    if num_tests < 1 or num_tests > len(inputs):
        raise ValueError(f"code task: num_tests must be in [1, {len(inputs)}] (the inputs {min_input}..{max_input}), got {num_tests}")
    rng = random.Random(seed)
    exclude = set() if exclude is None else exclude
    seen, examples, attempts = set(), [], 0
    while len(examples) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise ValueError(
                f"code task: could not draw {count} distinct problems with max_steps={max_steps} and "
                f"max_constant={max_constant}; raise them or ask for fewer examples"
            )
        steps = _draw_steps(rng, max_steps, max_constant)
        prompt = f"# f(x): {describe_steps(steps)}\n"
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        xs = rng.sample(inputs, num_tests)
        tests = [f"assert f({x}) == {apply_steps(steps, x)}" for x in xs]
        examples.append({"prompt": prompt, "response": steps_to_code(steps), "tests": tests})
    return examples


class CodeTaskDataModule(GeneratedTaskDataModule):
    """Generated function-synthesis problems with tests, a disjoint held-out split, for
    SFT on the reference code and PPO with :class:`ift.rewards.CodeTestsReward`.

    Args:
        num_train: training problems.
        num_val: held-out problems (never in the training set).
        num_test: test problems (disjoint from both).
        max_steps: most steps in a function (each one of add/subtract/times/square).
        max_constant: largest constant in a step.
        num_tests: assert lines per problem.
        min_input: smallest test input.
        max_input: largest test input.
        task_seed: seed of the problem generator.
        batch_size: see :class:`ExamplesDataModule` (as are the other arguments).
    """

    task_name = "code_task"

    def __init__(
        self,
        num_train: int = 500,
        num_val: int = 100,
        num_test: int = 100,
        max_steps: int = 2,
        max_constant: int = 9,
        num_tests: int = 4,
        min_input: int = -9,
        max_input: int = 9,
        task_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: Optional[int] = None,
        max_length: int = 96,
        padding_side: str = "right",
        num_workers: int = 0,
        seed: int = 0,
        tokenizer: Optional[Any] = None,
    ):
        super().__init__(num_train, num_val, num_test, task_seed,
                         dict(max_steps=max_steps, max_constant=max_constant, num_tests=num_tests,
                              min_input=min_input, max_input=max_input),
                         batch_size=batch_size, eval_batch_size=eval_batch_size, max_length=max_length,
                         padding_side=padding_side, num_workers=num_workers, seed=seed, tokenizer=tokenizer)

    def generate(self, count: int) -> List[Dict[str, Any]]:
        return code_examples(count, self.task_seed, **self.task)


def pass_rate(module: Any, data: ExamplesDataModule, split: str = "val", reward: Any = None,
              max_new_tokens: int = 48) -> Dict[str, float]:
    """Greedy-decode every prompt of ``split`` and score it with ``reward``.

    Returns ``{"pass_rate": share of problems whose tests all pass, "mean_score": mean
    reward, "count": problems}``. ``reward`` defaults to ``CodeTestsReward()``.
    """
    import torch

    from ift.core.generation import generate_responses
    from ift.rewards.code import CodeTestsReward

    reward = reward if reward is not None else CodeTestsReward()
    if data.tokenizer is None:
        data.tokenizer = module.tokenizer
    data.setup("validate")
    loader = data._eval_loader(split)
    tokenizer = module.tokenizer
    scores: List[float] = []
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for batch in loader:
            ids, _ = generate_responses(module.policy, batch["prompt_input_ids"], batch["prompt_attention_mask"],
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                        max_new_tokens=max_new_tokens)
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            scores += reward(list(batch["prompt"]), texts, list(batch["examples"]))
    module.train(was_training)  # callable mid-training (e.g. from a callback)
    count = len(scores)
    return {
        "pass_rate": sum(1 for s in scores if s >= 1.0) / max(count, 1),
        "mean_score": sum(scores) / max(count, 1),
        "count": float(count),
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """``ift code-pass-rate --ckpt run.ckpt`` (or ``python -m ift.data.code_task``): held-out
    pass rate of a checkpoint on the built-in code task, greedy decoding, printed as JSON."""
    parser = argparse.ArgumentParser(prog="ift code-pass-rate", description=main.__doc__)
    parser.add_argument("--ckpt", help="checkpoint of a FineTuneModule; omit for an untrained tiny-gpt2")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--task", default="{}", help="JSON of CodeTaskDataModule arguments (default: its defaults)")
    args = parser.parse_args(argv)
    import torch

    from ift.modules import FineTuneModule

    torch.manual_seed(0)
    module = FineTuneModule.load_from_checkpoint(args.ckpt) if args.ckpt else FineTuneModule("tiny-gpt2")
    data = CodeTaskDataModule(tokenizer=module.tokenizer, eval_batch_size=100, **json.loads(args.task))
    result = pass_rate(module, data, args.split, max_new_tokens=args.max_new_tokens)
    print(json.dumps(result))
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
