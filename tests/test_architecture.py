"""The package's layers: every subpackage imports alone, and imports point only downward.

The layers (docs/architecture.md), lowest first; a package may import only from layers
below its own, and packages on one layer not from each other. Imports inside functions
count too: a lazy import may speed up start-up, never hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ift"

LAYERS: List[Set[str]] = [
    {"ift.core", "ift.optim"},
    {"ift.data", "ift.rewards"},
    # Task definitions (generator or environment, data module, reward, metrics) and the
    # objectives: neither imports the other.
    {"ift.tasks", "ift.tasks.arithmetic", "ift.tasks.code", "ift.tasks.frozen_lake", "ift.objectives"},
    {"ift.callbacks"},
    {"ift.modules"},
    # The lab: experiments run with the library. Nothing below imports it.
    {"ift.lab"},
    {"ift.lab.frozen_lake", "ift.lab.code"},
    {"ift.predict"},
    # The command: it registers every sub-command (ift.cli.commands), so it imports them all.
    {"ift.cli"},
]
#: The library: every unit below the lab.
LIBRARY = sorted(unit for layer in LAYERS[:5] for unit in layer)
UNITS = sorted(set().union(*LAYERS))


def unit_of(module: str) -> str:
    """The layer unit a dotted module name belongs to (its longest listed prefix)."""
    best = ""
    for unit in UNITS:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    if not best:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")
    return best


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = ROOT) -> Set[str]:
    """Every ``ift`` module ``path`` imports, at any depth of the file (functions included)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from ift.tasks import frozen_lake` imports the submodule itself.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module == "ift" or module.startswith("ift.")}


def unit_graph() -> Dict[str, Dict[str, List[str]]]:
    """``{unit: {imported unit: [files]}}`` over every file of the package."""
    graph: Dict[str, Dict[str, List[str]]] = {unit: {} for unit in UNITS}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        source = unit_of(module_name(path))
        for module in imported_modules(path):
            if module == "ift":
                continue
            try:
                target = unit_of(module)
            except AssertionError:
                # A name imported from a package (`from ift.core import x`) is not a module.
                target = unit_of(module.rsplit(".", 1)[0])
            if target != source:
                graph[source].setdefault(target, []).append(str(path.relative_to(ROOT)))
    return graph


def layer_of(unit: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if unit in layer)


def test_every_file_belongs_to_a_layer():
    for path in PACKAGE.rglob("*.py"):
        if not (path.parent == PACKAGE and path.name == "__init__.py"):
            unit_of(module_name(path))


def _same_family(source: str, target: str) -> bool:
    """A package may import its own subpackages (``ift.tasks`` -> ``ift.tasks.code``)."""
    return target.startswith(source + ".")


def test_no_library_package_imports_the_lab():
    wrong = [f"{source} imports {target} (in {', '.join(sorted(set(files)))})"
             for source, targets in unit_graph().items() if source in LIBRARY
             for target, files in targets.items() if target.startswith("ift.lab")]
    assert not wrong, "the library imports the lab:\n" + "\n".join(wrong)


def test_imports_point_only_to_lower_layers():
    wrong = []
    for source, targets in unit_graph().items():
        for target, files in targets.items():
            if layer_of(target) >= layer_of(source) and not _same_family(source, target):
                wrong.append(f"{source} imports {target} (in {', '.join(sorted(set(files)))})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_package_import_graph_has_no_cycle():
    graph = {source: set(targets) for source, targets in unit_graph().items()}
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(unit: str, path: List[str]) -> None:
        state[unit] = 1
        for target in sorted(graph.get(unit, ())):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target):] + [unit, target]))
            if target not in state:
                visit(target, path + [unit])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])


def test_the_graph_check_sees_imports_inside_functions(tmp_path):
    # A cycle hidden in a function body, absolute or relative, is still seen.
    hidden = tmp_path / "ift" / "data" / "hidden.py"
    hidden.parent.mkdir(parents=True)
    hidden.write_text("def f():\n    from ift.modules import FineTuneModule\n    from ..objectives import sft\n")
    found = imported_modules(hidden, root=tmp_path)
    assert {"ift.modules", "ift.objectives.sft"} <= found
    source = unit_of(module_name(hidden, root=tmp_path))
    assert source == "ift.data"
    assert all(layer_of(unit_of(module)) > layer_of(source) for module in ("ift.modules", "ift.objectives.sft"))


PACKAGES = [unit for unit in UNITS]


@pytest.fixture(scope="module")
def lone_imports() -> Dict[str, subprocess.CompletedProcess]:
    """``import <package>`` in a fresh interpreter for every package, started all at once
    (they only wait on imports, so running them side by side saves most of the time)."""
    running = {
        package: subprocess.Popen([sys.executable, "-c", f"import {package}"], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for package in PACKAGES
    }
    done = {}
    for package, process in running.items():
        out, err = process.communicate(timeout=600)
        done[package] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


@pytest.mark.parametrize("package", PACKAGES)
def test_each_subpackage_imports_alone_in_a_fresh_interpreter(package, lone_imports):
    done = lone_imports[package]
    assert done.returncode == 0, f"import {package} failed alone:\n{done.stderr[-3000:]}"


# ---------------------------------------------------------------------------- the contract
def objective_names() -> Set[str]:
    """Every class the objectives package exports that the module must not name: the
    objectives (read from the package, so a new one is covered at once), their bases and
    the recipes' parts."""
    import inspect

    import ift.objectives as objectives

    exported = {name: getattr(objectives, name) for name in dir(objectives) if not name.startswith("_")}
    return {name for name, value in exported.items()
            if inspect.isclass(value) and name != "Objective"  # the base: the module is typed against it
            and (issubclass(value, objectives.Objective) or name == "Stage")}


def test_the_objective_names_come_from_the_package():
    names = objective_names()
    from ift.objectives import available_objectives

    import ift.objectives as objectives

    defined_here = {name for name in available_objectives()
                    if getattr(objectives, name, None) is not None}
    assert defined_here and defined_here <= names
    assert {"SFT", "IFT", "PPO", "DPO", "ORPO", "RewardModeling", "Sequential", "Mix", "Stage", "RolloutObjective"} <= names


def code_names(path: Path) -> Set[str]:
    """Identifiers and whole string constants of ``path``'s code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            names.add(node.value)  # a whole string: a name compared with, not prose in a message
    return names


def test_the_module_names_no_objective_class():
    for path in sorted((PACKAGE / "modules").glob("*.py")):
        named = code_names(path) & objective_names()
        assert not named, f"{path.relative_to(ROOT)} names objective classes {sorted(named)}: use capabilities"


def test_the_module_knows_no_task():
    """Task metrics (answer accuracy, pass rates) are callbacks: ift.modules imports no reward
    or task, and FineTuneModule takes no evaluation settings."""
    import inspect

    from ift.modules import FineTuneModule

    task_units = {"ift.rewards", "ift.tasks", "ift.tasks.arithmetic", "ift.tasks.code", "ift.tasks.frozen_lake"}
    imported = unit_graph()["ift.modules"]
    assert not task_units & set(imported), {unit: imported[unit] for unit in task_units & set(imported)}
    assert not [name for name in inspect.signature(FineTuneModule.__init__).parameters if name.startswith("eval_")]


def test_a_new_objective_written_outside_the_package_trains_through_the_module(tmp_path):
    import pytorch_lightning as pl
    import torch

    from ift.core.forward import policy_logits
    from ift.modules import FineTuneModule
    from ift.objectives import Objective, Sequential, SFT, available_objectives
    from ift.objectives import functional as Fn
    from ift.tasks.arithmetic import ArithmeticDataModule

    class HalvedSFT(Objective):
        """Half the SFT loss: the least an objective needs is a batch loss."""

        def loss(self, policy, batch):
            logits = policy_logits(policy, batch["input_ids"], batch["attention_mask"])
            token_nll, mask = Fn.token_losses_and_mask(logits, batch["labels"])
            loss = 0.5 * Fn.weighted_token_loss(token_nll, mask)
            return loss, {"half_nll": loss.detach()}

    assert "HalvedSFT" in available_objectives()
    for objective in (HalvedSFT(), Sequential(stages=[{"objective": SFT(), "steps": 2}, {"objective": HalvedSFT()}])):
        torch.manual_seed(0)
        module = FineTuneModule(model="tiny-gpt2", objective=objective)
        before = [p.detach().clone() for p in module.policy.parameters()]
        data = ArithmeticDataModule(num_train=16, num_val=8, num_test=8, batch_size=4)
        trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                             default_root_dir=str(tmp_path), num_sanity_val_steps=0)
        trainer.fit(module, data)
        assert trainer.global_step == 4
        assert torch.isfinite(trainer.callback_metrics["train/loss"])
        assert "train/half_nll" in trainer.callback_metrics
        assert any(not torch.equal(p, q) for p, q in zip(before, module.policy.parameters()))
