"""The frozen reference policy: made as a copy of the policy, refreshed tensor by tensor."""

from __future__ import annotations

import copy

import torch


def frozen_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``policy`` that never trains: no gradients, always in eval mode (no dropout)."""
    reference = copy.deepcopy(policy)
    reference.requires_grad_(False)
    reference.eval()
    return reference


@torch.no_grad()
def copy_parameters(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target`` tensor by tensor.

    Local and collective-free: under FSDP both modules are sharded the same way, so each
    process copies its own shards (a ``state_dict`` round trip would gather full weights).
    """
    source_tensors = dict(source.named_parameters())
    source_tensors.update(source.named_buffers())
    target_tensors = dict(target.named_parameters())
    target_tensors.update(target.named_buffers())
    if source_tensors.keys() != target_tensors.keys():
        missing = sorted(source_tensors.keys() ^ target_tensors.keys())[:5]
        raise RuntimeError(f"the reference and the policy differ in their tensors (e.g. {missing}); cannot refresh")
    for name, tensor in target_tensors.items():
        tensor.copy_(source_tensors[name])
