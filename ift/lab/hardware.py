"""One line saying what computed a published number: CPU model, cores, torch, CPU kernels."""

from __future__ import annotations

import os
import platform

import torch


def describe_hardware() -> str:
    """E.g. ``"AMD EPYC, 2 cores, torch 2.13.0+cpu, CPU kernels AVX512"``."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:  # not Linux: keep platform's answer
        pass
    parts = [model, f"{os.cpu_count()} cores", f"torch {torch.__version__}",
             f"CPU kernels {torch.backends.cpu.get_cpu_capability()}"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)
