"""Atomic writes: a file is either its old self or completely new, never half-written.

Every file warmstart writes into a run directory goes through here (temp file in the same folder, fsync,
``os.replace``). A failing write (full disk, no permission) leaves the previous file intact and becomes a
one-line :class:`UserError`.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from warmstart.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write: Callable[[io.BufferedWriter], None], what: str) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a run's files get ordinary permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        hint = "free some disk space or choose another --out" if e.errno == errno.ENOSPC else "check the folder's permissions or choose another --out"
        raise UserError(f"cannot write {what} {path}: {e.strerror or e}; {hint}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_path(path: Path | str, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so matplotlib/numpy infer the format);
    on success it replaces ``path``, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise UserError(f"cannot write {what} {target}: {e.strerror or e}; free some disk space or choose another --out") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temp files of writes that never finished (``.NAME.XXXX.tmp*`` from :func:`_atomic` and
    :func:`atomic_path`) in ``folder`` and below: a process killed between creating one and ``os.replace``
    leaves it behind. Only for a folder no other process is writing to (a run being resumed)."""
    gone = [f for f in Path(folder).rglob(".*.tmp*") if f.is_file()]
    for f in gone:
        f.unlink(missing_ok=True)
    return gone


def write_bytes(path: Path, data: bytes, what: str = "file") -> None:
    _atomic(path, lambda f: f.write(data), what)


def write_text(path: Path, text: str, what: str = "file") -> None:
    write_bytes(path, text.encode("utf-8"), what)


def write_json(path: Path, obj: Any, what: str = "file") -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", what)


def torch_save(obj: Any, path: Path, what: str = "checkpoint") -> None:
    _atomic(path, lambda f: torch.save(obj, f), what)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def check_writable(out: Path) -> None:
    """Fail early, before any work, when ``out`` cannot be created or written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", delete=True)
        probe.close()
    except OSError as e:
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}; choose a folder you can write to") from None
