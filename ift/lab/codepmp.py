"""CodePMP at small scale: does pre-training a reward model on code preference pairs help
it learn arithmetic preferences from few pairs, and pick better answers?

The pipeline (CodePMP, arXiv 2410.02229, scaled to 0.1M-parameter character models):

1. **Code pairs.** A code policy (``model``, SFT on the built-in code task) samples programs
   for held-out code problems at a low (strong) and a high (weak) temperature; the sandbox
   runs them and a passing program is paired with a failing one (:mod:`ift.lab.code.pairs`).
2. **The base model**, the analogue of CodePMP's pretrained LM: ``model`` trained with SFT on
   the arithmetic task's worked solutions. It is also the policy of best-of-N: it samples
   ``best_of`` worked solutions per held-out problem at ``sample_temperature``.
3. **Pre-train** a reward model from the base on the code pairs: Bradley–Terry plus the
   language-modelling loss on the chosen program, weights 1 and 1 (CodePMP's loss).
4. **Fine-tune** on arithmetic preference pairs (a correct worked solution vs one with a
   false step, :mod:`ift.tasks.arithmetic.preference_pairs`), ``finetune_sizes`` pairs, from
   the code-pretrained model and, for comparison, from the base itself, with the same steps
   and seed; the code-pretrained model is also measured with no fine-tuning (size 0).
5. **Measure** each reward model through its exported folder and ``RewardModelScore``:
   pairwise accuracy on held-out pairs, and best-of-N accuracy: the reward model picks one of
   the base policy's candidates per held-out problem, scored by exact match of the answer.

Steps 1-2 run once (seed 0); steps 3-5 run per seed.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch

from ift.lab.reward_model_runs import (best_of_n_accuracy, export_and_load_scorer, pairwise_accuracy,
                                               train_reward_model, write_jsonl)
from ift.lab.trainer import quiet_trainer


@dataclasses.dataclass
class CodePMPSettings:
    """Sizes of every stage (the defaults run in minutes on 2 CPU cores).

    Args:
        model: the model spec of every network (code policy, arithmetic policy, reward models).
        code_train: code problems the code policy learns from.
        code_policy_steps: SFT steps of the code policy.
        pair_problems: held-out code problems the pairs are drawn on.
        samples_per_source: programs sampled per problem from each source.
        strong_temperature: sampling temperature of the strong source.
        weak_temperature: sampling temperature of the weak source.
        max_pairs_per_problem: most code pairs kept per problem.
        pretrain_steps: optimizer steps of the pre-training on code pairs.
        finetune_sizes: arithmetic pairs the reward model is fine-tuned on (one run each).
        finetune_steps: optimizer steps of every fine-tuning run (the same whatever the size).
        val_pairs: held-out arithmetic pairs of the pairwise accuracy (also the best-of-N problems).
        rm_lr: AdamW learning rate of the reward models.
        policy_lr: AdamW learning rate of the two policies.
        batch_size: pairs (or examples) per optimizer step.
        arithmetic_policy_steps: SFT steps of the base model (the arithmetic policy).
        policy_batch_size: examples per SFT step of the two policies.
        best_of: candidates per problem in best-of-N.
        sample_temperature: temperature of the best-of-N candidates.
        max_operand: operands of the arithmetic problems are drawn from ``[0, max_operand]``.
        num_operands: operands per arithmetic problem (``num_operands - 1`` worked steps).
        operators: operators of the arithmetic problems.
    """

    model: str = "tiny-gpt2"
    code_train: int = 440
    code_policy_steps: int = 500
    pair_problems: int = 300
    samples_per_source: int = 4
    strong_temperature: float = 0.3
    weak_temperature: float = 1.5
    max_pairs_per_problem: int = 4
    pretrain_steps: int = 600
    finetune_sizes: Tuple[int, ...] = (256, 1024, 4096)
    finetune_steps: int = 1500
    val_pairs: int = 200
    rm_lr: float = 3e-4
    policy_lr: float = 3e-3
    batch_size: int = 16
    arithmetic_policy_steps: int = 1500
    policy_batch_size: int = 32
    best_of: int = 8
    sample_temperature: float = 0.7
    max_operand: int = 50
    num_operands: int = 2
    operators: str = "+-"


def train_policy(data, settings: CodePMPSettings, steps: int, seed: int):
    """An SFT policy of ``settings.model`` trained ``steps`` steps on ``data``."""
    from ift.modules import FineTuneModule
    from ift.objectives import SFT

    pl.seed_everything(seed, verbose=False)
    module = FineTuneModule(model=settings.model, objective=SFT(),
                            optimizer=lambda params: torch.optim.AdamW(params, lr=settings.policy_lr, weight_decay=0.0),
                            # Unclipped, as the published numbers were measured.
                            max_grad_norm=None, checkpoint_on_interrupt=False)
    quiet_trainer(steps).fit(module, data)
    module.eval()
    return module


def code_pairs(settings: CodePMPSettings, folder: Path) -> Tuple[str, Dict[str, Any]]:
    """Step 1: the code pairs file and the synthesiser's summary."""
    from ift.tasks.code import CodeTaskDataModule
    from ift.lab.code.pair_sampling import Source, sample_programs
    from ift.lab.code.pairs import synthesise_pairs

    data = CodeTaskDataModule(num_train=settings.code_train, num_val=settings.pair_problems, num_test=0,
                              batch_size=settings.policy_batch_size, seed=0)
    policy = train_policy(data, settings, settings.code_policy_steps, seed=0)
    problems = [dict(example) for example in data.all_examples()["val"]]
    sources = [Source("strong", settings.model, settings.strong_temperature),
               Source("weak", settings.model, settings.weak_temperature)]
    programs = sample_programs(sources, {settings.model: policy}, [p["prompt"] for p in problems],
                               samples=settings.samples_per_source, seed=0)
    pairs = synthesise_pairs(problems, programs, max_pairs_per_problem=settings.max_pairs_per_problem, seed=0)
    if not pairs.records:
        raise RuntimeError(f"CodePMP: no code pair was made ({pairs.summary.as_dict()}); train the code policy "
                           f"longer or sample more programs")
    return write_jsonl(pairs.records, folder / "code_pairs.jsonl"), pairs.summary.as_dict()


def arithmetic_sets(settings: CodePMPSettings, folder: Path) -> Dict[str, Any]:
    """The base model (an arithmetic SFT policy, saved in ``folder/base``), the held-out
    arithmetic pairs, the best-of-N candidates (sampled once from the base, judged by exact
    match of the answer) and the problems fine-tuning pairs avoid."""
    from ift.rewards import AnswerMatchReward
    from ift.tasks.arithmetic import ArithmeticDataModule
    from ift.tasks.arithmetic.preference_pairs import pair_from_example
    from ift.lab.code.completions import generate_texts

    data = ArithmeticDataModule(num_train=2000, num_val=settings.val_pairs, num_test=0, num_operands=settings.num_operands,
                                max_operand=settings.max_operand, operators=settings.operators, worked_solution=True,
                                batch_size=settings.policy_batch_size, seed=0)
    policy = train_policy(data, settings, settings.arithmetic_policy_steps, seed=0)
    base = str(folder / "base")
    policy.policy.save_pretrained(base)
    policy.tokenizer.save_pretrained(base)
    held_out = [dict(example) for example in data.all_examples()["val"]]
    rng = random.Random("codepmp-held-out")
    val_pairs = [pair_from_example(example, rng) for example in held_out]
    torch.manual_seed(0)
    prompts = [example["prompt"] for example in held_out]
    candidates = generate_texts(policy.policy, policy.tokenizer, prompts, samples=settings.best_of,
                                temperature=settings.sample_temperature, max_new_tokens=32, batch_size=64).texts
    judge = AnswerMatchReward(correct=1.0, wrong=0.0, missing=0.0, trigger="answer:")
    correct = [[score == 1.0 for score in judge([prompt] * len(texts), texts, [example] * len(texts))]
               for prompt, texts, example in zip(prompts, candidates, held_out)]
    return {"base": base, "val_pairs": val_pairs, "prompts": prompts, "candidates": candidates, "correct": correct,
            "exclude": set(prompts), "val_file": write_jsonl(val_pairs, folder / "arithmetic_val_pairs.jsonl")}


def run_seed(job: Tuple[int, CodePMPSettings, str, Dict[str, Any], str]) -> List[Dict[str, Any]]:
    """Steps 2-4 for one seed: one row per (start, fine-tune size)."""
    from ift.tasks.arithmetic.preference_pairs import arithmetic_preference_pairs

    seed, settings, code_file, sets, workdir = job
    folder = Path(workdir) / f"seed{seed}"
    rm = dict(model=sets["base"], lr=settings.rm_lr, batch_size=settings.batch_size)
    start = time.perf_counter()
    pretrained = train_reward_model(code_file, seed=seed, steps=settings.pretrain_steps, lm_weight=1.0, **rm)
    pretrained_state = {key: value.clone() for key, value in pretrained.state_dict().items()}
    rows = [measure(pretrained, "code-pretrained", 0, seed, sets, folder)]
    train_pool = arithmetic_preference_pairs(max(settings.finetune_sizes), seed=1000 + seed,
                                             num_operands=settings.num_operands, max_operand=settings.max_operand,
                                             operators=settings.operators, exclude=sets["exclude"])
    for size in settings.finetune_sizes:
        train_file = write_jsonl(train_pool[:size], folder / f"finetune_{size}.jsonl")
        for start_name, state in (("code-pretrained", pretrained_state), ("base", None)):
            module = train_reward_model(train_file, seed=seed, steps=settings.finetune_steps, init_state=state, **rm)
            rows.append(measure(module, start_name, size, seed, sets, folder))
    for row in rows:
        row["seed_seconds"] = round(time.perf_counter() - start, 1)
    return rows


def measure(module, start_name: str, size: int, seed: int, sets: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """Pairwise and best-of-N accuracy of one reward model, through its exported folder."""
    scorer = export_and_load_scorer(module, folder / f"{start_name.replace(' ', '_')}_{size}")
    return {"seed": seed, "start": start_name, "finetune_pairs": size,
            "pairwise_accuracy": pairwise_accuracy(scorer, sets["val_pairs"]),
            "best_of_n": best_of_n_accuracy(scorer, sets["prompts"], sets["candidates"], sets["correct"])}


def baselines(sets: Dict[str, Any]) -> Dict[str, float]:
    """What best-of-N is measured against: one sample picked at random (the candidates' mean
    accuracy) and the oracle (a problem counts when any candidate is correct)."""
    correct = sets["correct"]
    return {"random_pick": sum(sum(c) / len(c) for c in correct) / len(correct),
            "oracle": sum(any(c) for c in correct) / len(correct)}


def run(settings: CodePMPSettings, seeds: Sequence[int], workers: int = 2, workdir: str = None) -> Dict[str, Any]:
    """The whole experiment: every seed's rows, the code-pair summary and the baselines."""
    from ift.lab.workers import map_in_processes

    workdir = workdir or tempfile.mkdtemp(prefix="codepmp-")
    folder = Path(workdir)
    start = time.perf_counter()
    code_file, pair_summary = code_pairs(settings, folder)
    sets = arithmetic_sets(settings, folder)
    shared_seconds = time.perf_counter() - start
    per_seed = map_in_processes(run_seed, [(seed, settings, code_file, sets, workdir) for seed in seeds], workers)
    return {"rows": [row for rows in per_seed for row in rows], "code_pairs": pair_summary,
            "baselines": baselines(sets), "shared_seconds": round(shared_seconds, 1),
            "seconds": round(time.perf_counter() - start, 1), "workdir": workdir}
