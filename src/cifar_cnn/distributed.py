"""torchrun support: `torchrun --nproc_per_node=N -m cifar_cnn.cli train ...` (or the
`cifar-cnn` script) trains with DistributedDataParallel; without torchrun nothing changes.

Each process takes its own slice of every global batch, so the global batch, the number of
steps and the schedule stay those of the recipe. NCCL on GPUs, gloo on CPU. Only rank 0
prints and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: torch.device) -> Context:
    """Join the process group that torchrun describes in the environment (once)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return Context(rank, world, local_rank)


def device_for(requested: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK under torchrun."""
    if requested.type == "cuda" and requested.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return requested


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def sync_buffers(model: torch.nn.Module, ctx: Context) -> None:
    """Give every rank rank 0's BatchNorm statistics (each rank saw only its shard last)."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> None:
    """Sum `tensor` over the ranks in place (a no-op in a single process)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()
