"""ImageSource: a listed (not decoded) split of a data set -- items, integer labels, and how to open one.

Three kinds share one small interface (``len``, ``labels``, ``describe(i)``, ``open(i)``, ``fingerprint``,
``select(indices)``): image files on disk, images held in a numpy array (scikit-learn's digits), and a
torchvision data set. :class:`~warmstart.data.dataset.ImageDataset` decodes any of them.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
from warmstart.data import _torchvision  # noqa: F401, I001  (first: torchvision without torch._dynamo)
from torchvision.transforms import InterpolationMode

from warmstart.data.images import (DECODE_ERRORS, BadImageError, decode_reason, load_square, open_image, resize_center,
                                   to_rgb)


class ImageSource:
    """A split of a data set: ``items`` (whatever :meth:`open` needs) with integer ``labels``.

    Building one decodes nothing; :attr:`fingerprint` identifies its content cheaply (see subclasses).
    """

    kind = "images"

    def __init__(self, items: Sequence[Any], labels: Sequence[int], *, name: str,
                 classes: Sequence[str] | None = None) -> None:
        if len(items) != len(labels):
            raise ValueError(f"{len(items)} items but {len(labels)} labels")
        self.items: list[Any] = list(items)
        self.labels: list[int] = [int(v) for v in labels]
        self.name = name
        self.classes: list[str] | None = list(classes) if classes is not None else None
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images)"

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from, for messages: a file path or ``name[index]``."""
        return f"{self.name}[{self.items[i]}]"

    def open(self, i: int) -> Image.Image:
        """Image ``i`` as a fully decoded 8-bit RGB PIL image (raises BadImageError if it cannot be)."""
        raise NotImplementedError

    def load(self, i: int, size: int, mode: InterpolationMode = InterpolationMode.BILINEAR) -> np.ndarray:
        """Image ``i`` resized (shorter side) and centre-cropped: a uint8 array size x size x 3 (HWC)."""
        return resize_center(self.open(i), size, mode)

    def select(self, indices: Iterable[int]) -> "ImageSource":
        """A new source with the items at ``indices`` (in that order)."""
        indices = list(indices)
        new = copy.copy(self)
        new.items = [self.items[i] for i in indices]
        new.labels = [self.labels[i] for i in indices]
        new._fingerprint = None
        return new

    @property
    def fingerprint(self) -> str:
        """A short hex digest that changes when the listed content changes (computed once, cheaply)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for part in self._fingerprint_parts():
                h.update(repr(part).encode())
                h.update(b"\0")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _fingerprint_parts(self) -> Iterable[Any]:
        yield type(self).__name__
        yield self.name
        yield self.items
        yield self.labels


class FileSource(ImageSource):
    """Image files on disk; fingerprint = paths, sizes, modification times and labels."""

    kind = "files"

    def describe(self, i: int) -> str:
        return str(self.items[i])

    def open(self, i: int) -> Image.Image:
        return open_image(self.items[i])

    def load(self, i: int, size: int, mode: InterpolationMode = InterpolationMode.BILINEAR) -> np.ndarray:
        return load_square(self.items[i], size, mode)  # fast path for large JPEGs

    def _fingerprint_parts(self) -> Iterable[Any]:
        yield type(self).__name__
        for path, label in zip(self.items, self.labels):
            try:
                st = os.stat(path)
                yield (str(path), st.st_size, st.st_mtime_ns, label)
            except OSError:
                yield (str(path), -1, -1, label)


class ArraySource(ImageSource):
    """Images in a uint8 array (N,H,W) or (N,H,W,3); items are indices into it."""

    kind = "array"

    def __init__(self, array: np.ndarray, labels: Sequence[int], *, name: str,
                 classes: Sequence[str] | None = None, indices: Sequence[int] | None = None) -> None:
        if array.dtype != np.uint8 or array.ndim not in (3, 4):
            raise ValueError(f"need a uint8 array (N,H,W[,3]), got {array.dtype} {array.shape}")
        self.array = array
        idx = list(range(len(array))) if indices is None else list(indices)
        super().__init__(idx, [labels[i] for i in idx], name=name, classes=classes)

    def open(self, i: int) -> Image.Image:
        return to_rgb(Image.fromarray(self.array[self.items[i]]))

    def _fingerprint_parts(self) -> Iterable[Any]:
        yield from super()._fingerprint_parts()
        yield self.array.shape


class TorchvisionSource(ImageSource):
    """A split of a torchvision data set (built without transforms); items are its indices."""

    kind = "torchvision"

    def __init__(self, dataset: Any, labels: Sequence[int], *, name: str, split: str,
                 classes: Sequence[str] | None = None) -> None:
        self.dataset, self.split = dataset, split
        super().__init__(range(len(labels)), labels, name=name, classes=classes)

    def describe(self, i: int) -> str:
        return f"{self.name}/{self.split}[{self.items[i]}]"

    def open(self, i: int) -> Image.Image:
        try:
            img = self.dataset[self.items[i]][0]
            img.load()
            return to_rgb(img)
        except DECODE_ERRORS as e:
            raise BadImageError(self.describe(i), decode_reason(e)) from None

    def _fingerprint_parts(self) -> Iterable[Any]:
        yield from super()._fingerprint_parts()
        yield (self.split, len(self.dataset))


def class_counts(source: ImageSource) -> dict[str, int]:
    """Images per class, in class order (class names when the source knows them, else label numbers)."""
    counts = Counter(source.labels)
    if source.classes is not None:
        return {name: counts.get(k, 0) for k, name in enumerate(source.classes)}
    return {str(k): counts[k] for k in sorted(counts)}
