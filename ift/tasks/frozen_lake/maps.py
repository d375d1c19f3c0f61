"""Frozen Lake maps: the tiles and actions, parsing a map from text, checking it can be played.

A map is a list of equal-length rows of tiles ``S`` (start), ``F`` (frozen), ``H`` (hole)
and ``G`` (goal). The language model reads it as the rows joined by ``/`` and closed by
``:`` (the prompt, e.g. ``"SFFF/FFHF/FFHG/FFFF:"``) and answers with action characters
``L``, ``D``, ``R``, ``U`` (Gymnasium's action indices 0, 1, 2, 3).

:data:`NAMED_MAPS` are maps with one shortest path each, usable by name: ``"wall4x4"`` (the first
default), ``"ring4x4"`` (:data:`PAPER_LITERAL_MAP`: exactly one optimal and one sub-optimal path to
``G``, the paper-literal set-up's map), ``"check4x4"`` (:data:`PAPER_CHECK_MAP`, :data:`DEFAULT_MAP`:
a rejected path that is never optimal) and ``"check5x5"`` for the paper's DPO claim, and :data:`PPO_MAPS` (5x5 and 6x6, 8-10
moves) for "PPO solves maps it was not tuned on". The comments above them give each map's
optimal path and rejected paths; :mod:`ift.lab.frozen_lake.map_check` judges them.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Dict, List, Sequence, Tuple, Union

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
ACTIONS = "LDRU"  # ACTIONS[i] is the token of Gymnasium's action index i
#: {action character: Gymnasium's action index}.
ACTION_INDEX: Dict[str, int] = {char: index for index, char in enumerate(ACTIONS)}
#: {action index: (row change, column change)}.
MOVES: Dict[int, Tuple[int, int]] = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}
TILES = "SFHG"
MAP_SEPARATOR = "/"
PROMPT_END = ":"
# Every character that prompts and responses use (digits are reserved for annotations).
VOCAB = TILES + MAP_SEPARATOR + PROMPT_END + ACTIONS + "0123456789"

# "wall4x4", the first default: 4x4, start top-left. Two holes form a wall in the middle of the lake; the goal sits
# right of it. Over the wall: RRRDD (5 moves, the unique shortest path). Under the wall:
# DDDRRRU (7 moves, the shortest path sharing no state with the optimal one).
#   S F F F
#   F F H F
#   F F H G
#   F F F F
WALL_MAP: Tuple[str, ...] = ("SFFF", "FFHF", "FFHG", "FFFF")

# Named maps. Each has exactly one shortest path from S to G. "Rejected" below is what DPO and
# ORPO push down: `suboptimal_trajectory()` (a longer path to G) and `away_trajectory()` (never
# optimal; on these maps it ends in a hole); the summaries are `map_check.rejected_summary`'s. A
# path to G without border bumps has d(S) more optimal moves than non-optimal ones, on any map
# (see `FrozenLakeTask.away_trajectory`), hence the second kind. All but "wall4x4" and "ring4x4" were found by
# `map_check.search_maps(size, lengths, tries, seed)` (random maps, S top-left, ranked by
# `score_map`: the away path's length, then ending in a hole, then the reachable states; the
# call and rank are noted per map): run once, kept here; a slow test reruns the calls.
#
# "wall4x4", the default map until the check moved to "check4x4": optimal RRRDD; suboptimal DDDRRRU, 6 of its 7 moves optimal
# (at states 4, 8, 12, 13, 14, 15: its push-down lands on π*); away D, 0 of 1.
#
# "check4x4" (PAPER_CHECK_MAP), search_maps(4, range(4, 7), 30000, seed=1), best:
#   S F F F    optimal RRRD. away DDDRRRU: 0 of its 7 moves optimal (down the left edge, along
#   F F H G    the bottom, up into the hole under G; it visits 7 of the 11 reachable states, all
#   F H H H    off the optimal path but S). suboptimal DRURRD: 5 of its 6 moves optimal (at
#   F F F F    states 4, 5, 1, 2, 3).
#
# "check5x5", search_maps(5, range(5, 8), 30000, seed=1), best:
#   S F F F H  optimal DDDRRU. away RRRDRDDDLL: 0 of its 10 moves optimal (10 of 16 reachable
#   F F H F F  states). suboptimal RDLDDRRU: 7 of its 8 moves optimal (at 1, 6, 5, 10, 15, 16, 17).
#   F H G H F
#   F F F H F
#   H H H F F
#
# Maps for "PPO solves maps it was not tuned on" (optimal paths of 8-10 moves):
# "lake5x5a", search_maps(5, range(8, 11), 40000, seed=4), 2nd:
#   SFFFF/FFHHF/FFHHF/FHFGH/FFFHF. optimal DDDDRRUR (8). away RRRRDDL: 0 of 7 optimal.
#   suboptimal RDLDDDRRUR: 9 of 10 optimal (at 1, 6, 5, 10, 15, 20, 21, 22, 17).
# "lake5x5b", search_maps(5, [9, 10], 40000, seed=6), 6th:
#   SFFFF/FFHHH/FHFFF/FHFFG/FFFHH. optimal DDDDRRURR (9). away RRRRD: 0 of 5 optimal.
#   suboptimal RDLDDDRRURR: 10 of 11 optimal (at 1, 6, 5, 10, 15, 20, 21, 22, 17, 18).
# "lake5x5c", search_maps(5, [9, 10], 40000, seed=6), 2nd:
#   SFFFF/FFHHF/FHGHF/FHFFF/FFHFF. optimal RRRRDDDLLU (10). away DDDDRR: 0 of 6 optimal.
#   suboptimal DRURRRDDDLLU: 11 of 12 optimal (at 5, 6, 1, 2, 3, 4, 9, 14, 19, 18, 17).
# "lake6x6a", search_maps(6, range(8, 11), 40000, seed=5), best:
#   SFFFFF/FHFHHF/FFFHFF/FHHFHG/FFFFFH/FHFFFF. optimal RRRRRDDD (8). away DDDDRRDRRRU: 0 of 11.
#   suboptimal DDRRUURRRDDD: 10 of 12 optimal (at 12, 13, 14, 8, 2, 3, 4, 5, 11, 17).
# "lake6x6b", search_maps(6, range(8, 11), 40000, seed=5), 5th:
#   SFFFFF/FFFFHF/FHHFHF/FFHHHF/FHFGHH/FFFHHF. optimal DDDDDRRUR (9). away RRRRRDDDL: 0 of 9.
#   suboptimal RDLDDDDRRUR: 10 of 11 optimal (at 1, 7, 6, 12, 18, 24, 30, 31, 32, 26).
# "lake6x6c", search_maps(6, [10], 40000, seed=7), best:
#   SFFFFH/FFFHFH/FHHHFF/FFFHHF/HFFHFF/FFHHFG. optimal RRRRDDRDDD (10). away DDDRDDLU: 0 of 8.
#   suboptimal DRRURRDDRDDD: 11 of 12 optimal (at 6, 7, 8, 2, 3, 4, 10, 16, 17, 23, 29).
#
# "ring4x4" (PAPER_LITERAL_MAP), the map of the paper-literal set-up: the paper asks for a map "with one
# optimal and one sub-optimal trajectory", and on this one the ice is a ring around four holes with G on
# it, so exactly two simple paths lead from S to G (tests/test_frozen_lake_setups.py enumerates them):
#   S F F F    optimal RRRDD (5 moves, over the top). sub-optimal DDDRRRU (7 moves, under the holes),
#   F H H F    the rejected response of the paper-literal DPO and ORPO: 6 of its 7 moves are optimal
#   F H H G    where they are taken (at states 4, 8, 12, 13, 14, 15; at 4 down ties with up), only
#   F F F F    the first (D at S) is not. away DR: 0 of 2 optimal (down, then right into a hole).
#: {name: rows}: maps that :func:`parse_map` accepts by name (beside Gymnasium's 4x4, 8x8).
NAMED_MAPS: Dict[str, Tuple[str, ...]] = {
    "wall4x4": WALL_MAP,
    "ring4x4": ("SFFF", "FHHF", "FHHG", "FFFF"),
    "check4x4": ("SFFF", "FFHG", "FHHH", "FFFF"),
    "check5x5": ("SFFFH", "FFHFF", "FHGHF", "FFFHF", "HHHFF"),
    "lake5x5a": ("SFFFF", "FFHHF", "FFHHF", "FHFGH", "FFFHF"),
    "lake5x5b": ("SFFFF", "FFHHH", "FHFFF", "FHFFG", "FFFHH"),
    "lake5x5c": ("SFFFF", "FFHHF", "FHGHF", "FHFFF", "FFHFF"),
    "lake6x6a": ("SFFFFF", "FHFHHF", "FFFHFF", "FHHFHG", "FFFFFH", "FHFFFF"),
    "lake6x6b": ("SFFFFF", "FFFFHF", "FHHFHF", "FFHHHF", "FHFGHH", "FFFHHF"),
    "lake6x6c": ("SFFFFH", "FFFHFH", "FHHHFF", "FFFHHF", "HFFHFF", "FFHHFG"),
}
#: The map for the paper's check whose rejected path (``away_trajectory``) is never optimal
#: (``"check4x4"``, drawn above): the default map.
PAPER_CHECK_MAP: Tuple[str, ...] = NAMED_MAPS["check4x4"]
DEFAULT_MAP: Tuple[str, ...] = PAPER_CHECK_MAP
#: The map of the paper-literal set-up (``"ring4x4"``, drawn above): one optimal and one
#: sub-optimal successful path, nothing else.
PAPER_LITERAL_MAP: Tuple[str, ...] = NAMED_MAPS["ring4x4"]
#: The maps with an optimal path of 8-10 moves, for "PPO solves maps it was not tuned on".
PPO_MAPS: Tuple[str, ...] = ("lake5x5a", "lake5x5b", "lake5x5c", "lake6x6a", "lake6x6b", "lake6x6c")

MapSpec = Union[str, Sequence[str]]
_EXAMPLE_MAP = "SFFF,FHFH,FFFH,HFFG"


class MapError(ValueError):
    """A Frozen Lake map that cannot be used; the message says what is wrong and how to fix it."""


def parse_map(spec: MapSpec) -> List[str]:
    """Rows of a Frozen Lake map, validated (see :func:`validate_map`).

    ``spec`` is one of:

    * a list/tuple of row strings, e.g. ``["SFFF", "FHFH", "FFFH", "HFFG"]``;
    * one string with rows separated by ``,`` (or ``/`` as in the prompt, or newlines),
      e.g. ``"SFFF,FHFH,FFFH,HFFG"``;
    * a named map of :data:`NAMED_MAPS` (e.g. ``"wall4x4"``, ``"check4x4"``, ``"lake6x6a"``) or
      a Gymnasium named map, ``"4x4"`` or ``"8x8"``;
    * ``"random:SIZE:SEED"`` (optionally ``"random:SIZE:SEED:P"``, P = probability that a
      tile is frozen, default 0.8): Gymnasium's ``generate_random_map`` with that seed.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower().startswith("random"):
            return validate_map(_random_map(text))
        from gymnasium.envs.toy_text.frozen_lake import MAPS

        if text in NAMED_MAPS:
            return validate_map(list(NAMED_MAPS[text]))
        if text in MAPS:
            return validate_map(list(MAPS[text]))
        # "6x6", "lake7x7": a name, not rows (rows hold only tiles and separators).
        if re.fullmatch(r"[A-Za-z_]*\d+\s*x\s*\d+[A-Za-z]*", text):
            names = list(NAMED_MAPS) + sorted(MAPS)
            raise MapError(
                f"Frozen Lake map: unknown named map {text!r}; the named maps are {names}. "
                f"For another size use 'random:SIZE:SEED' (e.g. 'random:6:0') or write the rows, "
                f"e.g. {_EXAMPLE_MAP!r}"
            )
        rows = [row.strip() for row in re.split(r"[,/\n]", text.rstrip(PROMPT_END))]
        if len(rows) > 1 and rows[-1] == "":
            rows = rows[:-1]  # a trailing separator
        return validate_map(rows)
    if isinstance(spec, (list, tuple)):
        rows = []
        for index, row in enumerate(spec):
            if not isinstance(row, str):
                raise MapError(
                    f"Frozen Lake map: row {index + 1} is a {type(row).__name__}, expected a string "
                    f"of tiles such as 'SFFF'"
                )
            rows.append(row.strip())
        return validate_map(rows)
    raise MapError(
        f"Frozen Lake map: expected a list of row strings, a string like {_EXAMPLE_MAP!r}, a named map "
        f"(e.g. 'check4x4', '4x4') or 'random:SIZE:SEED'; got a {type(spec).__name__}"
    )


def _random_map(text: str) -> List[str]:
    parts = text.split(":")
    usage = "write 'random:SIZE:SEED' or 'random:SIZE:SEED:P', e.g. 'random:5:0' (P = frozen probability, default 0.8)"
    if parts[0].lower() != "random" or len(parts) not in (3, 4):
        raise MapError(f"Frozen Lake map: cannot read {text!r}; {usage}")
    try:
        size, seed = int(parts[1]), int(parts[2])
        frozen = float(parts[3]) if len(parts) == 4 else 0.8
    except ValueError:
        raise MapError(f"Frozen Lake map: cannot read {text!r}: SIZE and SEED must be integers; {usage}") from None
    if size < 2:
        raise MapError(f"Frozen Lake map: {text!r} asks for size {size}; SIZE must be at least 2")
    if not 0.0 < frozen <= 1.0:
        raise MapError(f"Frozen Lake map: {text!r} asks for P = {frozen}; P must be in (0, 1]")
    from gymnasium.envs.toy_text.frozen_lake import generate_random_map

    return list(generate_random_map(size=size, p=frozen, seed=seed))


def validate_map(rows: Sequence[str]) -> List[str]:
    """``rows`` as a list if they form a usable map, else :class:`MapError`.

    Checks: at least one row, rows of equal non-zero length, tiles only ``S F H G``,
    exactly one ``S`` and one ``G``, and ``G`` reachable from ``S`` without crossing a hole.
    """
    rows = list(rows)
    if not rows or all(row == "" for row in rows):
        raise MapError(f"Frozen Lake map: it is empty; give rows of tiles, e.g. {_EXAMPLE_MAP!r}")
    for index, row in enumerate(rows):
        if row == "":
            raise MapError(
                f"Frozen Lake map: row {index + 1} is empty (two separators in a row?); "
                f"every row needs tiles, e.g. {_EXAMPLE_MAP!r}"
            )
        if len(row) != len(rows[0]):
            raise MapError(
                f"Frozen Lake map: row {index + 1} {row!r} has {len(row)} tiles but row 1 {rows[0]!r} has "
                f"{len(rows[0])}; the map must be rectangular (every row the same length)"
            )
        for column, tile in enumerate(row):
            if tile not in TILES:
                raise MapError(
                    f"Frozen Lake map: row {index + 1} column {column + 1} has tile {tile!r}; only "
                    f"S (start), F (frozen), H (hole) and G (goal) are allowed"
                )
    for tile, name in (("S", "start"), ("G", "goal")):
        count = sum(row.count(tile) for row in rows)
        if count != 1:
            raise MapError(
                f"Frozen Lake map: it has {count} {tile} ({name}) tiles; put exactly one {tile} on the map "
                f"(e.g. {_EXAMPLE_MAP!r})"
            )
    nrow, ncol = len(rows), len(rows[0])
    start = next((r, c) for r in range(nrow) for c in range(ncol) if rows[r][c] == "S")
    seen, queue = {start}, deque([start])
    while queue:
        r, c = queue.popleft()
        if rows[r][c] == "G":
            return rows
        for dr, dc in MOVES.values():
            nr, nc = r + dr, c + dc
            if 0 <= nr < nrow and 0 <= nc < ncol and (nr, nc) not in seen and rows[nr][nc] != "H":
                seen.add((nr, nc))
                queue.append((nr, nc))
    raise MapError(
        f"Frozen Lake map: the goal G cannot be reached from the start S without crossing a hole in "
        f"{MAP_SEPARATOR.join(rows)!r}; turn some H tiles into F"
    )


def map_from_prompt(prompt: str) -> List[str]:
    """The map rows written in a prompt made by :meth:`FrozenLakeTask.prompt`."""
    text = prompt.strip()
    if not text.endswith(PROMPT_END):
        raise MapError(
            f"Frozen Lake prompt {prompt!r} does not end with {PROMPT_END!r}; expected rows joined by "
            f"{MAP_SEPARATOR!r} and closed by {PROMPT_END!r}, e.g. 'SFFF/FFHF/FFHG/FFFF:'"
        )
    return validate_map(text[: -len(PROMPT_END)].split(MAP_SEPARATOR))
