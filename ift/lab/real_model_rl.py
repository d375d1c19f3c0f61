"""RL on a real model: SmolLM2-135M-Instruct on held-out arithmetic, six arms over seeds.

The question: on a small pretrained instruct model, in its own chat template and with the
answer reward, what do GRPO and PPO add, from the instruct model or after an SFT warm-up,
compared with SFT alone at the same number of optimizer steps? Each seed trains, from the
same instruct model and the same training questions:

* ``untrained``: the instruct model as loaded (greedy, so one measurement serves every seed);
* ``sft``: SFT for ``warmup_steps`` optimizer steps (this is the warm-up of the arms below);
* ``grpo``: GRPO straight from the instruct model for ``rl_steps`` optimizer steps ("RL from
  scratch": no warm-up);
* ``sft+grpo``: the warm-up, then GRPO for ``rl_steps`` optimizer steps;
* ``sft+ppo``: the warm-up, then PPO (value head on the policy's trunk) for ``rl_steps``;
* ``sft+sft``: the warm-up, then ``rl_steps`` more SFT steps: one uninterrupted SFT run of
  ``warmup_steps + rl_steps`` steps (same optimizer state and learning rate throughout),
  whose weights at step ``warmup_steps`` are the warm-up of the other arms.

Every RL stage takes ``rl_prompts`` training questions per iteration, samples
``num_generations`` responses to each, and makes ONE optimizer step per rollout (GRPO's
default mu = 1; PPO likewise one epoch over the whole rollout), so GRPO and PPO see the
same prompts, sample as many responses and make as many optimizer steps; they differ in
the objective (group-normalised advantages and a k3 KL in the loss, vs a learned value
head, GAE and a KL penalty in the reward).

The prompt: each problem of :class:`~ift.tasks.arithmetic.ArithmeticDataModule` (three
operands in [0, 20], ``+``/``-``) is asked as ``"Calculate 12 - 9 + 15. End with 'answer:
N'."`` in the model's chat template. The instruct model does not reliably follow the format
(it writes ``"16 + 4 + 9 = 27\\n\\nThe answer is 27"`` or ``"3 - 2 + 10 = 11"``), so the
reward and held-out accuracy use the LIBERAL answer rule (``AnswerMatchReward(trigger=None)``:
the number after the last ``answer:``/``answer is``, else after the last ``=``, else the last
number); SFT targets are worked solutions (``12-9=3,3+15=18 answer: 18``), which the same rule
reads. Held-out accuracy is greedy exact match on ``num_val`` problems never trained on.

Seeds run in worker processes with one CPU thread each; every seed's result can be written
to a JSON file as soon as it finishes (``benchmarks/grpo_real_model.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import pytorch_lightning as pl
import torch

from ift.lab.reft_arms import CountingReward, SnapshotAt
from ift.lab.trainer import quiet_trainer
from ift.lab.workers import imap_in_processes
from ift.tasks.arithmetic import ArithmeticDataModule

#: The arms, in table order.
ARMS = ("untrained", "sft", "grpo", "sft+grpo", "sft+ppo", "sft+sft")

#: The user turn; ``{question}`` is the expression with spaces around its operators.
PROMPT_TEMPLATE = "Calculate {question}. End with 'answer: N'."


@dataclasses.dataclass
class RealModelRLSettings:
    """One configuration of the experiment (every arm and seed uses it).

    Args:
        model: the policy to start from (a preset, GGUF file, folder or tiny preset).
        chat: render prompts in the tokenizer's chat template (False for tiny test models).
        num_operands / max_operand / operators: the arithmetic problems.
        prompt_template: the user turn, ``{question}`` = the spaced expression.
        num_train: training questions (shared by every arm; SFT and RL draw from them).
        num_val: held-out questions for accuracy.
        sft_batch_size: SFT sequences per optimizer step.
        warmup_steps: SFT optimizer steps of the warm-up (= the ``sft`` arm).
        sft_lr: AdamW learning rate of every SFT step.
        rl_steps: optimizer steps of every second stage (GRPO, PPO, more SFT).
        rl_lr: AdamW learning rate of the GRPO and PPO stages.
        rl_prompts: questions per RL iteration.
        num_generations: responses sampled per question (GRPO's group; PPO's samples).
        beta: GRPO's k3 KL coefficient in the loss (the paper's 0.04).
        kl_coef: PPO's KL coefficient in the reward (ReFT's 0.05).
        vf_coef: PPO's value-loss coefficient.
        temperature: sampling temperature of both RL methods.
        max_new_tokens: longest sampled or greedy response.
        eval_batch_size: held-out problems per greedy generation batch.
    """

    model: str = "smollm2-135m-instruct"
    chat: bool = True
    num_operands: int = 3
    max_operand: int = 20
    operators: str = "+-"
    prompt_template: str = PROMPT_TEMPLATE
    num_train: int = 400
    num_val: int = 100
    sft_batch_size: int = 8
    warmup_steps: int = 12
    sft_lr: float = 1e-4
    rl_steps: int = 10
    rl_lr: float = 2e-5
    rl_prompts: int = 4
    num_generations: int = 4
    beta: float = 0.04
    kl_coef: float = 0.05
    vf_coef: float = 0.1
    temperature: float = 1.0
    max_new_tokens: int = 24
    eval_batch_size: int = 50


class PromptedArithmetic(ArithmeticDataModule):
    """The arithmetic task with each problem asked in words: ``"12-9+15="`` becomes
    ``prompt_template.format(question="12 - 9 + 15")``; answers and worked solutions unchanged."""

    def __init__(self, prompt_template: str = PROMPT_TEMPLATE, **kwargs: Any):
        super().__init__(**kwargs)
        self.prompt_template = prompt_template

    def generate(self, count: int) -> List[Dict[str, Any]]:
        return [dict(example, prompt=self.prompt_template.format(question=spaced(example["prompt"])))
                for example in super().generate(count)]


def spaced(expression: str) -> str:
    """``"12-9+15="`` -> ``"12 - 9 + 15"``."""
    return re.sub(r"\s*([+\-*])\s*", r" \1 ", expression.rstrip("=")).strip()


def data_module(settings: RealModelRLSettings, seed: int, tokenizer, batch_size: int) -> PromptedArithmetic:
    """The questions are the same for every seed (``task_seed`` 0); the shuffle follows ``seed``."""
    return PromptedArithmetic(
        prompt_template=settings.prompt_template, num_train=settings.num_train, num_val=settings.num_val,
        num_test=0, num_operands=settings.num_operands, max_operand=settings.max_operand,
        operators=settings.operators, worked_solution=True, batch_size=batch_size,
        eval_batch_size=settings.eval_batch_size, max_length=96, seed=seed, tokenizer=tokenizer,
        use_chat_template=settings.chat)


def answer_reward():
    """The answer reward with the liberal rule (1 right, 0.1 a wrong number, 0 none)."""
    from ift.rewards import AnswerMatchReward

    return AnswerMatchReward(trigger=None)


def held_out_accuracy(policy, tokenizer, settings: RealModelRLSettings) -> float:
    """Greedy exact match on the held-out split under the reward's rule."""
    from ift.modules import FineTuneModule
    from ift.tasks.code import pass_rate

    probe = FineTuneModule(model=policy, tokenizer=tokenizer)
    data = data_module(settings, 0, tokenizer, settings.sft_batch_size)
    return pass_rate(probe, data, "val", answer_reward(), settings.max_new_tokens)["pass_rate"]


def _adamw(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def _grpo(settings: RealModelRLSettings, reward, seed: int):
    from ift.objectives import GRPO

    return GRPO(reward=reward, num_generations=settings.num_generations, beta=settings.beta, epochs=1,
                max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=seed)


def _ppo(settings: RealModelRLSettings, reward, seed: int):
    from ift.objectives import PPO

    return PPO(reward=reward, kl_coef=settings.kl_coef, vf_coef=settings.vf_coef, ppo_epochs=1,
               samples_per_prompt=settings.num_generations, max_new_tokens=settings.max_new_tokens,
               temperature=settings.temperature, seed=seed)


def _rl_arm(settings: RealModelRLSettings, seed: int, policy, tokenizer, make_objective: Callable,
            warmup_steps: int, warmup_seconds: float) -> Dict[str, Any]:
    """One RL stage of ``rl_steps`` optimizer steps from ``policy`` (modified in place)."""
    from ift.modules import FineTuneModule

    pl.seed_everything(seed, verbose=False)
    reward = CountingReward(answer_reward(), tokenizer)
    module = FineTuneModule(model=policy, tokenizer=tokenizer, objective=make_objective(settings, reward, seed),
                            optimizer=_adamw(settings.rl_lr), checkpoint_on_interrupt=False)
    start = time.perf_counter()
    trainer = quiet_trainer(settings.rl_steps)
    trainer.fit(module, data_module(settings, seed, tokenizer, settings.rl_prompts))
    seconds = time.perf_counter() - start
    made = int(trainer.global_step)
    evaluated = time.perf_counter()
    accuracy = held_out_accuracy(module.policy, tokenizer, settings)
    eval_seconds = time.perf_counter() - evaluated
    del module, trainer
    _free()
    return {
        "accuracy": accuracy,
        "optimizer_steps": warmup_steps + made,
        "rl_steps": made,
        "rollouts": len(reward.batch_means),
        "tokens_sampled": reward.tokens,
        "responses_sampled": len(reward.scores),
        "mean_train_score": reward.mean_score(),
        "train_score": reward.quarter_means(),
        "seconds": warmup_seconds + seconds,
        "stage_seconds": seconds,
        "eval_seconds": eval_seconds,
    }


def _free() -> None:
    """Collect the last arm's module, trainer and optimizer now: Lightning's trainer and module
    refer to each other, so without a full collection each arm's ~2.7 GB (policy, reference,
    AdamW state, gradients) outlives it and the next arm's comes on top."""
    gc.collect()


def run_untrained(settings: RealModelRLSettings) -> Dict[str, Any]:
    """The instruct model's held-out accuracy (greedy: the same for every seed)."""
    from ift.modules import FineTuneModule

    start = time.perf_counter()
    base = FineTuneModule(model=settings.model)
    loaded = time.perf_counter()
    accuracy = held_out_accuracy(base.policy, base.tokenizer, settings)
    return {"untrained": {"accuracy": accuracy, "optimizer_steps": 0, "tokens_sampled": 0, "seconds": 0.0,
                          "eval_seconds": time.perf_counter() - loaded},
            "load_seconds": loaded - start, "seconds": time.perf_counter() - start}


def run_seed(settings: RealModelRLSettings, seed: int, log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Train the trained arms for one seed (every arm but ``untrained``)."""
    from ift.modules import FineTuneModule
    from ift.objectives import SFT

    say = log or (lambda message: None)
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    # The SFT arm unclipped (RL clipped at norm 1), as the published table was measured.
    whole = FineTuneModule(model=settings.model, objective=SFT(), optimizer=_adamw(settings.sft_lr), max_grad_norm=None,
                           checkpoint_on_interrupt=False)
    tokenizer = whole.tokenizer
    results: Dict[str, Any] = {"seed": seed, "arms": {}, "load_seconds": time.perf_counter() - start}

    # GRPO from the instruct model (its own copy; the loaded weights stay for the SFT run).
    results["arms"]["grpo"] = _rl_arm(settings, seed, copy.deepcopy(whole.policy), tokenizer, _grpo, 0, 0.0)
    say(f"seed {seed}: grpo {results['arms']['grpo']['accuracy']:.3f}")

    # One SFT run of warmup + rl steps; its weights at the warm-up's end start the other arms.
    pl.seed_everything(seed, verbose=False)
    snapshot = SnapshotAt(settings.warmup_steps)
    sft_start = time.perf_counter()
    total = settings.warmup_steps + settings.rl_steps
    quiet_trainer(total, [snapshot]).fit(whole, data_module(settings, seed, tokenizer, settings.sft_batch_size))
    sft_seconds = time.perf_counter() - sft_start
    warmup_seconds = snapshot.time - sft_start
    warm_policy = copy.deepcopy(whole.policy)
    warm_policy.load_state_dict(snapshot.state)
    snapshot.state = None
    sft_steps = {"tokens_sampled": 0, "responses_sampled": 0}
    evaluated = time.perf_counter()
    results["arms"]["sft+sft"] = dict(sft_steps, accuracy=held_out_accuracy(whole.policy, tokenizer, settings),
                                      optimizer_steps=total, seconds=sft_seconds, eval_seconds=0.0)
    results["arms"]["sft+sft"]["eval_seconds"] = time.perf_counter() - evaluated
    del whole
    _free()
    evaluated = time.perf_counter()
    results["arms"]["sft"] = dict(sft_steps, accuracy=held_out_accuracy(warm_policy, tokenizer, settings),
                                  optimizer_steps=settings.warmup_steps, seconds=warmup_seconds, eval_seconds=0.0)
    results["arms"]["sft"]["eval_seconds"] = time.perf_counter() - evaluated
    say(f"seed {seed}: sft {results['arms']['sft']['accuracy']:.3f}, sft+sft {results['arms']['sft+sft']['accuracy']:.3f}")

    results["arms"]["sft+grpo"] = _rl_arm(settings, seed, copy.deepcopy(warm_policy), tokenizer, _grpo,
                                          settings.warmup_steps, warmup_seconds)
    say(f"seed {seed}: sft+grpo {results['arms']['sft+grpo']['accuracy']:.3f}")
    results["arms"]["sft+ppo"] = _rl_arm(settings, seed, warm_policy, tokenizer, _ppo,
                                         settings.warmup_steps, warmup_seconds)
    say(f"seed {seed}: sft+ppo {results['arms']['sft+ppo']['accuracy']:.3f}")
    results["seconds"] = time.perf_counter() - start
    return results


def run_job(job) -> Dict[str, Any]:
    """``("untrained", settings)`` -> :func:`run_untrained`; ``("seed", settings, seed)`` -> :func:`run_seed`."""
    kind, *args = job
    if kind == "untrained":
        return dict(run_untrained(*args), kind="untrained")
    if kind == "seed":
        return dict(run_seed(*args, log=_print), kind="seed")
    raise ValueError(f"real-model RL: unknown job kind {kind!r}; 'untrained' or 'seed'")


def _print(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def iter_runs(settings: RealModelRLSettings, seeds: Sequence[int], workers: int = 2,
              untrained: bool = True) -> Iterator[Dict[str, Any]]:
    """The untrained measurement (unless ``untrained`` is False), then every seed, over
    ``workers`` processes (one thread each); yielded as each finishes."""
    jobs: List[Any] = ([("untrained", settings)] if untrained else []) + [("seed", settings, seed) for seed in seeds]
    yield from imap_in_processes(run_job, jobs, workers)


def with_untrained(runs: Sequence[Dict[str, Any]], untrained: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every seed's arms with the (seed-independent) untrained measurement added."""
    return [dict(run, arms=dict(run["arms"], untrained=untrained["untrained"])) for run in runs]
