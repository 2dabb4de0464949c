"""The decoded-image cache on disk: every image decoded once, and once across runs.

An :class:`~warmstart.data.dataset.ImageDataset` decodes its images (resized so the shorter side is
``preprocess.resize``, centre square) into one uint8 ``N x 3 x R x R`` array. Here that array lives in a file,
memory-mapped: ``images-<key>.npy`` (a plain ``.npy``) plus its sidecar ``images-<key>.json``, in the cache
folder (:func:`cache_dir`). The key (:func:`cache_key`) hashes the data's fingerprint (paths, sizes,
modification times and labels of the files, or the torchvision split) and the preprocessing that shapes the
decoded squares (resize and interpolation; the crop, mean and std are applied later, on each sample or batch),
so the next run on the same folder -- another strategy, another candidate, a resume -- decodes nothing,
whatever it crops or normalises.

Writing is atomic: rows go into a temporary file with positioned writes (no memory map open while building:
the process holds a few decoded images, not the cache), the sidecar is written last, and both are renamed
into place. A cache is trusted only when its sidecar parses, names the same key, format, count and shape,
the file has exactly the expected size, and a sha256 over a sample of its rows (up to
:data:`CHECK_ROWS`, first and last included) matches; anything else (a truncated, stale, foreign or damaged
file) is rebuilt. A full-disk or unwritable folder makes the caller fall back to decoding in memory (or per
sample, past the memory limit) with one warning line.

The folder: ``cache_dir=`` / ``--cache-dir``, else ``$WARMSTART_CACHE_DIR``, else ``$XDG_CACHE_HOME/warmstart``,
else ``~/.cache/warmstart``; ``off`` (or ``none``) switches the disk cache off.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.data import cachestore
from warmstart.data.cachestore import OFF, cache_dir  # noqa: F401  (re-exported)
from warmstart.sizes import human_size
from warmstart.errors import UserError

log = logging.getLogger("warmstart.data")

FORMAT = 1
#: rows whose bytes the sidecar's checksum covers (spread evenly, first and last included)
CHECK_ROWS = 32
#: free space kept on the disk beyond the cache itself
HEADROOM = 64 << 20
_warned: set[str] = set()
#: temporary file -> the fd holding its builder's exclusive lock (see cachestore: leases)
_building: dict[str, int] = {}


def cache_key(source_fingerprint: str, kind: str, count: int, resize: int, interpolation: str) -> str:
    """A short hex key for the decoded squares of a source (its fingerprint) at ``resize`` with ``interpolation``."""
    blob = json.dumps({"format": FORMAT, "source": source_fingerprint, "kind": kind, "count": count, "resize": resize,
                       "interpolation": interpolation.lower()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def paths(folder: Path, key: str) -> tuple[Path, Path]:
    """(the ``.npy`` data file, the ``.json`` sidecar) of ``key`` in ``folder``."""
    return folder / f"images-{key}.npy", folder / f"images-{key}.json"


def warn_once(folder: Path | None, why: str) -> None:
    """One warning line per folder and process: the disk cache cannot be used, decoding falls back to memory."""
    name = str(folder)
    if name in _warned:
        return
    _warned.add(name)
    log.warning(f"decoded-image cache: cannot use {folder} ({why}); decoding in memory instead "
                "(point --cache-dir or WARMSTART_CACHE_DIR at a writable folder with free space)")


def _check_rows(count: int) -> list[int]:
    if count <= CHECK_ROWS:
        return list(range(count))
    return sorted({round(i * (count - 1) / (CHECK_ROWS - 1)) for i in range(CHECK_ROWS)})


def checksum(array: np.ndarray, bad: set[int] | frozenset = frozenset()) -> str:
    """sha256 over the sampled rows of ``array`` (N x ...), leaving out rows of images that could not be decoded."""
    h = hashlib.sha256()
    for i in _check_rows(len(array)):
        if i not in bad:
            h.update(np.ascontiguousarray(array[i]).tobytes())
    return h.hexdigest()


class Rows:
    """The rows of a committed cache file, each read with ``os.preadv`` into a fresh uint8 tensor.

    While open, the file holds a shared lock (:func:`~warmstart.data.cachestore.hold_shared`): the cache's size
    cap, ``prune`` and ``clear`` leave it alone. Nothing of the file is mapped into the process: its pages stay in the kernel's page cache (shared with the
    next run, dropped under memory pressure) and out of this process's resident memory. Memory-mapping it
    instead counted every page ever read as the process's RSS: 12.4 GB peak for a transfer run over CIFAR-10's
    60,000 images at 256 px (measured, benchmarks/RESULTS.md). Safe to share between threads (positioned reads)
    and to pickle into DataLoader workers (each process opens the file itself).
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], fd: int | None = None) -> None:
        self.path, self.offset, self.shape = str(path), int(offset), tuple(int(d) for d in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = fd  # given: already open and locked (open_valid), owned from now on
        self._pid = os.getpid() if fd is not None else -1

    def __len__(self) -> int:
        return self.shape[0]

    def _fileno(self) -> int:
        # a forked DataLoader worker reads through the descriptor it inherited (positioned reads share no offset,
        # and the parent's lock covers it); an unpickled copy (spawned worker) opens the file itself
        if self._fd is None:
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
            cachestore.hold_shared(self._fd)
        return self._fd

    def __getitem__(self, row: int) -> torch.Tensor:
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} of a {self.shape[0]}-row cache")
        out = torch.empty(self.shape[1:], dtype=torch.uint8)
        got = os.preadv(self._fileno(), [out.numpy()], self.offset + row * self.row_bytes)
        if got != self.row_bytes:
            raise UserError(f"{self.path}: row {row} is cut short ({got} of {self.row_bytes} bytes); the decoded-image "
                            "cache file was truncated while in use; delete it and rerun")
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def rows(array: Rows | np.memmap) -> Rows:
    """The :class:`Rows` reader of a validated cache file (what :func:`open_valid` returns; or a memory map of one)."""
    return array if isinstance(array, Rows) else Rows(array.filename, array.offset, array.shape)


def open_valid(folder: Path, key: str, shape: tuple[int, ...]) -> tuple[Rows, dict[str, Any]] | None:
    """The cached rows (a :class:`Rows` reader, holding the file's shared lock) and the sidecar, or None when there
    is no trustworthy cache. Everything is checked on the one open file the reader keeps, so an entry evicted or
    replaced meanwhile cannot slip in; a valid read counts as a use (the sidecar is touched)."""
    data, meta_path = paths(folder, key)
    fd = None
    try:
        meta = json.loads(meta_path.read_text())
        if (meta.get("format") != FORMAT or meta.get("key") != key or tuple(meta.get("shape", ())) != tuple(shape)
                or meta.get("dtype") != "uint8"):
            return _stale(data, "sidecar does not match")
        fd = os.open(data, os.O_RDONLY)
        cachestore.hold_shared(fd)
        head = io.BytesIO(os.pread(fd, 4096, 0))
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        got_shape, fortran, dtype = read[np.lib.format.read_magic(head)](head)
        if (dtype != np.uint8 or fortran or tuple(got_shape) != tuple(shape)
                or os.fstat(fd).st_size != meta.get("bytes")):
            return _stale(data, "size or shape differ")
        reader = Rows(data, head.tell(), shape, fd)
        fd = None  # the reader owns it now
        if checksum(reader, set(meta.get("bad", []))) != meta.get("checksum"):
            return _stale(data, "checksum differs")
        cachestore.touch(meta_path)
        return reader, meta
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, UserError, json.JSONDecodeError) as e:
        return _stale(data, f"{type(e).__name__}: {e}")
    finally:
        if fd is not None:
            os.close(fd)


def _stale(data: Path, why: str) -> None:
    log.info(f"decoded-image cache {data.name}: {why}; decoding again")
    return None


def prepare_file(folder: Path, key: str, shape: tuple[int, ...]) -> tuple[Path, int] | str:
    """Create the temporary data file (header written, rows not yet): (path, offset of row 0), or why it cannot be.

    First removes the temporary files that killed runs left behind. The builder holds an exclusive lock on its
    temporary file until :func:`commit` or :func:`discard` (so no other process takes it for a leftover).
    """
    need = int(np.prod(shape))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        cachestore.remove_killed_builds(folder)
        free = shutil.disk_usage(folder).free
        if free < need + HEADROOM:
            return f"{human_size(need)} needed, {human_size(free)} free"
        data, _ = paths(folder, key)
        tmp = data.with_name(f".{data.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    except OSError as e:
        return e.strerror or str(e)
    try:
        with open(tmp, "wb") as f:
            _building[str(tmp)] = lock = os.dup(f.fileno())
            cachestore.hold_exclusive(lock)
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
            offset = f.tell()
            f.truncate(offset + need)  # sparse until the rows arrive
        return tmp, offset
    except OSError as e:
        discard(tmp)
        return e.strerror or str(e)


def commit(tmp: Path, folder: Path, key: str, shape: tuple[int, ...], bad: list[int], extra: dict[str, Any]) -> None:
    """Check the finished temporary file, write the sidecar and rename both into place (the sidecar last); then
    keep the folder under its size cap (:func:`~warmstart.data.cachestore.enforce_cap`), never evicting this entry."""
    data, meta_path = paths(folder, key)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    array = np.load(tmp, mmap_mode="r")
    meta = {"format": FORMAT, "key": key, "shape": list(shape), "dtype": "uint8", "count": int(shape[0]),
            "bytes": tmp.stat().st_size, "bad": sorted(bad), "checksum": checksum(array, set(bad)), **extra}
    del array
    meta_tmp = tmp.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    _release(tmp)  # readers of the committed file take a shared lock: the builder's exclusive one must go first
    os.replace(tmp, data)
    os.replace(meta_tmp, meta_path)
    try:
        cachestore.enforce_cap(folder, keep=[key])
    except (OSError, UserError) as e:  # a bad $WARMSTART_CACHE_MAX, an unreadable folder: the entry is fine
        log.warning(f"decoded-image cache {folder}: cannot keep it under its size cap ({e})")


def _release(tmp: Path) -> None:
    fd = _building.pop(str(tmp), None)
    if fd is not None:
        os.close(fd)


def discard(tmp: Path | None) -> None:
    if tmp is None:
        return
    _release(tmp)
    for p in (tmp, tmp.with_suffix(".json.tmp")):
        try:
            p.unlink()
        except OSError:
            pass
