"""Test-wide settings: offline, deterministic, one CPU thread per process."""

import os

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models run no faster on two threads, and a second thread competing with other
# processes made generation several times slower: one thread keeps timings steady.
torch.set_num_threads(1)


def pytest_report_header(config):
    """Which CPU kernels this run uses: learning numbers drift between AVX2 and AVX-512."""
    isa = {name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
           if name in os.environ}
    return f"torch {torch.__version__}, CPU kernels: {torch.backends.cpu.get_cpu_capability()} {isa or ''}".rstrip()
