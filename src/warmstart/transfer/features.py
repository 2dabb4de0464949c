"""Feature cache: run the frozen part of a network once, then train only what is trainable.

When a strategy freezes a prefix of the layer groups for the whole run (``Strategy.frozen_prefix``), every
epoch would recompute the same frozen features. :func:`split_at` cuts the model into ``trunk`` (the frozen
groups) and ``head`` (the rest) so that ``head(trunk(x)) == model(x)`` in eval mode, and
:class:`FeatureCache` stores ``trunk(x)`` for a whole dataset once, in memory (float32) or memory-mapped
on disk (float16 ``.npy``), keyed by :func:`cache_key` so the arms of a comparison share one cache.

``trunk`` and ``head`` are views, not copies: they hold the model's own modules, registered under the
model's own names, so ``head.named_parameters()`` gives ``classifier.3.weight`` exactly as the model does,
a Phase from ``Strategy.phases`` applies to ``head`` unchanged, and training ``head`` trains the model.

Frozen groups run in eval mode in both paths (see ``transfer.strategies``), which is what makes training
on cached features identical to training on images. Cache features of un-augmented images (the
evaluation transform); random crops would be frozen into the cache.

Building is the one pass of the frozen layers, so it is made fast and lean: batches may go channels-last
and under autocast, BatchNorm may be folded into a copy of the trunk (:func:`fold_batchnorm`), a disk cache
is written batch by batch, and under torchrun each rank computes its shard and the shards are gathered.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from warmstart.engine.distributed import (MMAP_THRESHOLD, all_gather_rows, barrier, broadcast_object, keep_freed_memory,
                                          shard_range, world)
from warmstart.errors import UserError
from warmstart.transfer.groups import LayerGroup

CACHE_FORMAT = 1
#: on a CPU, feature batches are kept small enough that every activation (measured on one probe sample) stays under
#: this many bytes (below glibc's mmap threshold), and freed memory is kept for reuse
#: (:func:`~warmstart.engine.distributed.keep_freed_memory`), so the allocator reuses freed memory instead of taking
#: fresh pages from the kernel every batch (CIFAR-10 at 224 px, 640 images: 1,200 -> 57 minor page faults per image,
#: system time 1.5 s -> 0.07 s, the same user time)
ACTIVATION_LIMIT = MMAP_THRESHOLD * 3 // 4
FLOAT32_BYTES = 4
#: frozen layers run without gradients: batches of at least this many images (the feature cache, the drift's CKA)
MIN_EVAL_BATCH = 64


# --------------------------------------------------------------------------------------------- split


class GlobalAvgPool(nn.Module):
    """``x.mean([2, 3])``: the global pooling ShuffleNetV2 and MNASNet write inline."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


class Stages(nn.Module):
    """Runs a slice of a model's forward pass: its stages in order.

    The model's modules are registered under their original dotted names (``features.12``,
    ``classifier.3``) through empty placeholder parents, so parameter and state_dict names match the
    model's. Stages without parameters that the model's forward applies inline (flatten, pooling) run too.
    """

    def __init__(self, stages: Sequence[tuple[str | None, nn.Module]]) -> None:
        super().__init__()
        self.stage_names = [n for n, _ in stages]
        object.__setattr__(self, "_run", [m for _, m in stages])  # run order; not registered twice
        for name, module in stages:
            if name is None:
                continue
            parent: nn.Module = self
            *path, leaf = name.split(".")
            for part in path:
                if part not in parent._modules:
                    parent.add_module(part, nn.Module())
                parent = parent._modules[part]  # type: ignore[assignment]
            parent.add_module(leaf, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self._run:
            x = m(x)
        return x


def _recipe(model: nn.Module) -> list[str | nn.Module]:
    """The model's forward as a sequence: submodule names, or modules for what forward does inline.

    Exact classes only: a subclass may override ``forward`` (torchvision's quantizable models do).
    """
    from torchvision import models as tv

    flat = nn.Flatten(1)
    pooled = ["avgpool", flat]
    recipes: dict[type, list[str | nn.Module]] = {
        tv.MobileNetV3: ["features", *pooled, "classifier"],
        tv.EfficientNet: ["features", *pooled, "classifier"],
        tv.VGG: ["features", *pooled, "classifier"],
        tv.AlexNet: ["features", *pooled, "classifier"],
        tv.MobileNetV2: ["features", nn.AdaptiveAvgPool2d((1, 1)), flat, "classifier"],
        tv.ResNet: ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", *pooled, "fc"],
        tv.RegNet: ["stem", "trunk_output", *pooled, "fc"],
        tv.ConvNeXt: ["features", "avgpool", "classifier"],
        tv.DenseNet: ["features", nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), flat, "classifier"],
        tv.ShuffleNetV2: ["conv1", "maxpool", "stage2", "stage3", "stage4", "conv5", GlobalAvgPool(), "fc"],
        tv.MNASNet: ["layers", GlobalAvgPool(), "classifier"],
        tv.SqueezeNet: ["features", "classifier", flat],
    }
    if type(model) in recipes:
        return recipes[type(model)]
    stages = getattr(model, "warmstart_stages", None)  # warmstart's own models describe their forward
    if callable(stages):
        return stages()
    raise UserError(
        f"the feature cache does not know how {type(model).__name__} composes its layers (it supports "
        "torchvision MobileNetV2/V3, ResNet/ResNeXt, EfficientNet, RegNet, ConvNeXt, DenseNet, VGG, AlexNet, "
        "ShuffleNetV2, MNASNet, SqueezeNet); train without the feature cache"
    )


def split_at(model: nn.Module, groups: list[LayerGroup], n_frozen: int) -> tuple[Stages, Stages]:
    """Cut ``model`` after its first ``n_frozen`` layer groups: ``(trunk, head)``.

    Parameterless stages between the last frozen group and the first trainable one (pooling, flatten, a
    frozen layer's activation and dropout) go to the trunk. ``0 <= n_frozen < len(groups)``: the head group
    always stays in ``head``.
    """
    if not isinstance(n_frozen, int) or not 0 <= n_frozen < len(groups):
        raise ValueError(f"split_at: n_frozen must be in 0..{len(groups) - 1}, got {n_frozen!r}")
    stages: list[tuple[str | None, nn.Module]] = []
    entries = [m for g in groups for m in g.modules]

    def add(name: str) -> None:
        module = model.get_submodule(name)
        inside = [e for e in entries if e.startswith(name + ".")]
        if not inside:
            stages.append((name, module))
        elif isinstance(module, nn.Sequential):
            for child in module._modules:
                add(f"{name}.{child}")
        else:
            raise UserError(f"the feature cache cannot cut inside {name} ({type(module).__name__}); train without it")

    for step in _recipe(model):
        if isinstance(step, str):
            add(step)
        else:
            stages.append((None, step))

    covered = {p for name, m in stages if name is not None for p, _ in m.named_parameters(prefix=name)}
    missing = [p for p, _ in model.named_parameters() if p not in covered]
    if missing:
        raise UserError(f"the feature cache does not know where {missing[0]} of {type(model).__name__} runs; train without it")

    def group_of(name: str | None) -> int | None:
        return next((i for i, g in enumerate(groups) if g.owns(name)), None) if name is not None else None

    owners = [group_of(name) for name, _ in stages]
    order = [g for g in owners if g is not None]
    if order != sorted(order):
        raise UserError(f"the layer groups of {type(model).__name__} do not follow its forward order; train without the feature cache")
    cut = next(i for i, g in enumerate(owners) if g is not None and g >= n_frozen)
    trunk, head = stages[:cut], stages[cut:]
    return Stages(trunk), Stages(head)


# --------------------------------------------------------------------------------------------- keys


def cache_key(weights_fingerprint: str, preprocess: Any, data_fingerprint: str, layer: str) -> str:
    """A short hex key for features of ``data`` preprocessed as ``preprocess`` through weights up to ``layer``.

    ``preprocess`` is a :class:`~warmstart.data.transforms.Preprocess` (or its dict). Random (``none``)
    weights depend on the seed: their features are not cached across runs (``Weights.fingerprint`` names the
    architecture only).
    """
    pre = preprocess.to_dict() if hasattr(preprocess, "to_dict") else dict(preprocess)
    blob = json.dumps({"format": CACHE_FORMAT, "weights": weights_fingerprint, "preprocess": pre, "data": data_fingerprint, "layer": layer}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- cache


def labels_path(path: Path) -> Path:
    """Where the labels of the feature file ``path`` (``x.npy``) live: ``x.labels.npy``."""
    return path.with_name(path.stem + ".labels.npy")


class FeatureCache(torch.utils.data.Dataset):
    """Precomputed features and labels: a Dataset of ``(feature float32 tensor, int label)``."""

    def __init__(self, features: torch.Tensor | np.ndarray, labels: np.ndarray, path: Path | None = None) -> None:
        if len(features) != len(labels):
            raise ValueError(f"FeatureCache: {len(features)} features but {len(labels)} labels")
        self.features = features
        self.labels = np.asarray(labels, dtype=np.int64)
        self.path = path

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])

    def _rows(self, idx) -> torch.Tensor:
        if isinstance(self.features, torch.Tensor):
            return self.features[idx]
        return torch.from_numpy(np.asarray(self.features[idx], dtype=np.float32))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._rows(i), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch for DataLoader (one fancy-indexed read instead of one per sample)."""
        rows = self._rows(np.asarray(indices, dtype=np.int64))
        return [(rows[j], int(self.labels[i])) for j, i in enumerate(indices)]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All features (float32) and labels (int64) as two tensors."""
        return self._rows(slice(None)), torch.from_numpy(self.labels.copy())

    @classmethod
    def open(cls, path: str | Path) -> "FeatureCache":
        """Open a cache written by :meth:`build` (memory-mapped, read-only)."""
        path = Path(path)
        lp = labels_path(path)
        if not path.is_file() or not lp.is_file():
            raise FileNotFoundError(f"no feature cache at {path} (with {lp.name})")
        return cls(np.load(path, mmap_mode="r"), np.load(lp), path)

    @classmethod
    def build(
        cls,
        trunk: nn.Module,
        dataset: torch.utils.data.Dataset,
        *,
        normalize: Callable[[torch.Tensor], torch.Tensor] | None,
        batch_size: int = MIN_EVAL_BATCH,
        device: str | torch.device = "cpu",
        path: str | Path | None = None,
        dtype: torch.dtype = torch.float16,
        num_workers: int = 0,
        reuse: bool = True,
        memory_limit: int | None = None,
        channels_last: bool = False,
        autocast: torch.dtype | None = None,
        fold_bn: bool = False,
    ) -> "FeatureCache":
        """Compute ``trunk(normalize(x))`` for every ``(x, label)`` of ``dataset`` once.

        In memory (float32) when ``path`` is None; otherwise a memory-mapped ``.npy`` of ``dtype`` (float16 or
        float32) at ``path`` plus ``<stem>.labels.npy``, written under temporary names and renamed (the features
        file last), so a cache on disk is always complete. With ``memory_limit`` (bytes) and a ``path``, the cache
        stays in memory unless its float32 size exceeds ``memory_limit``. Either way building never holds more than
        the cache itself plus one batch. With ``reuse`` an existing cache at ``path`` with as many rows as
        ``dataset`` is opened instead of recomputed.

        The trunk runs in eval mode on ``device`` (it is moved there; its modules' modes are restored afterwards).
        ``channels_last`` feeds it channels-last batches (faster convolutions with oneDNN on x86 CPUs);
        ``autocast`` (``torch.bfloat16`` or ``torch.float16``) runs it under autocast; ``fold_bn`` runs a copy of
        it with every BatchNorm folded (:func:`fold_batchnorm`). On a CPU ``batch_size`` is an upper bound:
        batches shrink until the largest activation stays under :data:`ACTIVATION_LIMIT`.

        Under torchrun every rank computes its contiguous shard of ``dataset``, in whole batches, and ends with
        the whole cache: in memory by an all-gather; on disk every rank writes its rows into the one file, which
        must be on a filesystem all ranks see (one machine, or a shared one), and rank 0 completes it.
        """
        if dtype not in (torch.float16, torch.float32):
            raise ValueError(f"FeatureCache: dtype must be torch.float16 or torch.float32, got {dtype}")
        path = Path(path) if path is not None else None
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("FeatureCache.build: empty dataset")
        if path is not None and reuse and broadcast_object(_complete(path, n)):  # rank 0 decides for every rank
            return cls._open_everywhere(path)
        device = torch.device(device)
        trunk.to(device)
        if isinstance(normalize, nn.Module):
            normalize = normalize.to(device)
        with _eval_mode(trunk):
            run = _Runner(fold_batchnorm(trunk) if fold_bn else trunk, normalize, device, channels_last, autocast)
            shape, largest = run.probe(dataset)
            if device.type == "cpu":
                keep_freed_memory()
                batch_size = max(1, min(batch_size, ACTIVATION_LIMIT // max(1, largest)))
            rows = shard_range(n, world(), unit=batch_size)  # whole batches per rank: see _write_on_disk
            batches = _batches(run, dataset, rows, batch_size, num_workers)
            if path is None or (memory_limit is not None and n * math.prod(shape) * FLOAT32_BYTES <= memory_limit):
                return cls(*_gather_in_memory(batches, rows, shape, n, batch_size))
            _write_on_disk(batches, path, rows, shape, n, batch_size, dtype)
            return cls._open_everywhere(path)

    @classmethod
    def _open_everywhere(cls, path: Path) -> "FeatureCache":
        if not path.is_file():
            raise UserError(f"rank {world().rank} cannot see the feature cache {path} that rank 0 has: under torchrun on several "
                            "machines put --out on a filesystem they all share, or use --feature-cache memory")
        return cls.open(path)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) with each BatchNorm2d folded into the Conv2d just before it.

    In eval mode a BatchNorm is an affine map per channel, so ``conv -> bn`` is one convolution with rescaled
    weights and a bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Pairs are found where the order of
    application is known: consecutive children of an ``nn.Sequential`` (torchvision's ``Conv2dNormActivation``,
    MobileNet/EfficientNet/VGG blocks) and consecutive stages of :class:`Stages`; other BatchNorms stay. The same
    function up to float rounding, 1.9x faster for MobileNetV3-Small on a CPU. For inference only: the copy's
    folded weights no longer train like the originals.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(module).eval()

    def fuse(seq: list[nn.Module]) -> list[tuple[int, nn.Module]]:
        out = []
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None:
                out += [(i, fuse_conv_bn_eval(conv, bn)), (i + 1, nn.Identity())]
        return out

    for parent in list(folded.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for i, new in fuse([parent._modules[n] for n in names]):  # type: ignore[misc]
                parent._modules[names[i]] = new
        elif isinstance(parent, Stages):
            run = list(parent._run)
            replaced = dict(fuse(run))
            if replaced:
                swap = {id(run[i]): new for i, new in replaced.items()}
                for mod in parent.modules():  # re-register under the same dotted names
                    for name, child in list(mod._modules.items()):
                        if child is not None and id(child) in swap:
                            mod._modules[name] = swap[id(child)]
                object.__setattr__(parent, "_run", [replaced.get(i, m) for i, m in enumerate(run)])
    return folded


class _Runner:
    """``trunk(normalize(x))`` on ``device`` in inference mode: channels-last input and autocast on request."""

    def __init__(self, trunk: nn.Module, normalize, device: torch.device, channels_last: bool, autocast: torch.dtype | None) -> None:
        self.trunk, self.normalize, self.device = trunk, normalize, device
        self.channels_last, self.autocast = channels_last, autocast

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                                                     enabled=self.autocast is not None):
            x = self.normalize(x) if self.normalize is not None else x
            if self.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.trunk(x).float().cpu()

    def probe(self, dataset) -> tuple[tuple[int, ...], int]:
        """The shape of the trunk's output for one sample and the bytes of its largest activation (input included),
        from one forward pass on the first item."""
        x = torch.as_tensor(dataset[0][0])[None]
        largest = [x.numel() * FLOAT32_BYTES]

        def note(_module, _inputs, out) -> None:
            if isinstance(out, torch.Tensor):
                largest[0] = max(largest[0], out.numel() * out.element_size())

        hooks = [m.register_forward_hook(note) for m in self.trunk.modules()]
        try:
            shape = tuple(self(x).shape[1:])
        finally:
            for h in hooks:
                h.remove()
        return shape, largest[0]


def _batches(run: _Runner, dataset, rows: range, batch_size: int, num_workers: int):
    """``(offset in rows, float32 CPU features, int64 labels)`` for the ``rows`` of ``dataset``, in order."""
    part = dataset if len(rows) == len(dataset) else torch.utils.data.Subset(dataset, rows)
    loader = torch.utils.data.DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=run.device.type == "cuda")
    lo = 0
    for batch in loader:
        f = run(batch[0])
        yield lo, f, torch.as_tensor(np.asarray(batch[1], dtype=np.int64).reshape(-1))
        lo += len(f)
    if lo != len(rows):
        raise ValueError(f"FeatureCache.build: the dataset says {len(rows)} samples but gave {lo}")


def _complete(path: Path, n: int) -> bool:
    """Whether ``path`` holds a complete cache of ``n`` rows (features and labels; the features file comes last)."""
    return path.is_file() and labels_path(path).is_file() and len(np.load(labels_path(path), mmap_mode="r")) == n


@contextmanager
def _eval_mode(module: nn.Module):
    """``module`` in eval mode inside the block; every submodule's own mode restored after it."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _gather_in_memory(batches, rows: range, shape: tuple[int, ...], n: int, batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The features (float32) and labels of all ``n`` rows, from this rank's ``batches`` of its ``rows``
    preallocated in one block, then all-gathered across ranks."""
    block = torch.empty((len(rows), *shape), dtype=torch.float32)
    labels = torch.empty(len(rows), dtype=torch.int64)
    for lo, f, y in batches:
        block[lo : lo + len(f)] = f
        labels[lo : lo + len(f)] = y
    return all_gather_rows(block, n, batch_size), all_gather_rows(labels, n, batch_size).numpy()


def _write_on_disk(batches, path: Path, rows: range, shape: tuple[int, ...], n: int, batch_size: int,
                   dtype: torch.dtype) -> None:
    """Write the cache at ``path``: rank 0 creates a temporary ``.npy`` of ``n`` rows, every rank writes the features
    of its ``rows`` into it, rank 0 saves the labels and renames both (the features file last).

    Each rank's rows are whole batches of the single-process pass (``shard_range(..., unit=batch_size)``), so at
    the same thread count the ranks compute bit for bit the features one process does: a batch split across ranks
    would run other kernels on other shapes, and a last-bit difference can round to the neighbouring float16.
    """
    w = world()
    tmp: Path | None = None
    try:
        if w.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npy")
            npd = np.float16 if dtype == torch.float16 else np.float32
            np.lib.format.open_memmap(tmp, mode="w+", dtype=npd, shape=(n, *shape)).flush()  # header + sparse rows
        shared = Path(broadcast_object(str(tmp)))
        barrier()
        if not shared.is_file():
            raise UserError(f"rank {w.rank} cannot see the feature cache {shared} that rank 0 created: under torchrun on "
                            "several machines put --out on a filesystem they all share, or use --feature-cache memory")
        labels = _write_rows(batches, shared, rows, shape, dtype, path)
        y_all = all_gather_rows(labels, n, batch_size).numpy()
        barrier()  # every rank has written its rows
        if w.main:
            ltmp = shared.with_name(shared.name.replace(".tmp.npy", ".labels.tmp.npy"))
            np.save(ltmp, y_all)
            os.replace(ltmp, labels_path(path))
            os.replace(shared, path)
        barrier()
    finally:
        if tmp is not None and tmp.exists():  # not renamed: something failed
            tmp.unlink()


def _write_rows(batches, file: Path, rows: range, shape: tuple[int, ...], dtype: torch.dtype, path: Path) -> torch.Tensor:
    """Write ``batches`` (features of ``rows``) into the ``.npy`` ``file`` with plain positioned writes, batch by
    batch (no memory map while building: the process holds one batch); their labels."""
    labels = torch.empty(len(rows), dtype=torch.int64)
    with open(file, "r+b") as out:
        np.lib.format.read_magic(out)
        header = np.lib.format.read_array_header_1_0(out)  # (shape, fortran_order, dtype)
        start, npd = out.tell(), header[2]
        row_bytes = math.prod(shape) * npd.itemsize
        for lo, f, y in batches:
            arr = f.numpy().astype(npd)
            if not np.isfinite(arr).all() and np.isfinite(f.numpy()).all():
                raise UserError(f"features overflow {dtype} in the feature cache {path}; build it with dtype=torch.float32")
            out.seek(start + (rows.start + lo) * row_bytes)
            out.write(np.ascontiguousarray(arr).tobytes())
            labels[lo : lo + len(f)] = y
    return labels
