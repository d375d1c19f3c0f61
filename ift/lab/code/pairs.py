"""Preference pairs from the sandbox: a passing program (chosen) beside a failing one (rejected).

The input is programs already sampled for each code problem, each tagged with the source
that produced it (``strong`` or ``weak``: two policies, or one policy at two temperatures;
see :mod:`ift.lab.code.pair_sampling`). :func:`synthesise_pairs` runs every program on
its problem's tests in the project's sandbox (:class:`ift.rewards.CodeTestsReward`) and
pairs them; :func:`pair_programs` is the pairing alone, on programs already scored.

Every two programs of a problem are a *candidate pair*. A candidate is dropped, and
counted by its reason, when

* ``identical``: both sides are the same program (the same code once extracted), so
  there is nothing to prefer;
* ``both_passing`` / ``both_failing``: both pass every test, or neither does (a partial
  pass is a failure: the chosen side must pass all tests);
* ``duplicate``: the same (chosen, rejected) programs as an earlier candidate, when a
  policy sampled a program more than once;
* ``over_cap``: the problem already has ``max_pairs_per_problem`` pairs.

So ``candidates == pairs + sum(dropped)`` always. Among the usable candidates the pairs
kept prefer a chosen program from the strong source and a rejected one from the weak
source (the contrast a reward model should learn), then programs not yet used in a kept
pair (varied pairs), then a seeded shuffle: the same inputs and seed give the same pairs.

Records (:func:`pair_record`) hold ``prompt``, ``chosen`` and ``rejected``, the fields
:class:`ift.data.PreferenceDataModule` reads by default, plus their provenance.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ift.rewards.code import CodeTestsReward, extract_code

#: The two sources of programs, in the order they are sampled and reported.
SOURCES = ("strong", "weak")
#: Why a candidate pair is not written, in the order the reasons are checked.
DROP_REASONS = ("identical", "both_passing", "both_failing", "duplicate", "over_cap")


@dataclasses.dataclass(frozen=True)
class Program:
    """One sampled program (the response text as generated) and what produced it.

    Attributes:
        text: the response; the code run is :func:`ift.rewards.code.extract_code` of it.
        source: ``strong`` or ``weak`` (:data:`SOURCES`).
        policy: what generated it (a checkpoint path, export folder or preset name).
        temperature: the sampling temperature (0: greedy).
    """

    text: str
    source: str
    policy: str = ""
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"Program.source must be one of {SOURCES}, got {self.source!r}")


@dataclasses.dataclass(frozen=True)
class ScoredProgram:
    """A program with its sandbox result.

    Attributes:
        program: the program.
        pass_fraction: tests passed / tests (0 on a timeout, crash, syntax error, ...).
        status: the sandbox status (``ok``, ``timeout``, ``error``, ...).
    """

    program: Program
    pass_fraction: float
    status: str = "ok"

    @property
    def passes(self) -> bool:
        """True when every test passes: only such a program can be the chosen side."""
        return self.pass_fraction >= 1.0

    @functools.cached_property  # compared against every other program of the problem
    def code(self) -> str:
        """The code that ran: what decides whether two programs are identical."""
        return extract_code(self.program.text).strip()


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference pair of a problem: ``chosen`` passes every test, ``rejected`` does not."""

    chosen: ScoredProgram
    rejected: ScoredProgram


@dataclasses.dataclass
class PairSummary:
    """What a run of :func:`synthesise_pairs` did; ``candidates == pairs + sum(dropped)``.

    Attributes:
        problems: problems given.
        problems_with_pairs: problems that gave at least one pair.
        samples: programs given, over all problems.
        samples_by_source: programs per source.
        passing_by_source: programs that pass every test, per source.
        candidates: candidate pairs (every two programs of a problem).
        pairs: pairs kept (records written).
        dropped: dropped candidates per reason (:data:`DROP_REASONS`, every reason present).
        sandbox: the reward's counters (``ok``, ``timeout``, ``runs``, ``cache_hits``, ...).
    """

    problems: int = 0
    problems_with_pairs: int = 0
    samples: int = 0
    samples_by_source: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    passing_by_source: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    candidates: int = 0
    pairs: int = 0
    dropped: Dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    sandbox: Dict[str, int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        """The summary as plain JSON values."""
        return dataclasses.asdict(self)

    def add(self, other: "PairSummary") -> None:
        """Add the counts of ``other``, the summary of other problems (a run made of groups)."""
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, field.name, mine + theirs)


@dataclasses.dataclass
class PairSet:
    """The result of :func:`synthesise_pairs`: the records to write and the summary."""

    records: List[Dict[str, Any]]
    summary: PairSummary


def _preference(pair: Pair) -> int:
    """0 for strong-chosen over weak-rejected (the contrast wanted), 1 for one of the two, 2 for neither."""
    return int(pair.chosen.program.source != "strong") + int(pair.rejected.program.source != "weak")


def pair_programs(scored: Sequence[ScoredProgram], max_pairs: Optional[int], rng: random.Random,
                  ) -> Tuple[List[Pair], Counter]:
    """The pairs of one problem's scored programs, and the dropped candidates per reason.

    See the module docstring for the candidates, the reasons and the order of preference.
    ``max_pairs`` None keeps every usable candidate; ``rng`` breaks ties (seed it for
    reproducible pairs).
    """
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
    dropped: Counter = Counter()
    usable: List[Pair] = []
    seen = set()
    for first, second in itertools.combinations(scored, 2):
        if first.code == second.code:
            dropped["identical"] += 1
        elif first.passes and second.passes:
            dropped["both_passing"] += 1
        elif not first.passes and not second.passes:
            dropped["both_failing"] += 1
        else:
            pair = Pair(first, second) if first.passes else Pair(second, first)
            key = (pair.chosen.code, pair.rejected.code)
            if key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                usable.append(pair)
    order = list(range(len(usable)))
    rng.shuffle(order)  # the last tie-break; a seeded shuffle, so the same seed gives the same pairs
    position = {index: rank for rank, index in enumerate(order)}
    if max_pairs is None or max_pairs >= len(usable):
        # Every usable pair is kept: only their order is chosen, and the greedy loop below
        # (quadratic in the candidates) would cost seconds a problem with many samples.
        ranked = sorted(range(len(usable)), key=lambda index: (_preference(usable[index]), position[index]))
        return [usable[index] for index in ranked], dropped
    limit = max_pairs
    uses: Counter = Counter()
    kept: List[Pair] = []
    remaining = list(range(len(usable)))
    while len(kept) < limit:
        # Greedy, one pair at a time: the preferred sources first, then the programs used
        # least so far, so a cap of 4 does not give one chosen program against 4 rejections
        # when other passing programs exist.
        best = min(remaining, key=lambda index: (
            _preference(usable[index]),
            uses[usable[index].chosen.code] + uses[usable[index].rejected.code],
            position[index]))
        remaining.remove(best)
        pair = usable[best]
        uses[pair.chosen.code] += 1
        uses[pair.rejected.code] += 1
        kept.append(pair)
    dropped["over_cap"] += len(remaining)
    return kept, dropped


def pair_record(problem: Dict[str, Any], problem_id: str, pair: Pair) -> Dict[str, Any]:
    """The JSONL record of one pair: ``prompt``, ``chosen``, ``rejected`` (what
    :class:`ift.data.PreferenceDataModule` reads by default), then provenance: the
    problem's id and tests, and per side its source, policy, temperature and pass fraction.
    There is deliberately no ``answer`` field: the preference data module would read it as
    a reference answer."""
    record: Dict[str, Any] = {"prompt": problem["prompt"], "chosen": pair.chosen.program.text,
                              "rejected": pair.rejected.program.text, "problem_id": problem_id}
    for side, scored in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        record[f"{side}_source"] = scored.program.source
        record[f"{side}_policy"] = scored.program.policy
        record[f"{side}_temperature"] = scored.program.temperature
        record[f"{side}_pass_fraction"] = scored.pass_fraction
        record[f"{side}_status"] = scored.status
    record["tests"] = list(problem["tests"])
    return record


def score_programs(problems: Sequence[Dict[str, Any]], programs: Sequence[Sequence[Program]],
                   reward: CodeTestsReward) -> List[List[ScoredProgram]]:
    """Every program run on its problem's tests in the sandbox, in one call of ``reward``
    (so its workers run programs of several problems at once, and repeated programs run once).

    ``reward`` must give partial credit: the pass fraction is written in the records.
    """
    if not reward.partial_credit:
        raise ValueError("score_programs needs a CodeTestsReward with partial_credit=True (the pass fraction is "
                         "recorded; a program passes when it is 1)")
    flat = [(problem, program) for problem, group in zip(problems, programs) for program in group]
    scores = reward([problem["prompt"] for problem, _ in flat], [program.text for _, program in flat],
                    [problem for problem, _ in flat]) if flat else []
    results = list(reward.last_results) if flat else []
    scored: List[List[ScoredProgram]] = []
    position = 0
    for group in programs:
        scored.append([ScoredProgram(program, float(score), result.status if result is not None else "ok")
                       for program, score, result in zip(group, scores[position:position + len(group)],
                                                         results[position:position + len(group)])])
        position += len(group)
    return scored


def synthesise_pairs(problems: Sequence[Dict[str, Any]], programs: Sequence[Sequence[Program]], *,
                     problem_ids: Optional[Sequence[str]] = None, max_pairs_per_problem: Optional[int] = 4,
                     seed: int = 0, reward: Optional[CodeTestsReward] = None) -> PairSet:
    """Preference pairs of code problems from programs already sampled for them.

    Args:
        problems: the problems, each with ``prompt`` and ``tests`` (as the built-in code
            task's examples, :func:`ift.tasks.code.code_examples`).
        programs: per problem, its sampled :class:`Program` s (any number, both sources mixed).
        problem_ids: an id per problem for the records (default ``problem-<index>``).
        max_pairs_per_problem: most pairs kept per problem (None: every usable candidate).
        seed: seed of the tie-breaks between equally preferred pairs.
        reward: the sandboxed scorer (default ``CodeTestsReward()``; it must give partial credit).

    Returns:
        :class:`PairSet`: the records (:func:`pair_record`), problem by problem, and the
        :class:`PairSummary`.
    """
    if len(programs) != len(problems):
        raise ValueError(f"synthesise_pairs: {len(problems)} problems but programs for {len(programs)}; "
                         f"give one list of programs per problem")
    ids = list(problem_ids) if problem_ids is not None else [f"problem-{index}" for index in range(len(problems))]
    if len(ids) != len(problems):
        raise ValueError(f"synthesise_pairs: {len(problems)} problems but {len(ids)} problem_ids")
    reward = reward if reward is not None else CodeTestsReward()
    summary = PairSummary(problems=len(problems))
    records: List[Dict[str, Any]] = []
    for problem, problem_id, scored in zip(problems, ids, score_programs(problems, programs, reward)):
        for item in scored:
            summary.samples += 1
            summary.samples_by_source[item.program.source] += 1
            summary.passing_by_source[item.program.source] += int(item.passes)
        summary.candidates += len(scored) * (len(scored) - 1) // 2
        # A generator per problem, seeded by the problem's id: a problem's pairs do not
        # depend on which other problems were asked for.
        pairs, dropped = pair_programs(scored, max_pairs_per_problem, random.Random(f"code-pairs:{seed}:{problem_id}"))
        for reason, count in dropped.items():
            summary.dropped[reason] += count
        summary.pairs += len(pairs)
        summary.problems_with_pairs += int(bool(pairs))
        records += [pair_record(problem, problem_id, pair) for pair in pairs]
    summary.sandbox = dict(reward.counts)
    return PairSet(records, summary)


__all__ = ["DROP_REASONS", "SOURCES", "Pair", "PairSet", "PairSummary", "Program", "ScoredProgram", "pair_programs",
           "pair_record", "score_programs", "synthesise_pairs"]
