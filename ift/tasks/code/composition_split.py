"""The seeded splits of the atomic/synthetic code task, their leakage check and their JSONL files.

Four parts, drawn from one seed (:func:`composition_splits`):

* ``atomic``: every function of the library (:data:`ift.tasks.code.atomic.ATOMICS`), one each;
* ``synthetic_train``: compositions of ``train_lengths`` atomic functions, in a seeded order
  (an arm with k synthetic functions trains on the first k, so the arms are nested);
* ``held_out``: compositions of the same lengths, none of them in ``synthetic_train``;
* ``target``: the target domain, compositions of ``target_length`` atomic functions,
  longer than any composition trained on.

A problem's tests depend only on the seed and its prompt, not on which split drew it.
:func:`leaks` lists every way the splits could share a problem; the test suite and
:func:`write_composition_splits` check it is empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from typing import Any, Dict, List, Sequence, Tuple

from ift.tasks.code.atomic import ATOMICS, apply_composition, composition_code, composition_prompt

#: The parts, in the order they are drawn and written.
PARTS = ("atomic", "synthetic_train", "held_out", "target")


@dataclasses.dataclass(frozen=True)
class CompositionSplitSettings:
    """What the splits are drawn from.

    Args:
        split_seed: seed of the compositions and of their tests.
        num_synthetic_train: synthetic training compositions (the most any arm may use).
        num_held_out: held-out synthetic compositions, of the training lengths.
        num_target: target-domain compositions, of ``target_length``.
        train_lengths: numbers of atomic functions in a training (and held-out) composition.
        target_length: number of atomic functions in a target-domain composition.
        num_tests: assert lines per problem.
        min_input: smallest test input.
        max_input: largest test input.
    """

    split_seed: int = 0
    num_synthetic_train: int = 400
    num_held_out: int = 100
    num_target: int = 100
    train_lengths: Tuple[int, ...] = (2, 3)
    target_length: int = 4
    num_tests: int = 5
    min_input: int = -20
    max_input: int = 20

    def __post_init__(self):
        object.__setattr__(self, "train_lengths", tuple(self.train_lengths))
        if not self.train_lengths or min(self.train_lengths) < 2:
            raise ValueError(f"composition splits: train_lengths must be >= 2 (one function is an atomic one), "
                             f"got {self.train_lengths}")
        if self.target_length <= max(self.train_lengths):
            raise ValueError(f"composition splits: target_length ({self.target_length}) must exceed every training "
                             f"length {self.train_lengths}: the target domain is longer than anything trained on")
        for name in ("num_synthetic_train", "num_held_out", "num_target"):
            if getattr(self, name) < 0:
                raise ValueError(f"composition splits: {name} must be >= 0, got {getattr(self, name)}")
        inputs = self.max_input - self.min_input + 1
        if not 1 <= self.num_tests <= inputs:
            raise ValueError(f"composition splits: num_tests must be in [1, {inputs}] (the inputs "
                             f"{self.min_input}..{self.max_input}), got {self.num_tests}")


def composition_problem(names: Sequence[str], settings: CompositionSplitSettings, kind: str) -> Dict[str, Any]:
    """One problem: prompt, reference code, ``num_tests`` asserts on inputs drawn from a
    stream seeded by the split seed and the prompt."""
    prompt = composition_prompt(names)
    rng = random.Random(f"{settings.split_seed}:{prompt}")
    inputs = rng.sample(range(settings.min_input, settings.max_input + 1), settings.num_tests)
    return {"prompt": prompt, "response": composition_code(names),
            "tests": [f"assert f({x}) == {apply_composition(names, x)}" for x in inputs],
            "composition": list(names), "kind": "atomic" if len(names) == 1 else "synthetic"}


def _draw(rng: random.Random, lengths: Sequence[int], count: int, taken: set, what: str) -> List[Tuple[str, ...]]:
    names = [atom.name for atom in ATOMICS]
    drawn: List[Tuple[str, ...]] = []
    attempts = 0
    while len(drawn) < count:
        attempts += 1
        if attempts > 100 * count + 10_000:
            raise ValueError(f"composition splits: could not draw {count} distinct {what} compositions of lengths "
                             f"{tuple(lengths)}; ask for fewer")
        composition = tuple(rng.choice(names) for _ in range(rng.choice(lengths)))
        if composition not in taken:
            taken.add(composition)
            drawn.append(composition)
    return drawn


def composition_splits(settings: CompositionSplitSettings = CompositionSplitSettings()) -> Dict[str, List[Dict[str, Any]]]:
    """The four parts (:data:`PARTS`), deterministic in ``settings``.

    The held-out compositions are drawn first and the training ones after, from one stream
    that never repeats a composition, so the held-out set does not change with
    ``num_synthetic_train``. A training composition's length is drawn uniformly from
    ``train_lengths`` (drawing compositions uniformly would make nearly all of them the longest).
    """
    rng = random.Random(settings.split_seed)
    taken: set = set()
    held_out = _draw(rng, settings.train_lengths, settings.num_held_out, taken, "held-out")
    train = _draw(rng, settings.train_lengths, settings.num_synthetic_train, taken, "training")
    target = _draw(random.Random(f"{settings.split_seed}:target"), (settings.target_length,), settings.num_target,
                   taken, "target")
    return {
        "atomic": [composition_problem((atom.name,), settings, "atomic") for atom in ATOMICS],
        "synthetic_train": [composition_problem(c, settings, "synthetic") for c in train],
        "held_out": [composition_problem(c, settings, "synthetic") for c in held_out],
        "target": [composition_problem(c, settings, "synthetic") for c in target],
    }


def leaks(splits: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """Every way the parts share a problem; empty when they are clean.

    Checked: a composition or a prompt in two parts (or twice in one); a synthetic part
    holding a one-function composition; a target composition no longer than the longest
    training composition; an atomic part that is not one function each.
    """
    problems: List[str] = []
    owner: Dict[Any, str] = {}
    for part in PARTS:
        for index, example in enumerate(splits.get(part, [])):
            for key in (tuple(example["composition"]), example["prompt"]):
                if key in owner:
                    problems.append(f"{part}#{index} {key!r} is also in {owner[key]}")
                owner.setdefault(key, f"{part}#{index}")
    if any(len(e["composition"]) != 1 for e in splits.get("atomic", [])):
        problems.append("atomic: a problem composes more than one function")
    for part in ("synthetic_train", "held_out", "target"):
        if any(len(e["composition"]) < 2 for e in splits.get(part, [])):
            problems.append(f"{part}: a problem is a single atomic function")
    trained = [len(e["composition"]) for e in splits.get("synthetic_train", [])]
    if trained and any(len(e["composition"]) <= max(trained) for e in splits.get("target", [])):
        problems.append(f"target: a composition is no longer than the longest trained on ({max(trained)})")
    return problems


def library_fingerprint() -> str:
    """sha256 of the library's names, words and code lines: which library a split file was drawn from."""
    text = "\n".join(f"{a.name}\t{a.description}\t{a.line}" for a in ATOMICS)
    return hashlib.sha256(text.encode()).hexdigest()


def write_composition_splits(folder: str, settings: CompositionSplitSettings = CompositionSplitSettings()) -> Dict[str, str]:
    """Write each part to ``<folder>/<part>.jsonl`` and the provenance to ``<folder>/provenance.json``.

    Every record carries its part and the split seed; the provenance holds the settings, the
    library's fingerprint and the counts. Refuses to write splits that leak. Returns
    ``part -> path``.
    """
    splits = composition_splits(settings)
    problems = leaks(splits)
    if problems:  # a bug, not a user error: the draw never repeats a composition
        raise RuntimeError(f"composition splits leak: {problems[:5]}")
    try:
        os.makedirs(folder, exist_ok=True)
        paths = {}
        for part in PARTS:
            paths[part] = os.path.join(folder, f"{part}.jsonl")
            with open(paths[part], "w") as out:
                for example in splits[part]:
                    out.write(json.dumps({**example, "part": part, "split_seed": settings.split_seed}) + "\n")
        provenance = {"generator": "ift.tasks.code.composition_split", "settings": dataclasses.asdict(settings),
                      "library_sha256": library_fingerprint(), "library_size": len(ATOMICS),
                      "counts": {part: len(splits[part]) for part in PARTS}}
        with open(os.path.join(folder, "provenance.json"), "w") as out:
            json.dump(provenance, out, indent=1)
    except OSError as error:
        raise OSError(f"composition splits: cannot write to {folder!r} ({error}); give a writable folder") from error
    return paths


__all__ = ["CompositionSplitSettings", "PARTS", "composition_problem", "composition_splits", "leaks",
           "library_fingerprint", "write_composition_splits"]
