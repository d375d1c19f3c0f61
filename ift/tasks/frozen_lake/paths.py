"""Every simple path from ``S`` to ``G``: what "a map with one optimal and one sub-optimal
trajectory" (the IFT paper, §5.3) means, checked by enumeration.

A *simple* path moves between tiles without bumping into the border and never visits a state
twice; it ends when it enters ``G``. Any longer successful walk is a simple path with detours
or bumps added, so the simple paths are the map's distinct routes to the goal.
"""

from __future__ import annotations

from typing import List

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS, MOVES

#: Enumeration stops (with an error) beyond this many paths: an open map has exponentially many.
MAX_SIMPLE_PATHS = 10_000


def simple_paths_to_goal(task: FrozenLakeTask, limit: int = MAX_SIMPLE_PATHS) -> List[str]:
    """The action strings of every simple path from ``S`` to ``G``, shortest first (then in
    L < D < R < U order). Raises ``ValueError`` past ``limit`` paths."""
    paths: List[str] = []

    def extend(state: int, visited: frozenset, actions: str) -> None:
        row, col = task.to_rowcol(state)
        for action, (d_row, d_col) in MOVES.items():
            next_row, next_col = row + d_row, col + d_col
            if not (0 <= next_row < task.nrow and 0 <= next_col < task.ncol):
                continue  # a bump: not a move between tiles
            nxt = task.to_state(next_row, next_col)
            if nxt in visited or task.tile(nxt) == "H":
                continue
            if nxt == task.goal_state:
                paths.append(actions + ACTIONS[action])
                if len(paths) > limit:
                    raise ValueError(f"Frozen Lake map {'/'.join(task.rows)!r} has more than {limit} simple paths "
                                     f"from S to G")
                continue
            extend(nxt, visited | {nxt}, actions + ACTIONS[action])

    extend(task.start_state, frozenset({task.start_state}), "")
    return sorted(paths, key=lambda path: (len(path), [ACTIONS.index(c) for c in path]))


def has_one_optimal_and_one_suboptimal_path(task: FrozenLakeTask) -> bool:
    """Whether the map's routes to ``G`` are exactly two, one shorter than the other."""
    paths = simple_paths_to_goal(task)
    return len(paths) == 2 and len(paths[0]) < len(paths[1])
