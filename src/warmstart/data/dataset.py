"""ImageDataset: an ImageSource as a torch Dataset of (uint8 3 x crop x crop tensor, int label).

Decoding happens **once**, and once across runs: by default every image is decoded up front -- in a thread
pool, PIL releases the GIL -- into the decoded-image cache on disk (:mod:`warmstart.data.diskcache`: a uint8
memory-mapped file in the user's cache folder, keyed by the data's fingerprint and the preprocessing), so
the next run on the same data decodes nothing and the process never holds more than the pages it reads.
Without a usable disk cache (``cache_dir=False``, an in-memory source, an unwritable or full folder) the
old rules apply: when ``N * 3 * resize * resize`` bytes fit under ``memory_limit``
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
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from warmstart.data import _torchvision  # noqa: F401, I001  (first: torchvision without torch._dynamo)
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torch.utils.data import Dataset

from warmstart.data import diskcache
from warmstart.data.images import BadImageError, interpolation
from warmstart.data.sources import ImageSource
from warmstart.data.transforms import Preprocess
from warmstart.engine.console import progress
from warmstart.errors import UserError

log = logging.getLogger("warmstart.data")

GiB = 1 << 30


#: the area fraction range of the random-resized crop every training recipe uses (train, compare, rank's --verify)
AUGMENT_SCALE = (0.35, 1.0)


def _shared_file(folder: Path, key: str, shape: tuple[int, ...]) -> tuple[Path, int] | None:
    """Rank 0 creates the disk cache's temporary file and every rank checks that it sees it: ``(its path, the offset of
    row 0)``, or None (warned once) when it cannot be created or some rank does not see it."""
    from warmstart.engine.distributed import all_gather_objects, broadcast_object, world

    w = world()
    made = broadcast_object(diskcache.prepare_file(folder, key, shape) if w.main else None)
    if isinstance(made, str):
        diskcache.warn_once(folder, made)
        return None
    tmp, offset = made
    if not all(all_gather_objects(Path(tmp).is_file())):
        if w.main:
            diskcache.discard(tmp)
        diskcache.warn_once(folder, "not every rank sees it: under torchrun on several machines use a shared folder")
        return None
    return tmp, offset


class ImageDataset(Dataset):
    """Decoded, resized images of ``source`` as (uint8 tensor 3 x C x C, label), C = ``preprocess.crop``.

    Args:
        source: the listed images (from :func:`~warmstart.data.load_data`).
        preprocess: sizes and interpolation (from the weights' metadata).
        train: this is a training split (only names the split in progress bars and messages).
        augment: random crop + horizontal flip instead of the centre crop.
        scale: with ``augment``, also resize from a random area of the cached square: the fraction range
            of ``T.RandomResizedCrop`` (e.g. :data:`AUGMENT_SCALE`); ``None`` = a plain ``crop`` x ``crop`` crop.
        cache: ``None`` decodes everything up front (into the disk cache; without one, when it fits under
            ``memory_limit``), ``True`` always does, ``False`` never does (decode in ``__getitem__``).
        memory_limit: bytes an in-memory decoded cache may take (default 2 GiB).
        cache_dir: the disk cache's folder; ``None``: ``$WARMSTART_CACHE_DIR`` or the user's cache folder
            (:func:`~warmstart.data.diskcache.cache_dir`); ``False`` or ``"off"``: no disk cache.
        skip_bad_images: drop images that cannot be decoded (one warning with the count) instead of raising.
        workers: decoding threads for the up-front cache.
    """

    def __init__(self, source: ImageSource, preprocess: Preprocess, *, train: bool = False, augment: bool = False,
                 scale: tuple[float, float] | None = None, cache: bool | None = None, memory_limit: int = 2 * GiB,
                 skip_bad_images: bool = False, workers: int = 2,
                 cache_dir: str | os.PathLike | bool | None = None) -> None:
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
        self._index = list(range(len(source)))  # dataset position -> source index
        self._rows: list[int] | None = None  # dataset position -> row of _images (None: the same)
        self._images: torch.Tensor | diskcache.Rows | None = None
        self.batch_augment = None  # set by with_augmentation(on_batch=True): crops + flips applied to whole batches
        self.cache_path: Path | None = None  # the disk cache in use
        self.cache_hit = False  # the disk cache was there already: nothing was decoded
        folder = diskcache.cache_dir(cache_dir) if cache is not False and source.kind != "array" else None
        if folder is not None and self._from_disk(folder, max(1, int(workers))):
            self.cached = True
            return
        self.cached = cache if cache is not None else self.cache_bytes <= memory_limit
        if self.cached:
            self._decode_all(max(1, int(workers)))
        elif skip_bad_images:
            log.debug("%s: images are decoded lazily; unreadable ones are replaced by the next image", source.name)

    @property
    def num_skipped(self) -> int:
        return len(self.bad_files)

    def with_augmentation(self, scale: tuple[float, float] | None = None, *, on_batch: bool = True) -> "ImageDataset":
        """The same images (sharing the decoded cache, no second decode) with random crops + flips.

        ``on_batch`` (the default): samples are the whole uncropped uint8 squares and ``batch_augment`` (a
        :class:`~warmstart.data.augment.BatchAugment`) crops, resizes and flips a whole batch at once, on
        whatever device the batch is on (the training loop applies it after moving the batch there); else each
        ``__getitem__`` crops its own sample on the CPU.
        """
        if scale is not None and not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise UserError(f"augmentation scale must satisfy 0 < min <= max <= 1, got {scale}")
        view = copy.copy(self)
        if on_batch:
            from warmstart.data.augment import BatchAugment

            view.augment, view.scale = False, scale
            view.batch_augment = BatchAugment(self.preprocess.crop, scale, interpolation=self.preprocess.interpolation)
        else:
            view.augment, view.scale, view.batch_augment = True, scale, None
        return view

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        how = "disk cache" if self.cache_path is not None else "cached" if self.cached else "lazy"
        return (f"ImageDataset({self.source.name!r}, {len(self)} images, {how}, resize {self.preprocess.resize}, "
                f"crop {self.preprocess.crop}, augment={self.augment})")

    # ------------------------------------------------------------------------------------------ decoding

    def _load(self, i: int) -> torch.Tensor:
        """Source image ``i`` -> uint8 3 x R x R (shorter side resized to R, centre square)."""
        hwc = self.source.load(i, self.preprocess.resize, self.mode)
        return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))

    def _pool(self, work, count: int, workers: int) -> None:
        """``work(j)`` for j in range(count) on ``workers`` threads, with a progress bar on a terminal."""
        what = f"decoding {'train' if self.train else 'eval'} images ({self.source.name})"
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warmstart-decode")
        try:
            for _ in progress(pool.map(work, range(count)), total=count, desc=what, unit="img"):
                pass
        finally:  # on Ctrl-C, do not wait for the images still queued
            pool.shutdown(wait=True, cancel_futures=True)

    def _from_disk(self, folder: Path, workers: int) -> bool:
        """Use (or build, then use) the disk cache in ``folder``; False when it cannot be used (one warning).

        Under torchrun rank 0 creates the file, every rank decodes its :func:`shard_range` of the images and
        writes their rows into it (positioned writes), rank 0 checks and commits it, and every rank maps it;
        the folder must then be one every rank sees (else the in-memory all-gather path is taken).
        """
        from warmstart.engine.distributed import all_gather_objects, shard_range, world

        n, r = len(self.source), self.preprocess.resize
        shape = (n, 3, r, r)
        key = diskcache.cache_key(self.source.fingerprint, self.source.kind, n, r, self.preprocess.interpolation)
        start = time.perf_counter()
        found = diskcache.open_valid(folder, key, shape)
        if all(all_gather_objects(found is not None)):
            self._use_disk(found, folder, key, hit=True)
            log.info(f"{self.source.name}: {n} decoded images read from {self.cache_path} (nothing decoded)")
            return True
        del found
        made = _shared_file(folder, key, shape)
        if made is None:
            return False
        tmp, offset = made
        mine = shard_range(n, world())
        failed, problem = self._decode_into(tmp, offset, mine, workers)
        self.decoded_here = len(mine)
        if not self._commit_shards(tmp, folder, key, shape, failed, problem):
            return False
        found = diskcache.open_valid(folder, key, shape)
        if not all(all_gather_objects(found is not None)):
            diskcache.warn_once(folder, "the cache just written does not read back")
            return False
        self._use_disk(found, folder, key, hit=False)
        self.decode_seconds = time.perf_counter() - start
        return True

    def _decode_into(self, tmp: Path, offset: int, mine: range, workers: int) -> tuple[list[tuple[int, str, str]], str | None]:
        """Decode the images ``mine`` on ``workers`` threads, each written straight into its row of the file ``tmp``
        (rows start at ``offset``): the images that failed, ``(index, path, reason)``, and an OS error's text or None."""
        r = self.preprocess.resize
        row_bytes = 3 * r * r
        failed: list[tuple[int, str, str]] = []
        try:
            fd = os.open(tmp, os.O_WRONLY)
            try:
                def work(j: int) -> None:
                    i = mine[j]
                    try:
                        row = np.ascontiguousarray(self.source.load(i, r, self.mode).transpose(2, 0, 1))
                    except BadImageError as e:
                        failed.append((i, e.path, e.reason))
                        return
                    view, at = memoryview(row).cast("B"), offset + i * row_bytes
                    while len(view):  # pwrite may write less than asked
                        k = os.pwrite(fd, view, at)
                        view, at = view[k:], at + k

                self._pool(work, len(mine), workers)
            finally:
                os.close(fd)
        except OSError as e:  # e.g. the disk filled up meanwhile
            return failed, e.strerror or str(e)
        return failed, None

    def _commit_shards(self, tmp: Path, folder: Path, key: str, shape: tuple[int, ...], failed: list[tuple[int, str, str]],
                       problem: str | None) -> bool:
        """Every rank's rows are in ``tmp``: gather the ranks' ``failed`` images and OS ``problem`` s, then rank 0 commits
        the cache (recording the unreadable images) or discards it. False (warned once) when it is not committed;
        raises the first unreadable image unless ``skip_bad_images``."""
        from warmstart.engine.distributed import all_gather_objects, barrier, broadcast_object, world

        w = world()
        parts = all_gather_objects((failed, problem))
        problems = [p for _, p in parts if p]
        errors = {i: BadImageError(path, reason) for f, _ in parts for i, path, reason in f}
        if problems or (errors and not self.skip_bad_images):
            barrier()
            if w.main:
                diskcache.discard(tmp)
            if problems:
                diskcache.warn_once(folder, problems[0])
                return False
            first = errors[min(errors)]
            raise BadImageError(first.path, first.reason, more=len(errors) - 1)
        barrier()  # every rank has written its rows
        why = None
        if w.main:
            try:
                reasons = {str(i): [e.path, e.reason] for i, e in errors.items()}
                diskcache.commit(tmp, folder, key, shape, sorted(errors), {"source": self.source.name, "unreadable": reasons})
            except OSError as e:
                diskcache.discard(tmp)
                why = e.strerror or str(e)
        why = broadcast_object(why)
        if why is not None:
            diskcache.warn_once(folder, why)
            return False
        return True

    def _use_disk(self, found, folder: Path, key: str, *, hit: bool) -> None:
        array, meta = found
        self._images = diskcache.rows(array)  # read row by row (pread): the file is never mapped into this process
        del array
        self.cache_path, self.cache_hit = diskcache.paths(folder, key)[0], hit
        bad = [int(i) for i in meta.get("bad", [])]
        if not bad:
            return
        reasons = meta.get("unreadable", {})
        first_path, first_reason = reasons.get(str(bad[0]), [self.source.describe(bad[0]), "unreadable"])
        if not self.skip_bad_images:  # the cache was built skipping them; this run must not train on them silently
            raise BadImageError(first_path, first_reason, more=len(bad) - 1)
        drop = set(bad)
        keep = [i for i in range(len(self.source)) if i not in drop]
        if not keep:
            raise UserError(f"{self.source.name}: none of the {len(self.source)} images could be decoded (first: {first_path})")
        self._index = self._rows = keep
        self.labels = [self.source.labels[i] for i in keep]
        self.bad_files = [reasons.get(str(i), [self.source.describe(i)])[0] for i in bad]
        log.warning(f"skipped {len(bad)} unreadable images (first: {first_path})")

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
        self._pool(work, len(mine), workers)
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
            return self._images[self._rows[pos] if self._rows is not None else pos], self.labels[pos]
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
        if self.batch_augment is not None:  # the whole square: the batch is cropped and flipped at once
            return img.clone(), label
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
