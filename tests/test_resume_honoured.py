"""Every setting that ``ift fit --ckpt_path`` honours on resume is the one the resumed run uses.

For each objective class (and the module's and optimizer's own settings), a tiny run writes a
checkpoint; ``ift fit --config changed.yaml --ckpt_path`` then resumes it with every honoured
setting changed, and the test reads the value the resumed run USED from the built objects
(the objective's attribute, the KL controller, the optimizer's parameter groups, a logged
metric), not from the YAML. A checkpoint's saved state (a KL controller, a counter, the
optimizer's learning rate) must never win over a changed setting.

The settings are derived from the classes' signatures: a new argument of any objective, of
the module or of AdamW that is neither changed here nor listed in :data:`EXEMPT` with its
reason fails :func:`test_every_setting_is_covered`.

Also here: the semantics of PPO's KL controller on resume (only an adaptive one has state),
refusals (another objective class after a run of the default objective, another critic, a
finished recipe stage) and the check of the checkpoint's weights against the module's.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
import torch
import yaml

from ift.callbacks.interrupt import InterruptCheckpoint
from ift.callbacks.save_config import RUN_CONFIG_KEY
from ift.cli import main
from ift.cli.resume_differences import FIXED_KEYS, config_differences
from ift.core.subclasses import all_subclasses
from ift.modules import FineTuneModule
from ift.objectives import (PPO, AdaptiveKLController, FixedKLController, Objective, Stage,
                            available_objectives)
from ift.objectives.kl_control import resume_kl_controller
from ift.objectives.lambda_schedule import ift_lambda

pytestmark = [pytest.mark.filterwarnings("ignore:LightningCLI.s args parameter"),
              pytest.mark.filterwarnings("ignore::UserWarning")]

# ---------------------------------------------------------------------------- the runs
# One training batch an epoch: the checkpoint is written after epoch 0, the resumed run trains
# exactly one more batch, so what it logs is what its first step after the resume used.
TRAINER = {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "logger": False, "log_every_n_steps": 1,
           "limit_val_batches": 0, "check_val_every_n_epoch": 1, "enable_progress_bar": False,
           "enable_model_summary": False}
ARITHMETIC = {"class_path": "ift.tasks.arithmetic.ArithmeticDataModule",
              "init_args": {"num_train": 4, "num_val": 4, "num_test": 0, "max_operand": 9, "operators": "+",
                            "batch_size": 4, "eval_batch_size": 4}}
PAIRS = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
         for a, b in ((1, 2), (3, 4), (5, 1), (2, 2))]
REWARD = {"class_path": "ift.rewards.AnswerMatchReward", "init_args": {"correct": 1.0, "wrong": 0.1, "missing": 0.0}}
ADAMW = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001, "weight_decay": 0.0}}


def objective_of(cli) -> Objective:
    return cli.model.objective


def logged(name: str) -> Callable[[Any], float]:
    """The value ``name`` logged at the resumed run's (only) training step."""
    return lambda cli: float(cli.trainer.callback_metrics[f"{name}_step"])


def group(key: str) -> Callable[[Any], Any]:
    """What the optimizer's first parameter group holds for ``key`` (after the resume)."""
    return lambda cli: cli.trainer.optimizers[0].param_groups[0][key]


@dataclass
class Setting:
    """One setting changed on resume: its ``new`` value, and where the run's used value is read
    (None: the attribute at the setting's own path on the module, ``init_args`` skipped)."""

    new: Any
    used: Optional[Callable[[Any], Any]] = None


@dataclass
class Case:
    """A checkpoint run (``model`` on ``data``) and the settings its resume changes, as dotted
    keys under ``model``."""

    model: Dict[str, Any]
    changes: Dict[str, Setting]
    data: str = "arithmetic"  # or "pairs"
    epochs: int = 1  # epochs (= batches) of the checkpoint run
    check: Optional[Callable[[Any], None]] = None  # more checks on the resumed CLI object


def ppo_args(**extra: Any) -> Dict[str, Any]:
    return {"reward": copy.deepcopy(REWARD), "samples_per_prompt": 2, "max_new_tokens": 2, "ppo_epochs": 1,
            "kl_coef": 0.05, **extra}


#: The rollout settings every rollout objective shares, as (new value) on resume.
ROLLOUT_CHANGES = {
    "reward.init_args.wrong": Setting(0.3),
    "max_new_tokens": Setting(3),
    "temperature": Setting(0.7),
    "top_p": Setting(0.9),
    "use_cache": Setting(False),
    "share_prompts": Setting(False),
    "early_stop_kl": Setting(10.0),
    "reward_timeout_s": Setting(60.0),
    "seed": Setting(5),
}


def under_objective(changes: Dict[str, Setting], prefix: str = "objective.init_args.") -> Dict[str, Setting]:
    return {prefix + key: value for key, value in changes.items()}


PPO_CASE = Case(
    model={"objective": {"class_path": "PPO", "init_args": ppo_args()}},
    changes=under_objective({
        # Fixed 0.05 in the checkpoint, adaptive from 0.1 now: the first rollout after the
        # resume uses 0.1 (the configured start), and the controller has the new target/horizon.
        "kl_coef": Setting(0.1, logged("train/kl_coef")),
        "adaptive_kl": Setting(True, lambda cli: isinstance(objective_of(cli).kl_controller, AdaptiveKLController)),
        "target_kl": Setting(3.0, lambda cli: objective_of(cli).kl_controller.target),
        "kl_horizon": Setting(500, lambda cli: objective_of(cli).kl_controller.horizon),
        "kl_estimator": Setting("k3"),
        "gamma": Setting(0.9),
        "gae_lambda": Setting(0.8),
        "clip_eps": Setting(0.3),
        "value_clip_eps": Setting(0.5),
        "vf_coef": Setting(0.2),
        "entropy_coef": Setting(0.01),
        "ppo_epochs": Setting(2, lambda cli: objective_of(cli).epochs),
        "mini_batch_size": Setting(2),
        "samples_per_prompt": Setting(1),
        "whiten_advantages": Setting(False),
        **ROLLOUT_CHANGES,
    }),
)

#: CriticFreeRL and each named variant: the same explicit settings in the checkpoint run (the
#: variants differ only in defaults), the same changes on resume.
CRITIC_FREE_BASE = {"reward": copy.deepcopy(REWARD), "num_generations": 2, "max_new_tokens": 2, "beta": 0.04,
                    "advantage_estimator": "grpo", "scale_rewards": "group", "loss_aggregation": "seq-mean-token-mean",
                    "policy_loss": "clip", "importance_sampling_level": "sequence-token", "epsilon_low": 0.2,
                    "epsilon_high": 0.2, "kl_estimator": "k3", "kl_placement": "loss", "dynamic_sampling": False,
                    "overlong": "none"}
CRITIC_FREE_CHANGES = under_objective({
    "reward_weights": Setting([2.0], lambda cli: objective_of(cli).weights),
    "num_generations": Setting(3, lambda cli: objective_of(cli).samples_per_prompt),
    "advantage_estimator": Setting("rloo"),
    "scale_rewards": Setting("batch"),
    "advantage_eps": Setting(0.001),
    "loss_aggregation": Setting("token-mean"),
    "policy_loss": Setting("cispo"),
    "importance_sampling_level": Setting("token"),
    "epsilon_low": Setting(0.1),
    "epsilon_high": Setting(0.3),
    "dual_clip": Setting(3.0),
    "log_ratio_clamp": Setting(10.0),
    "beta": Setting(0.02),
    "kl_estimator": Setting("k2"),
    "kl_placement": Setting("reward"),
    "dynamic_sampling": Setting(True),
    "max_resample_rounds": Setting(1),
    "overlong": Setting("mask"),
    "overlong_cache_tokens": Setting(1),
    "log_entropy": Setting(True),
    "epochs": Setting(2),
    "mini_batch_size": Setting(6),
    "micro_batch_size": Setting(3),
    **ROLLOUT_CHANGES,
})
CRITIC_FREE = ("CriticFreeRL", "GRPO", "DrGRPO", "DAPO", "GSPO", "CISPO", "RLOO")
#: ReinforcePlusPlus sets its estimator from ``baseline`` (and refuses advantage_estimator).
REINFORCE_PP_BASE = {key: value for key, value in CRITIC_FREE_BASE.items() if key != "advantage_estimator"}
REINFORCE_PP_CHANGES = {
    **{key: value for key, value in CRITIC_FREE_CHANGES.items() if not key.endswith(".advantage_estimator")},
    **under_objective({"baseline": Setting(True, lambda cli: objective_of(cli).baseline
                                           and objective_of(cli).advantage_estimator == "reinforce++-baseline")}),
}


def ift_lambda_logged(cli) -> None:
    """IFT's logged lambda is the schedule of the resumed run's settings at its step."""
    objective = objective_of(cli)
    expected = ift_lambda(objective._step, objective.lam, objective.min_lam, objective.lam_schedule,
                          objective.lam_warmup_steps, objective.lam_noise_std, objective.lam_noise_seed)
    assert logged("train/lambda")(cli) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(0.2, rel=1e-3)  # the checkpoint run's static lambda


def checkpointing(policy) -> bool:
    """Whether the policy recomputes activations (transformers 5 renamed the flag)."""
    flag = getattr(type(policy), "is_activation_checkpointing", None)
    return policy.is_activation_checkpointing if flag is not None else policy.is_gradient_checkpointing


def interrupt_checkpoint(cli) -> bool:
    return any(isinstance(callback, InterruptCheckpoint) for callback in cli.trainer.callbacks)


#: The module's settings and AdamW's arguments, changed on the SFT case.
MODULE_CHANGES = {
    "max_grad_norm": Setting(0.5),
    "disable_dropout": Setting(True, lambda cli: cli.model.dropout_disabled),
    "lr_scheduler_interval": Setting("epoch", lambda cli: cli.trainer.lr_scheduler_configs[0].interval),
    "gradient_checkpointing": Setting(True, lambda cli: checkpointing(cli.model.policy)),
    "init_in_configure_model": Setting(True, lambda cli: cli.model.hparams.init_in_configure_model),
    "max_consecutive_skipped_steps": Setting(3, lambda cli: cli.model.nonfinite.max_consecutive),
    "checkpoint_on_interrupt": Setting(False, interrupt_checkpoint),
    "optimizer.init_args.lr": Setting(0.002, group("lr")),
    "optimizer.init_args.betas": Setting([0.8, 0.99], lambda cli: list(group("betas")(cli))),
    "optimizer.init_args.eps": Setting(1e-6, group("eps")),
    "optimizer.init_args.weight_decay": Setting(0.1, group("weight_decay")),
    "optimizer.init_args.maximize": Setting(True, group("maximize")),
    "optimizer.init_args.foreach": Setting(True, group("foreach")),
    "optimizer.init_args.fused": Setting(False, group("fused")),
}

CASES: Dict[str, Case] = {
    "SFT": Case(
        model={"objective": {"class_path": "SFT"}, "optimizer": copy.deepcopy(ADAMW),
               "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 100}}},
        changes={**under_objective({"token_mean": Setting(True)}), **MODULE_CHANGES},
    ),
    "IFT": Case(
        model={"objective": {"class_path": "IFT", "init_args": {"lam": 0.2}}},
        changes=under_objective({
            "lam": Setting(0.6), "min_lam": Setting(0.1), "lam_schedule": Setting("linear"),
            "lam_warmup_steps": Setting(4), "lam_noise_std": Setting(0.1), "lam_noise_seed": Setting(3),
            "gamma": Setting(0.5), "propagation_side": Setting("right"), "propagation_norm": Setting("L2"),
            "propagation_type": Setting("logps"), "propagation_grad": Setting(False),
            "prediction": Setting("sample"), "temperature": Setting(0.8),
        }),
        check=ift_lambda_logged,
    ),
    "DPO": Case(model={"objective": {"class_path": "DPO"}}, data="pairs",
                changes=under_objective({"beta": Setting(0.2), "label_smoothing": Setting(0.1)})),
    "ORPO": Case(model={"objective": {"class_path": "ORPO"}}, data="pairs",
                 changes=under_objective({"beta": Setting(0.5)})),
    "RewardModeling": Case(model={"objective": {"class_path": "RewardModeling"}}, data="pairs",
                           changes=under_objective({"margin": Setting(0.5), "lm_weight": Setting(1.0),
                                                    "read_at_eos": Setting(True)})),
    "PPO": PPO_CASE,
    **{name: Case(model={"objective": {"class_path": name, "init_args": copy.deepcopy(CRITIC_FREE_BASE)}},
                  changes=CRITIC_FREE_CHANGES) for name in CRITIC_FREE},
    "ReinforcePlusPlus": Case(
        model={"objective": {"class_path": "ReinforcePlusPlus", "init_args": copy.deepcopy(REINFORCE_PP_BASE)}},
        changes=REINFORCE_PP_CHANGES),
    # SFT for one batch, then PPO: the checkpoint (after two batches) is in the PPO stage.
    "Sequential": Case(
        model={"objective": {"class_path": "Sequential", "init_args": {"stages": [
            {"objective": {"class_path": "SFT"}, "steps": 1, "lr": 0.001},
            {"objective": {"class_path": "PPO", "init_args": ppo_args()}, "lr": 0.0005, "steps": 5}]}}},
        changes=under_objective({
            "stages.1.lr": Setting(0.0002, group("lr")),
            "stages.1.steps": Setting(6),
            "stages.1.name": Setting("rl", lambda cli: objective_of(cli).stage_name(1)),
            "stages.1.objective.init_args.kl_coef": Setting(
                0.1, lambda cli: objective_of(cli).stages[1].objective.kl_controller.value),
        }),
        epochs=2,
    ),
    "Mix": Case(
        model={"objective": {"class_path": "Mix", "init_args": {
            "objectives": [{"class_path": "SFT"}, {"class_path": "IFT", "init_args": {"lam": 0.2}}],
            "weights": [1.0, 0.5]}}},
        changes=under_objective({"weights": Setting([0.5, 1.0]), "objectives.1.init_args.lam": Setting(0.4)}),
    ),
}

#: Settings not changed by a case, each with the reason (checked: the names must exist).
EXEMPT = {
    "PPO.lam": "deprecated spelling of gae_lambda (a FutureWarning); gae_lambda is changed",
    "PPO.critic": "refused on resume (what the critic's weights are): test_another_critic_is_refused",
    "*.sampler": "the sampling engine object: HFSampler is the only shipped one and has no settings",
    "*.reward": "an object: its own arguments are changed (reward.init_args.wrong)",
    "Sequential.stages": "per stage field: lr, steps, name and the stage objective's settings are changed; "
                         "a finished stage's epochs/steps are refused (test_a_finished_stage_cannot_change)",
    "Stage.objective": "its class is refused, its settings are changed (stages.1.objective.init_args.kl_coef)",
    "Stage.epochs": "a stage's length, as steps is (changed on the current stage: stages.1.steps); a finished "
                    "stage's length is refused (test_a_finished_stage_cannot_change)",
    "Mix.objectives": "per objective: its class is refused, its settings are changed (objectives.1.init_args.lam)",
    "AdamW.amsgrad": "refused on resume (AdamW keeps max_exp_avg_sq only with it; turned on, the restored "
                     "state crashed its step): test_an_optimizer_argument_that_shapes_its_state_is_refused",
    "ReinforcePlusPlus.advantage_estimator": "refused by the class itself (set by baseline, which is changed)",
    "AdamW.capturable": "a CUDA-graph switch: torch refuses it for CPU parameters",
    "AdamW.differentiable": "autograd through the optimizer step (meta-learning): a plain step with it raises "
                            "on leaf parameters, resumed or not",
}


# ---------------------------------------------------------------------------- helpers
def settings_of(cls: type) -> set:
    """The keyword arguments of ``cls.__init__``, following ``**kwargs`` into the base classes."""
    names: set = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = list(inspect.signature(init).parameters.values())
        names |= {p.name for p in parameters if p.name not in ("self", "params")
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def objective_classes() -> Dict[str, type]:
    """The package's objective classes (not those other tests define)."""
    named = {cls.__name__: cls for cls in all_subclasses(Objective) if cls.__module__.startswith("ift.")}
    return {name: named[name] for name in available_objectives() if name in named}


def set_dotted(config: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = config
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def attribute_at(cli, key: str) -> Any:
    """The built module's value at the dotted ``key`` (``init_args`` skipped, indices into lists)."""
    node: Any = cli.model
    for part in key.split("."):
        if part == "init_args":
            continue
        node = node[int(part)] if isinstance(node, (list, tuple)) else getattr(node, part)
    return node


def same(used: Any, new: Any) -> bool:
    if isinstance(new, (list, tuple)):
        return isinstance(used, (list, tuple)) and len(used) == len(new) and all(same(u, n) for u, n in zip(used, new))
    if isinstance(new, bool) or isinstance(used, bool) or not isinstance(new, (int, float)):
        return used == new and type(used) is type(new)
    return isinstance(used, (int, float)) and used == pytest.approx(new, rel=1e-6)


def write_config(path: Path, model: Dict[str, Any], data: str, root: Path, epochs: int) -> Path:
    if data == "pairs":
        pairs = root.parent / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS), encoding="utf-8")
        data_config = {"class_path": "ift.data.PreferenceDataModule",
                       "init_args": {"train_data": str(pairs), "batch_size": 4}}
    else:
        data_config = copy.deepcopy(ARITHMETIC)
    config = {"seed_everything": 0, "trainer": {**TRAINER, "max_epochs": epochs, "default_root_dir": str(root)},
              "model": {"model": "tiny-gpt2", **copy.deepcopy(model)}, "data": data_config}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def checkpoint_of(root: Path) -> str:
    found = glob.glob(str(root / "**" / "*.ckpt"), recursive=True)
    assert len(found) == 1, found
    return found[0]


def train_and_resume(tmp_path: Path, case: Case, capsys):
    """Train ``case`` for its epochs, resume it for one more with every change; the resumed CLI and stderr."""
    first = write_config(tmp_path / "first.yaml", case.model, case.data, tmp_path / "first", case.epochs)
    main(["fit", "--config", str(first)])
    changed_model = copy.deepcopy(case.model)
    for key, setting in case.changes.items():
        set_dotted(changed_model, key, setting.new)
    resumed = write_config(tmp_path / "resumed.yaml", changed_model, case.data, tmp_path / "resumed", case.epochs + 1)
    capsys.readouterr()
    cli = main(["fit", "--config", str(resumed), "--ckpt_path", checkpoint_of(tmp_path / "first")])
    return cli, capsys.readouterr().err


# ---------------------------------------------------------------------------- the audit
def test_every_setting_is_covered():
    """Every argument of every objective, of the module and of AdamW is changed by a case or
    exempt with a reason: a new setting cannot slip past the audit."""
    missing = []
    for name, cls in objective_classes().items():
        assert name in CASES, f"no resume case for the objective {name}: add one to CASES"
        changed = {key.split(".")[2] for key in CASES[name].changes if key.startswith("objective.init_args.")}
        for setting in sorted(settings_of(cls) - changed):
            if f"{name}.{setting}" not in EXEMPT and f"*.{setting}" not in EXEMPT:
                missing.append(f"{name}.{setting}")
    stage_fields = {item.name for item in dataclasses.fields(Stage)}
    stage_changed = {key.split(".")[4] for key in CASES["Sequential"].changes}
    missing += [f"Stage.{name}" for name in sorted(stage_fields - stage_changed) if f"Stage.{name}" not in EXEMPT]
    module = settings_of(FineTuneModule) - set(FIXED_KEYS) - {"objective", "optimizer", "lr_scheduler"}
    missing += [f"FineTuneModule.{name}" for name in sorted(module - set(CASES["SFT"].changes))]
    optimizer = {key.rsplit(".", 1)[1] for key in CASES["SFT"].changes if key.startswith("optimizer.")}
    missing += [f"AdamW.{name}" for name in sorted(settings_of(torch.optim.AdamW) - optimizer)
                if f"AdamW.{name}" not in EXEMPT]
    assert not missing, f"settings honoured on resume but not checked here: {missing}"
    every = {f"{name}.{s}" for name, cls in objective_classes().items() for s in settings_of(cls)}
    every |= {f"Stage.{name}" for name in stage_fields} | {f"AdamW.{name}" for name in settings_of(torch.optim.AdamW)}
    stale = [key for key in EXEMPT if not key.startswith("*.") and key not in every]
    assert not stale, f"EXEMPT names settings that do not exist: {stale}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_setting_changed_on_resume_is_the_one_used(name, tmp_path, capsys):
    case = CASES[name]
    cli, err = train_and_resume(tmp_path, case, capsys)
    assert cli.trainer.global_step > 0 and cli.trainer.current_epoch == case.epochs + 1
    wrong = {}
    for key, setting in case.changes.items():
        # The guard calls it honoured (printed with both values), and the run uses the new value.
        assert f"ift: resuming with model.{key} = " in err, (key, err)
        used = (setting.used or (lambda cli: attribute_at(cli, key)))(cli)
        if not same(used, setting.new):
            wrong[key] = (used, setting.new)
    assert not wrong, f"{name}: used on resume (used, configured): {wrong}"
    if case.check is not None:
        case.check(cli)


# ---------------------------------------------------------------------------- item 3 itself
def ppo_checkpoint(tmp_path: Path, **init_args: Any) -> str:
    model = {"objective": {"class_path": "PPO", "init_args": ppo_args(**init_args)}}
    main(["fit", "--config", str(write_config(tmp_path / "first.yaml", model, "arithmetic", tmp_path / "first", 1))])
    return checkpoint_of(tmp_path / "first")


def resume_ppo(tmp_path: Path, ckpt: str, **init_args: Any):
    model = {"objective": {"class_path": "PPO", "init_args": ppo_args(**init_args)}}
    config = write_config(tmp_path / "resumed.yaml", model, "arithmetic", tmp_path / "resumed", 2)
    return main(["fit", "--config", str(config), "--ckpt_path", ckpt])


def test_a_fixed_kl_coef_changed_on_resume_is_the_one_logged(tmp_path):
    """The issue's run: PPO trained with kl_coef 0.05, resumed with 0.1, logs and uses 0.1."""
    cli = resume_ppo(tmp_path, ppo_checkpoint(tmp_path, kl_coef=0.05), kl_coef=0.1)
    assert cli.model.objective.kl_controller.value == pytest.approx(0.1)
    assert logged("train/kl_coef")(cli) == pytest.approx(0.1)


def adapted(init_coef: float = 0.1, target: float = 1.0, horizon: float = 100) -> AdaptiveKLController:
    controller = AdaptiveKLController(init_coef, target=target, horizon=horizon)
    controller.update(3.0, 10)  # error 0.2 -> value * 1.02
    return controller


def test_an_adaptive_controller_goes_on_from_its_value_with_the_same_kl_coef_and_new_target():
    saved = adapted().state_dict()
    resumed = AdaptiveKLController(0.1, target=5.0, horizon=50)
    assert resume_kl_controller(resumed, saved) is None
    assert resumed.value == pytest.approx(0.102) and (resumed.target, resumed.horizon) == (5.0, 50.0)


def test_an_adaptive_controller_restarts_at_a_changed_kl_coef_and_says_so():
    resumed = AdaptiveKLController(0.3)
    note = resume_kl_controller(resumed, adapted(0.1).state_dict())
    assert resumed.value == pytest.approx(0.3)
    assert "kl_coef changed from 0.1 to 0.3" in note and "restarts at 0.3" in note and "0.102" in note


def test_a_fixed_controller_takes_nothing_from_the_checkpoint():
    fixed = FixedKLController(0.1)
    assert resume_kl_controller(fixed, FixedKLController(0.05).state_dict()) is None
    assert resume_kl_controller(fixed, {"value": 0.05}) is None  # a state written before this fix
    assert fixed.value == 0.1
    note = resume_kl_controller(fixed, adapted(0.1).state_dict())  # adaptive before, fixed now
    assert fixed.value == 0.1 and "adapted the KL coefficient" in note and "0.102" in note
    fresh = AdaptiveKLController(0.2)  # fixed before, adaptive now: starts at its kl_coef
    assert resume_kl_controller(fresh, {"value": 0.05}) is None and fresh.value == 0.2


def test_an_old_adaptive_state_without_its_start_goes_on_and_says_so():
    old = {"value": 0.102, "target": 1.0, "horizon": 100.0}  # written before init_coef was recorded
    resumed = AdaptiveKLController(0.3)
    note = resume_kl_controller(resumed, old)
    assert resumed.value == pytest.approx(0.102) and "does not record the kl_coef" in note


def test_ppo_warns_when_the_configured_kl_coef_restarts_its_controller():
    trained = PPO(reward=lambda *a: [0.0], adaptive_kl=True, kl_coef=0.1, target_kl=1.0, kl_horizon=100)
    trained.kl_controller.update(3.0, 10)
    state = trained.state_dict()
    same_start = PPO(reward=lambda *a: [0.0], adaptive_kl=True, kl_coef=0.1, target_kl=2.0)
    same_start.load_state_dict(state)
    assert same_start.kl_controller.value == pytest.approx(0.102) and same_start.kl_controller.target == 2.0
    changed = PPO(reward=lambda *a: [0.0], adaptive_kl=True, kl_coef=0.2)
    with pytest.warns(UserWarning, match=r"PPO on resume: kl_coef changed from 0\.1 to 0\.2"):
        changed.load_state_dict(state)
    assert changed.kl_controller.value == pytest.approx(0.2)


# ---------------------------------------------------------------------------- refused
def stopped(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    code = stop.value.code
    return (code if isinstance(code, str) else "") + capsys.readouterr().err


@pytest.fixture(scope="module")
def default_objective_checkpoint(tmp_path_factory):
    """A run with no objective in its config (``objective: null``: SFT); its checkpoint."""
    root = tmp_path_factory.mktemp("default_objective")
    config = write_config(root / "first.yaml", {}, "arithmetic", root / "first", 1)
    main(["fit", "--config", str(config)])
    recorded = torch.load(checkpoint_of(root / "first"), weights_only=False)[RUN_CONFIG_KEY]
    assert recorded["model"]["objective"] is None  # what the run recorded: the premise of these tests
    return root, checkpoint_of(root / "first")


@pytest.mark.parametrize("objective", [["IFT"], ["DPO"],
                                       ["PPO", "--model.objective.init_args.reward", "ift.rewards.AnswerMatchReward"]])
def test_another_objective_after_a_run_of_the_default_objective_is_refused(default_objective_checkpoint, tmp_path,
                                                                           capsys, objective):
    root, ckpt = default_objective_checkpoint
    config = write_config(tmp_path / "resumed.yaml", {}, "arithmetic", tmp_path / "resumed", 2)
    message = stopped(capsys, "fit", "--config", str(config), "--model.objective", *objective, "--ckpt_path", ckpt)
    assert "cannot change on resume" in message and "model.objective.class_path" in message, message
    assert "'ift.objectives.sft.SFT', config '" in message and objective[0] in message.split("config '", 1)[1]
    assert "Missing key" not in message
    assert not glob.glob(str(tmp_path / "resumed" / "**" / "*.ckpt"), recursive=True)  # nothing trained


@pytest.mark.parametrize("objective", [[], ["--model.objective", "SFT"]])
def test_the_default_objective_and_sft_written_out_are_the_same(default_objective_checkpoint, tmp_path, capsys,
                                                                objective):
    root, ckpt = default_objective_checkpoint
    config = write_config(tmp_path / "resumed.yaml", {}, "arithmetic", tmp_path / "resumed", 2)
    cli = main(["fit", "--config", str(config), *objective, "--ckpt_path", ckpt])
    assert cli.trainer.global_step == 2 and "model.objective" not in capsys.readouterr().err


def test_null_and_sft_compare_equal_in_both_directions_and_other_classes_do_not():
    sft = {"objective": {"class_path": "ift.objectives.sft.SFT", "init_args": {"token_mean": False}}}
    assert config_differences({"objective": None}, sft) == ([], [])
    assert config_differences(sft, {"objective": None}) == ([], [])
    ift = {"objective": {"class_path": "IFT", "init_args": {"lam": 0.2}}}
    refused, _ = config_differences(ift, {"objective": None})
    assert [key for key, *_ in refused] == ["model.objective.class_path"]
    token_mean = {"objective": {"class_path": "SFT", "init_args": {"token_mean": True}}}
    _, honoured = config_differences({"objective": None}, token_mean)
    assert honoured == [("model.objective.init_args.token_mean", False, True)]


def test_an_optimizer_argument_that_shapes_its_state_is_refused():
    amsgrad = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"amsgrad": True}}}
    refused, _ = config_differences({"optimizer": None}, amsgrad)
    assert [(key, why) for key, _, _, why in refused] == [
        ("model.optimizer.init_args.amsgrad", "it decides which state the optimizer keeps, and the checkpoint's "
                                              "state was kept without it")]


def test_another_critic_is_refused(tmp_path, capsys):
    ckpt = ppo_checkpoint(tmp_path)
    model = {"objective": {"class_path": "PPO", "init_args": ppo_args(critic="tiny-llama")}}
    config = write_config(tmp_path / "resumed.yaml", model, "arithmetic", tmp_path / "resumed", 2)
    message = stopped(capsys, "fit", "--config", str(config), "--ckpt_path", ckpt)
    assert "model.objective.init_args.critic: checkpoint None, config 'tiny-llama'" in message, message


def test_a_finished_stage_cannot_change(tmp_path, capsys):
    case = CASES["Sequential"]
    first = write_config(tmp_path / "first.yaml", case.model, "arithmetic", tmp_path / "first", 2)
    main(["fit", "--config", str(first)])
    changed = copy.deepcopy(case.model)
    set_dotted(changed, "objective.init_args.stages.0.steps", 3)
    config = write_config(tmp_path / "resumed.yaml", changed, "arithmetic", tmp_path / "resumed", 3)
    message = stopped(capsys, "fit", "--config", str(config), "--ckpt_path", checkpoint_of(tmp_path / "first"))
    assert "model.objective.init_args.stages.0.steps: checkpoint 1, config 3" in message, message
    assert "finished" in message


def test_weights_that_do_not_fit_the_module_stop_with_a_list(tmp_path, capsys):
    """A change that no setting names (the model folder now holds another architecture) stops
    before Lightning's 'Missing key(s)' traceback, with the weights that differ."""
    folder = tmp_path / "model"
    FineTuneModule(model="tiny-gpt2", tokenizer="char").policy.save_pretrained(folder)
    model = {"model": str(folder), "tokenizer": "char"}
    main(["fit", "--config", str(write_config(tmp_path / "first.yaml", model, "arithmetic", tmp_path / "first", 1))])
    FineTuneModule(model="tiny-llama", tokenizer="char").policy.save_pretrained(folder)
    config = write_config(tmp_path / "resumed.yaml", model, "arithmetic", tmp_path / "resumed", 2)
    message = stopped(capsys, "fit", "--config", str(config), "--ckpt_path", checkpoint_of(tmp_path / "first"))
    assert "holds other weights than the module this config builds" in message, message
    lines = message.splitlines()
    assert any(line.startswith("  policy.model.") and line.endswith("in this config's module, not in the checkpoint")
               for line in lines), message  # llama's weights
    assert any(line.startswith("  policy.transformer.")
               and line.endswith("in the checkpoint, not in this config's module") for line in lines), message  # gpt2's
    assert any(line.startswith("  ... and ") for line in lines) and len(lines) < 30


def test_a_recipe_with_another_number_of_parts_is_refused():
    one = {"objective": {"class_path": "Mix", "init_args": {"objectives": [{"class_path": "SFT"}]}}}
    two = {"objective": {"class_path": "Mix", "init_args": {
        "objectives": [{"class_path": "SFT"}, {"class_path": "IFT"}], "weights": [1.0, 1.0]}}}
    refused, _ = config_differences(one, two)
    assert [(key, why) for key, _, _, why in refused] == [
        ("model.objective.init_args.objectives", "the recipe's parts: the checkpoint holds each one's state")]


def test_a_kl_term_switched_on_on_resume_says_which_reference_it_compares_with(tmp_path):
    """beta 0 kept no reference model: with beta > 0 on resume the reference is the resumed
    policy, and a warning says so (rather than a KL to a model nobody chose, silently)."""
    model = {"objective": {"class_path": "CriticFreeRL", "init_args": {**copy.deepcopy(CRITIC_FREE_BASE), "beta": 0.0}}}
    main(["fit", "--config", str(write_config(tmp_path / "first.yaml", model, "arithmetic", tmp_path / "first", 1))])
    set_dotted(model, "objective.init_args.beta", 0.02)
    config = write_config(tmp_path / "resumed.yaml", model, "arithmetic", tmp_path / "resumed", 2)
    with pytest.warns(UserWarning, match=r"beta=0\.02, but the checkpoint's run had beta 0 and kept no reference "
                                         r"model; the KL term compares with the policy as resumed \(after 1 "):
        cli = main(["fit", "--config", str(config), "--ckpt_path", checkpoint_of(tmp_path / "first")])
    assert cli.model.reference_policy is not None and cli.model.objective.beta == 0.02


class TracingSGD(torch.optim.SGD):
    """SGD with an argument of its own that it keeps outside its parameter groups."""

    def __init__(self, params, lr: float = 0.01, trace: bool = False):
        super().__init__(params, lr=lr)
        self.trace = trace


def test_an_optimizer_argument_outside_the_parameter_groups_is_refused(tmp_path, capsys):
    model = {"optimizer": {"class_path": f"{__name__}.TracingSGD", "init_args": {"lr": 0.01, "trace": False}}}
    main(["fit", "--config", str(write_config(tmp_path / "first.yaml", model, "arithmetic", tmp_path / "first", 1))])
    set_dotted(model, "optimizer.init_args.trace", True)
    config = write_config(tmp_path / "resumed.yaml", model, "arithmetic", tmp_path / "resumed", 2)
    message = stopped(capsys, "fit", "--config", str(config), "--ckpt_path", checkpoint_of(tmp_path / "first"))
    assert "model.optimizer.init_args.trace changed on resume, but TracingSGD does not keep it" in message, message
    assert not glob.glob(str(tmp_path / "resumed" / "**" / "*.ckpt"), recursive=True)  # nothing trained
