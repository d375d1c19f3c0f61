"""``ift code-pairs`` and its pairing: hand-written programs of known verdicts give exactly the
pairs and drop counts worked out by hand, the records read back through
PreferenceDataModule, and the command writes a file whose counts add up, with a tiny
policy trained here as the strong source and an untrained one as the weak."""

from __future__ import annotations

import json
import random

import pytest
import torch

from factories import quiet_trainer, tiny_module
from ift.cli import main
from ift.core.tokenizer import build_char_tokenizer
from ift.data import PreferenceDataModule
from ift.data.records import read_records
from ift.rewards import CodeTestsReward
from ift.tasks.code import CodeTaskDataModule
from ift.lab.code.pairs import DROP_REASONS, Program, ScoredProgram, pair_programs, synthesise_pairs

# f(x) = (x+3)*2 at four inputs.
PROBLEM = {"prompt": "# f(x): add 3, times 2\n",
           "tests": ["assert f(0) == 6", "assert f(1) == 8", "assert f(-3) == 0", "assert f(2) == 10"]}
RIGHT = "def f(x):\n    return (x+3)*2"
RIGHT_TOO = "def f(x):\n    return 2*x+6"
ONE_OF_FOUR = "def f(x):\n    return x+3"       # right only at x = -3: pass fraction 0.25
WRONG = "def f(x):\n    return x*2+3"           # right nowhere
BROKEN = "def f(x) return x"                    # a syntax error

# Strong: two right programs and a partly right one; weak: one right program that is the
# strong source's first (the same code), a wrong one and one that does not parse.
PROGRAMS = [Program(RIGHT, "strong", "strong.ckpt", 0.7), Program(RIGHT_TOO, "strong", "strong.ckpt", 0.7),
            Program(ONE_OF_FOUR, "strong", "strong.ckpt", 0.7), Program(RIGHT, "weak", "tiny-gpt2", 1.5),
            Program(WRONG, "weak", "tiny-gpt2", 1.5), Program(BROKEN, "weak", "tiny-gpt2", 1.5)]
# The 15 candidates of these 6 programs, worked out by hand:
# identical: RIGHT(strong) / RIGHT(weak);
# both passing: RIGHT / RIGHT_TOO, RIGHT_TOO / RIGHT(weak);
# both failing: ONE_OF_FOUR / WRONG, ONE_OF_FOUR / BROKEN, WRONG / BROKEN;
# duplicate: RIGHT(weak) over ONE_OF_FOUR, WRONG, BROKEN (the strong RIGHT already pairs with each);
# usable: RIGHT and RIGHT_TOO (strong) over ONE_OF_FOUR (strong), WRONG and BROKEN (weak).
BY_HAND = {"identical": 1, "both_passing": 2, "both_failing": 3, "duplicate": 3}
STRONG_OVER_WEAK = {(RIGHT, WRONG), (RIGHT, BROKEN), (RIGHT_TOO, WRONG), (RIGHT_TOO, BROKEN)}
STRONG_OVER_STRONG = {(RIGHT, ONE_OF_FOUR), (RIGHT_TOO, ONE_OF_FOUR)}


@pytest.fixture(scope="module")
def reward():
    """One sandboxed scorer for the module's tests: repeated programs are run once."""
    return CodeTestsReward(timeout_s=10.0, max_workers=2)


def sides(records):
    """The (chosen, rejected) texts of the records, as a set."""
    return {(record["chosen"], record["rejected"]) for record in records}


def test_hand_written_programs_give_the_pairs_and_drop_counts_worked_out_by_hand(reward):
    result = synthesise_pairs([PROBLEM], [PROGRAMS], problem_ids=["p0"], max_pairs_per_problem=None, reward=reward)
    summary = result.summary
    assert sides(result.records) == STRONG_OVER_WEAK | STRONG_OVER_STRONG
    assert summary.dropped == {**BY_HAND, "over_cap": 0}
    assert summary.candidates == 15 == summary.pairs + sum(summary.dropped.values())
    assert summary.samples_by_source == {"strong": 3, "weak": 3}
    assert summary.passing_by_source == {"strong": 2, "weak": 1}
    fractions = {record["rejected"]: record["rejected_pass_fraction"] for record in result.records}
    assert fractions == {ONE_OF_FOUR: 0.25, WRONG: 0.0, BROKEN: 0.0}
    for record in result.records:
        assert record["chosen_pass_fraction"] == 1.0 and record["problem_id"] == "p0"
        assert record["chosen_source"] == "strong" and record["chosen_policy"] == "strong.ckpt"
        assert record["chosen_temperature"] == 0.7 and record["tests"] == PROBLEM["tests"]
    # The strong source's right programs over the weak source's wrong ones come first.
    assert sides(result.records[:4]) == STRONG_OVER_WEAK
    assert {record["rejected_source"] for record in result.records[:4]} == {"weak"}


def test_the_cap_keeps_the_preferred_pairs_with_varied_programs_and_counts_the_rest(reward):
    capped = synthesise_pairs([PROBLEM], [PROGRAMS], max_pairs_per_problem=2, seed=3, reward=reward)
    kept = sides(capped.records)
    assert kept <= STRONG_OVER_WEAK and len(kept) == 2
    # Each passing program is chosen once and each failing one rejected once.
    assert {c for c, _ in kept} == {RIGHT, RIGHT_TOO} and {r for _, r in kept} == {WRONG, BROKEN}
    assert capped.summary.dropped == {**BY_HAND, "over_cap": 4}
    # Deterministic in the seed; another seed may break the tie the other way, never the rules.
    again = synthesise_pairs([PROBLEM], [PROGRAMS], max_pairs_per_problem=2, seed=3, reward=reward)
    assert again.records == capped.records
    for seed in range(4):
        other = sides(synthesise_pairs([PROBLEM], [PROGRAMS], max_pairs_per_problem=2, seed=seed,
                                       reward=reward).records)
        assert other <= STRONG_OVER_WEAK and {c for c, _ in other} == {RIGHT, RIGHT_TOO}


def test_problems_where_every_program_passes_or_fails_or_repeats_give_no_pairs(reward):
    problems = [PROBLEM] * 3
    programs = [[Program(RIGHT, "strong"), Program(RIGHT_TOO, "weak")],                    # both pass
                [Program(WRONG, "strong"), Program(BROKEN, "weak"), Program(ONE_OF_FOUR, "weak")],  # none passes
                [Program(RIGHT, "strong"), Program(RIGHT + "\n", "weak")]]              # the same code twice
    result = synthesise_pairs(problems, programs, reward=reward)
    assert result.records == [] and result.summary.pairs == 0 and result.summary.problems_with_pairs == 0
    assert result.summary.dropped == {"identical": 1, "both_passing": 1, "both_failing": 3, "duplicate": 0,
                                      "over_cap": 0}
    assert result.summary.candidates == 1 + 3 + 1 and result.summary.samples == 7


def test_pairing_alone_needs_no_sandbox():
    scored = [ScoredProgram(Program("a = 1", "weak"), 1.0), ScoredProgram(Program("a = 2", "strong"), 0.5)]
    pairs, dropped = pair_programs(scored, max_pairs=None, rng=random.Random(0))
    assert [(p.chosen.program.text, p.rejected.program.text) for p in pairs] == [("a = 1", "a = 2")]
    assert sum(dropped.values()) == 0
    with pytest.raises(ValueError, match="max_pairs"):
        pair_programs(scored, max_pairs=0, rng=random.Random(0))
    with pytest.raises(ValueError, match="source must be one of"):
        Program("x", "medium")


def test_records_round_trip_through_the_preference_data_module(tmp_path, reward):
    result = synthesise_pairs([PROBLEM], [PROGRAMS], max_pairs_per_problem=None, reward=reward)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in result.records))
    assert [record for _, record in read_records(str(path))] == result.records
    data = PreferenceDataModule(train_data=str(path), batch_size=3, tokenizer=build_char_tokenizer())
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert len(data.datasets["train"]) == len(result.records) == 6 and not data.skipped["train"]
    assert batch["chosen_input_ids"].shape[0] == 3 and "rejected_labels" in batch


# ---------------------------------------------------------------------------- the command
TASK = json.dumps({"num_train": 2, "num_val": 1, "num_test": 1})


@pytest.fixture(scope="module")
def strong_checkpoint(tmp_path_factory):
    """tiny-gpt2 trained to recite the reference code of the task's 2 training problems
    (200 steps, a few seconds): a strong source whose samples pass."""
    module = tiny_module(optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = CodeTaskDataModule(num_train=2, num_val=1, num_test=1, batch_size=2, tokenizer=module.tokenizer)
    trainer = quiet_trainer(tmp_path_factory.mktemp("run"), max_steps=200, limit_val_batches=0)
    trainer.fit(module, data)
    path = tmp_path_factory.mktemp("ckpt") / "strong.ckpt"
    trainer.save_checkpoint(str(path))
    return str(path)


def code_pairs(*options: str):
    """``ift code-pairs`` on the 2 training problems of TASK, 3 short samples per source."""
    return main(["code-pairs", "--task", TASK, "--samples", "3", "--max-new-tokens", "32", *options])


def test_command_writes_pairs_of_the_trained_policy_over_the_untrained_and_the_counts_add_up(
        tmp_path, strong_checkpoint, capsys):
    out = tmp_path / "pairs" / "code.jsonl"
    summary = code_pairs("--strong", strong_checkpoint, "--weak", "tiny-gpt2", "--output", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["output"] == str(out) and len(records) == summary["pairs"] > 0
    assert summary["problems"] == 2 and summary["samples"] == 2 * 2 * 3
    assert summary["samples_by_source"] == {"strong": 6, "weak": 6} and summary["passing_by_source"]["weak"] == 0
    assert summary["candidates"] == 2 * (6 * 5 // 2) == summary["pairs"] + sum(summary["dropped"].values())
    assert set(summary["dropped"]) == set(DROP_REASONS) and summary["pairs"] <= 2 * 4
    assert {record["problem_id"] for record in records} <= {"code_task[train]#0", "code_task[train]#1"}
    assert all(r["chosen_source"] == "strong" and r["chosen_policy"] == strong_checkpoint
               and r["rejected_policy"] == "tiny-gpt2" and r["chosen_pass_fraction"] == 1.0 for r in records)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    # The same seed gives the same file.
    again = tmp_path / "again.jsonl"
    code_pairs("--strong", strong_checkpoint, "--weak", "tiny-gpt2", "--output", str(again))
    assert again.read_text() == out.read_text()
    data = PreferenceDataModule(train_data=str(out), batch_size=2, tokenizer=build_char_tokenizer())
    data.setup("fit")
    assert len(data.datasets["train"]) == len(records) and not data.skipped["train"]


def test_one_policy_at_two_temperatures(tmp_path, strong_checkpoint):
    out = tmp_path / "one.jsonl"
    summary = code_pairs("--strong", strong_checkpoint, "--strong-temperature", "0.5", "--weak-temperature", "3.0",
                         "--num", "1", "--output", str(out))
    assert summary["problems"] == 1 and summary["samples"] == 6 and out.exists()
    assert summary["candidates"] == 15 == summary["pairs"] + sum(summary["dropped"].values())
    for record in map(json.loads, out.read_text().splitlines()):
        assert record["chosen_policy"] == record["rejected_policy"] == strong_checkpoint
        assert {record["chosen_temperature"], record["rejected_temperature"]} <= {0.5, 3.0}


@pytest.mark.parametrize("options,message", [
    (["--strong", "missing/strong.ckpt"], "--strong missing/strong.ckpt: no such checkpoint file or folder"),
    (["--strong", "tiny-gpt2", "--weak", "./nowhere"], "--weak ./nowhere: no such checkpoint file or folder"),
    (["--strong", "broken.ckpt"], "--strong broken.ckpt: cannot be loaded as a checkpoint written by `ift fit`"),
    (["--strong", "tiny-gpt2", "--split", "val", "--task", '{"num_val": 0}'],
     "the val split of the code task has no problems"),
    (["--strong", "tiny-gpt2", "--num", "5"], "--num 5: the train split has 2 problems"),
    (["--strong", "tiny-gpt2", "--task", '{"num_trian": 3}'], "its keys are CodeTaskDataModule's arguments"),
])
def test_bad_input_stops_with_the_fix_and_leaves_no_file(tmp_path, options, message):
    (tmp_path / "broken.ckpt").write_text("not a checkpoint")  # the working directory is tmp_path
    out = tmp_path / "pairs.jsonl"
    with pytest.raises(SystemExit) as stopped:
        main(["code-pairs", "--task", TASK, *options, "--output", str(out)])
    assert str(stopped.value.code).startswith("ift code-pairs: error: ") and message in str(stopped.value.code)
    assert not out.exists() and not (tmp_path / "pairs.jsonl.partial").exists()


def test_unwritable_output_folder_and_bad_options_are_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stopped:
        main(["code-pairs", "--task", TASK, "--strong", "tiny-gpt2", "--output", str(blocker / "pairs.jsonl")])
    assert "cannot be written: it is a file; give an --output in a writable folder" in str(stopped.value.code)
    for options, message in [(["--num", "0"], "zero problems give no pairs"),
                             (["--weak-temperature", "0.7"], "same policy at the same temperature"),
                             (["--strong-temperature", "0"], "--samples 4 would give the same program 4 times")]:
        with pytest.raises(SystemExit) as stopped:
            main(["code-pairs", "--strong", "tiny-gpt2", "--output", str(tmp_path / "x.jsonl"), *options])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


# ------------------------------------------------------------------ stopping, continuing, one writer
STOP_TASK = json.dumps({"num_train": 6, "num_val": 1, "num_test": 1})


def stop_options(strong_checkpoint):
    """Groups of one problem (--batch-size = --samples), so that a stop falls between groups;
    the first two problems are the strong checkpoint's, so they give pairs."""
    return ["--task", STOP_TASK, "--samples", "3", "--batch-size", "3", "--max-new-tokens", "32",
            "--strong", strong_checkpoint, "--weak", "tiny-gpt2"]


def test_ctrl_c_keeps_the_problems_done_and_the_same_command_continues(tmp_path, strong_checkpoint, capsys):
    """A real Ctrl-C (SIGINT to the process group) mid-run: no traceback, the pairs of the
    problems done are kept and counted in the message, a rerun with other settings is
    refused, and the same command continues to the file an unstopped run writes."""
    import re
    import signal

    from signal_helpers import lines, signal_when, start

    out = tmp_path / "pairs.jsonl"
    progress = tmp_path / "pairs.jsonl.partial.progress"
    proc = start(["-m", "ift.cli", "code-pairs", *stop_options(strong_checkpoint), "--output", str(out)], tmp_path)
    # The first line of the progress file is the settings; each next one a group done.
    err = signal_when(proc, lambda: lines(progress) >= 2, "the first problem done", signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    stopped = re.search(r"stopped after (\d+) of 6 problems; their (\d+) pairs are in (\S+); run the same command "
                        r"again to continue", err)
    assert stopped and "ift code-pairs: stopped by Ctrl-C (SIGINT)" in err, err[-3000:]
    done, pairs = int(stopped.group(1)), int(stopped.group(2))
    partial = tmp_path / "pairs.jsonl.partial"
    assert stopped.group(3) == str(partial) and 1 <= done < 6 and lines(progress) == 1 + done
    assert lines(partial) == pairs and not out.exists()

    with pytest.raises(SystemExit, match=r"other settings \(samples: 3 there, 2 now\)"):
        main(["code-pairs", *stop_options(strong_checkpoint), "--samples", "2", "--output", str(out)])
    capsys.readouterr()
    summary = main(["code-pairs", *stop_options(strong_checkpoint), "--output", str(out)])
    assert f"{done} of 6 problems were done by a stopped run ({pairs} pairs kept)" in capsys.readouterr().err
    assert summary["problems"] == 6 and summary["samples"] == 6 * 2 * 3 and not partial.exists()
    assert summary["pairs"] > 0 and summary["candidates"] == summary["pairs"] + sum(summary["dropped"].values())
    whole = tmp_path / "whole.jsonl"
    assert main(["code-pairs", *stop_options(strong_checkpoint), "--output", str(whole)])["pairs"] == summary["pairs"]
    assert out.read_text() == whole.read_text()
