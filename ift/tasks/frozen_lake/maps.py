"""Frozen Lake maps: the tiles and actions, parsing a map from text, checking it can be played.

A map is a list of equal-length rows of tiles ``S`` (start), ``F`` (frozen), ``H`` (hole)
and ``G`` (goal). The language model reads it as the rows joined by ``/`` and closed by
``:`` (the prompt, e.g. ``"SFFF/FFHF/FFHG/FFFF:"``) and answers with action characters
``L``, ``D``, ``R``, ``U`` (Gymnasium's action indices 0, 1, 2, 3).
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

# 4x4, start top-left. Two holes form a wall in the middle of the lake; the goal sits
# right of it. Over the wall: RRRDD (5 moves, the unique shortest path). Under the wall:
# DDDRRRU (7 moves, the shortest path sharing no state with the optimal one).
#   S F F F
#   F F H F
#   F F H G
#   F F F F
DEFAULT_MAP: Tuple[str, ...] = ("SFFF", "FFHF", "FFHG", "FFFF")

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
    * a Gymnasium named map: ``"4x4"`` or ``"8x8"``;
    * ``"random:SIZE:SEED"`` (optionally ``"random:SIZE:SEED:P"``, P = probability that a
      tile is frozen, default 0.8): Gymnasium's ``generate_random_map`` with that seed.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower().startswith("random"):
            return validate_map(_random_map(text))
        from gymnasium.envs.toy_text.frozen_lake import MAPS

        if text in MAPS:
            return validate_map(list(MAPS[text]))
        if re.fullmatch(r"\d+\s*x\s*\d+", text):
            raise MapError(
                f"Frozen Lake map: unknown named map {text!r}; Gymnasium names {sorted(MAPS)}. "
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
        f"('4x4', '8x8') or 'random:SIZE:SEED'; got a {type(spec).__name__}"
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
