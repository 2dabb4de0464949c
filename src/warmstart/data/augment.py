"""Training augmentation of a whole uint8 batch at once, on whatever device the batch is on.

:class:`BatchAugment` takes a batch of decoded squares (uint8, N x 3 x R x R, straight from the decoded-image
cache) and returns N random crops resized to ``crop`` x ``crop``, each mirrored with probability 1/2: the
same crops as torchvision's ``RandomResizedCrop(crop, scale, ratio)`` (or ``RandomCrop(crop)`` without a
``scale``) + ``RandomHorizontalFlip``, drawn for the whole batch at once. The crop boxes are drawn on the CPU
from torch's global generator with the same rules as ``RandomResizedCrop.get_params`` (10 tries of area and
log-uniform aspect ratio, then the central crop clamped to the ratio range), so a seed gives the same boxes
on any device; the pixels are then sampled for the whole batch with one ``grid_sample`` (bilinear or
nearest) and rounded back to uint8. So on a GPU the batch travels as uint8 (4x less than float32) and is
cropped, flipped and (by :class:`~warmstart.data.transforms.Normalizer`) normalised there; on a CPU it is the
same code on CPU tensors.

Differences from the per-image path, by design: a crop smaller than ``crop`` that is upsampled reads the
pixel just outside its box at its border (the per-image resize clamps at the box), and downsampling is
bilinear without antialiasing (crops from the 256 squares are at most 256/224 = 1.14x larger than the
output, where antialiasing changes little). Without ``scale`` the crops are exact pixel windows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchAugment(nn.Module):
    """uint8 (N, C, H, W) -> uint8 (N, C, crop, crop): random (resized) crops + horizontal flips, batched."""

    def __init__(self, crop: int, scale: tuple[float, float] | None = None, ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 *, interpolation: str = "bilinear", flip: float = 0.5) -> None:
        super().__init__()
        if scale is not None and not (0.0 < scale[0] <= scale[1] <= 1.0):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.crop, self.scale, self.ratio, self.flip = int(crop), scale, ratio, float(flip)
        self.mode = "nearest" if interpolation.lower() == "nearest" else "bilinear"

    def extra_repr(self) -> str:
        return f"crop={self.crop}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}, mode={self.mode}"

    def boxes(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, 4) int64 CPU tensor of (top, left, box height, box width), drawn like torchvision's get_params."""
        if self.scale is None:
            if height < self.crop or width < self.crop:
                raise ValueError(f"images of {height}x{width} are smaller than the crop {self.crop}")
            top = (torch.rand(n) * (height - self.crop + 1)).long()
            left = (torch.rand(n) * (width - self.crop + 1)).long()
            side = torch.full((n,), self.crop, dtype=torch.long)
            return torch.stack([top, left, side, side], 1)
        area = height * width
        tries = 10
        lo, hi = self.scale
        target = area * (lo + (hi - lo) * torch.rand(n, tries, dtype=torch.float64))
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(n, tries, dtype=torch.float64))
        w = torch.round(torch.sqrt(target * aspect)).long()
        h = torch.round(torch.sqrt(target / aspect)).long()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.long().argmax(1), torch.full((n,), -1, dtype=torch.long))
        # the fallback of get_params: the whole image, clamped to the ratio range, centred
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            fw, fh = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            fh, fw = height, int(round(height * max(self.ratio)))
        else:
            fw, fh = width, height
        rows = torch.arange(n)
        pick = first.clamp_min(0)
        bw = torch.where(first >= 0, w[rows, pick], torch.tensor(fw))
        bh = torch.where(first >= 0, h[rows, pick], torch.tensor(fh))
        u = torch.rand(n, 2, dtype=torch.float64)
        top = torch.where(first >= 0, (u[:, 0] * (height - bh + 1)).long(), torch.tensor((height - fh) // 2))
        left = torch.where(first >= 0, (u[:, 1] * (width - bw + 1)).long(), torch.tensor((width - fw) // 2))
        return torch.stack([top, left, bh, bw], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"BatchAugment needs an (N, C, H, W) batch, got shape {tuple(x.shape)}")
        n, _, height, width = x.shape
        box = self.boxes(n, height, width).double()
        flip = torch.rand(n) < self.flip
        top, left, bh, bw = box.unbind(1)
        # affine_grid (align_corners=False) maps output pixel centres to input coordinates in [-1, 1]:
        # x_in = x_out * bw / W + (2 left + bw) / W - 1 (the same as cropping, then resizing with align_corners=False)
        sx = torch.where(flip, -bw / width, bw / width)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + bw) / width - 1
        theta[:, 1, 1], theta[:, 1, 2] = bh / height, (2 * top + bh) / height - 1
        theta = theta.to(device=x.device, dtype=torch.float32, non_blocking=True)
        grid = F.affine_grid(theta, [n, x.shape[1], self.crop, self.crop], align_corners=False)
        out = F.grid_sample(x.float(), grid, mode=self.mode, padding_mode="border", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else out
