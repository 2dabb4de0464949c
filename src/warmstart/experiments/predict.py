"""`warmstart predict`: class probabilities for images, from a finished run (or any weights file).

A run directory ends with ``model.safetensors`` + ``model.json`` (``warmstart train`` writes them): raw
tensors, which cannot run code when read, and the metadata that rebuilds the model (architecture, classes,
class names) and says how images must be prepared (resize, crop, interpolation, mean, std). Each image is
prepared exactly as validation images were during training: decoded with the data layer's rules, shorter
side resized, centre crop, normalised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torchvision.transforms.functional as TF
from torch import nn

from warmstart.data import Normalizer
from warmstart.data.images import interpolation, is_image_file, load_square
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.weights import SAFETENSORS_SUFFIX, STATE_DICT_SUFFIXES, Weights, resolve_weights

MODEL_FILE = "model.safetensors"


def model_file(run: str | Path) -> Path:
    """The weights file of a run directory (``model.safetensors``), or ``run`` itself when it is a weights file."""
    path = Path(run).expanduser()
    if path.is_dir():
        f = path / MODEL_FILE
        if not f.is_file():
            hint = (f"the run did not finish; finish it with 'warmstart train --resume {path}'" if (path / "checkpoint.pt").exists()
                    else "pass the --out folder of a finished 'warmstart train' run, or a .safetensors/.pth file with its .json")
            raise UserError(f"{path} has no {MODEL_FILE}: {hint}")
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


def load_images(paths: Sequence[Path], weights: Weights) -> torch.Tensor:
    """uint8 N x 3 x crop x crop, prepared as the run's validation images were (resize, centre crop)."""
    pre = weights.preprocess
    mode = interpolation(pre.interpolation)
    out = []
    for p in paths:
        square = torch.from_numpy(load_square(p, pre.resize, mode).transpose(2, 0, 1).copy())  # BadImageError names p
        out.append(TF.center_crop(square, [pre.crop, pre.crop]))
    return torch.stack(out)


@torch.inference_mode()
def probabilities(model: nn.Module, weights: Weights, paths: Sequence[Path], batch_size: int = 32) -> torch.Tensor:
    """Softmax probabilities (N x classes) of the images at ``paths``."""
    device = next(model.parameters()).device
    norm = Normalizer.of(weights.preprocess).to(device)
    chunks = []
    for i in range(0, len(paths), batch_size):
        x = load_images(paths[i:i + batch_size], weights).to(device)
        chunks.append(model(norm(x)).float().softmax(1).cpu())
    return torch.cat(chunks)


def predict(run: str | Path, images: Sequence[str | Path], *, top_k: int = 5, device: str = "cpu") -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image: ``[{"image", "predictions": [{"class", "probability"}]}]``."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise UserError(f"--top-k must be a whole number >= 1, got {top_k!r}")
    paths = image_paths(images)
    from warmstart.engine.loop import resolve_device

    model, weights = load_model(run, resolve_device(device))
    probs = probabilities(model, weights, paths)
    names = weights.categories or [str(i) for i in range(probs.shape[1])]
    k = min(top_k, probs.shape[1])
    out = []
    for path, p in zip(paths, probs):
        top = p.topk(k)
        out.append({"image": str(path), "predictions": [{"class": names[j], "probability": round(float(v), 6)}
                                                        for v, j in zip(top.values.tolist(), top.indices.tolist())]})
    return out


def format_predictions(results: list[dict[str, Any]]) -> str:
    """Human-readable: the image, then one line per class with its probability."""
    lines = []
    width = max((len(p["class"]) for r in results for p in r["predictions"]), default=0)
    for r in results:
        lines.append(r["image"])
        lines += [f"  {p['class']:<{width}}  {p['probability']:.4f}" for p in r["predictions"]]
    return "\n".join(lines)
