"""The model-free part of the Frozen Lake sanity check (ift.tasks.frozen_lake: maps, env, metrics, plot)."""

import itertools
from collections import deque

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.toy_text.frozen_lake import MAPS, generate_random_map

from ift.lab.frozen_lake import plot_policies
from ift.tasks.frozen_lake import (
    ACTIONS,
    VOCAB,
    FrozenLakeTask,
    MapError,
    action_probs_from_logits,
    evaluate,
    moved_states,
    optimal_policy_everywhere,
    frozen_lake_reward,
    greedy_episode,
    map_from_prompt,
    mse_to_optimal,
    parse_map,
    total_variation,
)


from ift.tasks.frozen_lake.maps import DEFAULT_MAP, WALL_MAP
from ift.tasks.frozen_lake.queries import readable_texts

#: The map these tests were written on (the default until the check moved to "check4x4").
WALL = "wall4x4"


# ----------------------------------------------------------------------------- helpers
def slow_distances_to_goal(rows):
    """Moves from every tile to G by backward BFS over non-hole tiles (independent code)."""
    nrow, ncol = len(rows), len(rows[0])
    goal = next((r, c) for r in range(nrow) for c in range(ncol) if rows[r][c] == "G")
    dist, queue = {goal: 0}, deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nr, nc = r + dr, c + dc
            if 0 <= nr < nrow and 0 <= nc < ncol and (nr, nc) not in dist and rows[nr][nc] in "SF":
                dist[(nr, nc)] = dist[(r, c)] + 1
                queue.append((nr, nc))
    return {r * ncol + c: d for (r, c), d in dist.items()}


def success_and_steps(episode):
    """``(success, steps)`` of a greedy episode."""
    return episode.success, episode.steps


def random_policy(states, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for s in states:
        v = rng.random(4)
        out[s] = v / v.sum()
    return out


# ----------------------------------------------------------------------------- maps
def test_parse_map_accepts_every_form():
    rows = ["SFFF", "FHFH", "FFFH", "HFFG"]
    assert parse_map(rows) == rows
    assert parse_map(tuple(rows)) == rows
    assert parse_map("SFFF,FHFH,FFFH,HFFG") == rows
    assert parse_map(" SFFF, FHFH ,FFFH,HFFG ") == rows
    assert parse_map("SFFF/FHFH/FFFH/HFFG:") == rows  # the prompt format
    assert parse_map("4x4") == MAPS["4x4"]
    assert parse_map("8x8") == MAPS["8x8"]
    assert parse_map("random:5:3") == generate_random_map(size=5, seed=3)
    assert parse_map("random:5:3") == parse_map("random:5:3")  # seeded
    assert parse_map(list(DEFAULT_MAP)) == list(DEFAULT_MAP)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("SFFF,FHF,FFFH,HFFG", r"row 2 'FHF' has 3 tiles but row 1 'SFFF' has 4.*rectangular"),
        ("SFFF,FSFH,FFFH,HFFG", r"2 S \(start\) tiles.*exactly one S"),
        ("SFFF,FHFH,FFFH,HFFF", r"0 G \(goal\) tiles.*exactly one G"),
        ("SFFF,FXFH,FFFH,HFFG", r"row 2 column 2 has tile 'X'.*only S"),
        ("SFHF,HHFH,FFFH,HFFG", r"cannot be reached.*turn some H tiles into F"),
        ("SFFF,,FFFH,HFFG", r"row 2 is empty"),
        ("", r"empty"),
        ("6x6", r"unknown named map '6x6'.*random:SIZE:SEED"),
        ("random:x:1", r"must be integers"),
        ("random:5", r"random:SIZE:SEED"),
        (["SFFF", 7], r"row 2 is a int"),
        (42, r"got a int"),
    ],
)
def test_parse_map_errors_name_the_problem(spec, message):
    with pytest.raises(MapError, match=message):
        parse_map(spec)


def test_default_map_has_a_unique_shortest_path_by_brute_force():
    task = FrozenLakeTask(WALL)
    # Every action string of length <= 5: only "RRRDD" reaches the goal, none shorter.
    winners = [
        "".join(chars)
        for length in range(1, 6)
        for chars in itertools.product(ACTIONS, repeat=length)
        if task.run("".join(chars)).success
    ]
    assert winners == ["RRRDD"]
    assert task.num_shortest_paths() == 1
    assert task.optimal_trajectory() == "RRRDD"
    # The gymnasium 4x4 map has three shortest paths, so it is refused by default.
    assert FrozenLakeTask("4x4").num_shortest_paths() == 3
    with pytest.raises(ValueError, match="3 shortest paths"):
        FrozenLakeTask("4x4").optimal_trajectory()
    assert FrozenLakeTask("4x4").optimal_trajectory(require_unique=False) == "DDRDRR"


def test_trajectories_reach_the_goal_with_the_stated_lengths():
    task = FrozenLakeTask(WALL)
    optimal, sub = task.optimal_trajectory(), task.suboptimal_trajectory()
    assert (optimal, sub) == ("RRRDD", "DDDRRRU")
    best, worse = task.run(optimal), task.run(sub)
    assert best.success and best.steps == 5 and best.reward == 1.0 and best.final_state == task.goal_state
    assert worse.success and worse.steps == 7 and worse.outcome == "goal"
    # A different route: no intermediate state in common.
    assert not set(best.path[1:-1]) & set(worse.path[1:-1])
    assert best.path == (0, 1, 2, 3, 7, 11)


def test_suboptimal_fallback_and_error():
    # S F G : optimal R R; a disjoint route must use row 2.
    # F F F
    task = FrozenLakeTask(["SFG", "FFF"])
    assert task.optimal_trajectory() == "RR"
    assert task.suboptimal_trajectory() == "DRRU"
    # A corridor has no other way to the goal.
    with pytest.raises(ValueError, match="no sub-optimal path"):
        FrozenLakeTask(["SFG"]).suboptimal_trajectory()
    # Joined routes: every path to G passes through (0,2), so the disjoint search fails and
    # the fallback takes the shortest path starting with another move: D R U R R.
    # S F F G
    # F F H H
    fallback = FrozenLakeTask(["SFFG", "FFHH"])
    assert fallback.optimal_trajectory() == "RRR"
    assert fallback.suboptimal_trajectory() == "DRURR"
    assert fallback.run("DRURR").success


# ----------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("spec", [WALL_MAP, DEFAULT_MAP, "4x4", "8x8", "random:6:1"])
def test_dynamics_match_gymnasium(spec):
    task = FrozenLakeTask(spec)
    env = gymnasium.make("FrozenLake-v1", desc=list(task.rows), is_slippery=False)
    table = env.unwrapped.P
    for s in range(task.n_states):
        for a in range(4):
            ((prob, nxt, reward, terminated),) = table[s][a]
            assert prob == 1.0
            assert task.step(s, a) == (nxt, float(reward), terminated)
            assert task.step(s, ACTIONS[a]) == task.step(s, a)
    # Whole episodes too.
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = "".join(rng.choice(list(ACTIONS), size=12))
        state, _ = env.reset(seed=0)
        path, total = [state], 0.0
        for char in actions:
            state, reward, terminated, truncated, _ = env.step(ACTIONS.index(char))
            path.append(state)
            total += reward
            if terminated:
                break
        episode = task.run(actions)
        assert episode.path == tuple(path) and episode.reward == total
    env.close()


def test_run_outcomes():
    task = FrozenLakeTask(WALL)
    assert task.run("").outcome == "end" and task.run("").steps == 0
    hole = task.run("RRD")  # (0,2) -> down into the hole at (1,2)
    assert (hole.success, hole.outcome, hole.final_state, hole.steps) == (False, "hole", 6, 3)
    assert task.run("RRRDDLLLL").steps == 5  # characters after the goal are ignored
    assert task.run("RRRDDxyz").success
    bad = task.run("RRx")  # invalid character: a failed episode
    assert (bad.success, bad.outcome, bad.reward, bad.steps) == (False, "invalid", 0.0, 2)
    assert task.run("rrrdd").outcome == "invalid"
    bump = task.run("LU")  # the border leaves the agent in place
    assert bump.path == (0, 0, 0) and bump.steps == 2
    assert task.run("RRRDD", max_steps=3).outcome == "truncated"
    assert task.run([2, 2, 2, 1, 1]).success
    assert task.step(task.goal_state, 0) == (task.goal_state, 0.0, True)
    with pytest.raises(ValueError):
        task.step(0, 4)


# ----------------------------------------------------------------------------- π*
def test_optimal_policy_on_a_tiny_hand_checked_map():
    # Map (states in brackets):      Distance to G:
    #   S[0] F[1] H[2]                  3    2    -
    #   F[3] F[4] G[5]                  2    1    -
    task = FrozenLakeTask(["SFH", "FFG"])
    pi = task.optimal_policy()
    assert sorted(pi) == [0, 1, 3, 4] == task.reachable_states()
    #              L    D    R    U
    # S[0]: R -> 1 and D -> 3 are both 2 from G: a tie, half each.
    np.testing.assert_allclose(pi[0], [0.0, 0.5, 0.5, 0.0])
    # F[1]: D -> 4 (1 from G). R falls into the hole, L goes back, U bumps the wall.
    np.testing.assert_allclose(pi[1], [0.0, 1.0, 0.0, 0.0])
    # F[3]: R -> 4. U goes back to S (3 from G), L and D bump the wall.
    np.testing.assert_allclose(pi[3], [0.0, 0.0, 1.0, 0.0])
    # F[4]: R enters G.
    np.testing.assert_allclose(pi[4], [0.0, 0.0, 1.0, 0.0])
    # V*(s) = gamma ** (distance - 1).
    values = task.state_values()
    np.testing.assert_allclose(values[[0, 1, 3, 4]], [0.99**2, 0.99, 0.99, 1.0])
    q = task.q_values()
    # Q*(1, a) = reward + gamma * V*(next): L -> S: 0.99 * 0.99**2; D -> 4: 0.99 * 1;
    # R -> hole: 0 (the episode ends); U bumps the border and stays: 0.99 * 0.99.
    np.testing.assert_allclose(q[1], [0.99**3, 0.99, 0.0, 0.99**2])
    assert task.num_shortest_paths() == 2  # RDR and DRR


@pytest.mark.parametrize("spec", [DEFAULT_MAP, "4x4", "8x8", "random:7:4"])
def test_optimal_policy_spreads_mass_over_the_moves_of_shortest_paths(spec):
    task = FrozenLakeTask(spec)
    dist = slow_distances_to_goal(task.rows)
    pi = task.optimal_policy()
    assert sorted(pi) == task.reachable_states()
    for s, probs in pi.items():
        best = [a for a in range(4) if task.step(s, a)[0] in dist and dist[task.step(s, a)[0]] == dist[s] - 1]
        expected = np.zeros(4)
        expected[best] = 1.0 / len(best)
        np.testing.assert_allclose(probs, expected, err_msg=f"state {s}")


def test_default_policy_states_and_prefixes():
    task = FrozenLakeTask(WALL)
    # 16 tiles - 2 holes - the goal.
    assert task.reachable_states() == [0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 14, 15]
    prefixes = task.state_prefixes()
    dist_from_start = {s: len(p) for s, p in prefixes.items()}
    for s, prefix in prefixes.items():
        episode = task.run(prefix)
        assert episode.final_state == s and episode.outcome == "end"
        assert len(set(episode.path)) == len(episode.path)  # no bumps, no revisits
        for a in range(4):  # shortest: no neighbour is closer than one less
            nxt = task.step(s, a)[0]
            if nxt in dist_from_start:
                assert dist_from_start[nxt] >= dist_from_start[s] - 1
    optimal = task.optimal_trajectory()
    for k, state in enumerate(task.run(optimal).path[:-1]):
        assert prefixes[state] == optimal[:k]
    texts = task.query_texts()
    assert texts[task.start_state] == task.prompt() and texts[7] == task.prompt() + "RRRD"


# ----------------------------------------------------------------------------- text
def test_prompt_response_and_examples():
    task = FrozenLakeTask(WALL)
    assert task.prompt() == "SFFF/FFHF/FFHG/FFFF:"
    assert set(task.prompt() + task.optimal_trajectory() + task.suboptimal_trajectory()) <= set(VOCAB)
    assert map_from_prompt(task.prompt()) == list(WALL_MAP)
    assert FrozenLakeTask.from_prompt(task.prompt()).rows == task.rows
    with pytest.raises(MapError, match="does not end with ':'"):
        map_from_prompt("SFFF/FFHF")
    assert task.response_for([2, 2, 2, 1, 1]) == "RRRDD" == task.response_for("RRRDD")
    assert task.sft_example() == {"prompt": task.prompt(), "response": "RRRDD"}
    assert task.preference_example() == {"prompt": task.prompt(), "response": "RRRDD", "rejected": "DDDRRRU"}
    assert task.score("RRRDD") == 1.0 and task.score("RRD") == 0.0 and task.score("R?") == 0.0
    assert frozen_lake_reward([task.prompt()] * 3, ["RRRDD", "DDDRRRU", "DDDD"], [{}] * 3) == [1.0, 1.0, 0.0]


def test_action_probs_from_logits_and_collect():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 12))
    ids = [5, 2, 9, 7]
    full = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expected = full[:, ids] / full[:, ids].sum(-1, keepdims=True)
    np.testing.assert_allclose(action_probs_from_logits(logits, ids), expected)
    np.testing.assert_allclose(action_probs_from_logits(logits[0], ids), expected[0])
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(
        action_probs_from_logits(torch.tensor(logits, requires_grad=True), ids), expected, rtol=1e-5
    )

    task = FrozenLakeTask(WALL)
    pi = task.optimal_policy()
    queries = task.query_texts()
    by_text = {queries[s]: 3.0 * pi[s] for s in queries}  # unnormalised on purpose
    collected = task.collect_action_probs(lambda texts: np.stack([by_text[t] for t in texts]))
    assert sorted(collected) == task.reachable_states()
    assert mse_to_optimal(collected, pi) == 0.0
    with pytest.raises(ValueError, match="expected \\(13, 4\\)"):
        task.collect_action_probs(lambda texts: np.ones((len(texts), 3)))


# ----------------------------------------------------------------------------- metrics
def test_mse_to_optimal_against_a_slow_loop():
    task = FrozenLakeTask(WALL)
    pi = task.optimal_policy()
    assert mse_to_optimal(pi, pi) == 0.0
    policy = random_policy(pi, seed=3)
    total = 0.0
    for s in pi:
        inner = 0.0
        for a in range(4):
            inner += (policy[s][a] - pi[s][a]) ** 2
        total += inner / 4
    assert mse_to_optimal(policy, pi) == pytest.approx(total / len(pi))
    # Hand value: uniform vs a one-hot state is (0.75^2 + 3 * 0.25^2) / 4 = 0.1875.
    assert mse_to_optimal({0: np.full(4, 0.25)}, {0: np.array([0.0, 0.0, 1.0, 0.0])}) == pytest.approx(0.1875)
    extra = {**policy, 99: np.ones(4)}  # states outside pi_star are ignored
    assert mse_to_optimal(extra, pi) == mse_to_optimal(policy, pi)
    with pytest.raises(KeyError, match="no distribution for state 15"):
        mse_to_optimal({s: p for s, p in policy.items() if s != 15}, pi)
    with pytest.raises(ValueError, match="4 finite probabilities"):
        mse_to_optimal({s: np.ones(3) for s in pi}, pi)


def test_moved_states_on_a_crafted_example():
    initial = {s: np.full(4, 0.25) for s in range(5)}
    moved = {
        0: np.array([0.25, 0.25, 0.25, 0.25]),  # TV 0
        1: np.array([0.30, 0.20, 0.25, 0.25]),  # TV 0.05: not strictly above the threshold
        2: np.array([0.31, 0.19, 0.25, 0.25]),  # TV 0.06
        3: np.array([0.00, 0.00, 1.00, 0.00]),  # TV 0.75
        4: np.array([0.50, 0.50, 0.00, 0.00]),  # TV 0.5
    }
    assert total_variation(moved[3], initial[3]) == pytest.approx(0.75)
    assert moved_states(moved, initial) == 3
    assert moved_states(moved, initial, threshold=0.6) == 1
    assert moved_states(initial, initial) == 0
    task = FrozenLakeTask(WALL)
    assert moved_states(task.optimal_policy(), task.uniform_policy()) == 13


def test_greedy_episode():
    task = FrozenLakeTask(WALL)
    assert success_and_steps(greedy_episode(task, task.optimal_policy())) == (True, 5)
    # Uniform: argmax picks L at S, which bumps into the wall: a loop, stopped at once.
    assert success_and_steps(greedy_episode(task, task.uniform_policy())) == (False, 1)
    # Greedy along the longer route.
    longer = {s: np.eye(4)[ACTIONS.index(c)] for s, c in zip(task.run("DDDRRRU").path, "DDDRRRU")}
    full = {**task.uniform_policy(), **longer}
    assert success_and_steps(greedy_episode(task, full)) == (True, 7)
    # Into the hole: R, R, then D.
    into_hole = {**task.uniform_policy(), 0: np.eye(4)[2], 1: np.eye(4)[2], 2: np.eye(4)[1]}
    episode = greedy_episode(task, into_hole)
    assert (episode.success, episode.steps, episode.outcome) == (False, 3, "hole")
    # A history-dependent callable follows the optimal string.
    seen = []

    def lm_like(state, history):
        seen.append((state, history))
        return np.eye(4)[ACTIONS.index("RRRDD"[len(history)])]

    assert success_and_steps(greedy_episode(task, lm_like)) == (True, 5)
    assert seen[:2] == [(0, ""), (1, "R")]
    # The cap applies to callables that never end.
    assert success_and_steps(greedy_episode(task, lambda s, h: np.eye(4)[0], max_steps=7)) == (False, 7)


def test_evaluate_a_policy_dictionary():
    task = FrozenLakeTask(WALL)
    metrics, probs = evaluate(task, task.optimal_policy(), task.uniform_policy())
    # Uniform over k optimal actions is 1 - k/4 in total variation from uniform over all four.
    moved = np.mean([1 - np.count_nonzero(p) / 4 for p in task.optimal_policy().values()])
    assert metrics.pop("mean_total_variation") == pytest.approx(moved)
    # π* is deterministic from S on this map: every sampled episode walks RRRDD (6 states).
    assert metrics == {"mse_to_optimal": 0.0, "mse_reachable": 0.0, "success_rate": 1.0, "episode_length": 5.0,
                       "explored_states": 6.0, "explored_mse": 0.0, "moved_states": 13.0}
    assert sorted(probs) == task.reachable_states()
    assert "moved_states" not in evaluate(task, task.uniform_policy())[0]


def test_evaluate_a_text_policy_like_a_language_model():
    task = FrozenLakeTask(WALL)
    texts = readable_texts(task)  # every state a path reaches, holes and the goal included
    assert sorted(texts) == sorted(task.reachable_states() + [6, 10, 11])
    everywhere = optimal_policy_everywhere(task)
    pi = {state: everywhere[state] for state in texts}
    by_text = {texts[state]: pi[state] for state in texts}  # the greedy path reads these too
    uniform = {state: np.full(4, 0.25) for state in texts}
    texts_read = []

    def next_action_probs(texts):
        texts_read.extend(texts)
        return np.stack([by_text[text] for text in texts])

    metrics, probs = evaluate(task, next_action_probs, uniform)
    assert (metrics, probs.keys()) == (evaluate(task, pi, uniform)[0], pi.keys())
    assert texts_read[-5:] == [task.prompt() + "RRRDD"[:k] for k in range(5)]  # the real history


# ----------------------------------------------------------------------------- plot
def test_plot_writes_a_readable_png(tmp_path):
    from matplotlib.image import imread

    task = FrozenLakeTask(WALL)
    policies = {"SFT": random_policy(task.reachable_states(), 0), "IFT": task.uniform_policy()}
    curves = {"SFT": [0.2, 0.1, 0.05], "IFT": [(0, 0.2), (10, 0.04)]}
    path = tmp_path / "figs" / "policies.png"
    out = plot_policies(task, policies, task.optimal_policy(), curves, str(path))
    assert out == str(path) and path.stat().st_size > 1000
    image = imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert sorted(p.name for p in path.parent.iterdir()) == ["policies.png"]  # no temp file left
    # Without curves, with the default pi_star, on a larger map.
    big = FrozenLakeTask("8x8")
    plot_policies(big, {"uniform": big.uniform_policy()}, None, None, str(tmp_path / "big.png"))
    assert imread(str(tmp_path / "big.png")).shape[0] > 100
