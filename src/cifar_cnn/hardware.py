"""What we run on: device choice, CPU model, bf16/AMX support; recorded with every result."""

from __future__ import annotations

import os
import platform
from functools import cache

import torch


def choose_device(requested: str | None = None) -> torch.device:
    """`requested` if given ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


def cpu_bf16_fast() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 math (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def use_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_bf16_fast()


def describe(device: torch.device) -> dict:
    """A record of the hardware and software, stored in checkpoints and bench results."""
    info = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16": use_bf16(device),
        "amx": has_amx(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summary_line(device: torch.device) -> str:
    d = describe(device)
    where = d.get("gpu") or f"{d['cpu']} ({d['torch_threads']} threads)"
    precision = "bf16 autocast" if d["bf16"] else "fp32"
    amx = ", AMX" if d["amx"] else ""
    return f"Device: {device} | {where} | {precision}{amx} | torch {d['torch']}"
