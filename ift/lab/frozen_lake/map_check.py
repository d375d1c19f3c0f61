"""Does a map test DPO? The rejected path's moves, judged against π*, and the search for maps.

DPO (and ORPO) push down every move of the rejected path. Where that move is one of π\\*'s
optimal actions ``A*(s)`` (:meth:`FrozenLakeTask.optimal_actions`), the push lands on π\\*
itself, so a map tests the paper's DPO claim only if its rejected path's moves are really
worse. :func:`rejected_moves` lists them, :func:`rejected_summary` says it in one line and
:func:`map_report` gives both rejected paths of a map (``suboptimal_trajectory``, which reaches
``G``, and ``away_trajectory``, which is never optimal; see their docstrings for why a path to
``G`` cannot be mostly non-optimal). :func:`search_maps` is the search that found the named
maps of :mod:`ift.tasks.frozen_lake.maps`; ``python -m ift.lab.frozen_lake.map_check``
prints the report of every named map.
"""

from __future__ import annotations

import random
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTION_INDEX, MAP_SEPARATOR, NAMED_MAPS, MapError, MapSpec


class RejectedMove(NamedTuple):
    """One move of a rejected path: where it is taken, the action, and whether π\\* takes it."""

    state: int
    move: str
    is_optimal_there: bool


def rejected_moves(task: FrozenLakeTask, trajectory: Optional[str] = None) -> List[RejectedMove]:
    """``(state, move, is_optimal_there)`` for every executed move of ``trajectory``
    (default :meth:`FrozenLakeTask.suboptimal_trajectory`), in order.

    A move counts as optimal at ``state`` if it is in ``A*(state)``; border bumps and steps into
    holes never are. Moves after the episode ended (a hole, the goal) are not executed, so not
    listed; a character other than ``L D R U`` is an error.
    """
    text = task.suboptimal_trajectory() if trajectory is None else trajectory
    moves, state = [], task.start_state
    for char in text:
        if char not in ACTION_INDEX:
            raise ValueError(f"rejected_moves: {char!r} in {text!r} is not an action (L, D, R, U)")
        if task.is_terminal(state):
            break
        moves.append(RejectedMove(state, char, ACTION_INDEX[char] in task.optimal_actions(state)))
        state, _, _ = task.step(state, char)
    return moves


def rejected_summary(task: FrozenLakeTask, trajectory: Optional[str] = None) -> str:
    """One line, e.g. ``"rejected path DDDRRRU: 6 of its 7 moves are optimal under π* (at
    states 4, 8, 12, 13, 14, 15)"``."""
    text = task.suboptimal_trajectory() if trajectory is None else trajectory
    moves = rejected_moves(task, text)
    optimal = [str(move.state) for move in moves if move.is_optimal_there]
    where = f" (at states {', '.join(optimal)})" if optimal else ""
    return f"rejected path {text}: {len(optimal)} of its {len(moves)} moves are optimal under π*{where}"


def optimal_fraction(task: FrozenLakeTask, trajectory: Optional[str] = None) -> float:
    """The fraction of the executed moves of ``trajectory`` that are optimal where taken."""
    moves = rejected_moves(task, trajectory)
    return sum(move.is_optimal_there for move in moves) / len(moves)


def map_report(spec: MapSpec) -> Dict[str, object]:
    """A map's rows, optimal path and both rejected paths with their summaries.

    ``suboptimal`` / ``away`` are ``None`` where the map has no such path.
    """
    task = FrozenLakeTask(spec)
    report: Dict[str, object] = {
        "rows": task.rows,
        "shortest_paths": task.num_shortest_paths(),
        "optimal": task.optimal_trajectory(require_unique=False),
        "reachable_states": len(task.reachable_states()),
    }
    for key, method in (("suboptimal", task.suboptimal_trajectory), ("away", task.away_trajectory)):
        try:
            path = method()
        except ValueError:
            report[key], report[f"{key}_summary"] = None, None
            continue
        report[key], report[f"{key}_summary"] = path, rejected_summary(task, path)
    return report


# ----------------------------------------------------------------------------- the search
def _candidate_maps(size: int, start: int, goal: int, holes: int, rng: random.Random) -> Iterator[List[str]]:
    """Random ``size x size`` maps with ``S`` and ``G`` at the given tiles and ``holes`` holes."""
    free = [i for i in range(size * size) if i not in (start, goal)]
    while True:
        tiles = ["F"] * (size * size)
        tiles[start], tiles[goal] = "S", "G"
        for index in rng.sample(free, holes):
            tiles[index] = "H"
        yield ["".join(tiles[r * size:(r + 1) * size]) for r in range(size)]


def score_map(rows: Sequence[str], lengths: Sequence[int]) -> Optional[Tuple[int, int, int]]:
    """``(away moves, hole-ended, reachable states)`` of a usable map, else ``None``.

    Usable: one shortest path of a length in ``lengths``, and an away path. Larger is better:
    a longer away path is pushed down at more states off the optimal path.
    """
    try:
        task = FrozenLakeTask(rows)
    except MapError:
        return None
    if task.num_shortest_paths() != 1 or len(task.optimal_trajectory()) not in lengths:
        return None
    try:
        away = task.away_trajectory()
    except ValueError:
        return None
    ends_in_hole = task.run(away).outcome == "hole"
    return len(away), int(ends_in_hole), len(task.reachable_states())


def search_maps(size: int, lengths: Sequence[int], tries: int = 20000, seed: int = 0,
                keep: int = 5) -> List[Tuple[Tuple[int, int, int], List[str]]]:
    """The best ``keep`` of ``tries`` random maps (``S`` top-left, ``G`` anywhere, a quarter to a
    third of the tiles holes), by :func:`score_map`; deterministic for a ``seed``."""
    rng = random.Random(seed)
    found: Dict[str, Tuple[Tuple[int, int, int], List[str]]] = {}
    n = size * size
    for _ in range(tries):
        goal, holes = rng.randrange(1, n), rng.randint(n // 4, n // 3)
        rows = next(_candidate_maps(size, 0, goal, holes, rng))
        score = score_map(rows, lengths)
        if score is not None:
            found[",".join(rows)] = (score, rows)
    return sorted(found.values(), key=lambda item: item[0], reverse=True)[:keep]


def main() -> None:  # pragma: no cover - a report for people
    """Print every named map's report."""
    for name in NAMED_MAPS:
        report = map_report(name)
        print(f"{name}: {MAP_SEPARATOR.join(report['rows'])}  optimal {report['optimal']}")
        for key in ("suboptimal_summary", "away_summary"):
            print(f"    {key.split('_')[0]:>10}: {report[key]}")


if __name__ == "__main__":  # pragma: no cover
    main()
