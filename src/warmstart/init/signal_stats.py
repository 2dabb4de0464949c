"""The measurements of :mod:`warmstart.init.signal`: per-layer :class:`LayerStats` and a snapshot
:class:`SignalStats`, with their JSON and CSV forms (``signal.json``/``signal.csv`` of a run directory)."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from warmstart.engine.io import atomic_path

ZERO_TOL = 1e-6
"""An entry counts as "near zero" when ``|x| < ZERO_TOL``."""


def _float(x: Any) -> float:
    return float(x) if x is not None else math.nan


# --------------------------------------------------------------------------------------------- results
@dataclass
class LayerStats:
    """Statistics of one weight layer. ``*_hist`` hold ``[below, bin_0, ..., bin_{n-1}, above]`` counts."""

    index: int
    name: str
    kind: str
    fan_in: int
    weight_std: float
    count: int
    in_msq: float
    out_mean: float
    out_std: float
    out_zero_frac: float
    pred_var: float
    pred_var_local: float
    act: str | None
    act_mean: float
    act_std: float
    act_zero_frac: float
    grad_out_std: float
    grad_weight_std: float
    out_hist: list[int] = field(default_factory=list, repr=False)
    act_hist: list[int] = field(default_factory=list, repr=False)

    @property
    def out_var(self) -> float:
        return self.out_std**2

    @property
    def pred_std(self) -> float:
        return math.sqrt(self.pred_var) if self.pred_var >= 0 else math.nan


_CSV_FIELDS = [
    "tag", "index", "name", "kind", "fan_in", "weight_std", "count", "in_msq", "out_mean", "out_std", "out_var",
    "pred_var", "pred_var_local", "out_zero_frac", "act", "act_mean", "act_std", "act_zero_frac",
    "grad_out_std", "grad_weight_std",
]  # fmt: skip


@dataclass
class SignalStats:
    """Per-layer signal statistics of one model at one moment (``tag``), layers in execution order."""

    layers: list[LayerStats]
    bin_edges: list[float]
    tag: str = ""
    zero_tol: float = ZERO_TOL
    input_var: float = math.nan
    """Second moment E[x^2] of the model input seen while measuring (NaN if none was seen)."""

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerStats]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def hidden(self) -> list[LayerStats]:
        """All weight layers but the last one to run (taken to be the classifier head)."""
        return self.layers[:-1]

    @property
    def act_std_ratio(self) -> float:
        """Output std at the last hidden layer / at the first: << 1 vanishing, >> 1 exploding signal."""
        h = self.hidden
        return h[-1].out_std / h[0].out_std if len(h) >= 2 and h[0].out_std > 0 else math.nan

    @property
    def grad_std_ratio(self) -> float:
        """dLoss/d(output) std at the first hidden layer / at the last: << 1 vanishing gradients."""
        h = self.hidden
        return h[0].grad_out_std / h[-1].grad_out_std if len(h) >= 2 and h[-1].grad_out_std > 0 else math.nan

    def to_dicts(self) -> list[dict[str, Any]]:
        """One flat dict per layer (scalars only, histograms left out), keys as in :meth:`save_csv`."""
        rows = []
        for layer in self.layers:
            d = {k: v for k, v in asdict(layer).items() if not k.endswith("_hist")}
            d["out_var"], d["tag"] = layer.out_var, self.tag
            rows.append({k: d[k] for k in _CSV_FIELDS})
        return rows

    def save_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_dicts` as CSV (atomically: temp file, then ``os.replace``)."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in self.to_dicts())
        return Path(path)

    def to_json_dict(self) -> dict[str, Any]:
        """Everything, histograms included; NaN becomes ``None`` so the result is strict JSON."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else v
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean(asdict(self))

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> "SignalStats":
        floats = {f.name for f in fields(LayerStats) if f.type in ("float", float)}
        layers = [
            LayerStats(**{k: (math.nan if (k in floats and v is None) else v) for k, v in layer.items()})
            for layer in d["layers"]
        ]
        return cls(
            layers=layers,
            bin_edges=list(d["bin_edges"]),
            tag=d.get("tag", ""),
            zero_tol=float(d.get("zero_tol", ZERO_TOL)),
            input_var=_float(d.get("input_var")),
        )
