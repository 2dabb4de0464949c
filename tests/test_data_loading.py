"""load_data: every DATA form on real data, splits, subsets, fingerprints, and every validation error."""

from __future__ import annotations

import os
import shutil
import struct
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _reliability import copy_images

from warmstart.data import class_counts, describe_splits, load_data
from warmstart.errors import UserError


@pytest.fixture
def small_folder(tmp_path, hymenoptera) -> Path:
    """tmp/imgs/{ants,bees}/ with 6 real JPEGs each."""
    root = tmp_path / "imgs"
    for c in ("ants", "bees"):
        copy_images(hymenoptera / "train" / c, root / c, 6)
    return root


# ------------------------------------------------------------------------------------------ folder forms


def test_hymenoptera_train_val_folders(hymenoptera):
    s = load_data(hymenoptera)
    assert s.classes == ["ants", "bees"]
    assert (len(s.train), len(s.val), s.test) == (245, 153, None)  # the placeholder GIF is listed too
    assert class_counts(s.train) == {"ants": 124, "bees": 121}
    assert class_counts(s.val) == {"ants": 70, "bees": 83}
    assert any(s.train.describe(i).endswith("imageNotFound.gif") for i in range(len(s.train)))
    assert all("/val/" in s.val.describe(i) for i in range(len(s.val)))
    assert not s.val_is_test and "train/ + val/" in s.source
    assert describe_splits(s) == "hymenoptera_data: train 245 / val 153 images, 2 classes"
    assert s.train.classes == s.classes
    # listing is deterministic, and so is the fingerprint
    again = load_data(hymenoptera)
    assert again.train.items == s.train.items and again.fingerprint == s.fingerprint


def test_cifar10_train_test_uses_test_as_val_with_subset(cifar10):
    s = load_data(cifar10, subset=5)
    assert len(s.classes) == 10 and s.classes == sorted(s.classes)
    assert s.val_is_test and "used as val" in s.source and s.test is None
    assert set(class_counts(s.train).values()) == {5} and set(class_counts(s.val).values()) == {5}
    assert all("/test/" in s.val.describe(i) for i in range(len(s.val)))
    assert describe_splits(s) == "cifar10: train 50 / val 50 images (val = test split), 10 classes"
    assert "at most 5 images per class" in s.source
    # the same seed picks the same images, another seed others
    assert load_data(cifar10, subset=5).train.items == s.train.items
    assert load_data(cifar10, subset=5, seed=1).train.items != s.train.items
    assert load_data(cifar10, subset=5, seed=1).fingerprint != s.fingerprint


def test_train_val_test_folders_and_valid_name(tmp_path, hymenoptera):
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        for c in ("ants", "bees"):
            copy_images(hymenoptera / "val" / c, tmp_path / "d" / split / c, n)
    s = load_data(tmp_path / "d")
    assert (len(s.train), len(s.val), len(s.test)) == (8, 4, 6)
    assert not s.val_is_test
    assert describe_splits(s) == "d: train 8 / val 4 / test 6 images, 2 classes"


def test_single_folder_is_split_stratified_and_seeded(hymenoptera):
    s = load_data(hymenoptera / "train", val_fraction=0.2, seed=0)
    counts_val = class_counts(s.val)
    assert counts_val == {"ants": round(124 * 0.2), "bees": round(121 * 0.2)}
    assert class_counts(s.train) == {"ants": 124 - 25, "bees": 121 - 24}
    assert not set(s.train.items) & set(s.val.items)
    assert len(s.train) + len(s.val) == 245
    assert "20% of every class" in s.source
    assert load_data(hymenoptera / "train", seed=0).val.items == s.val.items
    other = load_data(hymenoptera / "train", seed=1)
    assert other.val.items != s.val.items and class_counts(other.val) == counts_val
    half = load_data(hymenoptera / "train", val_fraction=0.5)
    assert class_counts(half.val) == {"ants": 62, "bees": 60}  # round(60.5) = 60 (to even)


def test_subset_larger_than_a_class_keeps_it_whole(small_folder):
    s = load_data(small_folder, subset=100)
    assert len(s.train) + len(s.val) == 12


def test_images_found_recursively_hidden_and_non_images_ignored(small_folder):
    (small_folder / "ants" / "nested").mkdir()
    shutil.copy(next((small_folder / "ants").glob("*.jpg")), small_folder / "ants" / "nested" / "x.JPG")
    (small_folder / "ants" / "notes.txt").write_text("not an image")
    (small_folder / "ants" / "._mac.jpg").write_bytes(b"\0\5\26\7")
    (small_folder / ".hidden").mkdir()
    s = load_data(small_folder, val_fraction=0.5)
    assert s.classes == ["ants", "bees"]
    assert class_counts(s.train)["ants"] + class_counts(s.val)["ants"] == 7


def test_fingerprint_follows_file_changes(small_folder):
    a = load_data(small_folder)
    f = Path(a.train.describe(0))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = load_data(small_folder)
    assert b.train.items == a.train.items and b.fingerprint != a.fingerprint
    assert b.train.fingerprint != a.train.fingerprint and b.val.fingerprint == a.val.fingerprint


# ------------------------------------------------------------------------------------------ CSV


def test_csv_with_split_column(tmp_path, small_folder):
    files = sorted(small_folder.rglob("*.jpg"))
    lines = ["path,label,split"]
    for k, f in enumerate(files):
        lines.append(f"{f.relative_to(tmp_path)},{f.parent.name},{'val' if k % 3 == 0 else 'train'}")
    (tmp_path / "data.csv").write_text("\ufeff" + "\n".join(lines) + "\n")  # an Excel BOM is fine
    s = load_data(tmp_path / "data.csv")
    assert s.classes == ["ants", "bees"]
    assert len(s.train) == 8 and len(s.val) == 4 and s.test is None
    assert s.val.describe(0) == str(files[0]) and s.val.labels[0] == 0
    assert "split column" in s.source and s.name == "data"


def test_csv_without_split_is_stratified_and_numeric_labels_sort_numerically(tmp_path, small_folder):
    files = sorted(small_folder.rglob("*.jpg"))
    rows = [f"{f},{'10' if f.parent.name == 'ants' else '2'}" for f in files]  # absolute paths work too
    (tmp_path / "d.csv").write_text("path,label\n" + "\n".join(rows) + "\n\n")
    s = load_data(tmp_path / "d.csv", val_fraction=0.5)
    assert s.classes == ["2", "10"]
    assert class_counts(s.val) == {"2": 3, "10": 3} and class_counts(s.train) == {"2": 3, "10": 3}


def test_csv_test_rows_become_val_when_there_are_no_val_rows(tmp_path, small_folder):
    files = sorted(small_folder.rglob("*.jpg"))
    rows = [f"{f},{f.parent.name},{'TEST' if k % 2 else 'train'}" for k, f in enumerate(files)]
    (tmp_path / "d.csv").write_text("path,label,split\n" + "\n".join(rows))
    s = load_data(tmp_path / "d.csv")
    assert s.val_is_test and len(s.val) == 6 and s.test is None


# ------------------------------------------------------------------------------------------ named data sets


def test_digits():
    from sklearn.datasets import load_digits

    s = load_data("digits", val_fraction=0.25, seed=3)
    assert s.classes == [str(k) for k in range(10)]
    assert len(s.train) + len(s.val) == 1797
    ref = load_digits()
    per_class = Counter(ref.target.tolist())
    assert class_counts(s.val) == {str(k): round(per_class[k] * 0.25) for k in range(10)}
    i = 7
    img = np.asarray(s.val.open(i))
    k = s.val.items[i]
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], np.rint(ref.images[k] * 255 / 16).astype(np.uint8))
    assert (img[..., 0] == img[..., 2]).all() and img.max() == 255
    assert s.val.labels[i] == ref.target[k] and s.val.describe(i) == f"digits[{k}]"
    assert load_data("DIGITS", val_fraction=0.25, seed=3).fingerprint == s.fingerprint


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = {1: 0x0801, 3: 0x0803}[array.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">I", code) + b"".join(struct.pack(">I", d) for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_mnist_read_by_torchvision(tmp_path):
    """A tiny MNIST in torchvision's raw layout is read through torchvision.datasets.MNIST itself."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    train_y, test_y = np.arange(20) % 10, np.arange(10) % 10
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    s = load_data("mnist", data_root=tmp_path, download=False)
    assert (len(s.train), len(s.val)) == (20, 10) and s.val_is_test and len(s.classes) == 10
    assert s.classes[3] == "3 - three"
    img = np.asarray(s.val.open(4))
    assert img.shape == (28, 28, 3) and np.array_equal(img[..., 1], test_x[4])
    assert s.val.labels[4] == 4 and s.val.describe(4) == "mnist/test[4]"
    sub = load_data("MNIST", data_root=tmp_path, subset=1, download=False)
    assert len(sub.train) == 10 and len(sub.val) == 10


def test_torchvision_absent_offline_names_what_and_where(tmp_path):
    with pytest.raises(UserError) as e:
        load_data("cifar10", data_root=tmp_path, download=False)
    msg = str(e.value)
    assert f"expected {tmp_path / 'cifar-10-batches-py'}" in msg and "cifar-10-python.tar.gz" in msg
    assert "\n" not in msg


def test_torchvision_download_failure_is_a_user_error(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match=r"kmnist: not found in .*downloading failed"):
        load_data("kmnist", data_root=tmp_path, download=True)


# ------------------------------------------------------------------------------------------ validation errors


@pytest.mark.parametrize("bad, pattern", [
    ("cifar-10", r'not a data set name \(did you mean "cifar10"\?\)'),
    ("no/such/dir", r"no/such/dir: no such file or folder"),
    ("digits.csv", r"^digits.csv: no such file or folder; check the path"),
    ("imagenet", r'DATA "imagenet": no such file or folder, and not a data set name; .* one of: digits, cifar10'),
])
def test_missing_path_or_unknown_name(bad, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=pattern):
        load_data(bad)


def test_folder_problems(tmp_path, hymenoptera):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no class subfolders"):
        load_data(tmp_path / "empty")
    copy_images(hymenoptera / "val" / "ants", tmp_path / "loose", 2)
    with pytest.raises(UserError, match="has 2 images but no class subfolders"):
        load_data(tmp_path / "loose")
    copy_images(hymenoptera / "val" / "ants", tmp_path / "one" / "ants", 3)
    with pytest.raises(UserError, match=r'only one class folder \("ants"\)'):
        load_data(tmp_path / "one")
    (tmp_path / "one" / "wasps").mkdir()
    (tmp_path / "one" / "wasps" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r'wasps: class folder "wasps" has no images'):
        load_data(tmp_path / "one")
    copy_images(hymenoptera / "val" / "bees", tmp_path / "tiny" / "bees", 3)
    copy_images(hymenoptera / "val" / "ants", tmp_path / "tiny" / "ants", 1)
    with pytest.raises(UserError, match=r'class "ants" has 1 image; a train/val split needs at least 2'):
        load_data(tmp_path / "tiny")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="must be a CSV"):
        load_data(tmp_path / "notes.txt")


def test_train_and_val_class_sets_must_agree(tmp_path, hymenoptera):
    for c in ("ants", "bees"):
        copy_images(hymenoptera / "val" / c, tmp_path / "d" / "train" / c, 2)
    copy_images(hymenoptera / "val" / "ants", tmp_path / "d" / "val" / "ants", 2)
    with pytest.raises(UserError, match=r'val: no class folder "bees"'):
        load_data(tmp_path / "d")
    copy_images(hymenoptera / "val" / "bees", tmp_path / "d" / "val" / "bees", 2)
    copy_images(hymenoptera / "val" / "bees", tmp_path / "d" / "val" / "bess", 2)
    with pytest.raises(UserError, match=r'class "bess" is not in .*train \(did you mean "bees"\?\)'):
        load_data(tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "val" / "bess")
    for f in (tmp_path / "d" / "val" / "bees").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r'class folder "bees" has no images'):
        load_data(tmp_path / "d")


@pytest.mark.parametrize("content, message", [
    ("path,class\n{f},ants\n", r'no "label" column in the header row \(found: path, class\)'),
    ("path,label\n{f},ants\nimgs/ants/missing.jpg,ants\n{g},bees\n", r"d.csv line 3: no such file imgs/ants/missing.jpg"),
    ("path,label\n{f},ants\n{g},  \n", r"d.csv line 3: blank label"),
    ("path,label,split\n{f},ants,train\n{g},bees,holdout\n", r'd.csv line 3: unknown split "holdout"'),
    ("path,label\n{f},ants\n{g},ants\n", r'only one label \("ants"\)'),
    ("path,label,split\n{f},ants,train\n{g},bees,train\n{f},ants,val\n", r'class "bees" has no val rows'),
])
def test_csv_problems(tmp_path, small_folder, content, message):
    files = sorted(small_folder.rglob("*.jpg"))
    csv = tmp_path / "d.csv"
    csv.write_text(content.format(f=files[0], g=files[-1]))
    with pytest.raises(UserError, match=message):
        load_data(csv)


def test_csv_missing_files_skipped_with_one_warning(tmp_path, small_folder, caplog):
    files = sorted(small_folder.rglob("*.jpg"))
    rows = [f"{p},{p.parent.name}" for p in files] + ["gone1.jpg,ants", "gone2.jpg,bees"]
    (tmp_path / "d.csv").write_text("path,label\n" + "\n".join(rows))
    with caplog.at_level("WARNING", logger="warmstart.data"):
        s = load_data(tmp_path / "d.csv", skip_bad_images=True)
    assert len(s.train) + len(s.val) == 12
    [rec] = [r for r in caplog.records if r.name == "warmstart.data"]
    assert rec.getMessage().startswith("skipped 2 CSV rows whose file does not exist (first: line 14: ")


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(val_fraction=0.0), "val fraction must be between 0 and 1"),
    (dict(val_fraction=1.0), "val fraction must be between 0 and 1"),
    (dict(val_fraction=-0.2), "val fraction must be between 0 and 1"),
    (dict(subset=0), "subset must be a whole number of images per class >= 1, got 0"),
    (dict(subset=2.5), "subset must be"),
])
def test_bad_arguments(kwargs, pattern, small_folder):
    with pytest.raises(UserError, match=pattern):
        load_data(small_folder, **kwargs)


def test_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for data in (tmp_path / "empty", tmp_path / "none", "cifar-100"):
        with pytest.raises(UserError) as e:
            load_data(data, data_root=tmp_path, download=False)
        assert "\n" not in str(e.value)
