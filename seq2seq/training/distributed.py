"""DistributedDataParallel through torchrun: the process group, each rank's share of the batches, agreements.

``torchrun --nproc_per_node N -m seq2seq train CONFIG`` sets RANK / WORLD_SIZE / LOCAL_RANK;
without them training runs as a single process and every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device
from ..errors import ConfigError

# Ranks wait in a collective while rank 0 alone trains the tokenizer (minutes on millions of pairs) or
# validates (a beam search over the dev set): NCCL's default of 10 minutes would kill such runs.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_spec: str) -> DistContext:
    """Join the process group torchrun describes (nccl on GPUs, gloo on CPUs) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=resolve_device(device_spec))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if device_spec not in ("auto", "cuda"):
            raise ConfigError(f"train.device={device_spec} names one GPU, but torchrun gives each process its own; "
                              f"use train.device=cuda or auto")
        device = rank_device(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # device_id binds the NCCL communicator to this rank's GPU at once (no guessing in the first collective).
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world_size, device=device)


def rank_device(local_rank: int, visible: int) -> torch.device:
    """This rank's GPU: cuda:LOCAL_RANK when the process sees every GPU of its node, cuda:0 when a launcher
    (SLURM, Kubernetes, CUDA_VISIBLE_DEVICES per rank) shows it only its own."""
    if visible == 1:
        return torch.device("cuda", 0)
    if local_rank >= visible:
        raise ConfigError(f"LOCAL_RANK={local_rank} but this process sees only {visible} GPUs; start at most "
                          f"{visible} processes per node (torchrun --nproc_per_node) or show each its own GPU")
    return torch.device("cuda", local_rank)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def sum_across_ranks(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (the tensor itself in a single process)."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_floats(values: list[float], ctx: DistContext) -> list[float]:
    """Rank 0's ``values`` on every rank: decisions only rank 0 can make (early stop, plateau rate) stay shared."""
    if not ctx.is_distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj``, in rank order (used for the per-rank RNG states of a checkpoint)."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def rank_share(group: list[list[int]], ctx: DistContext) -> list[list[int]]:
    """This rank's batches of one update's group of ``world_size * accumulate`` batches.

    Every rank computes the same batch order (same seed and epoch), so no index travels
    between processes: rank r takes every world_size-th batch starting at r.
    """
    return group[ctx.rank::ctx.world_size]
