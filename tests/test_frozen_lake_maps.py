"""The named Frozen Lake maps, the rejected paths judged against π*, and Gymnasium's dynamics."""

import functools
import random
from collections import deque

import pytest
from gymnasium.envs.toy_text.frozen_lake import MAPS, FrozenLakeEnv

from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.lab.frozen_lake.map_check import (
    RejectedMove,
    map_report,
    optimal_fraction,
    rejected_moves,
    rejected_summary,
    score_map,
    search_maps,
)
from ift.tasks.frozen_lake.maps import DEFAULT_MAP
from ift.tasks.frozen_lake.maps import (
    WALL_MAP,
    NAMED_MAPS,
    PAPER_CHECK_MAP,
    PPO_MAPS,
    MapError,
    parse_map,
)

# name: (optimal, away_trajectory, suboptimal_trajectory), as the docstrings in maps.py say.
STATED = {
    "wall4x4": ("RRRDD", "D", "DDDRRRU"),
    "ring4x4": ("RRRDD", "DR", "DDDRRRU"),
    "check4x4": ("RRRD", "DDDRRRU", "DRURRD"),
    "check5x5": ("DDDRRU", "RRRDRDDDLL", "RDLDDRRU"),
    "lake5x5a": ("DDDDRRUR", "RRRRDDL", "RDLDDDRRUR"),
    "lake5x5b": ("DDDDRRURR", "RRRRD", "RDLDDDRRURR"),
    "lake5x5c": ("RRRRDDDLLU", "DDDDRR", "DRURRRDDDLLU"),
    "lake6x6a": ("RRRRRDDD", "DDDDRRDRRRU", "DDRRUURRRDDD"),
    "lake6x6b": ("DDDDDRRUR", "RRRRRDDDL", "RDLDDDDRRUR"),
    "lake6x6c": ("RRRRDDRDDD", "DDDRDDLU", "DRRURRDDRDDD"),
}
STEPS = {"L": (0, -1), "D": (1, 0), "R": (0, 1), "U": (-1, 0)}


def distances_to_goal(rows):
    """Moves from every ice tile to G, by backward BFS (independent of the package)."""
    ncol = len(rows[0])
    goal = "".join(rows).index("G")
    dist, queue = {goal: 0}, deque([goal])
    while queue:
        r, c = divmod(queue.popleft(), ncol)
        for dr, dc in STEPS.values():
            nr, nc = r + dr, c + dc
            if 0 <= nr < len(rows) and 0 <= nc < ncol and rows[nr][nc] in "SF" and nr * ncol + nc not in dist:
                dist[nr * ncol + nc] = dist[r * ncol + c] + 1
                queue.append(nr * ncol + nc)
    return dist


def count_shortest_paths(rows):
    """Shortest S-to-G action strings, counted over the distance layers."""
    dist, ncol = distances_to_goal(rows), len(rows[0])
    flat = "".join(rows)

    def count(state):
        if flat[state] == "G":
            return 1
        r, c = divmod(state, ncol)
        nexts = [(r + dr) * ncol + c + dc for dr, dc in STEPS.values()
                 if 0 <= r + dr < len(rows) and 0 <= c + dc < ncol]
        return sum(count(n) for n in nexts if dist.get(n, -1) == dist[state] - 1)

    return count(flat.index("S"))


# ----------------------------------------------------------------------------- the report
def test_report_on_todays_default_map_by_hand():
    # DDDRRRU walks 0 -> 4 -> 8 -> 12 -> 13 -> 14 -> 15 -> G(11). Distances to G: S 5,
    # 4 6, 8 5, 12 4, 13 3, 14 2, 15 1. Only the first move lengthens the way.
    task = FrozenLakeTask(WALL_MAP)
    assert rejected_moves(task) == [
        (0, "D", False), (4, "D", True), (8, "D", True), (12, "R", True),
        (13, "R", True), (14, "R", True), (15, "U", True),
    ]
    assert rejected_summary(task) == (
        "rejected path DDDRRRU: 6 of its 7 moves are optimal under π* (at states 4, 8, 12, 13, 14, 15)"
    )
    assert optimal_fraction(task) == pytest.approx(6 / 7)


def test_report_on_a_two_row_map_by_hand():
    # S F G    optimal RR; rejected DRRU: D at S lengthens (2 -> 3), then R, R, U shorten.
    # F F F
    task = FrozenLakeTask(["SFG", "FFF"])
    assert task.suboptimal_trajectory() == "DRRU"
    assert rejected_moves(task) == [(0, "D", False), (3, "R", True), (4, "R", True), (5, "U", True)]
    assert isinstance(rejected_moves(task)[0], RejectedMove)
    assert rejected_summary(task, "RR") == "rejected path RR: 2 of its 2 moves are optimal under π* (at states 0, 1)"


def test_report_counts_bumps_and_holes_as_non_optimal_and_stops_at_the_end():
    task = FrozenLakeTask(WALL_MAP)
    # U bumps the border at S; R R then D into the hole at 6; the trailing L is never executed.
    assert rejected_moves(task, "URRDL") == [(0, "U", False), (0, "R", True), (1, "R", True), (2, "D", False)]
    assert rejected_summary(task, "L") == "rejected path L: 0 of its 1 moves are optimal under π*"
    with pytest.raises(ValueError, match="not an action"):
        rejected_moves(task, "Rx")


def random_walks_to_goal(task, count, seed):
    """Action strings of seeded random walks over the ice (border bumps included) that reach G."""
    rng, walks = random.Random(seed), []
    while len(walks) < count:
        state, text = task.start_state, ""
        while not task.is_terminal(state) and len(text) < 200:
            action = rng.choice([a for a in "LDRU" if task.tile(task.step(state, a)[0]) != "H"])
            state, text = task.step(state, action)[0], text + action
        if state == task.goal_state:
            walks.append(text)
    return walks


@pytest.mark.parametrize("spec", [WALL_MAP, "check5x5", "lake6x6a", "random:6:1", "8x8"])
def test_a_path_to_the_goal_is_mostly_optimal_on_any_map(spec):
    """The fact behind away_trajectory: optimal moves = d(S) + lengthening moves."""
    task = FrozenLakeTask(spec)
    d_start = distances_to_goal(task.rows)[task.start_state]
    walks = random_walks_to_goal(task, 30, seed=0) + [task.optimal_trajectory(require_unique=False)]
    for text in walks:
        episode = task.run(text)
        moves = rejected_moves(task, text)
        bumps = sum(a == b for a, b in zip(episode.path, episode.path[1:]))
        optimal = sum(move.is_optimal_there for move in moves)
        assert episode.success and len(moves) == len(text)
        assert optimal == d_start + (len(moves) - optimal - bumps)


# ----------------------------------------------------------------------------- away_trajectory
def longest_walk_away(rows):
    """Moves of the longest walk from S whose every move lengthens the way to G (a last step
    into a hole allowed), by depth-first search over the distances alone."""
    dist, ncol, flat = distances_to_goal(rows), len(rows[0]), "".join(rows)

    def longest(state):
        r, c = divmod(state, ncol)
        best = 0
        for dr, dc in STEPS.values():
            nr, nc = r + dr, c + dc
            if not (0 <= nr < len(rows) and 0 <= nc < ncol):
                continue
            nxt = nr * ncol + nc
            if flat[nxt] == "H":
                best = max(best, 1)
            elif dist.get(nxt, -1) > dist[state]:
                best = max(best, 1 + longest(nxt))
        return best

    return longest(flat.index("S"))


@pytest.mark.parametrize("spec", sorted(NAMED_MAPS) + ["random:6:1", "random:8:0"])
def test_away_trajectory_is_never_optimal_and_is_the_longest_such_walk(spec):
    task = FrozenLakeTask(spec)
    away = task.away_trajectory()
    assert len(away) == longest_walk_away(task.rows)
    assert not any(move.is_optimal_there for move in rejected_moves(task, away))
    assert not task.run(away).success


def test_away_trajectory_on_the_paper_check_map():
    task = FrozenLakeTask(PAPER_CHECK_MAP)
    episode = task.run(task.away_trajectory())
    assert task.away_trajectory() == "DDDRRRU"
    assert episode.outcome == "hole" and episode.path == (0, 4, 8, 12, 13, 14, 15, 11)
    # It shares only S with the optimal path.
    assert set(episode.path) & set(task.run(task.optimal_trajectory()).path) == {task.start_state}


def test_away_trajectory_on_small_maps_and_its_error():
    assert FrozenLakeTask(WALL_MAP).away_trajectory() == "D"  # the wall map leaves no room
    assert FrozenLakeTask(["SFG", "FFF"]).away_trajectory() == "D"  # ends on the ice
    with pytest.raises(ValueError, match="every move from S is optimal"):
        FrozenLakeTask(["SFG"]).away_trajectory()


# ----------------------------------------------------------------------------- the named maps
def test_named_maps_parse_by_name_and_keep_gymnasiums():
    assert set(NAMED_MAPS) == set(STATED)
    for name, rows in NAMED_MAPS.items():
        assert parse_map(name) == list(rows)
    assert NAMED_MAPS["wall4x4"] == WALL_MAP
    assert DEFAULT_MAP == PAPER_CHECK_MAP == NAMED_MAPS["check4x4"]  # the check runs on the map DPO can be tested on
    assert PAPER_CHECK_MAP == NAMED_MAPS["check4x4"]
    assert parse_map("4x4") == MAPS["4x4"] and parse_map("8x8") == MAPS["8x8"]
    assert len(parse_map("random:5:0")) == 5
    with pytest.raises(MapError, match="unknown named map 'lake7x7'.*check4x4"):
        parse_map("lake7x7")


@pytest.mark.parametrize("name", sorted(STATED))
def test_named_map_paths_are_as_stated(name):
    task = FrozenLakeTask(name)
    optimal, away, suboptimal = STATED[name]
    assert task.num_shortest_paths() == 1 == count_shortest_paths(task.rows)
    assert task.optimal_trajectory() == optimal
    assert len(optimal) == distances_to_goal(task.rows)[task.start_state]
    assert task.away_trajectory() == away and task.suboptimal_trajectory() == suboptimal
    assert not any(move.is_optimal_there for move in rejected_moves(task, away))
    assert task.run(suboptimal).success and not task.run(away).success
    report = map_report(name)
    assert report["away_summary"] == f"rejected path {away}: 0 of its {len(away)} moves are optimal under π*"
    assert report["suboptimal_summary"] == rejected_summary(task, suboptimal)


def test_the_paper_check_map_rejects_only_bad_moves():
    task = FrozenLakeTask(PAPER_CHECK_MAP)
    assert len(task.rows) in (4, 5)
    away = rejected_moves(task, task.away_trajectory())
    assert len(away) == 7 and not any(move.is_optimal_there for move in away)
    # It visits 7 of the 11 reachable states; the old rejected path is mostly optimal there too.
    assert len(task.reachable_states()) == 11
    assert rejected_summary(task) == (
        "rejected path DRURRD: 5 of its 6 moves are optimal under π* (at states 4, 5, 1, 2, 3)"
    )


def test_ppo_maps_are_5x5_and_6x6_with_8_to_10_moves():
    sizes = [len(NAMED_MAPS[name]) for name in PPO_MAPS]
    assert sizes.count(5) >= 2 and sizes.count(6) >= 2 and set(sizes) == {5, 6}
    for name in PPO_MAPS:
        assert 8 <= len(FrozenLakeTask(name).optimal_trajectory()) <= 10


def test_search_scores_and_finds_usable_maps():
    assert score_map(PAPER_CHECK_MAP, range(4, 7)) == (7, 1, 11)
    assert score_map(WALL_MAP, [5]) == (1, 0, 13)
    assert score_map(("SFFF", "FHFH", "FFFH", "HFFG"), range(20)) is None  # 3 shortest paths
    found = search_maps(4, range(4, 7), tries=300, seed=0, keep=3)
    assert found and all(score_map(rows, range(4, 7)) == score for score, rows in found)


@functools.lru_cache(maxsize=None)
def searched(size, lengths, tries, seed):
    return search_maps(size, lengths, tries=tries, seed=seed, keep=8)


@pytest.mark.slow
@pytest.mark.parametrize("name, size, lengths, tries, seed, rank", [
    # The calls that maps.py's comments name: every named map but wall4x4 is reproducible.
    ("check4x4", 4, (4, 5, 6), 30000, 1, 0),
    ("check5x5", 5, (5, 6, 7), 30000, 1, 0),
    ("lake5x5a", 5, (8, 9, 10), 40000, 4, 1),
    ("lake5x5b", 5, (9, 10), 40000, 6, 5),
    ("lake5x5c", 5, (9, 10), 40000, 6, 1),
    ("lake6x6a", 6, (8, 9, 10), 40000, 5, 0),
    ("lake6x6b", 6, (8, 9, 10), 40000, 5, 4),
    ("lake6x6c", 6, (10,), 40000, 7, 0),
])
def test_search_reproduces_the_chosen_maps(name, size, lengths, tries, seed, rank):
    assert searched(size, lengths, tries, seed)[rank][1] == list(NAMED_MAPS[name])


# ----------------------------------------------------------------------------- Gymnasium's dynamics
@pytest.mark.parametrize(
    "spec",
    sorted(NAMED_MAPS) + [WALL_MAP, "4x4", "8x8", "random:4:2", "random:5:0", "random:6:3", "random:8:7:0.6"],
)
def test_step_is_gymnasiums_transition_table(spec):
    task = FrozenLakeTask(spec)
    table = FrozenLakeEnv(desc=list(task.rows), is_slippery=False).P
    assert len(table) == task.n_states
    for state in range(task.n_states):
        assert sorted(table[state]) == [0, 1, 2, 3]
        for action in range(4):
            ((probability, nxt, reward, terminated),) = table[state][action]
            assert probability == 1.0
            assert task.step(state, action) == (nxt, float(reward), terminated)
