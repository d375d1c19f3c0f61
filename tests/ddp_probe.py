"""A callback the multi-process tests load into ``ift fit`` (via PYTHONPATH): every rank
writes what it ended with, so the test can compare ranks after the processes exit."""

import os

import pytorch_lightning as pl
import torch


class RecordRankState(pl.Callback):
    """Write ``rank<r>.pt`` into ``out_dir`` at the end of fit: the trainable parameters,
    the synced validation metrics, the global step and the number of training batches seen.
    Rank 0 also writes ``initial.pt`` with the parameters at fit start."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.val_metrics = []
        self.batches = 0

    @staticmethod
    def _trainable(pl_module):
        return {name: p.detach().clone() for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer, pl_module):
        os.makedirs(self.out_dir, exist_ok=True)
        if trainer.is_global_zero:
            torch.save(self._trainable(pl_module), os.path.join(self.out_dir, "initial.pt"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})

    def on_fit_end(self, trainer, pl_module):
        state = {
            "parameters": self._trainable(pl_module),
            "val_metrics": self.val_metrics,
            "global_step": trainer.global_step,
            "batches": self.batches,
            "world_size": trainer.world_size,
        }
        torch.save(state, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))
