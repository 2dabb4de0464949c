"""`warmstart inspect`: the symmetry report of saved weights or of a freshly built model.

TARGET is one of

- a run directory (its ``model.safetensors``, else ``checkpoint.pt``, else ``best.pt``);
- a ``.safetensors`` file, or a ``.pt``/``.pth``/``.ckpt``/``.bin`` file holding a state_dict or a checkpoint
  dict with the state_dict under ``model``/``state_dict``/``model_state_dict``; read weights-only
  (:func:`warmstart.engine.checkpoint.load`), never unpickling code;
- a model name (any torchvision classification model, or ``custom_3_layer``): its random init from
  ``--seed``, or with ``--weights PATH`` that file, checked to hold that model's parameters.

For every convolution and linear layer: filters, distinct filters, max cosine between two filters, rank,
filters with all-zero weights, an identical earlier layer, and flags (``duplicates``, ``zero``,
``all-zero``, ``tied``, ``low-rank``) with a sentence each (:func:`warmstart.init.explain_layer`: it
says what the weights show -- "identical", "all-zero" -- not how they got so, which a file cannot tell).
Nothing is written.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from warmstart.engine.layout import CHECKPOINT, WEIGHT_FILES
from warmstart.errors import UserError, unknown
from warmstart.init import explain_layer, symmetry_report
from warmstart.options import OPTIONS
from warmstart.transfer.backbones import check_fits, find_head
from warmstart.transfer.registry import get_model, list_models
from warmstart.transfer.weights import load_tensors

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


# ---------------------------------------------------------------------------------------------- loading

def load_state_dict(path: str | Path) -> tuple[dict[str, Tensor], Path]:
    """A weights file or run directory -> (state_dict, the file read). Weights-only; errors are UserErrors."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if found is None:
            inner = sorted(str(p) for p in path.glob(f"*/{CHECKPOINT}"))
            hint = f"; it holds runs of its own, inspect one of: {', '.join(inner[:6])}" if inner else ""
            raise UserError(f"{path}: no {', '.join(WEIGHT_FILES)} in this folder{hint}")
        path = found
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder; pass a run directory, a .pt/.pth/.safetensors file or a model name")
    if path.suffix != ".safetensors" and path.suffix not in TORCH_SUFFIXES:
        raise UserError(f"{path}: unknown weights format {path.suffix or '(no suffix)'}; "
                        f"expected .safetensors or one of {', '.join(TORCH_SUFFIXES)}")
    return load_tensors(path), path


def build_named(name: str, seed: int = 0) -> nn.Module:
    """A model by name (:func:`~warmstart.transfer.registry.get_model`) with its default random init, drawn
    from ``seed`` (the global RNG is left as it was)."""
    if name not in list_models():
        raise unknown("model", name, list_models())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_model(name)


def _looks_like_path(text: str) -> bool:
    p = Path(text)
    return "/" in text or "\\" in text or bool(p.suffix) or p.exists()


# ---------------------------------------------------------------------------------------------- the report

def flags(row: Mapping[str, Any]) -> list[str]:
    """What stands out in a report row: ``tied`` (identical to an earlier layer), ``all-zero``/``zero`` (filters
    with all-zero weights), ``duplicates`` (fewer distinct filters than filters), ``low-rank`` (a rank below what
    the distinct, non-zero filters and the fan-in allow)."""
    n, shape = row["filters"], row["shape"]
    out = []
    if row.get("duplicate_of"):
        out.append("tied")
    if row.get("zero_filters", 0) == n:
        out.append("all-zero")
    elif row.get("zero_filters", 0):
        out.append("zero")
    if row["distinct"] < n and row.get("zero_filters", 0) != n:
        out.append("duplicates")
    # low rank beyond what duplicate and all-zero filters explain
    if row["rank"] < min(row["distinct"], n - row.get("zero_filters", 0), math.prod(shape[1:])):
        out.append("low-rank")
    return out


def inspect(target: str | Path, *, weights: str | Path | None = None, tol: float = OPTIONS["tol"].default,
            seed: int = OPTIONS["seed"].default) -> dict[str, Any]:
    """Symmetry report of a checkpoint, weights file, run directory or named model; returns it as a dict.

    ``{"source", "model", "layers": {layer: {shape, filters, distinct, max_cosine, rank, zero_filters,
    duplicate_of, flags, explanation}}, "flagged": [layers], "seconds"}``.
    """
    t0 = time.perf_counter()
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise UserError(f"--tol must be >= 0, got {tol!r}")
    text = str(target)
    model_name = None
    if Path(text).expanduser().exists() or (_looks_like_path(text) and text not in list_models()):
        if weights is not None:
            raise UserError(f"--weights goes with a model name (e.g. inspect mobilenet_v3_small --weights {weights}); "
                            f"{text} is a file already: inspect it alone")
        source, file = load_state_dict(text)
        where = str(file)
    else:
        model_name = text
        model = build_named(text, seed)
        if weights is None:
            source, where = model, f"{text}, random init (seed {seed})"
        else:
            source, file = load_state_dict(weights)
            head = find_head(model)  # a head of another size is fine: the rest must fit
            rows = source.get(f"{head}.weight")
            check_fits(source, model, text, str(file), head=head, orig_classes=rows.shape[0] if rows is not None else None)
            where = f"{text} weights from {file}"
    report = symmetry_report(source, tol)
    layers = {}
    for name, row in report.to_dict().items():
        row["max_cosine"] = row["max_cosine"] if math.isfinite(row["max_cosine"]) else None
        layers[name] = {**row, "flags": flags(row), "explanation": explain_layer(name, row)}
    return {"source": where, "model": model_name, "layers": layers,
            "flagged": [name for name, r in layers.items() if r["flags"]], "seconds": round(time.perf_counter() - t0, 3)}


def format_report(result: Mapping[str, Any], *, all_explanations: bool = False) -> str:
    """The per-layer table, then one sentence per flagged layer (every layer with ``all_explanations``)."""
    head = ("layer", "shape", "filters", "distinct", "max_cos", "rank", "zero", "flags")
    rows = [head]
    for name, r in result["layers"].items():
        cos = "-" if r["max_cosine"] is None else f"{r['max_cosine']:.4f}"
        rows.append((name, "x".join(map(str, r["shape"])), str(r["filters"]), str(r["distinct"]), cos, str(r["rank"]),
                     str(r["zero_filters"]), ",".join(r["flags"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"{result['source']}: {len(result['layers'])} conv/linear layers, {len(result['flagged'])} flagged"]
    lines += ["  ".join(c.rjust(w) if 2 <= i <= 6 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
              for row in rows]
    explained = [n for n, r in result["layers"].items() if all_explanations or r["flags"]]
    if explained:
        lines.append("")
        lines += [result["layers"][n]["explanation"] for n in explained]
    return "\n".join(lines)
