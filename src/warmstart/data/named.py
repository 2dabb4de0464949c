"""Data sets known by name: torchvision's classic ones (under a data root), scikit-learn's digits (bundled) and
the archives of :mod:`warmstart.data.fetch` (``hymenoptera``, ``cifar10-jpeg``: from a mirror or downloaded).

torchvision data sets are read with torchvision's own classes, from ``data_root`` (default
``$WARMSTART_DATA_ROOT``, else ``datasets/`` in the warmstart cache folder, :func:`fetch.default_root`), in
torchvision's usual layout, so an existing torchvision root can be reused. They are downloaded only when
``download=True`` and they are missing; when that fails (offline), a :class:`UserError` says which file or
folder was expected where and where to get it. Data sets that come with train and test splits only use the **test split as the
validation split** (as a ``train/ test/`` folder does); ``DataSplits.source`` says so.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from warmstart.data import fetch
from warmstart.data.fetch import DOWNLOAD_TIMEOUT_S
from warmstart.errors import UserError, did_you_mean

if TYPE_CHECKING:  # the sources (torch) are imported by the loaders below; this module itself needs no torch,
    from warmstart.data.sources import ArraySource, ImageSource  # so DATA is checked before torch is imported


@dataclass(frozen=True)
class NamedDataset:
    cls: str                      # torchvision.datasets class name
    splits: dict[str, dict]       # role (train/val/test) -> constructor keyword arguments
    expected: str                 # what torchvision looks for under the root
    url: str                      # where to get it by hand
    classes: tuple[str, ...] = ()  # used when the torchvision class has no .classes
    extra: dict = field(default_factory=dict)

    @property
    def val_is_test(self) -> bool:
        return "test" not in self.splits


def _tt(expected: str, url: str, cls: str, **kw: Any) -> NamedDataset:
    """A data set with a train/test switch; its test split is used for validation."""
    return NamedDataset(cls, {"train": {"train": True}, "val": {"train": False}}, expected, url, **kw)


def _split(expected: str, url: str, cls: str, train: str = "train", val: str = "test", test: str | None = None,
           **kw: Any) -> NamedDataset:
    splits = {"train": {"split": train}, "val": {"split": val}}
    if test:
        splits["test"] = {"split": test}
    return NamedDataset(cls, splits, expected, url, **kw)


_DIGITS10 = tuple(str(k) for k in range(10))

TORCHVISION: dict[str, NamedDataset] = {
    "cifar10": _tt("cifar-10-batches-py/", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "CIFAR10"),
    "cifar100": _tt("cifar-100-python/", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "CIFAR100"),
    "mnist": _tt("MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/", "MNIST"),
    "fashion-mnist": _tt("FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
                         "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "FashionMNIST"),
    "kmnist": _tt("KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
                  "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", "KMNIST"),
    "svhn": _split("{train,test}_32x32.mat", "http://ufldl.stanford.edu/housenumbers/", "SVHN", classes=_DIGITS10),
    "stl10": _split("stl10_binary/", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "STL10"),
    "flowers102": _split("flowers-102/", "https://thor.robots.ox.ac.uk/datasets/flowers-102/", "Flowers102",
                         val="val", test="test", classes=tuple(str(k) for k in range(102))),
    "food101": _split("food-101/", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "Food101"),
    "oxford-pets": _split("oxford-iiit-pet/", "https://thor.robots.ox.ac.uk/datasets/pets/", "OxfordIIITPet",
                          train="trainval"),
    "dtd": _split("dtd/", "https://thor.robots.ox.ac.uk/datasets/dtd/", "DTD", val="val", test="test"),
}

#: Every name ``load_data`` accepts besides paths.
NAMES: tuple[str, ...] = ("digits", *TORCHVISION, *fetch.DATASETS)


def normalize_name(name: str) -> str:
    """'Fashion_MNIST' -> 'fashion-mnist'."""
    return name.strip().lower().replace("_", "-")


def is_path_like(text: str) -> bool:
    """DATA written as a path (a separator or a file suffix), not as a data set name."""
    return "/" in text or os.sep in text or bool(Path(text).suffix)


def not_found(text: str) -> UserError:
    """The error for a DATA that is neither an existing file or folder nor a data set name."""
    path = Path(text).expanduser()
    if is_path_like(text):
        return UserError(f"{path}: no such file or folder; check the path "
                         "(DATA is a folder of class subfolders, a CSV file or a data set name)")
    hint = did_you_mean(normalize_name(text), NAMES)
    return UserError(f'DATA "{text}": no such file or folder, and not a data set name{hint}; pass a folder '
                     f"(one subfolder per class, or train/ and val/), a CSV file (path,label[,split]) "
                     f"or one of: {', '.join(NAMES)}")


def check_exists(data: str | Path) -> None:
    """Raise :func:`not_found`'s error now, without importing torch, when DATA names nothing."""
    text = str(data)
    if not Path(text).expanduser().exists() and normalize_name(text) not in NAMES:
        raise not_found(text)


def default_root() -> Path:
    return fetch.default_root()


@contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """torchvision's downloader has no timeout; bound it so an offline machine fails fast."""
    old = socket.getdefaulttimeout()
    if old is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_torchvision(name: str, root: Path, *, download: bool) -> tuple[dict[str, ImageSource], list[str], str]:
    """Build the splits of a torchvision data set -> ({role: source}, classes, description of the source)."""
    import torchvision.datasets as tvd

    from warmstart.data.sources import TorchvisionSource

    spec = TORCHVISION[name]
    cls = getattr(tvd, spec.cls)
    sources: dict[str, ImageSource] = {}
    classes: list[str] | None = None
    for role, kwargs in spec.splits.items():
        try:
            if download:
                with _network_timeout(DOWNLOAD_TIMEOUT_S):
                    ds = cls(str(root), download=True, **kwargs)
            else:
                ds = cls(str(root), download=False, **kwargs)
        except UserError:
            raise
        except Exception as e:  # torchvision raises RuntimeError (absent), URLError/OSError (offline), ...
            tried = (f"downloading failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                     if download else "download=False")
            raise UserError(
                f"{name}: not found in {root} (expected {root / spec.expected}); {tried}; connect to the "
                f"internet and retry, or get it from {spec.url} and unpack it into {root} "
                "(set --data-root or $WARMSTART_DATA_ROOT to use another folder), or pass a folder of images"
            ) from None
        labels = _labels_of(ds)
        if classes is None:
            classes = [str(c) for c in getattr(ds, "classes", None) or spec.classes] or \
                [str(k) for k in range(max(labels) + 1)]
        split = next(iter(kwargs.values()))
        split = {True: "train", False: "test"}.get(split, split) if isinstance(split, bool) else split
        sources[role] = TorchvisionSource(ds, labels, name=name, split=str(split), classes=classes)
    assert classes is not None
    note = "; val = the official test split" if spec.val_is_test else ""
    return sources, classes, f"{name} (torchvision, {root}{note})"


def _labels_of(ds: Any) -> list[int]:
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(ds, attr, None)
        if labels is not None:
            return [int(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    raise TypeError(f"{type(ds).__name__}: no targets/labels attribute")


def load_digits() -> tuple[ArraySource, list[str]]:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled, offline): grey 0..16 -> RGB uint8 0..255."""
    import numpy as np
    from sklearn.datasets import load_digits as sk_load_digits

    from warmstart.data.sources import ArraySource

    d = sk_load_digits()
    grey = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    classes = [str(c) for c in d.target_names]
    return ArraySource(rgb, d.target.tolist(), name="digits", classes=classes), classes
