"""The SFT-vs-RL code study's machinery on a few steps: each arm's accounting (equal optimizer
steps in finding 2, equal samples in finding 3), its measurements, the report's statistics
against a plain loop, and refusals of settings it cannot honour."""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from ift.lab.code_study import TINY, CodeStudySettings
from ift.lab.code_study.arms import SECOND_STAGES, mix_arms, run_after_sft, run_job, run_mix, run_scratch, study_jobs
from ift.lab.code_study.measure import PassRateCurve, split_scores
from ift.lab.code_study.report import paired, report

MICRO = dataclasses.replace(
    TINY, num_held_out=3, num_target=3, batch_size=4, eval_batch_size=3, sft_steps=2, synthetic_counts=(0, 2),
    synthetic_only=4, warmup_synthetic=4, warmup_steps=2, second_stage_steps=2, num_generations=2,
    scratch_synthetic=4, scratch_rl_steps=2, curve_points=2, pass_at_k_samples=2, pass_at_k=(1, 2), reward_workers=1)


def test_finding_two_gives_every_second_stage_the_same_optimizer_steps_and_counts_its_samples():
    result = run_after_sft(MICRO, seed=0)
    assert list(result["arms"]) == list(SECOND_STAGES)
    assert {arm["optimizer_steps"] for arm in result["arms"].values()} == {MICRO.warmup_steps + MICRO.second_stage_steps}
    for arm in ("sft+grpo", "sft+ppo"):
        assert result["arms"][arm]["samples_drawn"] == MICRO.second_stage_steps * MICRO.rollout_samples
        assert result["arms"][arm]["tokens_sampled"] > 0
    assert result["arms"]["sft+sft"]["samples_drawn"] == result["arms"]["sft+sft"]["tokens_sampled"] == 0
    for cell in (result["warmup"], *result["arms"].values()):
        assert set(cell["pass_at_k"]) == {"held_out", "target"}
        for split in ("held_out", "target"):
            assert 0.0 <= cell[split] <= 1.0
        for values in cell["pass_at_k"].values():
            assert set(values) == {"pass@1", "pass@2"} and values["pass@1"] <= values["pass@2"]
    assert result["train_problems"] == 45 + MICRO.warmup_synthetic


def test_finding_three_matches_samples_and_measures_along_the_way():
    result = run_scratch(MICRO, seed=0)
    grpo, sft = result["arms"]["grpo"], result["arms"]["sft"]
    assert grpo["training_samples"] == sft["training_samples"] == MICRO.scratch_rl_steps * MICRO.rollout_samples
    assert sft["optimizer_steps"] == MICRO.scratch_sft_steps == MICRO.scratch_rl_steps * MICRO.num_generations
    for arm in (grpo, sft):
        assert arm["curve"][0]["step"] == 0 and arm["curve"][-1]["step"] == arm["optimizer_steps"]
        assert arm["curve"][-1]["train"] == arm["train"] and arm["gap"] == arm["train"] - arm["held_out"]
        assert [p["samples"] for p in arm["curve"]] == sorted({p["samples"] for p in arm["curve"]})
    # the base is the tiny model after SFT on the atomic functions: finding 1's atomic arm, same seed
    assert result["base"]["held_out"] == run_mix(MICRO, 0, "atomic")["held_out"]


def test_jobs_cover_each_finding_and_seed_and_refuse_unknown_names():
    jobs = study_jobs(MICRO, [0, 1], ["mix", "after_sft"])
    assert [job[0] for job in jobs].count("after_sft") == 2
    assert [job[3] for job in jobs if job[0] == "mix"] == mix_arms(MICRO) * 2 == ["atomic", "atomic+2", "synthetic"] * 2
    with pytest.raises(ValueError, match="unknown finding"):
        study_jobs(MICRO, [0], ["rl"])
    with pytest.raises(ValueError, match="unknown job kind"):
        run_job(("sweep", MICRO, 0))
    with pytest.raises(ValueError, match="unknown training mix"):
        run_mix(MICRO, 0, "atomic+many")


def test_settings_that_cannot_be_honoured_are_refused():
    with pytest.raises(ValueError, match="rl_base"):
        CodeStudySettings(rl_base="scratch")
    with pytest.raises(ValueError, match="pass@k needs"):
        CodeStudySettings(pass_at_k_samples=4, pass_at_k=(1, 8))
    with pytest.raises(ValueError, match=">= 1"):
        CodeStudySettings(second_stage_steps=0)
    with pytest.raises(ValueError, match="greedy"):
        split_scores(None, None, None, "val", None, 8, samples=2, temperature=None)
    with pytest.raises(ValueError, match="every_steps"):
        PassRateCurve(0, 1, lambda policy: {})


def test_paired_differences_and_table_cells_match_a_plain_loop():
    first, second = [0.5, 0.25, 0.75], [0.25, 0.5, 0.25]
    diffs = []
    for a, b in zip(first, second):
        diffs.append(a - b)
    mean = sum(diffs) / len(diffs)
    std = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
    assert paired(first, second) == f"{mean:+.3f} ± {std:.3f} (2/3 higher)"
    runs = {f"mix/{seed}/{arm}": {"finding": "mix", "seed": seed, "arm": arm, "train_problems": 45,
                                  "held_out": value, "target": 0.0, "seconds": 1.0}
            for seed, (a, b) in enumerate(zip(first, second)) for arm, value in (("atomic", b), ("atomic+5", a))}
    text = report({"settings": dataclasses.asdict(MICRO), "runs": runs})
    assert f"{statistics.fmean(first):.3f} ± {statistics.stdev(first):.3f}" in text
    assert "atomic+5 - atomic: " + paired(first, second) in text
