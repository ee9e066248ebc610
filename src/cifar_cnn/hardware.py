"""What we run on: device choice, CPU model, bf16/AMX support; recorded with every result."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
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


# glibc's malloc serves every block above its mmap threshold (32 MiB at most) with a fresh mmap and
# unmaps it when freed. A CPU training step at batch 2000 allocates and frees gigabytes of
# activations, so every step faulted them back in, page by page and zeroed: on a 2-core Xeon a
# third of a 32 px step of `fast` was kernel time (7.7 s a step, 21 s of sys time in 5 steps,
# 6.8 million page faults; with the blocks kept: 5.3 s, 1.8 s, 0.14 million; bench/results/alloc-*).
# mallopt's parameters, from <malloc.h>:
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_TRIM_THRESHOLD, _GLIBC_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults, restored afterwards


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def allocator_policy(device: torch.device) -> str:
    """What `keep_freed_memory` does here: "keep" (CPU training with glibc) or "system"
    (a GPU, another C library, or CIFAR_CNN_ALLOCATOR=system)."""
    wanted = os.environ.get("CIFAR_CNN_ALLOCATOR", "keep").strip().lower()
    return "keep" if wanted != "system" and device.type == "cpu" and _glibc() is not None else "system"


@contextmanager
def keep_freed_memory(device: torch.device) -> Iterator[str]:
    """While training on a CPU with glibc: take large blocks from the heap instead of fresh
    mmaps and keep freed memory there for the next step (mallopt: no mmap, trim threshold at
    its maximum); afterwards glibc's defaults again, and the kept memory goes back to the kernel
    (malloc_trim). Yields the policy (`allocator_policy`). Between steps memory stays at the
    peak instead of falling back, and the peak grows (a whole `fast` run: 6,338 against 5,363
    MiB): blocks of other sizes cannot always reuse the space freed ones leave."""
    policy = allocator_policy(device)
    libc = _glibc() if policy == "keep" else None
    if libc is None:
        yield policy
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # an int: the largest mallopt takes
    try:
        yield policy
    finally:
        libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def allocator_env(device: torch.device) -> dict[str, str]:
    """Environment that gives a child process running someone else's code (the airbench baseline)
    the same allocator policy as our training: glibc's tunables, read when the process starts."""
    if allocator_policy(device) != "keep" or "GLIBC_TUNABLES" in os.environ:
        return {}
    return {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"}


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
        "allocator": allocator_policy(device),
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
