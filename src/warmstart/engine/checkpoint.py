"""Checkpoints: plain tensors and containers only, loaded with ``weights_only=True``.

Loading a checkpoint never executes code from it: a file crafted to run code when unpickled is refused
with a one-line error instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from warmstart.engine import io
from warmstart.errors import UserError


def save(state: dict[str, Any], path: Path) -> None:
    io.torch_save(state, path, what="checkpoint")


def load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run directory that holds checkpoint.pt or a .pt file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise UserError(
            f"refusing to load {path}: it is not a plain tensor checkpoint and would run code when unpickled "
            f"({first[:160]}); only load files you trust with other tools"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read checkpoint {path}: {msg[:200]}; the file is damaged or not a PyTorch checkpoint") from None
