"""torch.distributed, when launched by torchrun; a no-op world of one otherwise.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; we join the process group (NCCL on GPUs, gloo on CPU).
Rank 0 alone logs and writes files; metrics are summed across ranks; each rank trains on its shard; the
decoded-image cache and a feature cache are computed shard by shard (:func:`shard_range`) and all-gathered
(:func:`all_gather_rows`).
Multi-node is the same code: ``torchrun --nnodes=2 --node_rank=R --rdzv_endpoint=HOST:PORT ...``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator
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


def init_from_env(device_type: str | None = None) -> World:
    """Join the process group torchrun describes (idempotent); a World of one without torchrun.

    The backend follows ``device_type``: NCCL for ``"cuda"``, gloo otherwise; ``None`` (the device is not
    known yet, e.g. :meth:`Run.start <warmstart.engine.run.Run.start>`) joins with gloo for CPU tensors and,
    where there is a GPU, NCCL for CUDA tensors. Each rank then uses GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return World()
    cuda = device_type == "cuda" or (device_type is None and torch.cuda.is_available())
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "cpu:gloo,cuda:nccl" if cuda else "gloo"
        dist.init_process_group(backend=backend)
    w = world()
    if cuda:
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


def cores_per_rank() -> int:
    """CPU cores this process may use, shared fairly between the ranks torchrun starts on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def shard_range(n: int, w: World | None = None, unit: int = 1) -> range:
    """The contiguous block of ``range(n)`` that rank ``w.rank`` of ``w.size`` owns.

    Shards are made of whole ``unit``-row pieces (the last piece of ``range(n)`` may be shorter), and the piece
    counts of two ranks differ by at most 1. With ``unit`` = a batch size, every batch a rank computes is exactly
    a batch of the single-process pass over ``range(n)``: same rows, same shape, so the same kernels run on it.
    """
    w = w or world()
    if unit < 1:
        raise ValueError(f"shard_range: unit must be >= 1, got {unit}")
    pieces = -(-n // unit)
    lo, hi = pieces * w.rank // w.size, pieces * (w.rank + 1) // w.size
    return range(min(n, lo * unit), min(n, hi * unit))


def all_gather_rows(block: torch.Tensor, n: int, unit: int = 1) -> torch.Tensor:
    """Concatenate every rank's ``block`` (rank order) into one tensor of ``n`` rows, on every rank.

    ``block`` is this rank's :func:`shard_range` of the rows (with the same ``unit``; any dtype, on the CPU);
    blocks are padded to one size for the collective. NCCL gathers on the GPU, gloo on the CPU; the result is on
    the CPU.
    """
    w = world()
    if not w.distributed:
        return block
    rows = [len(shard_range(n, World(r, w.size), unit)) for r in range(w.size)]
    if len(block) != rows[w.rank]:
        raise ValueError(f"all_gather_rows: rank {w.rank} holds {len(block)} rows, its shard has {rows[w.rank]}")
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((max(rows), *block.shape[1:]), dtype=block.dtype, device=on)
    padded[: len(block)] = block.to(on)
    parts = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:k].cpu() for p, k in zip(parts, rows)])


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without torchrun."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave torch's setting), restored afterwards.

    Many tiny ops (a small head, a linear probe, a narrow deep MLP) lose to thread synchronisation: one thread
    is faster there, several times so on a busy machine.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: glibc serves allocations above this from fresh mmap()s, returned to the kernel on free (its largest setting)
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of the heap glibc may keep instead of returning it
TRIM_THRESHOLD = 512 << 20
_kept = False


def keep_freed_memory() -> bool:
    """Let glibc keep and reuse the memory of freed tensors below :data:`MMAP_THRESHOLD` (once per process).

    By default glibc raises its mmap threshold only gradually and hands freed heap tops back to the kernel, so
    a loop that allocates and frees the same activations batch after batch takes fresh zeroed pages from the
    kernel every time: measured on the feature pass over CIFAR-10 at 224 px, 1,229 minor page faults per image
    and a quarter of the CPU time in the kernel. With the thresholds fixed, freed blocks are reused (36 minor
    faults per image at batch 32). Tensors above the threshold are still mapped per allocation, so callers
    keep batches small enough (:func:`warmstart.transfer.features.FeatureCache.build` does). A no-op (False)
    where the C library is not glibc.
    """
    global _kept
    if _kept:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    _kept = bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
    return _kept
