"""ImageDataset: decode once, equal to torchvision's eval pipeline, reproducible augmentation, bad images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from warmstart.data import FileSource, ImageDataset, Preprocess, load_data
from warmstart.data.loading import list_image_folder
from warmstart.errors import UserError

PRE = Preprocess(resize=64, crop=56)  # size is irrelevant to these tests; keep them fast


@pytest.fixture(scope="module")
def hymenoptera_val8(hymenoptera):
    return load_data(hymenoptera, subset=8).val  # 16 real photos


def _plain_pipeline(path, pre: Preprocess) -> torch.Tensor:
    mode = T.InterpolationMode(pre.interpolation)
    tf = T.Compose([T.Resize(pre.resize, interpolation=mode), T.CenterCrop(pre.crop), T.PILToTensor()])
    return tf(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("pre", [PRE, Preprocess(resize=72, crop=64, interpolation="bicubic")])
def test_eval_samples_equal_plain_torchvision_pipeline(hymenoptera_val8, pre):
    ds = ImageDataset(hymenoptera_val8, pre)
    assert ds.cached and len(ds) == 16 and ds.labels == hymenoptera_val8.labels and ds.classes == ["ants", "bees"]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, pre.crop, pre.crop) and y == ds.labels[i]
        diff = (x.int() - _plain_pipeline(hymenoptera_val8.describe(i), pre).int()).abs()
        assert diff.max() <= 1  # measured: 0 (these ~500x375 photos are too small for the draft fast path)


def test_lazy_mode_gives_the_same_samples(hymenoptera_val8):
    """Without the disk cache: in memory under memory_limit, else decoded per sample; the same samples."""
    cached = ImageDataset(hymenoptera_val8, PRE, cache_dir=False)
    lazy = ImageDataset(hymenoptera_val8, PRE, memory_limit=16 * 3 * 64 * 64 - 1, cache_dir=False)  # one byte short
    disk = ImageDataset(hymenoptera_val8, PRE, memory_limit=1)  # the disk cache ignores the memory limit
    assert cached.cached and not lazy.cached and cached.cache_bytes == 16 * 3 * 64 * 64
    assert disk.cached and disk.cache_path is not None and cached.cache_path is None
    for i in (0, 7, 15):
        assert torch.equal(cached[i][0], lazy[i][0]) and cached[i][1] == lazy[i][1]
        assert torch.equal(cached[i][0], disk[i][0]) and cached[i][1] == disk[i][1]
    assert not ImageDataset(hymenoptera_val8, PRE, cache=False).cached
    assert ImageDataset(hymenoptera_val8, PRE, cache=True, memory_limit=1, cache_dir=False).cached


class _Counting:
    def __init__(self, monkeypatch):
        self.n = 0
        real = Image.open

        def counting_open(*a, **k):
            self.n += 1
            return real(*a, **k)

        monkeypatch.setattr(Image, "open", counting_open)


def test_each_image_is_decoded_once_across_epochs(hymenoptera_val8, monkeypatch, tmp_path):
    count = _Counting(monkeypatch)
    ds = ImageDataset(hymenoptera_val8, PRE, augment=True, cache_dir=tmp_path)  # an empty cache folder
    for _epoch in range(2):
        for x, y in torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True):
            assert x.shape[1:] == (3, 56, 56)
    assert count.n == 16
    lazy = ImageDataset(hymenoptera_val8, PRE, cache=False)
    for _epoch in range(2):
        for i in range(len(lazy)):
            lazy[i]
    assert count.n == 16 + 32  # lazy mode decodes in __getitem__, every time


def test_augmentation_is_reproducible_and_a_crop_of_the_cache(hymenoptera_val8):
    ds = ImageDataset(hymenoptera_val8, PRE, augment=True, train=True)
    torch.manual_seed(0)
    a = [ds[i][0] for i in range(16)]
    torch.manual_seed(0)
    b = [ds[i][0] for i in range(16)]
    torch.manual_seed(1)
    c = [ds[i][0] for i in range(16)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(torch.equal(x, y) for x, y in zip(a, c)) < 4
    flipped = 0
    for i, x in enumerate(a):  # every sample is a 56 window of the 64 square, maybe mirrored
        square = ds._images[i]
        windows = {(t, l, f) for t in range(9) for l in range(9) for f in (0, 1)
                   if torch.equal(x, square[:, t:t + 56, l:l + 56].flip(-1) if f else square[:, t:t + 56, l:l + 56])}
        assert windows, f"sample {i} is not a crop of its cached image"
        flipped += all(f for *_, f in windows)
    assert 2 <= flipped <= 14  # about half are mirrored


def test_dataloader_workers_share_the_cache_and_stay_reproducible(hymenoptera_val8):
    ds = ImageDataset(hymenoptera_val8, PRE, augment=True)

    def epoch(seed):
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2)
        return [(x, y) for x, y in loader]

    a, b = epoch(5), epoch(5)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert sum(len(y) for _, y in a) == 16 and not torch.equal(a[0][0], epoch(6)[0][0])


def test_scale_jitter_augmentation(hymenoptera_val8):
    ds = ImageDataset(hymenoptera_val8, PRE, augment=True, scale=(0.3, 1.0))
    torch.manual_seed(0)
    x = torch.stack([ds[0][0] for _ in range(8)])
    torch.manual_seed(0)
    assert torch.equal(x, torch.stack([ds[0][0] for _ in range(8)]))
    assert x.shape == (8, 3, 56, 56) and x.dtype == torch.uint8
    assert len({t.sum().item() for t in x}) > 4  # different areas each time
    with pytest.raises(UserError, match="augmentation scale"):
        ImageDataset(hymenoptera_val8, PRE, augment=True, scale=(0.5, 1.5))
    with pytest.raises(UserError, match=r'unknown interpolation "bicubik" \(did you mean "bicubic"\?\)'):
        ImageDataset(hymenoptera_val8, Preprocess(resize=64, crop=56, interpolation="bicubik"))


def test_digits_and_cifar_small_images(cifar10):
    digits = load_data("digits")
    ds = ImageDataset(digits.val, Preprocess(resize=8, crop=8))
    x, y = ds[3]
    k = digits.val.items[3]
    from sklearn.datasets import load_digits

    ref = np.rint(load_digits().images[k] * 255 / 16).astype(np.uint8)
    assert torch.equal(x[0], torch.from_numpy(ref)) and y == digits.val.labels[3]
    c = load_data(cifar10, subset=2)
    up = ImageDataset(c.train, Preprocess(resize=40, crop=36))  # 32x32 JPEGs upscaled
    assert len(up) == 20 and up[0][0].shape == (3, 36, 36)


def _odd_folder(root: Path, hymenoptera: Path) -> None:
    a, b = root / "a", root / "b"
    a.mkdir(parents=True)
    b.mkdir()
    Image.new("RGB", (1, 1), (9, 99, 199)).save(a / "one.png")
    Image.fromarray(np.full((5, 7), 257 * 50, np.uint16)).save(a / "g16.png")
    Image.new("CMYK", (20, 10), (0, 0, 0, 0)).save(a / "cmyk.jpg")
    Image.new("RGBA", (6, 6), (255, 255, 255, 0)).save(b / "clear.png")
    Image.new("L", (9, 3), 200).save(b / "grey.webp", lossless=True)
    shutil.copy(hymenoptera / "train" / "ants" / "imageNotFound.gif", b / "placeholder.gif")


def test_odd_valid_images_in_a_folder(tmp_path, hymenoptera):
    _odd_folder(tmp_path / "odd", hymenoptera)
    src = _whole(tmp_path / "odd")
    ds = ImageDataset(src, PRE)
    expect = {"one.png": (9, 99, 199), "g16.png": (50, 50, 50), "cmyk.jpg": (255, 255, 255),
              "clear.png": (0, 0, 0), "grey.webp": (200, 200, 200)}
    assert len(ds) == 6 and ds.num_skipped == 0
    for i in range(len(ds)):
        x, _ = ds[i]
        name = Path(src.describe(i)).name
        assert x.shape == (3, 56, 56) and x.dtype == torch.uint8
        if name in expect:
            assert (x.int() - torch.tensor(expect[name]).view(3, 1, 1)).abs().max() <= 1, name
        else:
            assert name == "placeholder.gif" and x.float().std() > 10


def _whole(root: Path) -> FileSource:
    """Every image of an ImageFolder-style folder as one source (no split)."""
    paths, labels, classes = list_image_folder(root)
    return FileSource(paths, labels, name=root.name, classes=classes)


@pytest.fixture
def broken_folder(tmp_path, hymenoptera) -> Path:
    root = tmp_path / "broken"
    for c in ("ants", "bees"):
        (root / c).mkdir(parents=True)
        for f in sorted((hymenoptera / "val" / c).glob("*.jpg"))[:4]:
            shutil.copy(f, root / c / f.name)
    data = sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[5].read_bytes()
    (root / "ants" / "0_half.jpg").write_bytes(data[: len(data) // 2])
    (root / "bees" / "0_zero.jpg").write_bytes(b"")
    (root / "bees" / "0_zz_text.jpg").write_text("hello")
    return root


BAD = ("0_half.jpg", "0_zero.jpg", "0_zz_text.jpg")


def test_bad_images_raise_naming_the_file(broken_folder):
    src = _whole(broken_folder)
    with pytest.raises(UserError) as e:
        ImageDataset(src, PRE)
    msg = str(e.value)
    first = broken_folder / "ants" / "0_half.jpg"  # the first bad one in listing order
    assert msg == (f"{first}: cannot decode image (truncated file?); fix or remove it, or pass --skip-bad-images "
                   "(2 more images cannot be decoded either)")
    assert "\n" not in msg


def test_skip_bad_images_drops_them_with_one_warning(broken_folder, caplog):
    src = _whole(broken_folder)
    assert len(src) == 11
    with caplog.at_level("WARNING", logger="warmstart.data"):
        ds = ImageDataset(src, PRE, skip_bad_images=True)
    assert ds.num_skipped == 3 and len(ds) == 8
    assert sorted(Path(p).name for p in ds.bad_files) == sorted(BAD)
    msgs = [r.getMessage() for r in caplog.records if r.name == "warmstart.data"]
    assert msgs == [f"skipped 3 unreadable images (first: {broken_folder / 'ants' / '0_half.jpg'})"]
    # the labels still belong to the images that were kept
    good = [i for i, p in enumerate(src.items) if Path(p).name not in BAD]
    assert ds.labels == [src.labels[i] for i in good] and ds.labels.count(0) == 4
    for j in (0, 4, 7):
        ref = _plain_pipeline(src.items[good[j]], PRE)
        assert (ds[j][0].int() - ref.int()).abs().max() <= 2 and ds[j][1] == src.labels[good[j]]


def test_lazy_mode_skips_by_substituting_the_next_image(broken_folder, caplog):
    src = _whole(broken_folder)
    ds = ImageDataset(src, PRE, cache=False, skip_bad_images=True)
    bad = src.items.index(str(broken_folder / "bees" / "0_zero.jpg"))
    names = [Path(p).name for p in src.items]
    assert names[bad + 1] == "0_zz_text.jpg"  # listing order: a second bad file follows
    nxt = bad + 2
    with caplog.at_level("WARNING", logger="warmstart.data"):
        x, y = ds[bad]
    assert torch.equal(x, ImageDataset(src.select([nxt]), PRE, cache_dir=False)[0][0]) and y == src.labels[nxt] == 1
    assert ds.num_skipped == 2 and "0_zero.jpg" in caplog.records[0].getMessage()
    with pytest.raises(UserError, match="0_zero.jpg: cannot decode"):
        ImageDataset(src, PRE, cache=False)[bad]
