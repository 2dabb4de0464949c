"""The decoded-image disk cache: decoded once across runs, never trusted blindly, a clean fallback."""

from __future__ import annotations

import json
import logging
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from warmstart.data import ImageDataset, Normalizer, Preprocess, load_data
from warmstart.data import diskcache
from warmstart.errors import UserError

PRE = Preprocess(resize=64, crop=56)


@pytest.fixture(scope="module")
def val8(hymenoptera):
    return load_data(hymenoptera, subset=8).val  # 16 real photos


class _Decodes:
    """Counts images opened by PIL (every decode opens its file)."""

    def __init__(self, monkeypatch):
        self.n = 0
        real = Image.open

        def counting(*a, **k):
            self.n += 1
            return real(*a, **k)

        monkeypatch.setattr(Image, "open", counting)


def _samples(ds) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_second_run_decodes_nothing_and_gives_the_same_samples(val8, tmp_path, monkeypatch, caplog):
    count = _Decodes(monkeypatch)
    first = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert count.n == 16 and not first.cache_hit and first.decoded_here == 16
    assert first.cache_path.parent == tmp_path and first.cache_path.is_file()
    meta = json.loads(first.cache_path.with_suffix(".json").read_text())
    assert meta["shape"] == [16, 3, 64, 64] and meta["count"] == 16 and meta["bad"] == []
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    with caplog.at_level(logging.INFO, logger="warmstart.data"):
        second = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert count.n == 16 and second.cache_hit and second.decoded_here == 0  # nothing decoded
    assert any("nothing decoded" in r.getMessage() for r in caplog.records)
    memory = ImageDataset(val8, PRE, cache_dir=False)
    assert torch.equal(_samples(second), _samples(memory)) and second.labels == memory.labels
    assert torch.equal(_samples(first), _samples(memory))


def test_the_cache_file_is_read_not_mapped_into_the_process(val8, tmp_path):
    # mapped, every page read counted as this process's memory (12.4 GB peak RSS on CIFAR-10 at 256 px)
    ImageDataset(val8, PRE, cache_dir=tmp_path)
    ds = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert ds.cache_hit
    samples = _samples(ds)
    maps = open("/proc/self/maps").read() if sys.platform.startswith("linux") else ""
    assert str(ds.cache_path) not in maps
    assert torch.equal(samples, _samples(ImageDataset(val8, PRE, cache_dir=False)))
    rows = ds._images
    with pytest.raises(IndexError):
        rows[len(rows)]
    copy = pickle.loads(pickle.dumps(rows))  # what a DataLoader worker gets: it opens the file itself
    assert copy._fd is None and torch.equal(copy[3], rows[3])


def test_a_cache_file_cut_short_while_in_use_says_so(val8, tmp_path):
    ImageDataset(val8, PRE, cache_dir=tmp_path)
    ds = ImageDataset(val8, PRE, cache_dir=tmp_path)
    with open(ds.cache_path, "rb+") as f:
        f.truncate(ds.cache_path.stat().st_size - 100)
    with pytest.raises(UserError, match="cut short"):  # one error: line on the command line
        ds._images[len(ds) - 1]


def test_environment_and_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "here"))
    assert diskcache.cache_dir() == tmp_path / "here" and diskcache.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("WARMSTART_CACHE_DIR", "off")
    assert diskcache.cache_dir() is None and diskcache.cache_dir(False) is None
    monkeypatch.delenv("WARMSTART_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert diskcache.cache_dir() == tmp_path / "xdg" / "warmstart"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert diskcache.cache_dir() == tmp_path / "home" / ".cache" / "warmstart"


def _damage_row0(path):
    data = bytearray(path.read_bytes())
    offset = len(data) - 16 * 3 * 64 * 64
    data[offset + 100] ^= 0xFF  # one byte of the first image
    path.write_bytes(bytes(data))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])


def _foreign(path):  # another data set's cache under this name: its sidecar names another key
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["key"] = "0" * 20
    meta_path.write_text(json.dumps(meta))


def _no_sidecar(path):  # a crash between the two renames
    path.with_suffix(".json").unlink()


@pytest.mark.parametrize("damage", [_damage_row0, _truncate, _foreign, _no_sidecar])
def test_damaged_stale_or_foreign_cache_is_detected_and_rebuilt(val8, tmp_path, monkeypatch, damage):
    good = _samples(ImageDataset(val8, PRE, cache_dir=False))
    first = ImageDataset(val8, PRE, cache_dir=tmp_path)
    damage(first.cache_path)
    del first
    count = _Decodes(monkeypatch)
    again = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert count.n == 16 and not again.cache_hit  # decoded again, not read
    assert torch.equal(_samples(again), good)
    third = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert third.cache_hit and count.n == 16  # and the rebuilt cache is trusted


def test_cache_key_follows_the_preprocessing_that_shapes_the_squares(val8, tmp_path, monkeypatch):
    a = ImageDataset(val8, PRE, cache_dir=tmp_path)
    count = _Decodes(monkeypatch)
    other_crop = ImageDataset(val8, Preprocess(resize=64, crop=48, mean=(0.4, 0.4, 0.4)), cache_dir=tmp_path)
    assert other_crop.cache_hit and other_crop.cache_path == a.cache_path and count.n == 0  # crop/mean act later
    bigger = ImageDataset(val8, Preprocess(resize=72, crop=56), cache_dir=tmp_path)
    bicubic = ImageDataset(val8, Preprocess(resize=64, crop=56, interpolation="bicubic"), cache_dir=tmp_path)
    assert count.n == 32 and not bigger.cache_hit and not bicubic.cache_hit
    assert len({a.cache_path, bigger.cache_path, bicubic.cache_path}) == 3
    fewer = ImageDataset(val8.select(range(15)), PRE, cache_dir=tmp_path)  # other data: another key
    assert not fewer.cache_hit and fewer.cache_path != a.cache_path


def test_a_touched_file_changes_the_key(tmp_path, hymenoptera):
    import os
    import shutil

    for c in ("ants", "bees"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for f in sorted((hymenoptera / "val" / c).glob("*.jpg"))[:3]:
            shutil.copy(f, tmp_path / "d" / c / f.name)
    src = load_data(tmp_path / "d", val_fraction=0.5).train
    a = ImageDataset(src, PRE, cache_dir=tmp_path / "cache")
    victim = src.items[0]
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited in place
    b = ImageDataset(load_data(tmp_path / "d", val_fraction=0.5).train, PRE, cache_dir=tmp_path / "cache")
    assert not b.cache_hit and b.cache_path != a.cache_path


def test_unwritable_or_full_folder_falls_back_with_one_warning(val8, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    memory = _samples(ImageDataset(val8, PRE, cache_dir=False))
    with caplog.at_level(logging.WARNING, logger="warmstart.data"):
        train = ImageDataset(val8, PRE, cache_dir=blocker / "cache")  # cannot be created (root ignores chmod)
        val = ImageDataset(val8.select(range(4)), PRE, cache_dir=blocker / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "decoded-image cache: cannot use" in warnings[0] and "\n" not in warnings[0]
    assert train.cached and train.cache_path is None and val.cache_path is None  # decoded in memory instead
    assert torch.equal(_samples(train), memory)

    caplog.clear()
    monkeypatch.setattr(diskcache.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with caplog.at_level(logging.WARNING, logger="warmstart.data"):
        full = ImageDataset(val8, PRE, cache_dir=tmp_path / "full")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # sizes a person reads (16 images x 3 x 64 x 64 bytes = 192 KiB), never "0.0 GiB needed, 0.0 GiB free"
    assert len(warnings) == 1 and "(192.0 KiB needed, 1000 B free)" in warnings[0]
    assert full.cache_path is None and torch.equal(_samples(full), memory)
    assert not list((tmp_path / "full").glob("*.npy"))


def test_write_error_midway_cleans_up_and_falls_back(val8, tmp_path, monkeypatch, caplog):
    import os

    def no_space(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with caplog.at_level(logging.WARNING, logger="warmstart.data"):
        ds = ImageDataset(val8, PRE, cache_dir=tmp_path)
    assert ds.cache_path is None and ds.cached and len(ds) == 16
    assert [r.getMessage() for r in caplog.records if "No space left" in r.getMessage()]
    assert not [p for p in tmp_path.iterdir()]  # the temporary file is gone


def test_unreadable_images_are_remembered(tmp_path, hymenoptera, monkeypatch):
    import shutil

    for c in ("ants", "bees"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for f in sorted((hymenoptera / "val" / c).glob("*.jpg"))[:3]:
            shutil.copy(f, tmp_path / "d" / c / f.name)
    (tmp_path / "d" / "bees" / "0_zero.jpg").write_bytes(b"")
    from warmstart.data import FileSource
    from warmstart.data.loading import list_image_folder

    paths, labels, classes = list_image_folder(tmp_path / "d")
    src = FileSource(paths, labels, name="d", classes=classes)
    first = ImageDataset(src, PRE, skip_bad_images=True, cache_dir=tmp_path / "c")
    count = _Decodes(monkeypatch)
    second = ImageDataset(src, PRE, skip_bad_images=True, cache_dir=tmp_path / "c")
    assert count.n == 0 and second.cache_hit and len(second) == len(first) == 6
    assert second.bad_files == first.bad_files == [str(tmp_path / "d" / "bees" / "0_zero.jpg")]
    assert second.labels == first.labels and torch.equal(_samples(second), _samples(first))
    with pytest.raises(Exception, match="0_zero.jpg: cannot decode"):
        ImageDataset(src, PRE, cache_dir=tmp_path / "c")  # a run that does not skip still refuses them


def test_training_is_identical_with_and_without_the_disk_cache(val8, tmp_path):
    """A short real training run (random crops + flips on the batch) gives the same numbers either way."""
    from torch import nn

    from warmstart.engine.config import TrainConfig
    from warmstart.engine.loop import fit
    from warmstart.engine.plan import ParamGroup, Phase

    def run(cache_dir):
        train = ImageDataset(val8, PRE, train=True, cache_dir=cache_dir).with_augmentation(scale=(0.35, 1.0))
        val = ImageDataset(val8, PRE, cache_dir=cache_dir)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        phases = [Phase(2, [ParamGroup("all", [n for n, _ in model.named_parameters()], 1e-2)])]
        cfg = TrainConfig(batch_size=4, device="cpu", quiet=True, seed=3)
        r = fit(model, train, val, phases, cfg, num_classes=2, normalize=Normalizer.of(PRE))
        return [(h["train_loss"], h["val_loss"], h["val_accuracy"]) for h in r.history], model

    with_disk, m1 = run(tmp_path)
    without, m2 = run(False)
    assert with_disk == without
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_cli_cache_dir_option_moves_the_cache_and_a_second_run_reads_it(hymenoptera, weights_dir, tmp_path, capsys, monkeypatch):
    from _cli import run_cli

    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "not-this-one"))
    args = ["train", hymenoptera, "--weights", weights_dir / "mobilenet_v3_small-imagenet.pth", "--strategy", "transfer",
            "--epochs", "1", "--subset", "3", "--cache-dir", tmp_path / "cache", "--quiet"]
    code, _, err = run_cli([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "cache").glob("images-*.npy"))
    assert len(files) == 2 and not (tmp_path / "not-this-one").exists()  # train and val, in --cache-dir
    count = _Decodes(monkeypatch)
    code, _, err = run_cli([*args, "--out", tmp_path / "b"], capsys)
    assert code == 0, err
    assert count.n == 0  # the next run on the same data decodes nothing
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert first["train_images"] == 6 and first["val_images"] == 6
