"""Checkpoints: plain tensors and containers only, loaded with ``weights_only=True``.

Loading a checkpoint never executes code from it: a file crafted to run code when unpickled is refused
with a one-line error instead, and so is a damaged file (empty, cut short, not a PyTorch file at all).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from warmstart.engine import io
from warmstart.errors import UserError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def save(state: dict[str, Any], path: Path) -> None:
    io.torch_save(state, path, what="checkpoint")


def load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run directory that holds checkpoint.pt or a .pt file")
    return safe_torch_load(path, what="checkpoint", map_location=map_location,
                           todo="only load files you trust with other tools",
                           damaged="the file is damaged or not a PyTorch checkpoint")


def safe_torch_load(path: Path, *, what: str, todo: str, damaged: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; every failure becomes a one-line :class:`UserError`.

    A file whose pickle refers to anything but tensors and plain containers (the way a malicious file runs
    code) is *refused* (message + ``todo``); a file that is not a readable PyTorch file at all (empty, cut
    short, text) is reported as damaged (message + ``damaged``). torch's own warnings about the pickle
    protocol are silenced: the one error line says it all.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = _ANSI.sub("", str(e))
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            raise UserError(f"refusing to load {what} {path}: not plain tensors, it would run code when unpickled "
                            f"({_refusal(text)}); {todo}") from None
        raise UserError(f"cannot read {what} {path}: {_first_line(text, e)}; {damaged}") from None
    except Exception as e:  # noqa: BLE001 - an untrusted file: whatever the parser trips on, it is not a checkpoint
        text = _ANSI.sub("", str(e))
        reason = "the file is empty or cut short" if isinstance(e, EOFError) else _first_line(text, e)
        raise UserError(f"cannot read {what} {path}: {reason}; {damaged}") from None


def _refusal(text: str) -> str:
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if m:
        return f"it calls or imports {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return m.group(1).strip().rstrip(".")[:120] if m else "an object torch's weights-only loader does not allow"


def _first_line(text: str, e: BaseException) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    first = lines[0].split(". ")[0].rstrip(".")  # torch appends paragraphs of advice after the first sentence
    return f"{type(e).__name__}: {first[:200]}"
