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
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.errors import UserError

log = logging.getLogger("warmstart.data")

FORMAT = 1
#: rows whose bytes the sidecar's checksum covers (spread evenly, first and last included)
CHECK_ROWS = 32
#: free space kept on the disk beyond the cache itself
HEADROOM = 64 << 20
OFF = ("off", "none", "false", "0", "")

_warned: set[str] = set()


def cache_dir(setting: str | os.PathLike | bool | None = None) -> Path | None:
    """The folder for decoded-image caches, or None when the disk cache is off (see the module docstring)."""
    if setting is False:
        return None
    if setting is None or setting is True:
        setting = os.environ.get("WARMSTART_CACHE_DIR")
        if setting is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            return Path(base) / "warmstart"
    if str(setting).strip().lower() in OFF:
        return None
    return Path(setting).expanduser()


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

    Nothing of the file is mapped into the process: its pages stay in the kernel's page cache (shared with the
    next run, dropped under memory pressure) and out of this process's resident memory. Memory-mapping it
    instead counted every page ever read as the process's RSS: 12.4 GB peak for a transfer run over CIFAR-10's
    60,000 images at 256 px (measured, benchmarks/RESULTS.md). Safe to share between threads (positioned reads)
    and to pickle into DataLoader workers (each process opens the file itself).
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...]) -> None:
        self.path, self.offset, self.shape = str(path), int(offset), tuple(int(d) for d in shape)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    def _fileno(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked DataLoader worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
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


def rows(array: np.memmap) -> Rows:
    """The :class:`Rows` reader of a validated cache file (the memory map :func:`open_valid` checked it with)."""
    return Rows(array.filename, array.offset, array.shape)


def open_valid(folder: Path, key: str, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached array (memory-mapped, copy-on-write) and its sidecar, or None when there is no trustworthy cache."""
    data, meta_path = paths(folder, key)
    try:
        meta = json.loads(meta_path.read_text())
        if (meta.get("format") != FORMAT or meta.get("key") != key or tuple(meta.get("shape", ())) != tuple(shape)
                or meta.get("dtype") != "uint8"):
            return _stale(data, "sidecar does not match")
        array = np.load(data, mmap_mode="c")
        if array.dtype != np.uint8 or array.shape != tuple(shape) or data.stat().st_size != meta.get("bytes"):
            return _stale(data, "size or shape differ")
        if checksum(array, set(meta.get("bad", []))) != meta.get("checksum"):
            return _stale(data, "checksum differs")
        return array, meta
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError, json.JSONDecodeError) as e:
        return _stale(data, f"{type(e).__name__}: {e}")


def _stale(data: Path, why: str) -> None:
    log.info(f"decoded-image cache {data.name}: {why}; decoding again")
    return None


def prepare_file(folder: Path, key: str, shape: tuple[int, ...]) -> tuple[Path, int] | str:
    """Create the temporary data file (header written, rows not yet): (path, offset of row 0), or why it cannot be."""
    need = int(np.prod(shape))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < need + HEADROOM:
            return f"{need / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB free"
        data, _ = paths(folder, key)
        tmp = data.with_name(f".{data.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
            offset = f.tell()
            f.truncate(offset + need)  # sparse until the rows arrive
        return tmp, offset
    except OSError as e:
        return e.strerror or str(e)


def commit(tmp: Path, folder: Path, key: str, shape: tuple[int, ...], bad: list[int], extra: dict[str, Any]) -> None:
    """Check the finished temporary file, write the sidecar and rename both into place (the sidecar last)."""
    data, meta_path = paths(folder, key)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    array = np.load(tmp, mmap_mode="r")
    meta = {"format": FORMAT, "key": key, "shape": list(shape), "dtype": "uint8", "count": int(shape[0]),
            "bytes": tmp.stat().st_size, "bad": sorted(bad), "checksum": checksum(array, set(bad)), **extra}
    del array
    meta_tmp = tmp.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, data)
    os.replace(meta_tmp, meta_path)


def discard(tmp: Path | None) -> None:
    if tmp is None:
        return
    for p in (tmp, tmp.with_suffix(".json.tmp")):
        try:
            p.unlink()
        except OSError:
            pass
