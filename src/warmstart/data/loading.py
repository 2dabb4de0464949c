"""DATA argument -> train / val (/ test) image sources plus class names: listed and validated, nothing decoded.

Accepted forms of DATA (the first that applies wins):

1. an existing folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``), optionally ``test/``,
   each with one subfolder per class. With ``train/`` and only ``test/``, the test split is used for
   validation (model selection) and ``DataSplits.val_is_test`` is set; with ``train/`` alone, a
   ``val_fraction`` of it is held out;
2. an existing folder of class subfolders (torchvision ``ImageFolder`` layout): split into train/val,
   stratified by class, ``val_fraction`` of every class to val, fixed by ``seed``;
3. an existing ``.csv`` file with a header ``path,label[,split]``; paths relative to the CSV's folder;
   split values ``train``/``val``/``test``; without a split column, a stratified ``val_fraction`` split;
4. a data set name: ``digits`` (scikit-learn, bundled), a torchvision data set (see
   :mod:`warmstart.data.named`) or an archive of :mod:`warmstart.data.fetch` (``hymenoptera``,
   ``cifar10-jpeg``: found in the data root or a mirror, else downloaded, then read as the folder of 1.).

Class names are the sorted class folder names, the sorted unique CSV labels (numerically sorted when all
are integers), or the data set's own classes. Images inside class folders are found recursively; hidden
files (``.DS_Store``, ``._x.jpg``) and files without an image extension (:data:`IMG_EXTENSIONS`) are
ignored. Every problem the user can fix is a one-line :class:`UserError`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from warmstart.data import fetch, named
from warmstart.data.images import IMG_EXTENSIONS, is_image_file
from warmstart.data.sources import FileSource, ImageSource, class_counts
from warmstart.errors import UserError, did_you_mean, unknown
from warmstart.options import OPTIONS

log = logging.getLogger("warmstart.data")

_VAL_DIRS = ("val", "valid", "validation")
_SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@dataclass
class DataSplits:
    """The listed splits of a data set. ``source`` says where they came from and how val was chosen."""

    train: ImageSource
    val: ImageSource
    test: ImageSource | None
    classes: list[str]
    source: str
    fingerprint: str
    val_is_test: bool = False  # True when the validation split is the data set's test split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def name(self) -> str:
        return self.train.name


def load_data(data: str | Path, *, data_root: str | Path | None = None, val_fraction: float = OPTIONS["val_fraction"].default,
              subset: int | None = None, seed: int = 0, skip_bad_images: bool = False,
              download: bool = True) -> DataSplits:
    """List and validate DATA (a folder, a CSV file or a data set name) -> :class:`DataSplits`.

    Cheap: files are listed, not decoded (decoding happens once, in :class:`ImageDataset`).
    ``subset=N`` keeps at most N images per class in every split (chosen with ``seed``).
    ``skip_bad_images`` here skips CSV rows whose file does not exist (with one warning) instead of failing.
    ``download`` lets a missing named data set (torchvision's, or :mod:`~warmstart.data.fetch`'s) be downloaded
    into ``data_root``.
    """
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise UserError(f"val fraction must be between 0 and 1 (exclusive), got {val_fraction}; "
                        "e.g. 0.2 holds out a fifth of every class for validation")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise UserError(f"subset must be a whole number of images per class >= 1, got {subset}")
    val_fraction = float(val_fraction)

    path = Path(data).expanduser()
    text = str(data)
    if path.is_dir():
        roles, classes, source, val_is_test = _from_folder(path, val_fraction, seed)
    elif path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path}: a file must be a CSV (path,label[,split]); "
                            "for images pass their folder (one subfolder per class)")
        roles, classes, source, val_is_test = _from_csv(path, val_fraction, seed, skip_bad_images)
    elif named.normalize_name(text) in named.NAMES:
        name = named.normalize_name(text)
        if name == "digits":
            src, classes = named.load_digits()
            tr, va = stratified_split(src.labels, val_fraction, seed, classes, where="digits")
            roles = {"train": src.select(tr), "val": src.select(va)}
            source, val_is_test = f"digits (scikit-learn, bundled; {_split_note(val_fraction, seed)})", False
        elif name in fetch.DATASETS:
            folder = fetch.fetch_data(name, data_root=data_root, download=download)
            roles, classes, source, val_is_test = _from_folder(folder, val_fraction, seed)
            source = f"{name}: {source}"
        else:
            root = Path(data_root).expanduser() if data_root is not None else named.default_root()
            roles, classes, source = named.load_torchvision(name, root, download=download)
            val_is_test = named.TORCHVISION[name].val_is_test
    else:
        raise named.not_found(text)

    if subset is not None:
        roles = {role: take_per_class(src, subset, seed) for role, src in roles.items()}
        source += f"; at most {subset} images per class per split"
    for src in roles.values():
        src.classes = list(classes)
    h = hashlib.sha256(repr(classes).encode())
    for role in ("train", "val", "test"):
        h.update(f"{role}:{roles[role].fingerprint if role in roles else '-'}".encode())
    return DataSplits(train=roles["train"], val=roles["val"], test=roles.get("test"), classes=list(classes),
                      source=source, fingerprint=h.hexdigest()[:16], val_is_test=val_is_test)


def describe_splits(splits: DataSplits) -> str:
    """One line, e.g. ``hymenoptera_data: train 245 / val 153 images, 2 classes``."""
    parts = [f"train {len(splits.train)}", f"val {len(splits.val)}"]
    if splits.test is not None:
        parts.append(f"test {len(splits.test)}")
    note = " (val = test split)" if splits.val_is_test else ""
    return f"{splits.name}: {' / '.join(parts)} images{note}, {len(splits.classes)} classes"


# ---------------------------------------------------------------------------------------------- helpers


def _split_note(val_fraction: float, seed: int) -> str:
    return f"val = {val_fraction:.0%} of every class, stratified, seed {seed}"


def _from_folder(root: Path, val_fraction: float, seed: int):
    subdirs = {e.name.lower(): Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}
    if "train" in subdirs:
        train_dir = subdirs["train"]
        val_dir = next((subdirs[n] for n in _VAL_DIRS if n in subdirs), None)
        test_dir = subdirs.get("test")
        paths, labels, classes = list_image_folder(train_dir)
        train = FileSource(paths, labels, name=root.name)
        roles: dict[str, ImageSource] = {"train": train}
        val_is_test = False
        if val_dir is not None:
            roles["val"] = _list_like(val_dir, classes, train_dir, root.name)
            if test_dir is not None:
                roles["test"] = _list_like(test_dir, classes, train_dir, root.name)
            how = f"{train_dir.name}/ + {val_dir.name}/" + (f" + {test_dir.name}/" if test_dir else "")
        elif test_dir is not None:
            roles["val"] = _list_like(test_dir, classes, train_dir, root.name)
            val_is_test = True
            how = f"{train_dir.name}/ + {test_dir.name}/ used as val: there is no val/ folder"
        else:
            tr, va = stratified_split(train.labels, val_fraction, seed, classes, where=str(train_dir))
            roles = {"train": train.select(tr), "val": train.select(va)}
            how = f"{train_dir.name}/ only: {_split_note(val_fraction, seed)}"
        return roles, classes, f"{root} ({how})", val_is_test
    paths, labels, classes = list_image_folder(root)
    src = FileSource(paths, labels, name=root.name)
    tr, va = stratified_split(src.labels, val_fraction, seed, classes, where=str(root))
    return {"train": src.select(tr), "val": src.select(va)}, classes, \
        f"{root} (one folder; {_split_note(val_fraction, seed)})", False


def list_image_folder(folder: Path) -> tuple[list[str], list[int], list[str]]:
    """An ImageFolder-style folder -> (image paths, labels, sorted class names), validated."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"{folder}: cannot read folder ({e.strerror}); check the path and its permissions") from None
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not class_dirs:
        loose = sum(1 for e in entries if e.is_file() and is_image_file(e.name))
        what = f"has {loose} images but no class subfolders" if loose else "has no class subfolders"
        raise UserError(f"{folder}: {what}; put each class's images in its own subfolder ({folder}/<class>/image.jpg)")
    if len(class_dirs) == 1:
        raise UserError(f'{folder}: only one class folder ("{class_dirs[0].name}"); classification needs at least '
                        "2 classes, one subfolder each")
    paths: list[str] = []
    labels: list[int] = []
    for k, d in enumerate(class_dirs):
        found = _images_under(d.path)
        if not found:
            raise UserError(f"{d.path}: class folder \"{d.name}\" has no images "
                            f"({' '.join(IMG_EXTENSIONS)}); add images or remove the folder")
        paths += found
        labels += [k] * len(found)
    return paths, labels, [d.name for d in class_dirs]


def _images_under(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f)]
    return found


def _list_like(folder: Path, classes: list[str], train_dir: Path, name: str) -> FileSource:
    """List a val/test folder and check it has exactly the train folder's classes."""
    entries = {e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")}
    for c in classes:
        if c not in entries:
            raise UserError(f'{folder}: no class folder "{c}" (it is in {train_dir}); every split needs the same '
                            "class folders")
    for c in sorted(entries - set(classes)):
        raise UserError(f'{folder / c}: class "{c}" is not in {train_dir}{did_you_mean(c, classes)}; every split '
                        "needs the same class folders")
    paths, labels, found = list_image_folder(folder)
    assert found == classes
    return FileSource(paths, labels, name=name)


def _sort_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(labels)


def _from_csv(csv_path: Path, val_fraction: float, seed: int, skip_missing: bool):
    try:
        f = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise UserError(f"{csv_path}: cannot read ({e.strerror})") from None
    try:
        with f:
            rows, missing = _csv_rows(f, csv_path, skip_missing)
    except UnicodeDecodeError as e:
        raise UserError(f"{csv_path}: not UTF-8 text (byte {e.start} cannot be decoded); save the CSV as UTF-8") from None
    except csv.Error as e:
        raise UserError(f"{csv_path}: not a readable CSV ({e}); write one row path,label[,split] per line") from None
    if missing:
        log.warning(f"skipped {len(missing)} CSV rows whose file does not exist (first: {missing[0]})")
    if not rows:
        raise UserError(f"{csv_path}: no rows with images; add rows path,label[,split] below the header")
    classes = _sort_labels({r[1] for r in rows})
    if len(classes) < 2:
        raise UserError(f'{csv_path}: only one label ("{classes[0]}"); classification needs at least 2 classes')
    index = {c: k for k, c in enumerate(classes)}
    by_split: dict[str, tuple[list[str], list[int]]] = {}
    for p, label, split in rows:
        ps, ls = by_split.setdefault(split, ([], []))
        ps.append(p)
        ls.append(index[label])
    name = csv_path.stem
    src = {s: FileSource(ps, ls, name=name) for s, (ps, ls) in by_split.items()}
    if "train" not in src:
        raise UserError(f'{csv_path}: no rows with split "train"; mark the training images with split=train')
    val_is_test = False
    if "val" in src:
        how = "split column"
    elif "test" in src:
        src["val"], val_is_test = src.pop("test"), True
        how = "split column; test rows used as val: there are no val rows"
    else:
        tr, va = stratified_split(src["train"].labels, val_fraction, seed, classes, where=str(csv_path))
        src["train"], src["val"] = src["train"].select(tr), src["train"].select(va)
        how = _split_note(val_fraction, seed)
    for role in ("train", "val", "test"):
        if role in src:
            present = set(src[role].labels)
            for k, c in enumerate(classes):
                if k not in present and (role != "test"):
                    raise UserError(f'{csv_path}: class "{c}" has no {role} rows; every split needs every class')
    return src, classes, f"{csv_path} (CSV; {how})", val_is_test


def _csv_rows(f, csv_path: Path, skip_missing: bool) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(path, label, split) of every row, validated; rows whose file is missing, when skipping them."""
    base = csv_path.parent
    reader = csv.DictReader(f)
    header = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
    for col in ("path", "label"):
        if col not in header:
            found = ", ".join(h for h in header if h) or "nothing"
            raise UserError(f'{csv_path}: no "{col}" column in the header row (found: {found}); '
                            "the first row must name the columns path,label[,split]")
    has_split = "split" in header
    rows: list[tuple[str, str, str]] = []
    missing: list[str] = []
    for row in reader:
        line = reader.line_num
        rel = (row.get(header["path"]) or "").strip()
        label = (row.get(header["label"]) or "").strip()
        if not rel and not label and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank row
        if not rel:
            raise UserError(f"{csv_path} line {line}: blank path; every row needs path,label")
        if not label:
            raise UserError(f"{csv_path} line {line}: blank label for {rel}; give every image a class")
        split = "train"
        if has_split:
            raw = (row.get(header["split"]) or "").strip().lower()
            if raw not in _SPLIT_VALUES:
                raise UserError(f"{csv_path} line {line}: " + str(unknown("split", raw, ("train", "val", "test"))))
            split = _SPLIT_VALUES[raw]
        full = base / rel
        try:
            full = Path(rel).expanduser()
            full = full if full.is_absolute() else base / full
            is_file = full.is_file()
        except (OSError, ValueError, RuntimeError) as e:  # a name too long, a NUL byte, ~unknown_user
            if not skip_missing:
                raise UserError(f"{csv_path} line {line}: unusable path {rel[:60]!r}{'...' if len(rel) > 60 else ''} "
                                f"({getattr(e, 'strerror', None) or e}); fix the path or pass --skip-bad-images") from None
            is_file = False
        if not is_file:
            if skip_missing:
                missing.append(f"line {line}: {full}")
                continue
            raise UserError(f"{csv_path} line {line}: no such file {rel} (looked for {full}); fix the path "
                            "(relative to the CSV's folder) or pass --skip-bad-images")
        rows.append((str(full), label, split))
    return rows, missing


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int, classes: Sequence[str] | None = None,
                     *, where: str = "data") -> tuple[list[int], list[int]]:
    """Indices (train, val): round(n * val_fraction) of every class to val (at least 1, at most n - 1).

    Random within each class with a fixed ``seed``; each index list is returned in ascending order.
    """
    labels_a = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for k in np.unique(labels_a):
        idx = np.flatnonzero(labels_a == k)
        if len(idx) < 2:
            name = classes[k] if classes is not None else str(k)
            raise UserError(f'{where}: class "{name}" has {len(idx)} image; a train/val split needs at least 2 '
                            "per class (add images, or give a separate val folder/split)")
        n_val = min(max(int(round(len(idx) * val_fraction)), 1), len(idx) - 1)
        perm = rng.permutation(idx)
        val += perm[:n_val].tolist()
        train += perm[n_val:].tolist()
    return sorted(train), sorted(val)


def take_per_class(source: ImageSource, n: int, seed: int) -> ImageSource:
    """At most ``n`` images of every class (random with ``seed``; original order kept)."""
    labels = np.asarray(source.labels)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        keep += (idx if len(idx) <= n else rng.choice(idx, n, replace=False)).tolist()
    return source.select(sorted(keep))


__all__ = ["DataSplits", "load_data", "describe_splits", "class_counts", "stratified_split", "take_per_class",
           "list_image_folder"]
