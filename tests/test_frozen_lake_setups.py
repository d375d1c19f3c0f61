"""The two set-ups of ``ift frozen-lake`` and the readings of its metric (fast, no training):

* the paper-literal map has exactly one optimal and one sub-optimal path to G, and its DPO and
  ORPO reject that sub-optimal success, through the data module the config builds;
* the simple paths behind that count, against brute force over every action string;
* every Frozen Lake config's optimizer, as LightningCLI builds it, has no weight decay (the
  paper's RMSprop has none; AdamW's 0.01 default once crept into it);
* the MSE under every π* and set of states against a slow loop, with the edge cases;
* the claims are judged under every reading, and only where their objectives ran.
"""

import itertools
import os

import numpy as np
import pytest
import torch
import yaml

from ift.lab.frozen_lake import claims as judge
from ift.lab.frozen_lake import runs as run_configs
from ift.lab.frozen_lake.readings import HEADLINE, READINGS, reading_metrics
from ift.lab.frozen_lake.setups import PAPER_LITERAL, SETUPS, get_setup
from ift.tasks.frozen_lake import FrozenLakeDataModule, FrozenLakeTask, optimal_policy_everywhere
from ift.tasks.frozen_lake.maps import ACTIONS, PAPER_LITERAL_MAP
from ift.tasks.frozen_lake.metric_variants import (
    PI_STAR_TIES,
    REGIONS,
    mse_over,
    mse_variants,
    one_hot_optimal_policy,
    path_states,
    region_states,
    variant_name,
)
from ift.tasks.frozen_lake.paths import has_one_optimal_and_one_suboptimal_path, simple_paths_to_goal
from ift.tasks.frozen_lake.state_policy import states_from_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- the paper-literal map
def brute_force_simple_paths(task, max_moves):
    """Every action string of up to ``max_moves`` moves that reaches G without a bump, a hole or
    a revisited state (independent of the code under test: it tries all 4^n strings)."""
    found = set()
    for moves in range(1, max_moves + 1):
        for actions in itertools.product(ACTIONS, repeat=moves):
            state, seen, ok = task.start_state, {task.start_state}, True
            for index, action in enumerate(actions):
                nxt, _, terminated = task.step(state, action)
                if nxt == state or nxt in seen or task.tile(nxt) == "H" or (terminated and index < moves - 1):
                    ok = False
                    break
                seen.add(nxt)
                state = nxt
            if ok and state == task.goal_state:
                found.add("".join(actions))
    return found


@pytest.mark.parametrize("rows", [("SFF", "FHG"), ("SFH", "FFG"), ("SFFF", "FFHG"), ("SFF", "FFF", "FFG")])
def test_simple_paths_equal_brute_force(rows):
    task = FrozenLakeTask(rows)
    paths = simple_paths_to_goal(task)
    assert set(paths) == brute_force_simple_paths(task, task.n_states - 1)
    assert [len(p) for p in paths] == sorted(len(p) for p in paths) and len(set(paths)) == len(paths)


def test_the_paper_literal_map_has_exactly_one_optimal_and_one_suboptimal_path():
    task = FrozenLakeTask(PAPER_LITERAL.map)
    assert task.rows == PAPER_LITERAL_MAP
    paths = simple_paths_to_goal(task)
    assert len(paths) == 2, paths
    optimal, suboptimal = paths
    assert optimal == task.optimal_trajectory() and len(optimal) < len(suboptimal)
    assert task.run(suboptimal).success and task.run(optimal).success
    assert has_one_optimal_and_one_suboptimal_path(task)
    # the first default, wall4x4, has many routes under its wall: not the paper's shape
    assert not has_one_optimal_and_one_suboptimal_path(FrozenLakeTask("wall4x4"))


def test_the_paper_literal_dpo_and_orpo_reject_the_suboptimal_success():
    task = FrozenLakeTask(PAPER_LITERAL.map)
    optimal, suboptimal = simple_paths_to_goal(task)
    for name in ("DPO", "ORPO"):
        config = run_configs.run_config(name, setup="paper-literal")
        data = FrozenLakeDataModule(**config["data"]["init_args"])
        assert data.rejected_actions() == suboptimal
        example = data.example()
        # the state MLP's responses are the visited states: decode them back into moves
        assert states_from_text(example["rejected"]) == list(task.run(suboptimal).path[1:])
        assert states_from_text(example["chosen"]) == list(task.run(optimal).path[1:])
    # ours rejects the never-optimal walk on its own map, as before
    ours = FrozenLakeDataModule(**run_configs.run_config("DPO", setup="ours")["data"]["init_args"])
    assert ours.rejected_actions() == FrozenLakeTask(get_setup("ours").map).away_trajectory()


def test_the_data_module_refuses_an_unknown_rejected_path_and_a_map_without_one():
    with pytest.raises(ValueError, match="rejected 'worst' is not one of"):
        FrozenLakeDataModule(objective_data="preference", rejected="worst")
    with pytest.raises(ValueError, match="no sub-optimal path"):
        FrozenLakeDataModule(map="SFG", objective_data="preference", rejected="suboptimal")


# ---------------------------------------------------------------------------- no weight decay
@pytest.mark.parametrize("setup,policy,name", run_configs.shipped_configs(),
                         ids=["/".join(run) for run in run_configs.shipped_configs()])
def test_every_frozen_lake_config_builds_an_optimizer_without_weight_decay(setup, policy, name):
    with open(os.path.join(ROOT, run_configs.config_path(setup, policy, name))) as handle:
        config = yaml.safe_load(handle)
    config["trainer"]["callbacks"][0]["init_args"].pop("output_dir", None)
    cli = run_configs.build_cli(config)
    optimizer = cli.model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0] * len(optimizer.param_groups)
    assert optimizer.defaults["weight_decay"] == 0


# ---------------------------------------------------------------------------- the readings
def random_policy(states, seed):
    rng = np.random.default_rng(seed)
    return {s: p / p.sum() for s, p in ((s, rng.random(4) + 1e-3) for s in states)}


def slow_mse(policy, pi_star, states):
    total = 0.0
    for s in states:
        total += sum((float(policy[s][a]) - float(pi_star[s][a])) ** 2 for a in range(4)) / 4
    return total / len(states)


def slow_one_hot(task, demonstrated):
    """π* with one move per state, written independently: walk the path first, then pick by
    the demonstration's move counts among the optimal moves."""
    q = task.q_values()
    chosen = {}
    state = task.start_state
    for char in demonstrated:
        chosen.setdefault(state, ACTIONS.index(char))
        state = task.step(state, char)[0]
    policy = {}
    for s in range(task.n_states):
        best = [a for a in range(4) if q[s, a] >= q[s].max() - 1e-9]
        row = [0.0] * 4
        if len(best) == 4:
            row = [0.25] * 4
        else:
            ranked = sorted(best, key=lambda a: (-demonstrated.count(ACTIONS[a]), a))
            row[chosen[s] if s in chosen and chosen[s] in best else ranked[0]] = 1.0
        policy[s] = np.array(row)
    return policy


@pytest.mark.parametrize("map_name", ["wall4x4", "ring4x4", "check4x4", "4x4"])
def test_every_reading_against_a_slow_loop(map_name):
    task = FrozenLakeTask(map_name)
    demonstrated = task.optimal_trajectory(require_unique=False)
    rejected = task.suboptimal_trajectory()
    policy = random_policy(range(task.n_states), seed=1)
    one_hot = one_hot_optimal_policy(task, demonstrated)
    for s, probs in one_hot.items():
        np.testing.assert_array_equal(probs, slow_one_hot(task, demonstrated)[s])
        assert probs.sum() == pytest.approx(1.0) and (probs.max() == 1.0 or np.all(probs == 0.25))
    path = [s for s in task.run(demonstrated).path if not task.is_terminal(s)]
    training = sorted(set(path) | {s for s in task.run(rejected).path if not task.is_terminal(s)})
    states = {"map": list(range(task.n_states)), "nonterminal": task.reachable_states(),
              "optimal_path": sorted(set(path)), "training": training}
    pi_stars = {"uniform": optimal_policy_everywhere(task), "one_hot": one_hot}
    values = mse_variants(task, policy, demonstrated, rejected)
    assert set(values) == {variant_name(t, r) for t in PI_STAR_TIES for r in REGIONS}
    for ties in PI_STAR_TIES:
        for region in REGIONS:
            assert values[variant_name(ties, region)] == pytest.approx(
                slow_mse(policy, pi_stars[ties], states[region]), abs=1e-15), (ties, region)
    # on a unique shortest path the one-hot π* is π* itself
    if task.num_shortest_paths() == 1:
        assert values["mse_one_hot_optimal_path"] == values["mse_uniform_optimal_path"]


def test_one_hot_pi_star_follows_the_demonstration_where_moves_tie():
    task = FrozenLakeTask("wall4x4")  # RRRDD: three R, two D
    one_hot = one_hot_optimal_policy(task, "RRRDD")
    assert task.optimal_actions(8) == (1, 2)  # down and right both start a shortest path from 8
    assert one_hot[8].tolist() == [0.0, 0.0, 1.0, 0.0]  # R, the demonstration's more frequent move
    assert task.optimal_actions(5) == (1, 3) and one_hot[5].tolist() == [0.0, 1.0, 0.0, 0.0]  # D beats unused U
    assert one_hot[task.goal_state].tolist() == [0.25] * 4  # nothing to choose at the goal
    task4 = FrozenLakeTask("4x4")  # several shortest paths: on the demonstrated one, its own move
    demonstrated = task4.optimal_trajectory(require_unique=False)
    state = task4.start_state
    for char in demonstrated:
        assert one_hot_optimal_policy(task4, demonstrated)[state][ACTIONS.index(char)] == 1.0
        state = task4.step(state, char)[0]


def test_reading_edge_cases():
    task = FrozenLakeTask("SFG")  # one row: S F G
    assert path_states(task, "RR") == [0, 1] and path_states(task, "") == [0]
    assert path_states(task, "LRR") == [0, 1]  # a bump revisits S: counted once
    assert region_states(task, "training", [0, 1, 2], "RR", None) == [0, 1]  # no rejected path
    assert region_states(task, "map", [2, 0, 1, 1], "RR") == [0, 1, 2]
    policy = {0: np.array([0.0, 0.0, 1.0, 0.0]), 1: np.array([0.0, 0.0, 1.0, 0.0]), 2: np.full(4, 0.25)}
    assert mse_variants(task, policy, "RR")["mse_uniform_map"] == 0.0  # π* itself
    with pytest.raises(ValueError, match="no states"):
        mse_over(policy, policy, [])
    with pytest.raises(ValueError, match="region 'edge'"):
        region_states(task, "edge", [0], "RR")
    with pytest.raises(KeyError, match="no distribution for state 2"):
        mse_over({0: policy[0]}, policy, [0, 2])
    # float32 and torch inputs read as float64, as everywhere in the metrics
    as_torch = {s: torch.tensor(p, dtype=torch.bfloat16) for s, p in policy.items()}
    assert mse_variants(task, as_torch, "RR")["mse_uniform_map"] == 0.0


def test_reading_metrics_cover_every_reading_and_the_one_hot_explored_grid():
    task = FrozenLakeTask("check4x4")
    metrics = reading_metrics(task, task.uniform_policy() | {s: np.full(4, 0.25) for s in range(16)},
                              task.optimal_trajectory(), task.away_trajectory())
    assert {reading.mse_key for reading in READINGS} | {"explored_mse_one_hot"} == set(metrics)
    assert HEADLINE.mse_key == "mse_uniform_map" and sum(reading.paper_words for reading in READINGS) == 2


# ---------------------------------------------------------------------------- claims under every reading
def runs_of(values_by_objective, initial=None):
    """Hand-made runs whose every reading's MSE is the given value (or a reading-specific one)."""
    runs = []
    for name, per_seed in values_by_objective.items():
        for seed, value in enumerate(per_seed):
            metrics = {reading.mse_key: value(reading) if callable(value) else value for reading in READINGS}
            metrics.update(explored_mse=0.0, explored_mse_one_hot=0.0, explored_states=5.0, success_rate=1.0)
            start = {key: (initial if initial is not None else 0.5) for key in metrics}
            runs.append({"objective": name, "seed": seed, "metrics": metrics, "initial_metrics": start,
                         "action_probs": {0: [seed]}})
    return runs


def test_claims_are_judged_under_every_reading_and_only_where_their_objectives_ran():
    # IFT below SFT under the one-hot readings only
    ift = [lambda r, k=k: 0.1 + 0.01 * k if r.ties == "one_hot" else 0.3 + 0.01 * k for k in range(3)]
    runs = runs_of({"SFT": [0.2, 0.21, 0.22], "IFT": ift}, initial=0.1)
    claims = {claim.text: claim for claim in judge.judge_claims(runs)}
    assert "IFT closer to π* than ORPO" not in claims and "PPO solves the map from the reward alone" not in claims
    ift_sft = claims["IFT closer to π* than SFT"]
    assert not ift_sft.holds  # the headline reading is uniform / whole map
    assert {name for name, verdict in ift_sft.readings.items() if verdict["holds"]} == {
        reading.name for reading in READINGS if reading.ties == "one_hot"}
    # further than the untrained policy (0.1 on every seed) under every reading, for SFT
    assert all(v["holds"] for v in claims["SFT ends further from π* than the untrained policy"].readings.values())
    assert claims["IFT explores more grids than SFT"].readings == {}
    text = judge.format_claims(list(claims.values()), "mlp")
    assert "under every reading" in text and "what the map does" in text and "this project's checks" not in text


def test_every_setup_is_named_and_described():
    assert list(SETUPS) == ["paper-literal", "ours"]
    for setup in SETUPS.values():
        assert setup.folder == setup.name.replace("-", "_") and setup.headline
    with pytest.raises(ValueError, match="set-up 'paper' is not one of paper-literal, ours"):
        get_setup("paper")


def test_a_policy_outside_a_setup_is_run_and_said():
    from ift.lab.frozen_lake import command as cli

    plans = {plan.setup: plan for plan in cli.plan_setups(cli.FrozenLakeArguments(policy="both"))}
    assert plans["paper-literal"].policies == ["mlp", "transformer"]
    assert any("--policy transformer: not one of the paper-literal set-up's own policies" in note
               for note in plans["paper-literal"].notes)
    assert plans["ours"].notes == []
    defaults = {plan.setup: plan for plan in cli.plan_setups(cli.FrozenLakeArguments())}
    assert defaults["paper-literal"].policies == ["mlp"] and defaults["paper-literal"].notes == []
    assert defaults["paper-literal"].task.rows == PAPER_LITERAL_MAP and defaults["ours"].task.rows == ("SFFF", "FFHG", "FHHH", "FFFF")
