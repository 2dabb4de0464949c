"""torch.distributed, when launched by torchrun; a no-op world of one otherwise.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; we join the process group (NCCL on GPUs, gloo on CPU).
Rank 0 alone logs and writes files; metrics are summed across ranks; each rank trains on its shard.
Multi-node is the same code: ``torchrun --nnodes=2 --node_rank=R --rdzv_endpoint=HOST:PORT ...``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def init_from_env(device_type: str) -> World:
    """Join the process group torchrun describes (idempotent); a World of one without torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    w = world()
    if device_type == "cuda":
        torch.cuda.set_device(w.local_rank)
    return w


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
