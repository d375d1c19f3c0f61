"""The claims of the check, each judged on paired per-seed differences.

Two parts: the paper's claims (arXiv 2405.11870 §5.3, reported there as a figure and text,
no numbers) and this project's own checks. "A below B" holds when the mean of the per-seed
differences ``A − B`` is more than :data:`Z` standard errors below 0 (sample std /
sqrt(seeds)): neither the seed-to-seed spread nor a change of CPU kernels can flip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

#: Standard errors a paired difference must clear for a comparison to hold.
Z = 2.0


@dataclass
class Claim:
    """One claim, its verdict and the numbers behind it."""

    part: str  # "paper" or "project"
    text: str
    holds: bool
    evidence: str


def per_seed(runs: List[Dict[str, Any]], objective: str, metric: str) -> Dict[int, float]:
    """``{seed: metric}`` of one objective's runs."""
    return {run["seed"]: float(run["metrics"][metric]) for run in runs if run["objective"] == objective}


def paired(runs: List[Dict[str, Any]], first: str, second: str, metric: str) -> Tuple[float, float, int]:
    """``(mean, standard error, seeds)`` of the per-seed differences ``first − second``."""
    a, b = per_seed(runs, first, metric), per_seed(runs, second, metric)
    diffs = [a[seed] - b[seed] for seed in sorted(set(a) & set(b))]
    if not diffs:
        return math.nan, math.nan, 0
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, math.inf, len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean, math.sqrt(var / len(diffs)), len(diffs)


def below(runs: List[Dict[str, Any]], first: str, second: str, metric: str) -> Tuple[bool, str]:
    """Whether ``first``'s ``metric`` is robustly below ``second``'s, and the numbers."""
    mean, se, seeds = paired(runs, first, second, metric)
    if seeds == 0:
        return False, f"{first} or {second} did not run"
    holds = mean < -Z * se
    return holds, f"{first} − {second} = {mean:+.4f} ± SE {se:.4f} over {seeds} seeds"


def chain(runs: List[Dict[str, Any]], order: Sequence[str], metric: str) -> Tuple[bool, str]:
    """Whether ``metric`` rises robustly along ``order`` (each one below the next)."""
    verdicts = [below(runs, a, b, metric) for a, b in zip(order, order[1:])]
    return all(v for v, _ in verdicts), "; ".join(text for _, text in verdicts)


def all_seeds(runs: List[Dict[str, Any]], objective: str, metric: str, value: float) -> Tuple[bool, str]:
    """Whether every seed of ``objective`` has ``metric == value``."""
    values = per_seed(runs, objective, metric)
    if not values:
        return False, f"{objective} did not run"
    hits = sum(1 for v in values.values() if v == value)
    return hits == len(values), f"{metric} = {value:g} on {hits} of {len(values)} seeds"


def identical(runs: List[Dict[str, Any]], first: str, second: str) -> Tuple[bool, str]:
    """Whether two objectives give the same metrics and policies on every seed."""
    a = {run["seed"]: run for run in runs if run["objective"] == first}
    b = {run["seed"]: run for run in runs if run["objective"] == second}
    if not a or set(a) != set(b):
        return False, f"{first} or {second} did not run on the same seeds"
    same = [a[s]["metrics"] == b[s]["metrics"] and a[s]["action_probs"] == b[s]["action_probs"] for s in a]
    return all(same), f"identical metrics and policies on {sum(same)} of {len(same)} seeds"


#: The check on the GRPO arm (tests/test_grpo_learning.py asserts it on its own runs).
GRPO_CLAIM = "GRPO solves the map from the reward alone"

#: ``(part, text, judge)``; ``judge(runs) -> (holds, evidence)``.
CLAIMS: List[Tuple[str, str, Callable[[List[Dict[str, Any]]], Tuple[bool, str]]]] = [
    ("paper", "IFT closer to π* than SFT", lambda r: below(r, "IFT", "SFT", "mse_to_optimal")),
    ("paper", "IFT closer to π* than ORPO", lambda r: below(r, "IFT", "ORPO", "mse_to_optimal")),
    ("paper", "DPO (slightly) closer to π* than IFT", lambda r: below(r, "DPO", "IFT", "mse_to_optimal")),
    ("paper", "explored grid agrees with π*: DPO > IFT > ORPO > SFT",
     lambda r: chain(r, ("DPO", "IFT", "ORPO", "SFT"), "explored_mse")),
    ("paper", "DPO explores more grids than SFT", lambda r: below(r, "SFT", "DPO", "explored_states")),
    ("paper", "ORPO explores more grids than SFT", lambda r: below(r, "SFT", "ORPO", "explored_states")),
    ("paper", "IFT explores more grids than SFT", lambda r: below(r, "SFT", "IFT", "explored_states")),
    ("project", "IFT with λ = 0, γ = 0 is SFT exactly", lambda r: identical(r, "IFT-lam0-gamma0", "SFT")),
    ("project", "PPO solves the map from the reward alone", lambda r: all_seeds(r, "PPO", "success_rate", 1.0)),
    ("project", GRPO_CLAIM, lambda r: all_seeds(r, "GRPO", "success_rate", 1.0)),
    ("project", "SFT → PPO solves the map", lambda r: all_seeds(r, "SFT-PPO", "success_rate", 1.0)),
]


def judge_claims(runs: List[Dict[str, Any]]) -> List[Claim]:
    """Every claim of :data:`CLAIMS` judged on ``runs``."""
    claims = []
    for part, text, judge in CLAIMS:
        holds, evidence = judge(runs)
        claims.append(Claim(part, text, holds, evidence))
    return claims


def format_claims(claims: List[Claim], policy: str) -> str:
    """Both parts of the claims table for one policy, as text."""
    lines = []
    for part, title in (("paper", "the paper's claims"), ("project", "this project's checks")):
        mine = [claim for claim in claims if claim.part == part]
        held = sum(claim.holds for claim in mine)
        lines.append(f"{policy} policy, {title}: {held} of {len(mine)} hold")
        for claim in mine:
            lines.append(f"  [{'holds' if claim.holds else 'does not hold'}] {claim.text}: {claim.evidence}")
    return "\n".join(lines)
