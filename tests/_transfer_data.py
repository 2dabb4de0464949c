"""Small real-image helpers shared by the tests/test_transfer_*.py files."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def image_files(folder: Path, n: int) -> list[Path]:
    """The first n images of a folder, in name order (deterministic)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:n]


@functools.lru_cache(maxsize=None)
def load_uint8(path: Path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """Decode with PIL, Resize(resize) (bilinear) + CenterCrop(crop): a uint8 3xHxW tensor."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = T.CenterCrop(crop)(T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR)(im))
        return T.PILToTensor()(im)


def hymenoptera_batch(root: Path, split: str, per_class: int, resize: int = 256, crop: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x 3 x crop x crop, labels) with ants = 0, bees = 1, per_class images of each."""
    xs, ys = [], []
    for label, cls in enumerate(("ants", "bees")):
        for p in image_files(root / split / cls, per_class):
            xs.append(load_uint8(p, resize, crop))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


class TensorImages(torch.utils.data.Dataset):
    """A Dataset of (uint8 image, int label), like the data layer's."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])
