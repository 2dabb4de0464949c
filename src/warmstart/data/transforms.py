"""Preprocessing, as described by a model's weights metadata.

Nothing else in warmstart knows a mean, a std or an input size: they come from the weights (torchvision's
``weights.transforms()`` or the sidecar JSON of a ``.pth``/``.safetensors`` file) through
:class:`Preprocess`. Images are decoded once, resized so the shorter side is ``resize`` and centre-cropped
to a ``resize`` square (uint8, cached); each sample is then cropped to ``crop`` (centre for evaluation,
random for training augmentation) and a batch is normalised on its device by :class:`Normalizer`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch

from warmstart.errors import UserError


@dataclass(frozen=True)
class Preprocess:
    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.crop < 1 or self.resize < self.crop:
            raise UserError(f"preprocessing needs 1 <= crop <= resize, got crop={self.crop} resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise UserError(f"preprocessing needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str = "weights metadata") -> "Preprocess":
        """Build from a metadata dict with keys input_size, resize, mean, std (interpolation optional)."""
        try:
            crop = int(meta["input_size"])
            resize = int(meta.get("resize", crop))
            mean = tuple(float(v) for v in meta["mean"])
            std = tuple(float(v) for v in meta["std"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{where}: needs input_size, resize, mean and std ({type(e).__name__}: {e}); "
                "see shared/weights/*.json for the format"
            ) from None
        return cls(resize=resize, crop=crop, interpolation=str(meta.get("interpolation", "bilinear")), mean=mean, std=std)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class Normalizer(torch.nn.Module):
    """uint8 image batch (N,3,H,W) in [0,255] -> float, normalised with the weights' mean and std.

    Float inputs (already-normalised tensors, cached features) pass through unchanged, so the one
    training loop can feed images and features alike.
    """

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)))
        self.register_buffer("shift", (torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).view(1, -1, 1, 1))

    @classmethod
    def of(cls, pre: Preprocess) -> "Normalizer":
        return cls(pre.mean, pre.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        return x.float() * self.scale - self.shift
