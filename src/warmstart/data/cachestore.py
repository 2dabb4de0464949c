"""The cache folder as a whole: list it, prune it, clear it, and keep it under a size cap.

The folder (:func:`cache_dir`: ``--cache-dir``, ``$WARMSTART_CACHE_DIR``, ``$XDG_CACHE_HOME/warmstart`` or
``~/.cache/warmstart``) holds three kinds of entries:

``decoded images``
    ``images-<key>.npy`` + its sidecar ``images-<key>.json`` (:mod:`warmstart.data.diskcache`); the sidecar names
    the data set (``source``) and the shape. Rebuilt by the next run that needs it, so the size cap may evict it.
``download``
    a sub-folder of ``downloads/`` or ``datasets/`` (data sets fetched by name), one entry per folder. Counted in the
    total, removed by ``clear`` and ``prune`` when asked, but never evicted by the cap: offline, a removed download
    cannot come back.
``other``
    any other file, listed so that the total is the folder's real size.

(The feature cache of a run lives in that run's own folder, ``<run>/features``, and goes with the run.)

Last use is the modification time of the sidecar, which :func:`touch` sets on every read (access times are
unreliable: ``noatime`` mounts); for a download, its newest file.

Leases. A process that reads a decoded-image file holds a shared ``flock`` on it for as long as it has it
open (:func:`hold_shared`); removing one (eviction, ``prune``, ``clear``) first takes an exclusive lock without
waiting (:func:`try_exclusive`) and leaves the entry alone when that fails. A builder holds an exclusive lock
on its temporary file: a temporary file whose process is gone (the pid in its name is not alive here) and that
nobody locks is a leftover of a killed run; the next build and ``prune`` remove it. Without ``fcntl`` (Windows)
there are no locks: eviction then relies on the open file staying readable after its name is removed (POSIX).

The cap: ``max_size=`` / ``warmstart cache --max-size``, else ``$WARMSTART_CACHE_MAX`` (``20G``, ``500M``,
``1.5GiB``, ``20GB``; ``none`` for no cap), else half of the space the cache could use -- what the disk has
free plus what the cache already holds -- so the cache never takes the last half of a disk's free space from
runs and data. It is enforced after every decoded-image entry is written: least recently used first, never the
entry just written, never an entry in use.

Only the standard library here: ``warmstart cache`` needs no torch.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from warmstart.errors import UserError, unknown
from warmstart.sizes import human_size, parse_size  # noqa: F401  (parse_size: re-exported)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no leases (see the module docstring)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("warmstart.data")

OFF = ("off", "none", "false", "0", "")
MAX_ENV = "WARMSTART_CACHE_MAX"
#: the cap by default: this share of (free space + what the cache holds)
DEFAULT_SHARE = 0.5
IMAGES, DOWNLOAD, OTHER = "decoded images", "download", "other"
KINDS = {"images": IMAGES, "downloads": DOWNLOAD, "download": DOWNLOAD, "other": OTHER}
DOWNLOAD_FOLDERS = ("downloads", "datasets")
#: ``.<stem>.<pid>.<8 hex>[.json].tmp``: the temporary files of a build (diskcache.prepare_file/commit)
TEMP = re.compile(r"^\.(?P<stem>.+)\.(?P<pid>\d+)\.(?P<id>[0-9a-f]{8})(?:\.json)?\.tmp$")
DAY = 86400.0


# --------------------------------------------------------------------------------------------- folder
def cache_dir(setting: str | os.PathLike | bool | None = None) -> Path | None:
    """The cache folder, or None when the disk cache is off.

    ``setting``: a folder; ``None``/``True``: ``$WARMSTART_CACHE_DIR``, else ``$XDG_CACHE_HOME/warmstart``, else
    ``~/.cache/warmstart``; ``False`` or ``off``/``none``: no disk cache.
    """
    if setting is False:
        return None
    if setting is None or setting is True:
        setting = os.environ.get("WARMSTART_CACHE_DIR")
        if setting is None:
            return default_cache_dir()
    if str(setting).strip().lower() in OFF:
        return None
    return Path(setting).expanduser()


def default_cache_dir() -> Path:
    """The cache folder when nothing names one: ``$XDG_CACHE_HOME/warmstart``, else ``~/.cache/warmstart``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "warmstart"


_folder = cache_dir  # for cache(), whose cache_dir= argument hides the function


# --------------------------------------------------------------------------------------------- leases
def hold_shared(fd: int) -> None:
    """Mark the open file ``fd`` as being read (a shared lock, held until ``fd`` is closed): not evicted meanwhile."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:  # a filesystem without flock: reading still works
            pass


def hold_exclusive(fd: int) -> None:
    """Mark the open file ``fd`` as being built (an exclusive lock, held until ``fd`` is closed)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a filesystem without flock: the pid in the name still protects it on this machine
            pass


def try_exclusive(path: Path) -> int | None:
    """An fd of ``path`` with an exclusive lock, or None when someone holds a lock on it (it is in use).

    A missing file raises FileNotFoundError. Close the fd (which releases the lock) after removing the file.
    """
    fd = os.open(path, os.O_RDONLY)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def in_use(path: Path) -> bool:
    """Whether some process holds a lock on ``path`` (reads it, or builds it)."""
    try:
        fd = try_exclusive(path)
    except OSError:
        return False
    if fd is None:
        return True
    os.close(fd)
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    except OSError:
        return False
    return True


def remove_killed_builds(folder: Path) -> list[tuple[Path, int]]:
    """Remove the temporary files of builds whose process is gone (killed mid-build): the pid in the name is not
    alive here and nobody holds a lock on the file. Returns what was removed, with the bytes each took."""
    gone: list[tuple[Path, int]] = []
    freed = 0
    try:
        names = list(Path(folder).iterdir())
    except OSError:
        return gone
    for p in names:
        m = TEMP.match(p.name)
        if not m or not p.is_file() or pid_alive(int(m["pid"])):
            continue
        try:
            fd = try_exclusive(p)
        except OSError:
            continue
        if fd is None:  # a live builder on another machine sharing the folder
            continue
        try:
            size = _size(p)
            p.unlink()
            gone.append((p, size))
            freed += size
        except OSError:
            pass
        finally:
            os.close(fd)
    if gone:
        log.info(f"cache {folder}: removed {len(gone)} temporary file(s) of runs that were killed while building "
                 f"({human_size(freed)})")
    return gone


# --------------------------------------------------------------------------------------------- entries
@dataclass
class Entry:
    """One entry of the cache folder."""

    kind: str                 # decoded images | download | other
    name: str                 # the data set (or the file's name)
    size: int                 # bytes on disk, all its files
    last_use: float           # seconds since the epoch
    paths: list[Path]         # its files (for a download: the folder); the first is the one readers lock
    detail: str = ""          # e.g. "244 images at 256 px"
    in_use: bool = False

    @property
    def label(self) -> str:
        return self.paths[0].name if self.kind != DOWNLOAD else f"{self.paths[0].parent.name}/{self.paths[0].name}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "size": self.size, "last_use": self.last_use,
                "entry": self.label, "detail": self.detail, "in_use": self.in_use, "paths": [str(p) for p in self.paths]}


def _size(p: Path) -> int:
    try:
        st = p.lstat()
    except OSError:
        return 0
    blocks = getattr(st, "st_blocks", None)  # what it takes on disk (a sparse file being built: its rows so far)
    return blocks * 512 if blocks is not None else st.st_size


def _tree(folder: Path) -> tuple[int, float]:
    total, newest = 0, 0.0
    for root, _, files in os.walk(folder):
        for f in files:
            p = Path(root, f)
            total += _size(p)
            try:
                newest = max(newest, p.lstat().st_mtime)
            except OSError:
                pass
    if not newest:
        try:
            newest = folder.stat().st_mtime
        except OSError:
            pass
    return total, newest


def entries(folder: Path | None) -> list[Entry]:
    """The entries of the cache folder (empty when it does not exist), most recently used first."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    out: list[Entry] = []
    seen: set[Path] = set()
    for data in sorted(folder.glob("images-*.npy")):
        meta_path = data.with_suffix(".json")
        seen.update((data, meta_path))
        meta: dict[str, Any] = {}
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            pass
        shape = meta.get("shape") or []
        detail = f"{shape[0]} images at {shape[-1]} px" if len(shape) == 4 else "incomplete (no sidecar): rebuilt on use"
        stamp = meta_path if meta_path.is_file() else data
        try:
            last = stamp.stat().st_mtime
        except OSError:
            continue
        files = [data] + ([meta_path] if meta_path.is_file() else [])
        out.append(Entry(IMAGES, str(meta.get("source", "?")), sum(_size(p) for p in files), last, files, detail,
                         in_use(data)))
    for sub in DOWNLOAD_FOLDERS:
        base = folder / sub
        seen.add(base)
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.is_dir():
                size, last = _tree(d)
                out.append(Entry(DOWNLOAD, d.name, size, last, [d], "fetched data set"))
            else:
                out.append(Entry(OTHER, "-", _size(d), d.lstat().st_mtime, [d]))
    for p in sorted(folder.iterdir()):
        if p in seen or p.name.endswith(".json") and p.with_suffix(".npy") in seen:
            continue
        m = TEMP.match(p.name)
        if m:
            alive = pid_alive(int(m["pid"]))
            detail = f"being built by process {m['pid']}" if alive else f"left by killed process {m['pid']}"
        else:
            detail = ""
        size, last = _tree(p) if p.is_dir() else (_size(p), p.lstat().st_mtime)
        out.append(Entry(OTHER, "-", size, last, [p], detail, bool(m and alive)))
    return sorted(out, key=lambda e: -e.last_use)


def touch(path: Path) -> None:
    """Record a use of the entry whose sidecar is ``path`` (its modification time = now); silent when read-only."""
    try:
        os.utime(path)
    except OSError:
        pass


def remove(entry: Entry) -> bool:
    """Remove ``entry``'s files unless a process uses it (holds a lock). True when removed."""
    try:
        if entry.kind == DOWNLOAD or entry.paths[0].is_dir():
            shutil.rmtree(entry.paths[0])
            return True
        m = TEMP.match(entry.paths[0].name)
        if m and pid_alive(int(m["pid"])):
            return False
        fd = try_exclusive(entry.paths[0])
    except FileNotFoundError:
        return True
    except OSError as e:
        log.warning(f"cache: cannot remove {entry.paths[0]} ({e.strerror or e})")
        return False
    if fd is None:
        return False
    try:
        for p in reversed(entry.paths):  # the sidecar first: a half-removed entry is never trusted
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    except OSError as e:
        log.warning(f"cache: cannot remove {entry.paths[0]} ({e.strerror or e})")
        return False
    finally:
        os.close(fd)
    return True


# --------------------------------------------------------------------------------------------- cap
def cap_bytes(max_size: str | int | None = None, folder: Path | None = None,
              held: int | None = None) -> tuple[int | None, str]:
    """The size cap in bytes (None: no cap) and where it comes from, for messages."""
    if max_size is not None:
        return parse_size(max_size, "--max-size"), "--max-size"
    env = os.environ.get(MAX_ENV)
    if env is not None and env.strip():
        return parse_size(env, f"${MAX_ENV}"), f"${MAX_ENV}"
    if folder is None:
        return None, "no folder"
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return None, "disk size unknown"
    if held is None:
        held = sum(e.size for e in entries(folder))
    return int(DEFAULT_SHARE * (free + held)), f"default: half of free space + cache ({human_size(free)} free)"


def enforce_cap(folder: Path, max_size: str | int | None = None, *, keep: Iterable[str] = ()) -> list[Entry]:
    """Evict decoded-image entries, least recently used first, until the folder fits under the cap.

    ``keep``: keys (``images-<key>``) never evicted (the entry just written). Entries in use and downloads are
    never evicted. Returns the evicted entries.
    """
    folder = Path(folder)
    remove_killed_builds(folder)
    all_entries = entries(folder)
    total = sum(e.size for e in all_entries)
    cap, why = cap_bytes(max_size, folder, total)
    if cap is None or total <= cap:
        return []
    keep_names = {f"images-{k}.npy" for k in keep}
    evicted: list[Entry] = []
    for e in sorted(all_entries, key=lambda e: e.last_use):  # least recently used first
        if total <= cap:
            break
        if e.kind != IMAGES or e.paths[0].name in keep_names or e.in_use:
            continue
        if remove(e):
            evicted.append(e)
            total -= e.size
    if evicted:
        log.info(f"cache {folder}: evicted {count(len(evicted))}, least recently used first "
                 f"({human_size(sum(e.size for e in evicted))}) to stay under {human_size(cap)} ({why})")
    if total > cap:
        log.warning(f"cache {folder} holds {human_size(total)}, over its cap of {human_size(cap)} ({why}): what is left "
                    "is in use, just written or downloaded data sets; remove those with 'warmstart cache clear' or "
                    "'warmstart cache prune'")
    return evicted


# --------------------------------------------------------------------------------------------- the front door
def count(n: int) -> str:
    """``1 entry``, ``3 entries``."""
    return f"{n} entr{'y' if n == 1 else 'ies'}"


@dataclass
class CacheReport:
    """What :func:`cache` found and did: ``entries`` (what is there now), ``removed``, ``kept_in_use``."""

    folder: Path | None
    entries: list[Entry]
    removed: list[Entry] = field(default_factory=list)
    kept_in_use: list[Entry] = field(default_factory=list)
    cap: int | None = None
    cap_source: str = ""
    action: str = "list"

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)

    def table(self) -> str:
        """The listing as a text table (what ``warmstart cache`` prints)."""
        lines = []
        if self.removed or self.action != "list":
            what = {"clear": "cleared", "prune": "pruned", "cap": "evicted"}.get(self.action, "removed")
            lines.append(f"{what}: {count(len(self.removed))}, "
                         f"{human_size(sum(e.size for e in self.removed))}")
        for e in self.kept_in_use:
            lines.append(f"kept (in use by a running process): {e.label}")
        if self.folder is None:
            return "\n".join(lines + ["the disk cache is off (WARMSTART_CACHE_DIR=off)"])
        cap = "no cap" if self.cap is None else f"cap {human_size(self.cap)} ({self.cap_source})"
        lines.append(f"cache folder {self.folder}: {count(len(self.entries))}, "
                     f"{human_size(self.total)}; {cap}")
        if self.entries:
            rows = [("kind", "data set", "size", "last use", "entry", "")]
            for e in self.entries:
                rows.append((e.kind, e.name, human_size(e.size), time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_use)),
                             e.label, ", ".join(x for x in (e.detail, "in use" if e.in_use else "") if x)))
            widths = [max(len(r[i]) for r in rows) for i in range(5)]
            for r in rows:
                lines.append(("  ".join(c.ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                              + "  " + r[5]).rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:  # a notebook shows the table
        import html

        return f"<pre>{html.escape(self.table())}</pre>"

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder) if self.folder else None, "total": self.total, "cap": self.cap,
                "cap_source": self.cap_source, "entries": [e.to_dict() for e in self.entries],
                "removed": [e.to_dict() for e in self.removed], "kept_in_use": [e.to_dict() for e in self.kept_in_use]}


def _kinds(kind: str | Sequence[str] | None) -> set[str] | None:
    if kind is None:
        return None
    names = [kind] if isinstance(kind, str) else list(kind)
    out = set()
    for k in names:
        if k.lower() not in KINDS:
            raise unknown("cache kind (--kind)", k, ["images", "downloads", "other"])
        out.add(KINDS[k.lower()])
    return out


def cache(action: str = "list", *, older_than: float | None = None, max_size: str | int | None = None,
          kind: str | Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None) -> CacheReport:
    """List, prune or clear the cache folder, or evict down to a size cap (``ws.cache``; ``warmstart cache``).

    ``action``: ``"list"`` (with ``max_size``: first evict least recently used decoded images down to it),
    ``"prune"`` (remove entries not used for ``older_than`` days, and temporary files of killed runs) or
    ``"clear"`` (remove every entry). ``kind``: only ``images``, ``downloads`` or ``other`` entries. Entries in
    use by a running process are kept (``kept_in_use``). ``cache_dir``: the folder (default: :func:`cache_dir`).
    """
    folder = _folder(cache_dir)
    if action not in ("list", "prune", "clear"):
        raise unknown("cache action", action, ["list", "prune", "clear"])
    kinds = _kinds(kind)
    if action == "prune":
        if older_than is None:
            raise UserError("cache prune needs an age: --older-than DAYS (e.g. 30)")
        if older_than < 0:
            raise UserError(f"--older-than {older_than}: give a number of days >= 0")
    if max_size is not None:
        parse_size(max_size, "--max-size")  # a typo fails before anything is removed
    report = CacheReport(folder, [], action=action)
    if folder is None:
        return report
    if folder.is_dir():
        if action == "list" and max_size is not None:
            report.removed = enforce_cap(folder, max_size)
            report.action = "cap"
        elif action in ("prune", "clear"):
            gone_tmp = remove_killed_builds(folder)
            report.removed += [Entry(OTHER, "-", size, 0.0, [p], "temporary file of a killed run") for p, size in gone_tmp]
            limit = time.time() - (older_than or 0) * DAY
            for e in entries(folder):
                if kinds is not None and e.kind not in kinds:
                    continue
                if action == "prune" and e.last_use > limit:
                    continue
                if e.in_use:
                    report.kept_in_use.append(e)
                elif remove(e):
                    report.removed.append(e)
                else:
                    report.kept_in_use.append(e)
    report.entries = entries(folder)
    report.cap, report.cap_source = cap_bytes(max_size, folder, report.total)
    return report


def interactive() -> bool:
    """Whether stdin is a terminal a person can answer on."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False
