"""Distributed training on the one engine: torchrun with 2 CPU processes (gloo) matches one process.

Same global batch: each of the 2 ranks takes batch_size // 2 samples per step and DDP averages their
gradients, so with equal shards the steps are the single-process steps up to float summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn


pytestmark = pytest.mark.slow

#: tolerance between the 2-process and the 1-process run, both at one thread per process. The frozen features
#: are bit for bit the same (checked below: each rank computes whole batches of the one-process pass, with the
#: same kernels at the same thread count), so the probe, solved on the same numbers, is the same too; what
#: remains is DDP: each step's gradient is the mean of two half-batch means instead of one batch mean, float32
#: sums in another order (relative error ~1e-7 per step), over 4 steps of a head at learning rates <= 1e-3.
ATOL = 1e-5


def _train_args(hymenoptera: Path, weights_dir: Path, out: Path, *extra: str) -> list[str]:
    # 4 images per class per split: 8 train images, per-rank shards of 4 in batches of 2 (global batch 4)
    return ["train", str(hymenoptera), "--weights", str(weights_dir / "mobilenet_v3_small-imagenet.pth"), "--subset", "4",
            "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def _metrics(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_torchrun_two_cpu_processes_match_one_process(hymenoptera, weights_dir, tmp_path):
    """The same run, once as one process and once as two torchrun ranks, each process at one thread.

    Equal thread counts are part of the claim: oneDNN splits a convolution's work by thread, so features
    computed at 1 and at 2 threads differ in the last bits (4e-6 here), a few of them round to the
    neighbouring float16 in the disk cache, and the probe solved on them moves by ~4e-4 (measured with
    ONEDNN_MAX_CPU_ISA=AVX2, as on an AVX2-only EPYC) — a different input, not a different algorithm.
    """
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                                                   os.environ.get("PYTHONPATH", "")])}
    for out, launcher in ((one, []), (two, ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"])):
        cmd = [sys.executable, *launcher, "-m", "warmstart", *_train_args(hymenoptera, weights_dir, out, "--feature-cache", "disk")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    for f in sorted((one / "features").iterdir()):  # the ranks' shards of the frozen pass: the one-process features
        assert np.array_equal(np.load(f), np.load(two / "features" / f.name)), f.name
    s1, s2 = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert s1["feature_cache"] and s2["feature_cache"]
    assert s2["train_images"] == s1["train_images"] == 8
    # accuracies are counts of right answers: equal unless a prediction flips, which the 1e-5 agreement of
    # the losses and weights below rules out on these images
    assert s2["final_val_accuracy"] == s1["final_val_accuracy"] and s2["confusion"] == s1["confusion"]
    for r1, r2 in zip(_metrics(one), _metrics(two), strict=True):
        for k in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert abs(float(r1[k]) - float(r2[k])) < ATOL, (k, r1[k], r2[k])
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=ATOL)
    # rank 0 alone wrote: one run directory, one feature file per split, no leftovers of other ranks
    names = sorted(p.name for p in (two / "features").iterdir())
    assert len(names) == 4 and all(not n.startswith(".") for n in names), names


# ----------------------------------------------------------------- the sharded feature cache itself


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
        self.y = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def _trunk() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def _build_on_rank(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from warmstart.transfer.features import FeatureCache

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        data = _Images(11)  # 11 rows: shards of 5 and 6
        mem = FeatureCache.build(_trunk(), data, normalize=_norm, batch_size=2)
        disk = FeatureCache.build(_trunk(), data, normalize=_norm, batch_size=2, path=Path(folder) / "f.npy")
        x_mem, y_mem = mem.tensors()
        x_disk, y_disk = disk.tensors()
        torch.save({"mem": x_mem, "y": y_mem, "disk": x_disk, "y_disk": y_disk}, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_feature_cache_is_computed_shard_by_shard_and_gathered_on_every_rank(tmp_path):
    import torch.multiprocessing as mp

    from warmstart.transfer.features import FeatureCache

    mp.start_processes(_build_on_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    data = _Images(11)
    ref_x, ref_y = FeatureCache.build(_trunk(), data, normalize=_norm, batch_size=4).tensors()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["mem"], ref_x, rtol=0, atol=1e-6)  # in memory: all-gathered float32
        assert torch.equal(got["y"], ref_y) and torch.equal(got["y_disk"], ref_y)
        torch.testing.assert_close(got["disk"], ref_x, rtol=1e-3, atol=1e-3)  # on disk: float16
    assert sorted(p.name for p in tmp_path.glob("f*.npy")) == ["f.labels.npy", "f.npy"]  # one file, no temp files
    assert np.load(tmp_path / "f.npy").shape == (11, 4)


# ----------------------------------------------------------------- decoding, shard by shard
def _decode_on_rank(rank: int, world: int, port: int, folder: str, data: str, cache_dir: str) -> None:
    import torch.distributed as dist

    from warmstart.data import ImageDataset, Preprocess, load_data

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        ds = ImageDataset(load_data(data).train, Preprocess(resize=40, crop=32), skip_bad_images=True,
                          cache_dir=cache_dir if cache_dir else False)
        squares = torch.stack([ds._square(i)[0] for i in range(len(ds))])
        torch.save({"images": squares, "labels": ds.labels, "bad": ds.bad_files, "here": ds.decoded_here,
                    "disk": str(ds.cache_path) if ds.cache_path else None}, Path(folder) / f"decoded{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("disk", [True, False], ids=["disk-cache", "in-memory"])
def test_images_are_decoded_shard_by_shard_and_gathered_on_every_rank(hymenoptera, tmp_path, disk):
    """11 images (one of them truncated, in rank 1's shard): each rank decodes about half, and every rank ends
    with the same cache as one process decoding all of them, the bad image skipped everywhere alike. With the
    disk cache every rank writes its rows into the one file; without it the blocks are all-gathered."""
    import shutil

    import torch.multiprocessing as mp

    from warmstart.data import ImageDataset, Preprocess, load_data

    data = tmp_path / "d"
    for c, n in (("ants", 6), ("bees", 5)):
        (data / "train" / c).mkdir(parents=True)
        (data / "val" / c).mkdir(parents=True)
        for f in sorted((hymenoptera / "train" / c).glob("*.jpg"))[:n]:
            shutil.copy(f, data / "train" / c / f.name)
        shutil.copy(f, data / "val" / c / f.name)
    victim = sorted((data / "train" / "bees").glob("*.jpg"))[-1]   # the last image: in rank 1's shard
    victim.write_bytes(victim.read_bytes()[:300])
    cache = tmp_path / "cache" if disk else ""
    mp.start_processes(_decode_on_rank, args=(2, _free_port(), str(tmp_path), str(data), str(cache)), nprocs=2,
                       start_method="spawn")
    ref = ImageDataset(load_data(data).train, Preprocess(resize=40, crop=32), skip_bad_images=True, cache_dir=False)
    assert ref.decoded_here == 11 and len(ref) == 10 and ref.bad_files == [str(victim)]
    got = [torch.load(tmp_path / f"decoded{r}.pt") for r in (0, 1)]
    assert [g["here"] for g in got] == [5, 6]                      # shards of 11: 5 and 6 images
    for g in got:
        assert torch.equal(g["images"], ref._images) and g["labels"] == ref.labels and g["bad"] == ref.bad_files
    assert [g["disk"] is not None for g in got] == [disk, disk] and got[0]["disk"] == got[1]["disk"]
    if disk:  # the next run (one process here) reads the file the two ranks wrote: nothing to decode
        again = ImageDataset(load_data(data).train, Preprocess(resize=40, crop=32), skip_bad_images=True, cache_dir=cache)
        assert again.cache_hit and again.decoded_here == 0 and again.bad_files == ref.bad_files


# ----------------------------------------------------------------- evaluate: predictions in dataset order
def _evaluate_on_rank(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from warmstart.engine.config import TrainConfig
    from warmstart.engine.distributed import World
    from warmstart.engine.loop import evaluate

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        r = evaluate(_classifier(), _Images(11), 3, cfg=TrainConfig(batch_size=2), device=torch.device("cpu"),
                     normalize=_norm, world=World(rank, world))
        torch.save(r, Path(folder) / f"eval{rank}.pt")
    finally:
        dist.destroy_process_group()


def _classifier() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))


def test_evaluate_gathers_every_ranks_predictions_in_dataset_order(tmp_path):
    import torch.multiprocessing as mp

    from warmstart.engine.config import TrainConfig
    from warmstart.engine.loop import evaluate

    mp.start_processes(_evaluate_on_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ref = evaluate(_classifier(), _Images(11), 3, cfg=TrainConfig(batch_size=4), device=torch.device("cpu"), normalize=_norm)
    assert len(ref["predictions"]) == 11 and len(set(ref["predictions"])) > 1
    for rank in (0, 1):
        got = torch.load(tmp_path / f"eval{rank}.pt")
        assert got["predictions"] == ref["predictions"] and got["confusion"] == ref["confusion"]


# ----------------------------------------------------------------- shards of whole batches
@pytest.mark.parametrize("n,size,unit", [(11, 2, 1), (11, 2, 2), (8, 2, 64), (100, 3, 7), (0, 2, 4), (5, 4, 1)])
def test_shard_range_covers_every_row_once_in_whole_units(n, size, unit):
    from warmstart.engine.distributed import World, shard_range

    shards = [shard_range(n, World(r, size), unit) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))           # contiguous, in rank order, every row once
    assert all(s.start % unit == 0 for s in shards if len(s))          # each shard starts on a unit boundary ...
    assert all(len(s) % unit == 0 for s in shards if s and s.stop < n)  # ... and only the last may end off one
    pieces = [-(-len(s) // unit) for s in shards]
    assert max(pieces) - min(pieces) <= 1                              # balanced to one unit
