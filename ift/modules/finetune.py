"""The one LightningModule: holds the policy (and, when an objective asks, a frozen
reference and extra trainable parts such as a value head) and delegates the loss to
its ``objective``."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterable, Iterator, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info
from transformers import PreTrainedTokenizerBase

from ift.core.constants import REFERENCE_PREFIX
from ift.core.distributed import allow_idle_parameters, is_sharded
from ift.core.model_factory import build_policy, build_tokenizer
from ift.core.sampling import samplers_in
from ift.callbacks.atomic_checkpoint import AtomicCheckpoints
from ift.callbacks.data_report import SkippedExamplesReport
from ift.callbacks.interrupt import InterruptCheckpoint
from ift.callbacks.step_count import LogGlobalStep
from ift.core.batch import batch_rows
from ift.core.lora import is_peft_model
from ift.modules.default_optimizer import build_optimizer
from ift.modules.dropout import active_dropout, disable_dropout, summarize_dropout, wants_disabled_dropout
from ift.modules.nonfinite import NonFiniteGuard, zero_loss
from ift.modules.step_logs import forget_step_values
from ift.modules.optimization import OptimizerSteps
from ift.modules.reference import copy_parameters, frozen_copy
from ift.modules.step_context import ModuleStepContext
from ift.objectives import Objective, default_objective
from ift.objectives.contract import StepResult
from ift.objectives.sft import response_nll

LR_INTERVALS = ("step", "epoch")

#: Arguments the module no longer takes, with the callback argument that replaces each
#: (held-out answer accuracy moved out of the module into ``ift.callbacks.AnswerAccuracy``).
REMOVED_ARGUMENTS: Dict[str, str] = {
    "eval_accuracy": "eval_accuracy true is the callback in trainer.callbacks, false is no callback",
    "eval_max_new_tokens": "eval_max_new_tokens is its max_new_tokens",
    "eval_answer_trigger": "eval_answer_trigger is its answer_trigger",
}


def removed_arguments_message(names: Iterable[str]) -> str:
    """Why ``names`` (keys of :data:`REMOVED_ARGUMENTS`) are refused, and what to write instead."""
    names = [name for name in REMOVED_ARGUMENTS if name in set(names)]
    moved = "; ".join(REMOVED_ARGUMENTS[name] for name in names)
    return (
        f"FineTuneModule no longer takes {', '.join(names)}: held-out answer accuracy (val/accuracy) is the "
        f"callback ift.callbacks.AnswerAccuracy ({moved}). In a config, instead of model.eval_*:\n"
        "  trainer:\n"
        "    callbacks:\n"
        "      - class_path: ift.callbacks.AnswerAccuracy\n"
        "        init_args: {max_new_tokens: 16, answer_trigger: null}\n"
        "In Python: pl.Trainer(callbacks=[AnswerAccuracy(max_new_tokens=16, answer_trigger=None)])."
    )


class _RefusesRemovedArguments(type):
    """Metaclass of :class:`FineTuneModule`: a call with a removed argument (``eval_accuracy``...)
    fails with :func:`removed_arguments_message` instead of Python's bare "unexpected keyword".

    A metaclass rather than ``**kwargs`` keeps ``__init__``'s signature exact: the CLI
    (jsonargparse) and ``load_from_checkpoint`` read it, and the latter drops the removed
    hyper-parameters of older checkpoints only because ``__init__`` takes no ``**kwargs``."""

    def __call__(cls, *args: Any, **kwargs: Any):
        removed = [name for name in kwargs if name in REMOVED_ARGUMENTS]
        if removed:
            raise TypeError(removed_arguments_message(removed))
        return super().__call__(*args, **kwargs)


class FineTuneModule(OptimizerSteps, pl.LightningModule, metaclass=_RefusesRemovedArguments):
    """Fine-tune a causal language model with any :class:`~ift.objectives.Objective`.

    Args:
        model: a preset (untrained: ``tiny-gpt2``, ``tiny-llama``, ``small-gpt2``, ``gpt2-100m``;
            pretrained: ``smollm2-135m-instruct``), a GGUF file (``path/model.gguf`` or a dict
            ``{folder, gguf_file}``; tokenizer and chat template from the same file), a hub id
            or folder for ``AutoModelForCausalLM.from_pretrained``, a dict with ``model_type``
            and config fields (built locally), or a ready ``nn.Module``.
        objective: what to learn from: ``SFT`` (default), ``IFT``, ``PPO``, ``DPO``, ``ORPO``,
            ``RewardModeling`` (a reward model: a scalar head on the policy's trunk),
            ``Sequential`` or ``Mix``.
        tokenizer: ``char`` (built-in character tokenizer), a hub id / folder, or a tokenizer
            object; None picks the model's own tokenizer, or ``char`` for local configs.
        optimizer: optimizer factory called with the trainable parameters; in a config a class
            and its arguments, ``{class_path: torch.optim.RMSprop, init_args: {lr: 0.01}}``, which
            builds exactly those arguments plus the class's own defaults. None: ``torch.optim.AdamW``
            with torch's defaults (lr 1e-3, weight_decay 0.01). Name the class to set an argument
            (``--model.optimizer torch.optim.AdamW --model.optimizer.lr 0.01``); see
            :mod:`ift.modules.default_optimizer` for why the default is None.
        lr_scheduler: optional scheduler factory called with the optimizer.
        lr_scheduler_interval: step the scheduler every optimizer ``step`` or every ``epoch``.
        max_grad_norm: clip the gradients' global norm to this before every optimizer step,
            for every objective (after gradient accumulation; under FSDP the sharded norm);
            None or 0: no clipping. The norm before clipping is logged as ``train/grad_norm``
            either way. ``trainer.gradient_clip_val`` beside it is refused unless it is the same
            clipping (by norm, same value); set ``max_grad_norm: null`` to clip with it instead
            (see :mod:`ift.modules.optimization`).
        gradient_checkpointing: trade compute for activation memory in the policy.
        torch_dtype: dtype to build or load the policy in (e.g. ``bfloat16``); None keeps float32.
        lora: wrap the policy with LoRA adapters (needs ``peft``), e.g. ``{r: 8, alpha: 16,
            dropout: 0.0, target_modules: [q_proj, v_proj]}``; any ``peft.LoraConfig`` field is
            accepted. The reference model is then the policy with its adapters disabled.
        output_tokens: constrain every next-token distribution of the policy to these
            characters plus EOS (e.g. ``LDRU``, Frozen Lake's actions), for every objective;
            None leaves the whole vocabulary (see :mod:`ift.modules.output_mask`).
        output_eos: with ``output_tokens``, whether EOS is one of the allowed outputs. False
            leaves the policy no way to stop: every sampled response runs to ``max_new_tokens``
            and its reader decides where it ends (Frozen Lake's transformer, whose episodes the
            environment ends at a hole or the goal, as the state policy's end at a terminal state).
        init_in_configure_model: build the policy (and the reference and value head) in
            ``configure_model``, under the strategy's precision and sharding context, instead
            of in ``__init__``: set it with FSDP (``configs/strategy/fsdp.yaml``). ``policy``
            is None until the Trainer calls ``configure_model`` (or you do).
        max_consecutive_skipped_steps: an optimizer step whose loss (or gradient, without an
            fp16 GradScaler) is nan/inf is skipped, counted in ``train/skipped_steps`` and warned
            about; after this many skipped steps in a row training stops with
            :class:`~ift.modules.nonfinite.NonFiniteLossError`. 0 or None never stops.
        checkpoint_on_interrupt: on Ctrl-C, finish the current step and write a resumable
            ``interrupted.ckpt`` (:class:`~ift.callbacks.InterruptCheckpoint`); also on any
            other exception during training.
        disable_dropout: turn the policy's dropout off when it is built (every dropout layer
            and the model config's dropout fields set to 0; LoRA's ``dropout`` is kept as
            given). None: the objective's choice, on for IFT, DPO, ORPO and the RL objectives
            (PPO, GRPO and the rest of its family), whose passes over the same tokens must
            agree; off (the model's dropout) for SFT and RewardModeling; a recipe turns it off
            when any of its stages or parts does. Said once when the policy has dropout
            (see :mod:`ift.modules.dropout`).

    Held-out metrics: validation and test log the objective's held-out loss and metrics and,
    on batches with ``labels``, ``val/nll``. Task metrics are callbacks: held-out answer
    accuracy (``val/accuracy``, greedy decoding) is :class:`~ift.callbacks.AnswerAccuracy`
    in ``trainer.callbacks`` (it replaces the former ``eval_accuracy``, ``eval_max_new_tokens``
    and ``eval_answer_trigger`` arguments).

    The step count: ``global_step`` (and so ``max_steps``, checkpoint names, and the
    ``step`` of ``metrics.csv`` and the other loggers) counts optimizer updates of the
    policy. With automatic optimization that is one per batch (per accumulation window);
    under manual optimization (PPO) it is every mini-batch update, ``ppo_epochs`` x
    mini-batches per training batch, and the progress bar shows it as ``step=`` beside its
    batch counter (see :mod:`ift.callbacks.step_count`).
    """

    def __init__(
        self,
        model: Union[str, Dict[str, Any], torch.nn.Module] = "tiny-gpt2",
        objective: Optional[Objective] = None,
        tokenizer: Optional[Union[str, PreTrainedTokenizerBase]] = None,
        optimizer: Optional[OptimizerCallable] = None,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        lr_scheduler_interval: str = "step",
        max_grad_norm: Optional[float] = 1.0,
        gradient_checkpointing: bool = False,
        torch_dtype: Optional[str] = None,
        lora: Optional[Dict[str, Any]] = None,
        output_tokens: Optional[str] = None,
        output_eos: bool = True,
        init_in_configure_model: bool = False,
        max_consecutive_skipped_steps: Optional[int] = 10,
        checkpoint_on_interrupt: bool = True,
        disable_dropout: Optional[bool] = None,
    ):
        super().__init__()
        if lr_scheduler_interval not in LR_INTERVALS:
            raise ValueError(f"lr_scheduler_interval {lr_scheduler_interval!r} is not one of {LR_INTERVALS}")
        if max_grad_norm is not None and not (float(max_grad_norm) >= 0 and math.isfinite(float(max_grad_norm))):
            raise ValueError(f"max_grad_norm must be a finite number >= 0, or None for no clipping; got {max_grad_norm}")
        ignored = ["optimizer", "lr_scheduler", "tokenizer"]
        if isinstance(model, torch.nn.Module):
            ignored.append("model")
        self.save_hyperparameters(ignore=ignored)
        self.tokenizer = build_tokenizer(tokenizer, model)
        # Kept out of the module tree (a ready nn.Module would otherwise register as a submodule).
        self._model_source: tuple = (model,)
        self.policy: Optional[torch.nn.Module] = None
        self.objective = objective if objective is not None else default_objective()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.max_grad_norm = max_grad_norm
        self._grad_norms: list = []  # norms before clipping of this batch's optimizer steps (train/grad_norm)
        self._checked_norm: Optional[torch.Tensor] = None  # this step's gradient norm, from the nan/inf check
        self.dropout_disabled: Optional[bool] = None  # decided when the policy is built
        # Non-finite losses: skipped steps are counted here (and checkpointed).
        self.nonfinite = NonFiniteGuard(max_consecutive_skipped_steps)
        self._skip_pending: Optional[tuple] = None  # (what, value) of a non-finite step in progress
        self.reference_policy: Optional[torch.nn.Module] = None
        # Trainable parts an objective adds (a value head, a critic); saved with the module.
        self.extras = torch.nn.ModuleDict()
        # What the objective sees of this module (the objective contract); not a submodule.
        self._step_context = ModuleStepContext(self)
        if not init_in_configure_model:
            self.build_model()

    def build_model(self) -> None:
        """Build the policy with its options (dtype, checkpointing, output mask, LoRA) and let
        the objective add its trainable parts. Called by ``__init__``, or by
        :meth:`configure_model` with ``init_in_configure_model``; a no-op once built."""
        if self.policy is not None:
            return
        options = self.hparams
        policy = build_policy(self._model_source[0], self.tokenizer, options.get("torch_dtype"))
        # Before LoRA wraps the policy: its lora_dropout is the user's own choice and stays.
        self._apply_dropout_choice(policy, options.get("disable_dropout"))
        if options.get("gradient_checkpointing"):
            # transformers 5 renamed the switch; keep both spellings working.
            enable = getattr(policy, "activation_checkpointing_enable", None) or policy.gradient_checkpointing_enable
            enable()
        if options.get("output_tokens"):
            from ift.modules.output_mask import restrict_outputs

            restrict_outputs(policy, self.tokenizer, options["output_tokens"], options.get("output_eos", True))
        if options.get("lora"):
            from ift.core.lora import wrap_with_lora

            policy = wrap_with_lora(policy, options["lora"])
        self.policy = policy
        self._model_source = ()
        self.objective.attach(self.step_context)

    def _apply_dropout_choice(self, policy: torch.nn.Module, setting: Optional[bool]) -> None:
        """Turn ``policy``'s dropout off when ``disable_dropout`` (or, when None, the objective)
        says so; say once what was chosen when the policy has dropout to choose about."""
        self.dropout_disabled = wants_disabled_dropout(setting, self.objective)
        why = (f"model.disable_dropout {str(setting).lower()}" if setting is not None
               else f"the default of {type(self.objective).__name__}")
        if self.dropout_disabled:
            changed = disable_dropout(policy)
            if changed:
                rank_zero_info(f"ift: dropout off in the policy ({why}; model.disable_dropout false keeps it): "
                               f"{summarize_dropout(changed)} set to 0")
        else:
            active = active_dropout(policy)
            if active:
                rank_zero_info(f"ift: the policy trains with its dropout ({why}; model.disable_dropout true turns "
                               f"it off): {summarize_dropout(active)}")

    @property
    def step_context(self) -> ModuleStepContext:
        """The :class:`~ift.objectives.StepContext` the objective's hooks receive."""
        return self._step_context

    def configure_model(self) -> None:
        """Lightning's hook, run under the strategy before it wraps the model.

        Builds the model when ``init_in_configure_model`` deferred it. Under a sharding
        strategy (FSDP) the frozen reference is also created here: a copy of a policy that
        is already sharded cannot be made later.
        """
        self.build_model()
        if self._trainer is not None and is_sharded(self.trainer.strategy) and self.objective.capabilities.reads_reference:
            self.ensure_reference()

    # ------------------------------------------------------------------ optimization mode
    @property
    def automatic_optimization(self) -> bool:  # type: ignore[override]
        """Manual optimization only for objectives that make their own updates (PPO).

        Fixed for a whole fit: Lightning counts ``global_step`` separately in each mode.
        """
        return not self.objective.capabilities.manual_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("FineTuneModule chooses its optimization mode from its objective")

    # ------------------------------------------------------------------ reference model
    def ensure_reference(self, refresh: bool = False) -> torch.nn.Module:
        """The frozen reference policy, created as a copy of the current policy if missing.

        ``refresh=True`` copies the current policy weights into an existing reference
        (a recipe switching to PPO takes the policy as it stands at the switch).
        With LoRA there is no copy: the policy itself is returned, and the reference must
        be read through :meth:`reference_model` (which disables the adapters).
        """
        if self.uses_lora:
            return self.policy
        if self.reference_policy is None:
            self.reference_policy = frozen_copy(self.policy)
        elif refresh:
            copy_parameters(self.policy, self.reference_policy)
        return self.reference_policy

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[torch.nn.Module]:
        """Context yielding the reference policy to call under ``torch.no_grad()``.

        Every objective reads the reference through this one door, so that LoRA can
        serve it as the policy with adapters disabled instead of a second copy.
        """
        if not self.uses_lora:
            yield self.ensure_reference()
            return
        was_training = self.policy.training
        self.policy.eval()  # the reference never uses dropout
        try:
            with self.policy.disable_adapter():
                yield self.policy
        finally:
            self.policy.train(was_training)

    @property
    def uses_lora(self) -> bool:
        """Whether the policy carries peft adapters (``lora=...`` or a ready PeftModel)."""
        return is_peft_model(self.policy)

    def notify_stage_switch(self, stage_name: str) -> None:
        """Tell every callback with an ``on_stage_switch(trainer, module, stage_name)`` method
        that a recipe switches stage (e.g. :class:`~ift.callbacks.ExportPretrained` exports the
        policy as it stands at the switch). Recipes reach it through ``StepContext.stage_switched``
        when they enter a stage; ``stage_name`` names the stage being entered."""
        trainer = self._trainer
        if trainer is None:
            return
        for callback in trainer.callbacks:
            hook = getattr(callback, "on_stage_switch", None)
            if callable(hook):
                hook(trainer, self, stage_name)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference_policy is not None:
            self.reference_policy.eval()  # the reference never uses dropout
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ strategies
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_clipping_settings()
        # Runs before the strategy wraps the model: the last moment to tell DDP that a
        # recipe's stages leave some trainable parts (the value head) idle.
        if stage == "fit" and len(self.extras) and self.objective.capabilities.idle_trainable_parts:
            if allow_idle_parameters(self.trainer.strategy):
                rank_zero_info(
                    f"{type(self.objective).__name__} leaves trainable parts idle in some steps "
                    f"({', '.join(self.extras)}): DDP runs with find_unused_parameters=True"
                )

    def teardown(self, stage: str) -> None:
        # A sampling engine with its own processes or memory (vLLM) is released when fit ends;
        # the next rollout would start it again.
        if stage == "fit":
            for sampler in samplers_in(self.objective):
                sampler.close()

    # ------------------------------------------------------------------ steps
    def on_train_start(self) -> None:
        self.objective.begin(self.step_context)

    def configure_callbacks(self):
        """Callbacks every fit gets: the once-per-epoch report of skipped examples, atomic
        checkpoint writes, the logs' step count (:class:`~ift.callbacks.step_count.LogGlobalStep`)
        and (``checkpoint_on_interrupt``) a resumable checkpoint on Ctrl-C or an error.

        Lightning replaces a Trainer callback by a module callback of the same type, so an
        ``InterruptCheckpoint`` the Trainer already has (its own folder) is kept, not replaced.
        """
        callbacks = [SkippedExamplesReport(), AtomicCheckpoints(), LogGlobalStep()]
        present = self.trainer.callbacks if self._trainer is not None else []
        if self.hparams.get("checkpoint_on_interrupt", True) and not any(
            isinstance(callback, InterruptCheckpoint) for callback in present
        ):
            callbacks.append(InterruptCheckpoint())
        return callbacks

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # A step logs only what it measured: a skipped step must not repeat the last loss.
        forget_step_values(self.trainer)

    def training_step(self, batch: Dict[str, Any], batch_idx: int):
        self.objective.set_step(self.global_step)
        result = self.objective.training_step(self.step_context, batch)
        loss, metrics = result.loss, result.metrics
        if not self.automatic_optimization:
            if not result.stepped and not self.optimizer_step_manually(loss):
                # A batch-loss objective inside a manual-optimization fit (e.g. SFT stage before
                # PPO) whose loss was nan/inf: the step was skipped, there is nothing to log.
                return None
            # PPO's loss is the mean over the updates it took (nan when it took none).
            self.log_metrics("train", loss.detach() if bool(torch.isfinite(loss)) else None, metrics, batch)
            return None
        if result.stepped:
            raise RuntimeError(
                f"{type(self.objective).__name__} took its own optimizer step, but its capabilities do not "
                "declare manual_optimization: the module runs automatic optimization for it"
            )
        if self._skip_pending is None and not self.nonfinite.is_finite(loss):
            self._skip_pending = ("loss", loss.detach())
        if self._skip_pending is not None:
            # Lightning runs backward on a zero loss (on every rank alike, so DDP stays in step);
            # optimizer_step then skips the step of this (accumulation) window.
            return zero_loss(self.trainable_parameters())
        self.log_metrics("train", loss.detach(), metrics, batch)
        return loss

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers() if self.trainer.lr_scheduler_configs else None
        if not self.automatic_optimization and scheduler is not None and self.lr_scheduler_interval == "epoch":
            scheduler.step()

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _evaluate(self, stage: str, batch: Dict[str, Any]) -> None:
        self.objective.set_step(self.global_step)
        metrics: Dict[str, torch.Tensor] = {}
        # Every objective decides what its held-out loss is (preference batches have no labels).
        result: Optional[StepResult] = self.objective.validation_loss(self.step_context, batch)
        loss = None if result is None else result.loss
        if result is not None:
            metrics.update(result.metrics)
        if "labels" in batch:
            # val/nll: plain SFT NLL of the reference responses, comparable across objectives
            # (IFT's own "nll" metric is measured on the mixed input, so it is replaced here).
            metrics["nll"] = response_nll(self.policy, batch)[0]
            if loss is None:
                loss = metrics["nll"]
        self.log_metrics(stage, loss, metrics, batch)

    def log_metrics(self, stage: str, loss: Optional[torch.Tensor], metrics: Dict[str, Any], batch: Dict[str, Any]) -> None:
        """Log ``{stage}/loss`` and every metric; keys that carry a ``/`` are logged as given."""
        batch_size = batch_rows(batch)
        on_step = stage == "train"
        # Under DDP every rank sees a different shard: average the metrics over ranks so
        # the logged value is the whole batch's, not rank 0's alone.
        sync = self._trainer is not None and self.trainer.world_size > 1
        if loss is not None:
            self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=batch_size,
                     sync_dist=sync)
        for name, value in metrics.items():
            key = name if "/" in name else f"{stage}/{name}"
            self.log(key, value, prog_bar=name == "accuracy", on_step=on_step, on_epoch=True, batch_size=batch_size,
                     sync_dist=sync)

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_factory, self.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if callable(getattr(scheduler, "set_total_steps", None)) and self._trainer is not None:
            # Schedules that need the length of training (ift.optim.WarmupCosineLR) learn it here.
            total = self.trainer.estimated_stepping_batches
            if total != float("inf"):
                scheduler.set_total_steps(int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["objective_state"] = self.objective.state_dict()
        checkpoint["nonfinite_state"] = self.nonfinite.state_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # The reference is not built in __init__: create it so its saved weights can load.
        if any(key.startswith(REFERENCE_PREFIX) for key in checkpoint.get("state_dict", {})):
            self.ensure_reference()
        if "objective_state" in checkpoint:
            self.objective.load_state_dict(checkpoint["objective_state"])
        if "nonfinite_state" in checkpoint:
            self.nonfinite.load_state_dict(checkpoint["nonfinite_state"])
