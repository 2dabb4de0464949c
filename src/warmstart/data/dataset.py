"""ImageDataset: an ImageSource as a torch Dataset of (uint8 3 x crop x crop tensor, int label).

Decoding happens **once per run**: when ``N * 3 * resize * resize`` bytes fit under ``memory_limit``
(2 GiB by default; hymenoptera at 256 needs 48 MB, CIFAR-10's 50,000 train images at 32 need 154 MB), every
image is decoded up front -- in a thread pool, PIL releases the GIL -- resized so its shorter side is
``preprocess.resize`` (with ``preprocess.interpolation``) and centre-cropped to a ``resize`` square, into
one uint8 tensor. Built before a ``DataLoader`` forks its workers, the cache is shared with them.
When it does not fit (or ``cache=False``), each ``__getitem__`` decodes its image with the same
transform instead.

``__getitem__`` then crops ``preprocess.crop``: the centre for evaluation -- equal to torchvision's
``Resize(resize)`` + ``CenterCrop(crop)`` -- or, with ``augment=True``, a random crop (optionally
resized from a random area, ``scale``) and a horizontal flip drawn from torch's global RNG, so
``torch.manual_seed`` (and DataLoader's per-worker seeding) make augmentation reproducible. Normalising
is left to :class:`~warmstart.data.transforms.Normalizer`, on the batch, on its device.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from warmstart.data.images import BadImageError, interpolation
from warmstart.data.sources import ImageSource
from warmstart.data.transforms import Preprocess
from warmstart.errors import UserError

log = logging.getLogger("warmstart.data")

GiB = 1 << 30


class ImageDataset(Dataset):
    """Decoded, resized images of ``source`` as (uint8 tensor 3 x C x C, label), C = ``preprocess.crop``.

    Args:
        source: the listed images (from :func:`~warmstart.data.load_data`).
        preprocess: sizes and interpolation (from the weights' metadata).
        train: this is a training split (only names the split in progress bars and messages).
        augment: random crop + horizontal flip instead of the centre crop.
        scale: with ``augment``, also resize from a random area of the cached square: the fraction range
            of ``T.RandomResizedCrop`` (e.g. ``(0.35, 1.0)``); ``None`` = a plain ``crop`` x ``crop`` crop.
        cache: ``None`` decodes everything up front when it fits under ``memory_limit``, ``True`` always
            does, ``False`` never does (decode in ``__getitem__``).
        memory_limit: bytes the decoded cache may take (default 2 GiB).
        skip_bad_images: drop images that cannot be decoded (one warning with the count) instead of raising.
        workers: decoding threads for the up-front cache.
    """

    def __init__(self, source: ImageSource, preprocess: Preprocess, *, train: bool = False, augment: bool = False,
                 scale: tuple[float, float] | None = None, cache: bool | None = None, memory_limit: int = 2 * GiB,
                 skip_bad_images: bool = False, workers: int = 2) -> None:
        if len(source) == 0:
            raise UserError(f"{source.name}: no images in this split")
        if scale is not None and not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise UserError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.source = source
        self.preprocess = preprocess
        self.train, self.augment, self.scale = train, augment, scale
        self.skip_bad_images = skip_bad_images
        self.mode = interpolation(preprocess.interpolation)
        self.classes: list[str] | None = source.classes
        self.labels: list[int] = list(source.labels)
        self.bad_files: list[str] = []
        self.decode_seconds = 0.0
        self.decoded_here = 0  # images this process decoded for the cache (its shard under torchrun)
        r = preprocess.resize
        self.cache_bytes = len(source) * 3 * r * r
        self.cached = cache if cache is not None else self.cache_bytes <= memory_limit
        self._index = list(range(len(source)))  # dataset position -> source index
        self._images: torch.Tensor | None = None
        if self.cached:
            self._decode_all(max(1, int(workers)))
        elif skip_bad_images:
            log.debug("%s: images are decoded lazily; unreadable ones are replaced by the next image", source.name)

    @property
    def num_skipped(self) -> int:
        return len(self.bad_files)

    def with_augmentation(self, scale: tuple[float, float] | None = None) -> "ImageDataset":
        """The same images (sharing the decoded cache, no second decode) with random crops + flips."""
        if scale is not None and not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise UserError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {scale}")
        view = copy.copy(self)
        view.augment, view.scale = True, scale
        return view

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        how = "cached" if self.cached else "lazy"
        return (f"ImageDataset({self.source.name!r}, {len(self)} images, {how}, resize {self.preprocess.resize}, "
                f"crop {self.preprocess.crop}, augment={self.augment})")

    # ------------------------------------------------------------------------------------------ decoding

    def _load(self, i: int) -> torch.Tensor:
        """Source image ``i`` -> uint8 3 x R x R (shorter side resized to R, centre square)."""
        hwc = self.source.load(i, self.preprocess.resize, self.mode)
        return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))

    def _decode_all(self, workers: int) -> None:
        """Decode every image into one uint8 N x 3 x R x R tensor. Under torchrun each rank decodes its
        :func:`~warmstart.engine.distributed.shard_range` of the images and the blocks are all-gathered, so N
        images are decoded once in all, not once per rank (every rank still holds the whole cache: its sampler
        draws from all of it, epoch after epoch)."""
        from warmstart.engine.distributed import all_gather_objects, all_gather_rows, shard_range, world

        n, r = len(self.source), self.preprocess.resize
        w = world()
        mine = shard_range(n, w)
        block = torch.empty((len(mine), 3, r, r), dtype=torch.uint8)
        array = block.numpy()  # threads write through numpy: no torch (intra-op threads) inside the pool
        failed: list[tuple[int, str, str]] = []  # (index, path, reason): plain data, to gather across ranks

        def work(j: int) -> None:
            i = mine[j]
            try:
                array[j] = self.source.load(i, r, self.mode).transpose(2, 0, 1)
            except BadImageError as e:
                failed.append((i, e.path, e.reason))

        start = time.perf_counter()
        what = f"decoding {'train' if self.train else 'eval'} images ({self.source.name})"
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warmstart-decode")
        try:
            for _ in tqdm(pool.map(work, range(len(mine))), total=len(mine), desc=what, unit="img", leave=False,
                          disable=not sys.stderr.isatty(), file=sys.stderr):
                pass
        finally:  # on Ctrl-C, do not wait for the images still queued
            pool.shutdown(wait=True, cancel_futures=True)
        self.decoded_here = len(mine)
        images = all_gather_rows(block, n) if w.distributed else block
        array = images.numpy()
        # every rank learns every rank's failures, so that all of them raise (or skip) alike
        errors = {i: BadImageError(path, reason) for part in all_gather_objects(failed) for i, path, reason in part}
        self.decode_seconds = time.perf_counter() - start
        if errors:
            first = errors[min(errors)]
            if not self.skip_bad_images:
                raise BadImageError(first.path, first.reason, more=len(errors) - 1)
            self.bad_files = [errors[i].path for i in sorted(errors)]
            keep = [i for i in range(n) if i not in errors]
            if not keep:
                raise UserError(f"{self.source.name}: none of the {n} images could be decoded (first: {first.path})")
            for j, i in enumerate(keep):  # compact in place: no second N x 3 x R x R buffer
                if i != j:
                    array[j] = array[i]
            images = images[: len(keep)]
            self._index = keep
            self.labels = [self.source.labels[i] for i in keep]
            log.warning(f"skipped {len(errors)} unreadable images (first: {first.path})")
        self._images = images

    # ------------------------------------------------------------------------------------------ samples

    def _square(self, pos: int) -> tuple[torch.Tensor, int]:
        if self._images is not None:
            return self._images[pos], self.labels[pos]
        if not self.skip_bad_images:
            return self._load(self._index[pos]), self.labels[pos]
        # lazy mode cannot drop an image once its length is known: the next readable image takes its place
        n = len(self._index)
        for step in range(n):
            other = (pos + step) % n
            try:
                return self._load(self._index[other]), self.labels[other]
            except BadImageError as e:
                if e.path not in self.bad_files:  # per process: DataLoader workers keep their own lists
                    self.bad_files.append(e.path)
                    log.warning(f"skipped unreadable image {e.path} (the next readable image is used in its place)")
        raise UserError(f"{self.source.name}: none of the {n} images could be decoded (first: {self.bad_files[0]})")

    def __getitem__(self, pos: int) -> tuple[torch.Tensor, int]:
        img, label = self._square(pos)
        c = self.preprocess.crop
        if not self.augment:
            out = F.center_crop(img, [c, c])
        else:
            if self.scale is None:
                top, left, h, w = T.RandomCrop.get_params(img, (c, c))
                out = F.crop(img, top, left, h, w)
            else:
                top, left, h, w = T.RandomResizedCrop.get_params(img, list(self.scale), [3 / 4, 4 / 3])
                out = F.resized_crop(img, top, left, h, w, [c, c], interpolation=self.mode, antialias=True)
            if torch.rand(1).item() < 0.5:
                out = F.hflip(out)
        return out.clone(), label
