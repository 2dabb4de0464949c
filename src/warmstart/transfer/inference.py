"""A trained model at work: load it from a run directory (or a weights file), prepare images exactly as its
validation images were (decoded with the data layer's rules, shorter side resized, centre crop, normalised
with the weights' mean/std), and return class probabilities.

A run directory ends with ``model.safetensors`` + ``model.json`` (``warmstart train`` writes them): raw
tensors, which cannot run code when read, and the metadata that rebuilds the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from warmstart.data import _torchvision  # noqa: F401, I001  (first: torchvision without torch._dynamo)
import torchvision.transforms.functional as TF
from torch import nn

from warmstart.data import Normalizer
from warmstart.data.images import interpolation, is_image_file, load_square, resize_center, to_rgb
from warmstart.engine import layout
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.weights import SAFETENSORS_SUFFIX, STATE_DICT_SUFFIXES, Weights, resolve_weights


def model_file(run: str | Path) -> Path:
    """The weights file of a run directory (``model.safetensors``), or ``run`` itself when it is a weights file."""
    path = Path(run).expanduser()
    if path.is_dir():
        f = path / layout.MODEL
        if not f.is_file():
            hint = (f"the run did not finish; finish it with 'warmstart train --resume {path}'" if (path / layout.CHECKPOINT).exists()
                    else "pass the --out folder of a finished 'warmstart train' run, or a .safetensors/.pth file with its .json")
            raise UserError(f"{path} has no {layout.MODEL}: {hint}")
        return f
    if path.is_file():
        if path.suffix not in (SAFETENSORS_SUFFIX, *STATE_DICT_SUFFIXES):
            raise UserError(f"{path}: expected a run directory or a .safetensors/.pth weights file (with its .json)")
        return path
    raise UserError(f"{path}: no such run directory or weights file")


def load_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Weights]:
    """The trained model of a run (eval mode, on ``device``) and its :class:`Weights` (metadata, preprocessing)."""
    weights = resolve_weights(str(model_file(run)))
    model = create_model(weights.arch or "", None, weights)  # None: keep the trained head and its classes
    return model.eval().to(device), weights


def image_paths(items: Sequence[str | Path]) -> list[Path]:
    """IMAGE arguments -> image files; a folder stands for the images inside it (recursively, sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(Path(d) / f for d, _, fs in os.walk(p) for f in fs if is_image_file(f))
            if not found:
                raise UserError(f"{p}: folder has no images")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"{p}: no such image file or folder")
    if not out:
        raise UserError("no images given: pass one or more image files or folders")
    return out


def load_images(items: Sequence[Any], weights: Weights) -> torch.Tensor:
    """uint8 N x 3 x crop x crop, prepared as the run's validation images were (resize, centre crop).

    Each item is an image file path, a PIL image, or an image tensor (3 x H x W, uint8 0-255 or float 0-1).
    """
    pre = weights.preprocess
    mode = interpolation(pre.interpolation)
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            square = torch.from_numpy(load_square(item, pre.resize, mode).transpose(2, 0, 1).copy())  # BadImageError names it
        elif isinstance(item, torch.Tensor):
            square = TF.resize(_uint8_image(item), [pre.resize], interpolation=mode, antialias=True)
        elif hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image
            square = torch.from_numpy(np.ascontiguousarray(resize_center(to_rgb(item), pre.resize, mode).transpose(2, 0, 1)))
        else:
            raise UserError(f"cannot read an image from a {type(item).__name__}: pass file paths, folders, PIL images "
                            "or 3 x H x W tensors")
        out.append(TF.center_crop(square, [pre.crop, pre.crop]))
    return torch.stack(out)


def _uint8_image(t: torch.Tensor) -> torch.Tensor:
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise UserError(f"an image tensor must be 3 x H x W (or 1 x H x W), got shape {list(t.shape)}")
    if t.dtype != torch.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t


#: images per forward pass when predicting (`warmstart predict`, TrainResult.predict)
PREDICT_BATCH = 32


@torch.inference_mode()
def probabilities(model: nn.Module, weights: Weights, items: Sequence[Any], batch_size: int = PREDICT_BATCH) -> torch.Tensor:
    """Softmax probabilities (N x classes) of the images ``items`` (paths, PIL images or tensors)."""
    device = next(model.parameters()).device
    norm = Normalizer.of(weights.preprocess).to(device)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for i in range(0, len(items), batch_size):
            x = load_images(items[i:i + batch_size], weights).to(device)
            chunks.append(model(norm(x)).float().softmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def top_k(probs: torch.Tensor, names: Sequence[str] | None, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """``[{"image", "predictions": [{"class", "probability"}]}]``: the ``k`` most probable classes per image."""
    names = list(names) if names else [str(i) for i in range(probs.shape[1])]
    k = min(k, probs.shape[1])
    out = []
    for label, p in zip(labels, probs):
        top = p.topk(k)
        out.append({"image": label, "predictions": [{"class": names[j], "probability": round(float(v), 6)}
                                                    for v, j in zip(top.values.tolist(), top.indices.tolist())]})
    return out


def check_top_k(top_k: Any) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise UserError(f"--top-k must be a whole number >= 1, got {top_k!r}")
