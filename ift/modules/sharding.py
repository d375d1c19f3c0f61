"""Fully sharded training (FSDP) for the policy, its frozen reference and the value head.

Two pieces, both used by ``configs/strategy/fsdp.yaml``:

- :class:`FSDP`, Lightning's ``FSDPStrategy`` with the torch options a fine-tuning run
  needs spelled out as arguments (so the ``ift`` command and YAML accept them);
- unless told otherwise, every decoder layer (the classes a Hugging Face model lists in
  ``_no_split_modules``) becomes its own FSDP unit, in the policy and the reference alike;
  the embeddings, the LM head and the value head share the root unit. Generation inside a
  training or validation step runs within the root unit's forward, so its weights are
  gathered while a rollout decodes.
"""

from __future__ import annotations

from typing import Set, Type

import torch
from pytorch_lightning.strategies import FSDPStrategy


class FSDP(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` with the options fine-tuning needs as named arguments.

    Args:
        sharding_strategy: ``FULL_SHARD`` (parameters, gradients and optimizer state),
            ``SHARD_GRAD_OP`` (gradients and optimizer state) or ``HYBRID_SHARD``.
        state_dict_type: ``full`` (one checkpoint gathered on rank 0) or ``sharded``
            (one file per rank, written by ``torch.distributed.checkpoint``).
        use_orig_params: keep the original parameters visible; needed when frozen weights
            (the reference, LoRA's base) sit beside trainable ones.
        limit_all_gathers: bound the memory of parameters gathered ahead of use.
        cpu_offload: keep sharded parameters and gradients in CPU memory between uses.
        auto_wrap_policy: which submodules become FSDP units; None: the model's decoder
            layers (:func:`decoder_layer_types`).
    """

    def __init__(
        self,
        sharding_strategy: str = "FULL_SHARD",
        state_dict_type: str = "full",
        use_orig_params: bool = True,
        limit_all_gathers: bool = True,
        cpu_offload: bool = False,
        auto_wrap_policy=None,
        **kwargs,
    ):
        super().__init__(
            sharding_strategy=sharding_strategy,
            state_dict_type=state_dict_type,
            use_orig_params=use_orig_params,
            limit_all_gathers=limit_all_gathers,
            cpu_offload=cpu_offload,
            auto_wrap_policy=auto_wrap_policy,
            **kwargs,
        )
        self._wrap_decoder_layers = auto_wrap_policy is None

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self._wrap_decoder_layers:
            layer_types = decoder_layer_types(model)
            if layer_types:
                from torch.distributed.fsdp.wrap import ModuleWrapPolicy

                self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(layer_types)
        return super()._setup_model(model)

    def setup_environment(self) -> None:
        # Lightning's own GPU check matches FSDPStrategy by exact type; repeat it here so a
        # CPU run fails with the fix rather than deep inside torch.
        if self.root_device.type == "cpu":
            raise ValueError(
                "FSDP needs GPUs (torch's FSDP does not run on CPU processes): set "
                "--trainer.accelerator gpu, or use --trainer.strategy ddp on CPUs"
            )
        super().setup_environment()


def decoder_layer_types(model: torch.nn.Module) -> Set[Type[torch.nn.Module]]:
    """The classes of ``model``'s repeated layers: those named in a Hugging Face model's
    ``_no_split_modules`` (e.g. ``GPT2Block``, ``LlamaDecoderLayer``), found anywhere in
    ``model`` (the policy, the reference, a peft wrapper's base model)."""
    names: Set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(module) for module in model.modules() if type(module).__name__ in names}
