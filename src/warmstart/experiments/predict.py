"""`warmstart predict`: class probabilities for images, from a finished run (or any weights file).

A run directory ends with ``model.safetensors`` + ``model.json`` (``warmstart train`` writes them): raw
tensors, which cannot run code when read, and the metadata that rebuilds the model (architecture, classes,
class names) and says how images must be prepared (resize, crop, interpolation, mean, std). Each image is
prepared exactly as validation images were during training: decoded with the data layer's rules, shorter
side resized, centre crop, normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from warmstart.options import OPTIONS, command_options
from warmstart.transfer.inference import (check_top_k, image_paths, load_images, load_model, model_file,  # noqa: F401
                                          probabilities, top_k as top_k_of)


def predict(run: str | Path, images: Sequence[str | Path], *, top_k: int = OPTIONS["top_k"].default,
            device: str = command_options("predict")["device"].default) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image: ``[{"image", "predictions": [{"class", "probability"}]}]``."""
    check_top_k(top_k)
    paths = image_paths(images)
    from warmstart.engine.loop import resolve_device

    model, weights = load_model(run, resolve_device(device))
    probs = probabilities(model, weights, paths)
    return top_k_of(probs, weights.categories, [str(p) for p in paths], top_k)


def format_predictions(results: list[dict[str, Any]]) -> str:
    """Human-readable: the image, then one line per class with its probability."""
    lines = []
    width = max((len(p["class"]) for r in results for p in r["predictions"]), default=0)
    for r in results:
        lines.append(r["image"])
        lines += [f"  {p['class']:<{width}}  {p['probability']:.4f}" for p in r["predictions"]]
    return "\n".join(lines)
