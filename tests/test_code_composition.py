"""The atomic/synthetic code task of the SFT-vs-RL study: the library's code computes what
its words say, the seeded splits share no problem (and a leak is caught), they are
deterministic by seed, their files carry provenance, and the data module builds each mix."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import pytest

from ift.core.tokenizer import build_char_tokenizer
from ift.tasks.code import (
    ATOMICS,
    CompositionCodeDataModule,
    CompositionSplitSettings,
    apply_composition,
    composition_code,
    composition_prompt,
    composition_splits,
    leaks,
    write_composition_splits,
)
from ift.tasks.code.composition_split import PARTS, library_fingerprint

SMALL = CompositionSplitSettings(num_synthetic_train=60, num_held_out=20, num_target=20)


def run_trusted(code: str, x: int) -> int:
    """The library's own (trusted) code, run in this process."""
    namespace: dict = {}
    exec(code, namespace)
    return namespace["f"](x)


def slow_value(name: str, x: int) -> int:
    """Each atomic function written out from its words alone, as plainly as possible."""
    kind, digits = name.rstrip("0123456789"), name[len(name.rstrip("0123456789")):]
    k = int(digits) if digits else None
    if kind == "add":
        return x + k
    if kind == "sub":
        return x - k
    if kind == "mul":
        return sum(x for _ in range(k))
    if kind == "div":  # the largest q with q * k <= x
        q = -abs(x) - 1
        while (q + 1) * k <= x:
            q += 1
        return q
    if kind == "mod":
        return x - k * slow_value(f"div{k}", x)
    words = {"square": x * x, "cube": x * x * x, "negate": -x, "abs": max(x, -x), "relu": max(x, 0),
             "min0": min(x, 0), "sign": (x > 0) - (x < 0), "is_even": int(x % 2 == 0),
             "last_digit": int(str(abs(x))[-1]), "digit_sum": sum(int(d) for d in str(abs(x))),
             "digit_count": len(str(abs(x)))}
    return words[name]


def test_the_library_is_tens_of_distinct_atomic_functions_whose_code_computes_their_words():
    assert len(ATOMICS) >= 40
    assert len({a.name for a in ATOMICS}) == len({a.description for a in ATOMICS}) == len({a.line for a in ATOMICS}) == len(ATOMICS)
    for atom in ATOMICS:
        code = composition_code([atom.name])
        for x in range(-60, 61):
            assert run_trusted(code, x) == atom.apply(x) == slow_value(atom.name, x), (atom.name, x)
        assert composition_prompt([atom.name]) == f"# f(x): {atom.description}\n"


def test_a_composition_is_its_parts_in_order_line_by_line():
    rng = random.Random(0)
    names = [a.name for a in ATOMICS]
    for _ in range(200):
        composition = [rng.choice(names) for _ in range(rng.randint(2, 4))]
        code = composition_code(composition)
        assert code.splitlines()[1:-1] == [f"    {next(a.line for a in ATOMICS if a.name == n)}" for n in composition]
        for x in range(-6, 7):
            value = x
            for name in composition:
                value = slow_value(name, value)
            assert run_trusted(code, x) == apply_composition(composition, x) == value
    assert composition_prompt(["add3", "abs", "mod4"]) == "# f(x): add 3, absolute value, mod 4\n"
    with pytest.raises(ValueError, match="unknown atomic function"):
        composition_code(["add3", "add10"])
    with pytest.raises(ValueError, match="at least one"):
        composition_prompt([])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_splits_share_no_problem_and_their_tests_hold(seed):
    settings = dataclasses.replace(CompositionSplitSettings(), split_seed=seed)
    splits = composition_splits(settings)
    assert leaks(splits) == []
    assert {part: len(splits[part]) for part in PARTS} == {"atomic": len(ATOMICS), "synthetic_train": 400,
                                                          "held_out": 100, "target": 100}
    trained = {tuple(e["composition"]) for e in splits["synthetic_train"]}
    held_out = {tuple(e["composition"]) for e in splits["held_out"]}
    target = {tuple(e["composition"]) for e in splits["target"]}
    assert not trained & held_out and not trained & target and not held_out & target
    assert {len(c) for c in trained} == {len(c) for c in held_out} == {2, 3}
    assert {len(c) for c in target} == {4}
    for part in PARTS:
        for example in splits[part]:
            assert len(example["tests"]) == settings.num_tests
            for test in example["tests"]:
                x = int(test[len("assert f("):test.index(")")])
                assert test == f"assert f({x}) == {run_trusted(example['response'], x)}"


def test_splits_are_deterministic_by_seed_and_the_held_out_set_does_not_move_with_the_training_size():
    assert composition_splits(SMALL) == composition_splits(SMALL)
    other = composition_splits(dataclasses.replace(SMALL, split_seed=1))
    assert other["held_out"] != composition_splits(SMALL)["held_out"]
    larger = composition_splits(dataclasses.replace(SMALL, num_synthetic_train=120))
    assert larger["held_out"] == composition_splits(SMALL)["held_out"]
    assert larger["synthetic_train"][:60] == composition_splits(SMALL)["synthetic_train"]  # arms nest
    # a problem's tests depend on the seed and its prompt only, not on which split drew it
    problem = composition_splits(SMALL)["held_out"][0]
    from ift.tasks.code.composition_split import composition_problem

    assert composition_problem(problem["composition"], SMALL, "synthetic") == problem


def test_the_leak_check_finds_each_kind_of_leak():
    clean = composition_splits(SMALL)

    def leaked(change):
        splits = json.loads(json.dumps(clean))
        change(splits)
        return leaks(splits)

    assert any("held_out#3" in p and "synthetic_train#60" in p for p in leaked(lambda s: s["synthetic_train"].append(s["held_out"][3])))
    assert any("is also in" in p for p in leaked(lambda s: s["target"].append(s["synthetic_train"][0])))
    assert any("no longer than" in p for p in leaked(lambda s: s["target"][0].update(composition=["add1", "add2"])))
    assert any("single atomic" in p for p in leaked(lambda s: s["held_out"].append(s["atomic"][0])))

    def same_prompt(splits):
        splits["held_out"][0]["prompt"] = splits["synthetic_train"][5]["prompt"]
    assert any("is also in" in p for p in leaked(same_prompt))


def test_settings_that_cannot_make_a_clean_split_are_refused():
    with pytest.raises(ValueError, match="target_length"):
        CompositionSplitSettings(train_lengths=(2, 4), target_length=4)
    with pytest.raises(ValueError, match="train_lengths"):
        CompositionSplitSettings(train_lengths=(1, 2))
    with pytest.raises(ValueError, match="num_tests"):
        CompositionSplitSettings(num_tests=50, min_input=-5, max_input=5)
    with pytest.raises(ValueError, match="could not draw"):
        composition_splits(dataclasses.replace(SMALL, train_lengths=(2,), num_synthetic_train=3000))


def test_split_files_carry_their_part_seed_and_provenance(tmp_path):
    paths = write_composition_splits(str(tmp_path / "splits"), SMALL)
    assert sorted(paths) == sorted(PARTS)
    splits = composition_splits(SMALL)
    for part, path in paths.items():
        records = [json.loads(line) for line in open(path)]
        assert [{k: v for k, v in r.items() if k not in ("part", "split_seed")} for r in records] == splits[part]
        assert {r["part"] for r in records} == {part} and {r["split_seed"] for r in records} == {0}
    provenance = json.loads((tmp_path / "splits" / "provenance.json").read_text())
    assert provenance["library_sha256"] == library_fingerprint() and provenance["library_size"] == len(ATOMICS)
    assert provenance["counts"]["held_out"] == 20 and provenance["settings"]["split_seed"] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(OSError, match="writable folder"):
        write_composition_splits(str(locked / "splits"), SMALL)


def test_an_unwritable_folder_is_named_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="writable folder"):
        write_composition_splits(str(blocker / "splits"), SMALL)


def test_the_data_module_builds_each_training_mix():
    tokenizer = build_char_tokenizer()
    common = dict(num_synthetic_train=60, num_held_out=20, num_target=20, tokenizer=tokenizer, batch_size=4)
    atomic = CompositionCodeDataModule(train_mix="atomic", num_synthetic=50, **common)
    mixed = CompositionCodeDataModule(train_mix="atomic+synthetic", num_synthetic=10, **common)
    synthetic = CompositionCodeDataModule(train_mix="synthetic", num_synthetic=60, **common)
    parts = composition_splits(SMALL)
    assert atomic.split_examples()["train"] == parts["atomic"]
    assert mixed.split_examples()["train"] == parts["atomic"] + parts["synthetic_train"][:10]
    assert synthetic.split_examples()["train"] == parts["synthetic_train"]
    for module in (atomic, mixed, synthetic):
        assert module.split_examples()["val"] == parts["held_out"] and module.split_examples()["test"] == parts["target"]
    mixed.setup("fit")
    batch = next(iter(mixed.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and "tests" in batch["examples"][0]


def test_the_data_module_refuses_a_mix_it_cannot_build():
    with pytest.raises(ValueError, match="unknown train_mix"):
        CompositionCodeDataModule(train_mix="both")
    with pytest.raises(ValueError, match="num_synthetic must be in"):
        CompositionCodeDataModule(num_synthetic=500, num_synthetic_train=400)
    with pytest.raises(ValueError, match="trains on nothing"):
        CompositionCodeDataModule(train_mix="synthetic", num_synthetic=0)
