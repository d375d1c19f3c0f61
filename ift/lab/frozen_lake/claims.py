"""The claims of the check, each judged on paired per-seed differences.

Three parts: the paper's claims (arXiv 2405.11870 §5.3, reported there as a figure and text,
no numbers), what the map does to every trained policy, and this project's own checks. A claim
about "closer to π*" is judged under every reading of the metric
(:mod:`ift.lab.frozen_lake.readings`); its verdict is the headline reading's. "A below B" holds when the mean of the per-seed
differences ``A − B`` is more than :data:`Z` standard errors below 0 (sample std /
sqrt(seeds)): neither the seed-to-seed spread nor a change of CPU kernels can flip it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

from ift.lab.frozen_lake.readings import HEADLINE, READINGS, Reading

#: Standard errors a paired difference must clear for a comparison to hold.
Z = 2.0


@dataclass
class Claim:
    """One claim, its verdict and the numbers behind it."""

    part: str  # "paper", "observation" or "project"
    text: str
    holds: bool
    evidence: str
    #: ``{reading name: {"holds", "evidence"}}`` for a claim about MSE to π* (else empty).
    readings: Dict[str, Dict[str, Any]] = field(default_factory=dict)


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
#: The pseudo-objective of the policies before training (each seed's, from its runs' start).
UNTRAINED = "untrained"
#: The objectives trained on the paper's data: does each end further from π* than it began?
SUPERVISED = ("SFT", "IFT", "DPO", "ORPO")

Judge = Callable[[List[Dict[str, Any]], Reading], Tuple[bool, str]]


@dataclass(frozen=True)
class ClaimSpec:
    """A claim to judge: its part (``paper``, ``observation`` or ``project``), its words, the
    objectives it needs, how to judge it under a reading, and whether the reading matters
    (a claim about MSE to π*) or not (explored-state counts, success)."""

    part: str
    text: str
    needs: Tuple[str, ...]
    judge: Judge
    by_reading: bool = True


#: Every claim, in table order.
CLAIMS: List[ClaimSpec] = [
    ClaimSpec("paper", "IFT closer to π* than SFT", ("IFT", "SFT"),
              lambda r, g: below(r, "IFT", "SFT", g.mse_key)),
    ClaimSpec("paper", "IFT closer to π* than ORPO", ("IFT", "ORPO"),
              lambda r, g: below(r, "IFT", "ORPO", g.mse_key)),
    ClaimSpec("paper", "DPO (slightly) closer to π* than IFT", ("DPO", "IFT"),
              lambda r, g: below(r, "DPO", "IFT", g.mse_key)),
    ClaimSpec("paper", "explored grid agrees with π*: DPO > IFT > ORPO > SFT", ("DPO", "IFT", "ORPO", "SFT"),
              lambda r, g: chain(r, ("DPO", "IFT", "ORPO", "SFT"), g.explored_key)),
    ClaimSpec("paper", "DPO explores more grids than SFT", ("DPO", "SFT"),
              lambda r, g: below(r, "SFT", "DPO", "explored_states"), by_reading=False),
    ClaimSpec("paper", "ORPO explores more grids than SFT", ("ORPO", "SFT"),
              lambda r, g: below(r, "SFT", "ORPO", "explored_states"), by_reading=False),
    ClaimSpec("paper", "IFT explores more grids than SFT", ("IFT", "SFT"),
              lambda r, g: below(r, "SFT", "IFT", "explored_states"), by_reading=False),
] + [
    ClaimSpec("observation", f"{name} ends further from π* than the untrained policy", (name,),
              lambda r, g, name=name: below(r, UNTRAINED, name, g.mse_key))
    for name in SUPERVISED
] + [
    ClaimSpec("project", "IFT with λ = 0, γ = 0 is SFT exactly", ("IFT-lam0-gamma0", "SFT"),
              lambda r, g: identical(r, "IFT-lam0-gamma0", "SFT"), by_reading=False),
    ClaimSpec("project", "PPO solves the map from the reward alone", ("PPO",),
              lambda r, g: all_seeds(r, "PPO", "success_rate", 1.0), by_reading=False),
    ClaimSpec("project", GRPO_CLAIM, ("GRPO",),
              lambda r, g: all_seeds(r, "GRPO", "success_rate", 1.0), by_reading=False),
    ClaimSpec("project", "SFT → PPO solves the map", ("SFT-PPO",),
              lambda r, g: all_seeds(r, "SFT-PPO", "success_rate", 1.0), by_reading=False),
]
#: The parts of the claims table, in order, with their titles.
PARTS = (("paper", "the paper's claims"), ("observation", "what the map does"), ("project", "this project's checks"))


def with_untrained(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``runs`` plus one :data:`UNTRAINED` run per seed: the first objective's policy before
    training (every objective of a seed starts from the same weights)."""
    first: Dict[int, Dict[str, Any]] = {}
    for run in runs:
        first.setdefault(int(run["seed"]), run)
    return list(runs) + [{"objective": UNTRAINED, "seed": seed, "metrics": run["initial_metrics"]}
                         for seed, run in first.items() if "initial_metrics" in run]


def judge_claims(runs: List[Dict[str, Any]]) -> List[Claim]:
    """Every claim of :data:`CLAIMS` whose objectives ran, judged on ``runs``: its verdict under
    the headline reading, and, for a claim about MSE to π*, under every reading."""
    ran = {run["objective"] for run in runs}
    runs = with_untrained(runs)
    claims = []
    for spec in CLAIMS:
        if not set(spec.needs) <= ran:
            continue
        holds, evidence = spec.judge(runs, HEADLINE)
        readings = {reading.name: spec.judge(runs, reading) for reading in READINGS} if spec.by_reading else {}
        claims.append(Claim(spec.part, spec.text, holds, evidence,
                            {name: {"holds": v, "evidence": text} for name, (v, text) in readings.items()}))
    return claims


def format_claims(claims: List[Claim], policy: str) -> str:
    """Every part of the claims table for one policy, as text: the verdicts under the headline
    reading, then a grid of the verdicts of each claim about π* under every reading."""
    lines = []
    for part, title in PARTS:
        mine = [claim for claim in claims if claim.part == part]
        if not mine:
            continue
        held = sum(claim.holds for claim in mine)
        lines.append(f"{policy} policy, {title}: {held} of {len(mine)} hold"
                     + (f" ({HEADLINE.label})" if any(c.readings for c in mine) else ""))
        for claim in mine:
            lines.append(f"  [{'holds' if claim.holds else 'does not hold'}] {claim.text}: {claim.evidence}")
    graded = [claim for claim in claims if claim.readings]
    if graded:
        lines.append(reading_grid(graded))
    return "\n".join(lines)


def reading_grid(claims: List[Claim]) -> str:
    """The verdict of each claim under each reading (``yes`` / ``.``), * marking the readings the
    paper's words describe."""
    width = max(len(claim.text) for claim in claims) + 4
    groups: Dict[str, List[Reading]] = {}
    for reading in READINGS:
        groups.setdefault(reading.ties, []).append(reading)
    cells = {reading.name: f"{REGION_SHORT[reading.region]}{'*' if reading.paper_words else ''}" for reading in READINGS}
    header = " " * width + "   ".join(
        f"{('π* ' + ties.replace('_', '-')):<{sum(len(cells[r.name]) + 1 for r in group)}}" for ties, group in groups.items())
    columns = " " * width + "   ".join(" ".join(cells[r.name] for r in group) for group in groups.values())
    lines = ["  under every reading (yes: holds; *: the states the paper's words describe):", header, columns]
    for claim in claims:
        row = "   ".join(" ".join(f"{('yes' if claim.readings[r.name]['holds'] else '.'):<{len(cells[r.name])}}"
                                  for r in group) for group in groups.values())
        lines.append(f"  {claim.text:<{width - 2}}" + row)
    return "\n".join(lines)


#: Column headings of the regions in :func:`reading_grid`.
REGION_SHORT = {"map": "map", "nonterminal": "non-terminal", "optimal_path": "path", "training": "training"}
