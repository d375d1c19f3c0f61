"""Test-wide settings: offline, deterministic, one CPU thread per process."""

import os

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run no faster on two threads, and a second thread competing with other
# processes made generation several times slower: one thread keeps timings steady.
torch.set_num_threads(1)
