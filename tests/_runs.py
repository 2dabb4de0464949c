"""Helpers for tests that run warmstart commands through the real CLI on hymenoptera."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmstart.cli import main

ARCH = "mobilenet_v3_small"
V3 = "mobilenet_v3_small-imagenet"


def small_weights(weights_dir: Path, folder: Path, size: int, *, stem: str = V3, name: str | None = None) -> Path:
    """A shared start (default the ImageNet MobileNetV3-Small) whose sidecar reads images at ``size`` px (resize
    size + size/8), as ``folder/NAME.pth`` (default ``v3-SIZE``).

    The tensors are the real ones (a copy); only the preprocessing differs, so the mechanics of a run are
    real and fast. Accuracy at small sizes is lower than at 224.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pth = folder / f"{name or f'v3-{size}'}.pth"
    if not pth.exists():
        pth.write_bytes((weights_dir / f"{stem}.pth").read_bytes())
        meta = json.loads((weights_dir / f"{stem}.json").read_text())
        meta.update(input_size=size, resize=size + size // 8)
        pth.with_suffix(".json").write_text(json.dumps(meta))
    return pth


def cli(*args) -> int:
    """Run ``warmstart ARGS`` in this process; return its exit code."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code


def summary(run: Path) -> dict:
    return json.loads((Path(run) / "summary.json").read_text())
