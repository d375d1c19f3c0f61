"""The settings of the SFT-vs-RL code study, at the two scales it runs at."""

from __future__ import annotations

import dataclasses
from typing import Tuple


@dataclasses.dataclass(frozen=True)
class CodeStudySettings:
    """One configuration of the study (every arm and seed of a scale uses it).

    Args:
        model: the policy: a preset (``tiny-gpt2``: character-level, random init) or
            ``smollm2-135m-instruct`` (pretrained, writes Python already).
        rl_base: where finding 3's RL and SFT start: ``atomic`` (the model after SFT on the
            atomic functions only: the tiny model knows no Python before that) or ``model``
            (the pretrained model itself, as in the paper).
        split_seed: seed of the compositions and their tests (the same for every seed).
        num_held_out: held-out synthetic compositions (finding 1 and 2's held-out pass rate).
        num_target: target-domain compositions (longer than any trained on).
        batch_size: SFT batch, and prompts per RL rollout.
        eval_batch_size: problems decoded at once when measuring.
        lr: AdamW learning rate of every SFT run from the model (findings 1 and 3, the warm-up).
        sft_steps: finding 1: optimizer steps of each training mix.
        synthetic_counts: finding 1: the k of the ``atomic+k`` mixes (0 is atomic only).
        synthetic_only: finding 1: synthetic compositions of the ``synthetic`` arm (0: no such arm).
        warmup_synthetic: finding 2: synthetic compositions in the warm-up's training mix
            (with every atomic function); RL and more SFT use the same prompts.
        warmup_steps: finding 2: SFT steps of the warm-up.
        second_stage_steps: finding 2: optimizer steps of every second stage (GRPO, PPO, more
            SFT; one rollout is one optimizer step).
        second_stage_lr: finding 2: learning rate of every second stage.
        measure_train: finding 2: also measure the greedy pass rate on the training prompts
            (every one of them: costly on a large model).
        num_generations: GRPO's group / PPO's samples per prompt.
        beta: GRPO's k3 KL coefficient to the stage's starting policy.
        kl_coef: PPO's KL coefficient in the reward.
        vf_coef: PPO's value-loss coefficient.
        scratch_synthetic: finding 3: synthetic training compositions (the train pass rate is
            measured on them).
        scratch_rl_steps: finding 3: GRPO rollouts (optimizer steps); SFT gets as many steps as
            make the same number of training samples.
        scratch_lr: finding 3: learning rate of GRPO and of SFT from the base.
        curve_points: finding 3: measurements along each run (plus one before it).
        pass_at_k_samples: finding 2: responses sampled per held-out and target problem for
            pass@k (0: greedy only).
        pass_at_k: the k reported.
        temperature: RL sampling and pass@k temperature.
        reward_workers: sandboxes running at once in each worker.
    """

    model: str = "tiny-gpt2"
    rl_base: str = "atomic"
    split_seed: int = 0
    num_held_out: int = 100
    num_target: int = 100
    batch_size: int = 32
    eval_batch_size: int = 100
    lr: float = 3e-3
    sft_steps: int = 1000
    synthetic_counts: Tuple[int, ...] = (0, 5, 25, 100, 400)
    synthetic_only: int = 400
    warmup_synthetic: int = 400
    warmup_steps: int = 1000
    second_stage_steps: int = 40
    second_stage_lr: float = 5e-4
    measure_train: bool = True
    num_generations: int = 4
    beta: float = 0.04
    kl_coef: float = 0.05
    vf_coef: float = 0.1
    scratch_synthetic: int = 100
    scratch_rl_steps: int = 40
    scratch_lr: float = 1e-3
    curve_points: int = 4
    pass_at_k_samples: int = 4
    pass_at_k: Tuple[int, ...] = (1, 4)
    temperature: float = 1.0
    reward_workers: int = 2

    def __post_init__(self):
        if self.rl_base not in ("atomic", "model"):
            raise ValueError(f"code study: rl_base must be 'atomic' or 'model', got {self.rl_base!r}")
        if any(k > self.pass_at_k_samples for k in self.pass_at_k) and self.pass_at_k_samples:
            raise ValueError(f"code study: pass@k needs k <= pass_at_k_samples ({self.pass_at_k_samples}), "
                             f"got {self.pass_at_k}")
        if self.second_stage_steps < 1 or self.scratch_rl_steps < 1 or self.curve_points < 1:
            raise ValueError("code study: second_stage_steps, scratch_rl_steps and curve_points must be >= 1")

    @property
    def num_synthetic_train(self) -> int:
        """Synthetic training compositions drawn: the most any arm uses."""
        return max((*self.synthetic_counts, self.synthetic_only, self.warmup_synthetic, self.scratch_synthetic))

    @property
    def split_settings(self):
        """The :class:`~ift.tasks.code.CompositionSplitSettings` every data module of the study draws from."""
        from ift.tasks.code import CompositionSplitSettings

        return CompositionSplitSettings(split_seed=self.split_seed, num_synthetic_train=self.num_synthetic_train,
                                        num_held_out=self.num_held_out, num_target=self.num_target)

    @property
    def rollout_samples(self) -> int:
        """Responses sampled per RL rollout."""
        return self.batch_size * self.num_generations

    @property
    def scratch_sft_steps(self) -> int:
        """Finding 3's SFT steps: as many training samples as the GRPO run samples."""
        return self.scratch_rl_steps * self.num_generations


#: The character-level scale: many seeds, minutes per seed.
TINY = CodeStudySettings()

#: The pretrained scale: SmolLM2-135M-Instruct on 2 CPU cores, a smaller grid.
SMOLLM2 = CodeStudySettings(
    model="smollm2-135m-instruct", rl_base="model", num_held_out=40, num_target=40, batch_size=8, eval_batch_size=40,
    lr=1e-4, sft_steps=16, synthetic_counts=(0, 5, 40), synthetic_only=40, warmup_synthetic=40, warmup_steps=8,
    second_stage_steps=6, second_stage_lr=2e-5, measure_train=False, scratch_synthetic=40, scratch_rl_steps=6, scratch_lr=2e-5,
    curve_points=2, pass_at_k_samples=0)

SCALES = {"tiny": TINY, "smollm2": SMOLLM2}

__all__ = ["CodeStudySettings", "SCALES", "SMOLLM2", "TINY"]
