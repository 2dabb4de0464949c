"""Symmetry report: are the filters of each layer different from each other at all?

Filters that start equal get equal gradients and stay equal: a layer of 32 identical filters is one
filter. For every convolution and linear layer (weight of dim >= 2) the report gives

- ``filters``: the rows (output filters/units); a conv weight is flattened per filter, bias appended;
- ``distinct``: how many differ, at tolerance ``tol`` relative to the layer's largest |weight|;
- ``max_cosine``: the largest cosine similarity between two rows (1.0 when some are duplicates,
  nan for a single row);
- ``rank``: the numerical rank of the flattened weight (singular values above ``rank_rtol`` times
  the largest): distinct filters can still span only a few directions;
- ``duplicate_of``: an earlier layer with an identical weight, if any;
- ``zero_filters``: rows whose weight is all zero (bias not counted): dead filters, often what a
  pruned or quantized file holds.

Everything comes from float64 Gram matrices (one matmul per layer, in row chunks for large layers;
the rank from the eigenvalues of the smaller Gram matrix); only row pairs the Gram matrix cannot rule
out as duplicates are compared entry by entry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from warmstart.errors import UserError
from warmstart.init.schemes import CONV_TYPES, LINEAR_TYPES

CHUNK = 2048  # rows per Gram-matrix block


@dataclass(frozen=True)
class LayerSymmetry:
    shape: tuple[int, ...]
    filters: int
    distinct: int
    max_cosine: float
    rank: int
    duplicate_of: str | None = None
    zero_filters: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


class SymmetryReport:
    """Per-layer symmetry statistics, in model/state_dict order."""

    COLUMNS = ("layer", "shape", "filters", "distinct", "max_cos", "rank", "duplicate_of")

    def __init__(self, layers: dict[str, LayerSymmetry]):
        self.layers = layers

    def __getitem__(self, layer: str) -> LayerSymmetry:
        return self.layers[layer]

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, dict]:
        """{layer: {"filters", "distinct", "max_cosine", "rank", "duplicate_of", "zero_filters", "shape"}}."""
        return {name: row.to_dict() for name, row in self.layers.items()}

    def to_text(self) -> str:
        cells = [self.COLUMNS] + [
            (name, "x".join(map(str, r.shape)), str(r.filters), str(r.distinct), f"{r.max_cosine:.4f}", str(r.rank),
             r.duplicate_of or "-") for name, r in self.layers.items()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.COLUMNS))]
        return "\n".join("  ".join(c.rjust(w) if 2 <= i <= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                         for row in cells)

    __str__ = to_text

    def explain(self) -> list[str]:
        """One sentence per layer (see :func:`explain_layer`)."""
        return [explain_layer(name, row) for name, row in self.to_dict().items()]


def _layers(source: nn.Module | Mapping[str, Tensor]) -> dict[str, tuple[Tensor, Tensor | None]]:
    """{layer: (weight, bias)} for conv/linear modules, or for every ``*weight`` of dim >= 2 in a state_dict."""
    if isinstance(source, nn.Module):
        return {name: (m.weight, m.bias) for name, m in source.named_modules()
                if isinstance(m, CONV_TYPES + LINEAR_TYPES) and isinstance(m.weight, Tensor) and m.weight.dim() >= 2}
    if not isinstance(source, Mapping):
        raise UserError(f"symmetry_report needs an nn.Module or a state_dict (names -> tensors), got {type(source).__name__}")
    out = {}
    for key, w in source.items():
        if (key == "weight" or key.endswith(".weight")) and isinstance(w, Tensor) and w.is_floating_point() and w.dim() >= 2:
            layer = key[: -len(".weight")] if key != "weight" else key
            b = source.get(f"{layer}.bias")
            out[layer] = (w, b if isinstance(b, Tensor) and tuple(b.shape) == (w.shape[0],) else None)
    if not out:
        keys = ", ".join(list(source)[:5])
        raise UserError(f"symmetry_report: no conv/linear weights in this state_dict (keys: {keys}); "
                        "a training checkpoint usually holds it under a key such as 'model' or 'state_dict'")
    return out


def _rows_stats(rows: Tensor, tol: float) -> tuple[int, float]:
    """(distinct rows, max cosine) of a float64 matrix, grouping rows within ``tol`` of the largest |entry|."""
    n, d = rows.shape
    limit = tol * float(rows.abs().max()) if rows.numel() else 0.0
    norms2 = (rows * rows).sum(1)
    norms = norms2.sqrt()
    max_cos, candidates = -math.inf, {}
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        gram = rows[start:stop] @ rows.T
        cos = gram / (norms[start:stop, None] * norms[None, :]).clamp_min(1e-300)  # a zero row: cosine 0
        cos[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf
        if n > 1:
            max_cos = max(max_cos, float(cos.max()))
        # |a - b|_inf <= limit implies |a - b|^2 <= d * limit^2; allow for rounding in the Gram matrix.
        dist2 = norms2[start:stop, None] + norms2[None, :] - 2 * gram
        slack = 1e-12 * (norms2[start:stop, None] + norms2[None, :])
        close = dist2 <= d * limit**2 + slack
        close[torch.arange(stop - start), torch.arange(start, stop)] = False
        for i in close.any(1).nonzero().flatten().tolist():
            candidates[start + i] = close[i].nonzero().flatten()
    leader = torch.full((n,), -1, dtype=torch.long)
    for i in range(n):  # leader clustering: each unassigned row takes the unassigned rows within tolerance
        if leader[i] >= 0:
            continue
        leader[i] = i
        js = candidates.get(i)
        if js is not None:
            js = js[leader[js] < 0]
            same = (rows[js] - rows[i]).abs().amax(1) <= limit
            leader[js[same]] = i
    distinct = int((leader == torch.arange(n)).sum())
    return distinct, (1.0 if distinct < n else max_cos if n > 1 else math.nan)


def _rank(w: Tensor, rtol: float) -> int:
    """Singular values above ``rtol`` times the largest, from the eigenvalues (sv^2) of the smaller Gram matrix."""
    eig = torch.linalg.eigvalsh(w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w)
    return int((eig > rtol**2 * eig[-1]).sum()) if eig[-1] > 0 else 0


def _twin(weight: Tensor, w: Tensor, tol: float, seen: list[tuple[str, Tensor, float]]) -> str | None:
    """The first earlier layer whose weight equals ``weight`` (``w``: it in float64, flattened) within tolerance."""
    limit, norm = tol * float(w.abs().max()), float(w.norm())
    for other, ow, onorm in seen:
        # |norm(a) - norm(b)| <= |a - b|_2 <= sqrt(numel) |a - b|_inf: a cheap test before the full one
        if (ow.shape == weight.shape and abs(onorm - norm) <= math.sqrt(w.numel()) * limit
                and float((ow.to("cpu", torch.float64).reshape(w.shape) - w).abs().max()) <= limit):
            return other
    return None


def symmetry_report(model_or_state_dict: nn.Module | Mapping[str, Tensor], tol: float = 1e-6, *,
                    rank_rtol: float = 1e-4) -> SymmetryReport:
    """Measure, per conv/linear layer, how many filters are distinct and how many directions they span."""
    if not (tol >= 0 and rank_rtol > 0):
        raise UserError(f"symmetry_report: need tol >= 0 and rank_rtol > 0, got tol={tol}, rank_rtol={rank_rtol}")
    layers: dict[str, LayerSymmetry] = {}
    seen: list[tuple[str, Tensor, float]] = []
    with torch.no_grad():
        for name, (weight, bias) in _layers(model_or_state_dict).items():
            w = weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)
            rows = torch.cat([w, bias.detach().to("cpu", torch.float64)[:, None]], 1) if bias is not None else w
            distinct, max_cos = _rows_stats(rows, tol)
            twin = _twin(weight, w, tol, seen)
            seen.append((name, weight.detach(), float(w.norm())))  # the original tensor: no copy kept
            zero = int((w == 0).all(1).sum())
            layers[name] = LayerSymmetry(tuple(weight.shape), w.shape[0], distinct, max_cos, _rank(w, rank_rtol), twin, zero)
    return SymmetryReport(layers)


def explain_layer(name: str, row: Mapping | LayerSymmetry, *, start: Mapping | LayerSymmetry | None = None) -> str:
    """One sentence on what a report row means, e.g. why 32 filters are only 1.

    Without ``start`` the sentence says only what the weights show (identical filters, all-zero
    filters, low rank), true of a fresh model, a trained one or a pretrained file alike. With
    ``start``, the same layer's row before training, it can also say why: filters that started
    identical and still are got the same gradient at every step.
    """
    row = row.to_dict() if isinstance(row, LayerSymmetry) else row
    start = start.to_dict() if isinstance(start, LayerSymmetry) else start
    n, distinct, rank, zero = row["filters"], row["distinct"], row["rank"], row.get("zero_filters", 0)
    shape = row.get("shape")
    unit = "filters" if shape is None or len(shape) > 2 else "units"
    one = unit[:-1]
    full = min(n, math.prod(shape[1:])) if shape is not None else n
    started_equal = start is not None and start["distinct"] == 1 and n > 1
    if row.get("duplicate_of"):
        return f"{name}: identical to {row['duplicate_of']}: the two layers hold the same weights (copied or tied)"
    if n > 1 and zero == n:
        return f"{name}: all {n} {unit} have all-zero weights: the layer passes on nothing but its bias"
    zeros = (f" ({zero} of the {n} {'has' if zero == 1 else 'have'} all-zero weights)") if zero else ""
    if n > 1 and distinct == 1:
        if started_equal:
            return f"{name}: {n} {unit} but only 1 distinct: they started identical, got the same gradient at every step and never separated"
        return f"{name}: {n} {unit} but only 1 distinct: all {n} are identical, so the layer computes one feature {n} times"
    if distinct < n:
        copies = n - distinct
        return (f"{name}: only {distinct} of {n} {unit} distinct: {copies} "
                f"{'is an exact copy' if copies == 1 else 'are exact copies'} of another {one} and "
                f"{'adds' if copies == 1 else 'add'} nothing{zeros}")
    if started_equal:
        sentence = (f"{name}: started as 1 distinct {one}, ended with all {n} distinct: a layer downstream treats them "
                    f"differently, so their gradients differed")
        return sentence + (f"; yet rank {rank} of a possible {full}: they span only {rank} directions" if rank < full else "")
    if rank < full:
        why = f"{zero} of them {'has' if zero == 1 else 'have'} all-zero weights" if zero else "some are combinations of others"
        return f"{name}: all {n} {unit} distinct, but rank {rank} of a possible {full}: they span only {rank} directions ({why})"
    if row["max_cosine"] is not None and row["max_cosine"] > 0.99:
        return f"{name}: all {n} {unit} distinct, but some are nearly parallel (max cosine {row['max_cosine']:.3f}){zeros}"
    return f"{name}: all {n} {unit} distinct (max cosine {row['max_cosine']:.2f}, full rank {rank}): symmetry is broken{zeros}"
