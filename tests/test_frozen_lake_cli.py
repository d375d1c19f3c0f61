"""``ift frozen-lake`` end to end on one seed and a few steps, plus its building blocks:
the data module, the constrained policy, how the LM is read as a policy, and that each
single run is exactly ``ift fit --config configs/frozen_lake/<policy>/<objective>.yaml``."""

import json
import os
import random

import matplotlib.image
import numpy as np
import pytest
import torch
import yaml

from ift.cli.commands import COMMANDS
from ift.tasks.frozen_lake import VOCAB, FrozenLakeDataModule, FrozenLakeTask, lm_action_probs, lm_policy
from ift.lab.frozen_lake import command as cli
from ift.lab.frozen_lake import results as frozen_lake_results
from ift.lab.frozen_lake import runs as run_configs
from ift.lab.frozen_lake.readings import READINGS
from ift.lab.frozen_lake.setups import get_setup
from ift.tasks.frozen_lake.policies import POLICIES
from ift.tasks.frozen_lake.queries import readable_texts
from ift.modules import FineTuneModule
from ift.modules.output_mask import MASK_VALUE
from ift.objectives import DPO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = "char:" + VOCAB


# ------------------------------------------------------------------ the command
FROZEN_LAKE = COMMANDS["frozen-lake"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen_lake")
    results = FROZEN_LAKE(["--seeds", "1", "--steps", "8", "--eval_every", "4", "--out", str(out), "--workers", "1"])
    return out, results


SETUP_POLICIES = [("ours", policy) for policy in POLICIES] + [("paper-literal", "mlp")]


def test_both_setups_run_by_default_each_with_its_own_policies(quick_run):
    _, everything = quick_run
    assert list(everything) == ["paper-literal", "ours"]
    assert list(everything["ours"]) == list(POLICIES) and list(everything["paper-literal"]) == ["mlp"]
    assert list(everything["paper-literal"]["mlp"]) == ["SFT", "IFT", "IFT-lam0-gamma0", "DPO", "ORPO", "untrained"]


@pytest.mark.parametrize("setup,policy", SETUP_POLICIES)
def test_results_json_has_every_objective_and_metric(quick_run, setup, policy):
    out, everything = quick_run
    folder = out / setup.replace("-", "_") / policy
    with open(folder / "results.json") as handle:
        written = json.load(handle)
    assert written == json.loads(json.dumps(everything[setup][policy]))
    assert list(written) == run_configs.setup_objectives(setup) + ["untrained"]
    assert written["untrained"]["moved_states"]["mean"] == 0.0
    task = FrozenLakeTask(get_setup(setup).map)
    for name, metrics in written.items():
        for key in frozen_lake_results.RESULT_METRICS:
            assert set(metrics[key]) == {"mean", "std"}, (name, key)
            assert np.isfinite(metrics[key]["mean"]) and metrics[key]["std"] == 0.0  # one seed
        assert 0.0 <= metrics["mse_to_optimal"]["mean"] <= 1.0
        assert metrics["success_rate"]["mean"] in (0.0, 1.0)
        assert 1 <= metrics["explored_states"]["mean"] <= task.n_states
        for reading in READINGS:  # every reading of the metric, for every row
            assert 0.0 <= metrics[reading.mse_key]["mean"] <= 1.0, (name, reading)
        assert metrics["mse_to_optimal"] == metrics["mse_uniform_map"]
        assert metrics["mse_reachable"] == metrics["mse_uniform_nonterminal"]
    details = json.loads((out / setup.replace("-", "_") / policy / "details.json").read_text())
    assert details["map"] == "/".join(task.rows) and details["seeds"] == 1 and details["steps"] == 8
    assert details["policy"] == policy and details["setup"] == setup
    claims = {claim["text"]: claim for claim in details["claims"]}
    # every claim whose objectives ran: all of them in ours, none of the RL checks in paper-literal
    assert len(claims) == (15 if setup == "ours" else 12)
    assert set(claims["IFT closer to π* than SFT"]["readings"]) == {reading.name for reading in READINGS}
    assert claims["IFT with λ = 0, γ = 0 is SFT exactly"]["readings"] == {}
    assert {run["objective"] for run in details["runs"]} == set(run_configs.setup_objectives(setup))
    # Every state of the map: the state MLP is read on all 16; the LM on every state a path reaches.
    readable = sorted(readable_texts(task)) if policy == "transformer" else list(range(task.n_states))
    for run in details["runs"]:
        assert run["optimizer_steps"] >= 8 and run["curve"][0][0] == 0 and len(run["curve"]) >= 3
        assert sorted(int(s) for s in run["action_probs"]) == readable


@pytest.mark.parametrize("setup,policy", SETUP_POLICIES)
def test_picture_is_written_and_readable(quick_run, setup, policy):
    out, _ = quick_run
    pixels = matplotlib.image.imread(str(out / setup.replace("-", "_") / policy / "frozen_lake.png"))
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 800


@pytest.mark.parametrize("setup,policy", SETUP_POLICIES)
def test_ift_with_lam0_gamma0_reproduces_sft_exactly(quick_run, setup, policy):
    out, everything = quick_run
    assert everything[setup][policy]["IFT-lam0-gamma0"] == everything[setup][policy]["SFT"]
    details = json.loads((out / setup.replace("-", "_") / policy / "details.json").read_text())
    runs = {run["objective"]: run for run in details["runs"]}
    assert runs["IFT-lam0-gamma0"]["curve"] == runs["SFT"]["curve"]
    assert runs["IFT-lam0-gamma0"]["action_probs"] == runs["SFT"]["action_probs"]


def test_command_line_errors(capsys):
    with pytest.raises(SystemExit):
        FROZEN_LAKE.parse(["--objectives", "SFT,KTO"])
    assert "unknown objective(s) ['KTO']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        FROZEN_LAKE.parse(["--seeds", "0"])
    assert "--seeds must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="has tile .X."):
        FROZEN_LAKE(["--map", "SFFX,FFFG", "--seeds", "1"])
    args = FROZEN_LAKE.parse(["--objectives", "DPO, SFT", "--map", "4x4"])
    assert args.objective_names("ours") == ["DPO", "SFT"] == args.objective_names("paper-literal")
    assert args.map == "4x4" and args.policies("ours") == list(POLICIES) and args.policies("paper-literal") == ["mlp"]
    assert args.setups == ["paper-literal", "ours"]
    assert FROZEN_LAKE.parse(["--policy", "mlp"]).policies("ours") == ["mlp"]
    assert FROZEN_LAKE.parse(["--policy", "both"]).policies("paper-literal") == list(POLICIES)
    assert FROZEN_LAKE.parse(["--setup", "paper-literal"]).setups == ["paper-literal"]
    with pytest.raises(SystemExit):
        FROZEN_LAKE.parse(["--policy", "cnn"])
    with pytest.raises(SystemExit):
        FROZEN_LAKE.parse(["--setup", "the-papers"])
    assert "paper-literal" in capsys.readouterr().err


def test_routed_from_the_ift_command(tmp_path, capsys):
    from ift.cli import main

    results = main(["frozen-lake", "--setup", "ours", "--objectives", "SFT", "--seeds", "1", "--steps", "3",
                    "--eval-every", "0", "--workers", "1", "--out", str(tmp_path), "--policy", "mlp"])  # dashed too
    assert list(results) == ["ours"] and list(results["ours"]) == ["mlp"]
    printed = capsys.readouterr().out
    assert "MSE to π*" in printed and "SFT" in printed and "the paper's claims" not in printed  # SFT alone: none
    assert "ift frozen-lake --setup paper-literal" in printed  # the other set-up, one command away
    assert list(json.loads((tmp_path / "ours" / "mlp" / "results.json").read_text())) == ["SFT", "untrained"]
    assert not (tmp_path / "ours" / "transformer").exists() and not (tmp_path / "paper_literal").exists()


def test_frozen_lake_aggregate_does_not_depend_on_the_order_runs_finish_in():
    rng = random.Random(0)
    runs = [{"objective": "SFT", "seed": seed, "metrics": {source: rng.random() / 3 for source in
                                                             frozen_lake_results.RESULT_METRICS},
             "initial_metrics": {source: rng.random() for source in frozen_lake_results.RESULT_METRICS}}
            for seed in range(5)]
    reference = frozen_lake_results.aggregate(runs, ["SFT"])
    for _ in range(10):
        rng.shuffle(runs)
        assert frozen_lake_results.aggregate(runs, ["SFT"]) == reference  # exactly, to the last bit


# ------------------------------------------------------------------ configs = runs
def test_yaml_configs_are_the_runs_of_the_command():
    shipped = run_configs.shipped_configs()
    assert len(shipped) == 2 * 9 + 5  # ours: both policies x 9 objectives; paper-literal: the MLP x 5
    for setup, policy, name in shipped:
        path = run_configs.config_path(setup, policy, name)
        with open(os.path.join(ROOT, path)) as handle:
            config = yaml.safe_load(handle)
        expected = run_configs.run_config(name, output_dir=run_configs.fit_output_dir(setup, policy, name),
                                          policy=policy, setup=setup)
        assert config == expected, (f"{path} is stale: run "
                                    "ift.lab.frozen_lake.runs.write_configs('configs/frozen_lake')")
    on_disk = {os.path.relpath(os.path.join(folder, file), ROOT)
               for folder, _, files in os.walk(os.path.join(ROOT, "configs", "frozen_lake")) for file in files}
    assert on_disk == {run_configs.config_path(*run) for run in shipped}  # no stale file left behind


@pytest.mark.parametrize("setup,policy,name", [("ours", "mlp", "IFT"), ("ours", "mlp", "PPO"), ("ours", "mlp", "GRPO"),
                                               ("ours", "transformer", "IFT"), ("ours", "transformer", "PPO"),
                                               ("paper-literal", "mlp", "DPO")])
def test_ift_fit_with_the_yaml_gives_the_same_numbers(setup, policy, name, tmp_path):
    from ift.cli import main

    steps = 8
    out = tmp_path / "fit"
    main(["fit", "--config", os.path.join(ROOT, run_configs.config_path(setup, policy, name)),
          "--trainer.max_steps", str(steps), "--trainer.callbacks.init_args.every_n_steps", "4",
          "--trainer.callbacks.init_args.output_dir", str(out)])
    fitted = json.loads((out / "frozen_lake_metrics.json").read_text())
    direct = cli.run_one(cli.Job(policy, name, 0, None, steps, 4, setup))
    # the command adds every reading's MSE to the monitor's metrics
    assert fitted["metrics"] == {key: direct["metrics"][key] for key in fitted["metrics"]}
    assert fitted["curve"] == direct["curve"]
    assert (out / "frozen_lake.png").is_file()


# ------------------------------------------------------------------ data
@pytest.mark.parametrize("objective_data,keys", [
    ("optimal", {"input_ids", "labels", "attention_mask", "prompt_input_ids"}),
    ("preference", {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "prompt_input_ids"}),
    ("prompts", {"prompt_input_ids", "prompt_attention_mask", "examples"}),
])
def test_data_module_gives_each_objective_its_data(objective_data, keys):
    data = FrozenLakeDataModule(objective_data=objective_data, num_copies=5, batch_size=2, tokenizer=TOKENIZER)
    data.setup("fit")
    assert len(data.datasets["train"]) == 5 and "val" not in data.datasets
    batch = next(iter(data.train_dataloader()))
    assert keys <= set(batch)
    tokenizer = data.tokenizer
    prompt = tokenizer.decode(batch["prompt_input_ids"][0], skip_special_tokens=True)
    assert prompt == "SFFF/FFHG/FHHH/FFFF:"  # the default map
    if objective_data == "optimal":
        supervised = batch["labels"][0][batch["labels"][0] != -100]
        # no stop action: the environment ends the episode at G (tests/test_frozen_lake_episode_ends.py)
        assert tokenizer.decode(supervised) == "RRRD" and tokenizer.eos_token_id not in supervised.tolist()
        assert "optimal" not in str(batch["examples"][0])
    elif objective_data == "preference":
        rejected = batch["rejected_labels"][0][batch["rejected_labels"][0] != -100]
        assert tokenizer.decode(rejected) == "DDDRRRU"  # never optimal where it moves
    else:
        assert "labels" not in batch and batch["examples"][0] == {
            "prompt": "SFFF/FFHG/FHHH/FFFF:", "map": "SFFF/FFHG/FHHH/FFFF", "representation": "actions"}


def test_state_representation_writes_paths_as_states():
    from ift.tasks.frozen_lake import STATE_TOKENIZER, frozen_lake_reward, state_text

    data = FrozenLakeDataModule(objective_data="preference", num_copies=2, tokenizer=STATE_TOKENIZER,
                                representation="states")
    example = data.example()
    task = data.task
    assert example["prompt"] == state_text([task.start_state])
    assert example["chosen"] == state_text(task.run("RRRD").path[1:]) == state_text([1, 2, 3, 7])
    assert example["rejected"] == state_text(task.run("DDDRRRU").path[1:])
    rows = [dict(example)] * 4
    responses = [example["chosen"], example["rejected"], state_text([1, 3]), "?"]  # goal, hole, a jump, junk
    assert frozen_lake_reward([example["prompt"]] * 4, responses, rows) == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="representation"):
        FrozenLakeDataModule(representation="pixels")


def test_data_module_checks_its_arguments_and_maps():
    with pytest.raises(ValueError, match="objective_data"):
        FrozenLakeDataModule(objective_data="rollouts")
    with pytest.raises(ValueError, match="shortest paths"):
        FrozenLakeDataModule(map="4x4")  # several optimal trajectories
    data = FrozenLakeDataModule(map="4x4", allow_several_optimal=True, val_copies=2, tokenizer=TOKENIZER)
    data.setup("fit")
    assert len(data.datasets["val"]) == 2
    assert data.map == "SFFF/FHFH/FFFH/HFFG"


# ------------------------------------------------------------------ the LM as a policy
def test_output_tokens_constrain_policy_and_reference():
    torch.manual_seed(0)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER, output_tokens="LDRU", objective=DPO())
    module.objective.begin(module.step_context)
    tokenizer = module.tokenizer
    allowed = {tokenizer.convert_tokens_to_ids(c) for c in "LDRU"} | {tokenizer.eos_token_id}
    ids = torch.tensor([tokenizer("SFFF/FFHF:RR")["input_ids"]])
    for model in (module.policy, module.reference_policy):
        logits = model(ids).logits[0, -1]
        for token in range(logits.shape[0]):
            assert (logits[token] > MASK_VALUE / 2) == (token in allowed)
    samples = module.policy.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=12,
                                     pad_token_id=tokenizer.pad_token_id)
    assert set(samples[0, ids.shape[1]:].tolist()) <= allowed | {tokenizer.pad_token_id}
    with pytest.raises(ValueError, match="single token"):
        FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER, output_tokens="LDRUx")


def test_char_tokenizer_spec_with_characters():
    module = FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER)
    assert len(module.tokenizer) == 4 + len(VOCAB)
    assert module.tokenizer.decode(module.tokenizer("SFHG/:LDRU")["input_ids"]) == "SFHG/:LDRU"


def test_lm_policy_reads_each_state_like_an_unpadded_forward():
    torch.manual_seed(1)
    module = FineTuneModule(model="tiny-gpt2", tokenizer=TOKENIZER, output_tokens="LDRU")
    task = FrozenLakeTask()
    probs = lm_policy(module.policy, module.tokenizer, task)
    assert sorted(probs) == task.reachable_states()
    ids = [module.tokenizer.convert_tokens_to_ids(c) for c in "LDRU"]
    for state, text in task.query_texts().items():
        tokens = torch.tensor([module.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            logits = module.policy.eval()(tokens).logits[0, -1, ids]
        assert np.allclose(probs[state], torch.softmax(logits, -1).numpy(), atol=1e-5)
    batch = lm_action_probs(module.policy, module.tokenizer, ["SFFF/FFHF/FFHG/FFFF:", "SFFF/FFHF/FFHG/FFFF:RRRD"])
    assert batch.shape == (2, 4) and np.allclose(batch.sum(1), 1.0)


def test_maps_with_several_shortest_paths_are_accepted_by_the_runs():
    config = run_configs.run_config("SFT", map="4x4", steps=2)
    assert config["data"]["init_args"]["allow_several_optimal"] is True
    assert config["data"]["init_args"]["map"] == "SFFF,FHFH,FFFH,HFFG"
    kept, notes = cli.usable_objectives(FrozenLakeTask("SFG"), ["SFT", "DPO"])
    assert kept == ["SFT"] and "DPO skipped" in notes[0]
