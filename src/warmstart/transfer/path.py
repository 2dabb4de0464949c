"""Linear paths in weight space: loss and accuracy along the straight line between two networks.

``theta(t) = theta_a + t (theta_b - theta_a)`` (``torch.lerp``: exactly ``theta_a`` at t = 0 and ``theta_b``
at t = 1) is evaluated at a few points ``t``. The **barrier** is the largest loss on the path above the
straight line between the two ends' losses, ``max_t L(t) - ((1 - t) L(0) + t L(1))`` over ``0 <= t <= 1``:
about 0 when the two networks lie in one basin (linearly connected), clearly above 0 when a ridge separates
them (Frankle et al., ICML 2020; Neyshabur, Sedghi & Zhang, NeurIPS 2020). Points outside [0, 1]
(``extend``) show the walls of the basin and do not enter the barrier.

**BatchNorm** (``bn``):

* ``"recompute"`` (default): at every point, ends included, the running mean and variance of every
  BatchNorm are re-estimated on the training images (centre crops) in train mode, the exact mean over the
  batches (:func:`~warmstart.transfer.bn.recalibrate_bn`; the same idea as ``torch.optim.swa_utils.update_bn``,
  with dropout kept in eval mode). An interpolated network's activations have other statistics than either
  end's, so interpolated running stats would make the middle look broken for the wrong reason. A run
  trained with ``--bn frozen`` (the default of pretrained strategies) kept ImageNet's running statistics:
  its end evaluated here uses recomputed statistics, so its accuracy can differ from the run's own
  (summary.json) — the path compares every point under the same rule.
* ``"interpolate"``: the running statistics are interpolated like the weights (at t = 0 and 1 each network
  exactly as it was trained and evaluated; for two ``--bn frozen`` ends both hold the same pretrained
  statistics, so they stay fixed along the path).

Integer buffers (``num_batches_tracked``) are taken from the nearer end. Layers that did not train (a
``transfer`` run's frozen trunk) are equal at both ends and stay fixed on the path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from warmstart.errors import UserError
from warmstart.options import OPTIONS, PATH_BN
from warmstart.transfer.features import MIN_EVAL_BATCH

BN_MODES = PATH_BN  # declared once, with the options (warmstart.options)
DEFAULT_POINTS = OPTIONS["points"].default
EXTEND = 0.2
"""``extend``: the path runs over [-EXTEND, 1 + EXTEND] (the same spacing as inside [0, 1])."""


def check_points(points: Any) -> int:
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise UserError(f"--points must be a whole number >= 2 (the two ends at least), got {points!r}; e.g. --points 11")
    return points


def path_ts(points: int = DEFAULT_POINTS, extend: bool = False) -> list[float]:
    """``points`` evenly spaced t in [0, 1] (ends included); ``extend`` adds points at the same spacing out to
    about ``-EXTEND`` and ``1 + EXTEND``."""
    check_points(points)
    step = 1.0 / (points - 1)
    ts = [i * step for i in range(points)]
    if extend:
        more = max(1, round(EXTEND / step))
        ts = [-k * step for k in range(more, 0, -1)] + ts + [1 + k * step for k in range(1, more + 1)]
    return [round(t, 10) for t in ts]


def check_compatible(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *, names: tuple[str, str] = ("A", "B")) -> None:
    """Two state dicts of one architecture (the same names and shapes), else a UserError naming the first difference."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        which, key = (names[0], only_a[0]) if only_a else (names[1], only_b[0])
        raise UserError(f"{names[0]} and {names[1]} are different architectures ({which} has {key!r}, the other does not); "
                        "a linear path needs two networks of one architecture (the same --model and classes)")
    for k in a:
        if tuple(a[k].shape) != tuple(b[k].shape):
            raise UserError(f"{names[0]} and {names[1]} differ in the shape of {k!r} ({tuple(a[k].shape)} vs {tuple(b[k].shape)}): "
                            "different architectures or numbers of classes; a linear path needs two networks of one architecture")


def is_bn_stat(name: str) -> bool:
    return name.endswith(("running_mean", "running_var"))


def lerp_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], t: float, *,
               bn: str = BN_MODES[0]) -> dict[str, torch.Tensor]:
    """The state dict at ``t`` on the line from ``a`` to ``b``: floating tensors by ``torch.lerp`` (exactly ``a``
    at 0 and ``b`` at 1), integer ones from the nearer end. BN running stats: interpolated too (``bn`` is
    ``"interpolate"``), or ``a``'s (``"recompute"``: they are re-estimated at every point anyway)."""
    out = {}
    for k, va in a.items():
        vb = b[k]
        if not va.is_floating_point() or (bn == "recompute" and is_bn_stat(k)):
            out[k] = (va if t < 0.5 else vb).clone()
        else:
            out[k] = torch.lerp(va.float(), vb.float(), float(t)).to(va.dtype)
    return out


def barrier(ts: Sequence[float], losses: Sequence[float]) -> tuple[float, float]:
    """``(height, t)``: the largest ``loss(t) - ((1 - t) loss(0) + t loss(1))`` over the points with 0 <= t <= 1
    (the ends give 0, so the height is >= 0 up to rounding), and where it is."""
    pairs = dict(zip(ts, losses))
    if 0.0 not in pairs or 1.0 not in pairs:
        raise ValueError("barrier: the path must include t = 0 and t = 1")
    l0, l1 = pairs[0.0], pairs[1.0]
    best, where = -math.inf, 0.0
    for t, loss in zip(ts, losses):
        if 0.0 <= t <= 1.0:
            gap = loss - ((1 - t) * l0 + t * l1)
            if gap > best:
                best, where = gap, t
    return best, where


@dataclass
class PathData:
    """The images a path is evaluated on: training images (centre crops: they also re-estimate BatchNorm) and
    validation images, with the normalisation the networks expect."""

    train: Dataset
    val: Dataset | None
    num_classes: int
    normalize: nn.Module | None = None
    batch_size: int = MIN_EVAL_BATCH


def evaluate_at(model: nn.Module, data: PathData, device: torch.device, *, recompute_bn: bool) -> dict[str, float]:
    """Re-estimate BatchNorm on the training images (when asked), then loss and accuracy on both splits."""
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.loop import evaluate
    from warmstart.transfer.bn import batchnorms, recalibrate_bn

    cfg = TrainConfig(batch_size=data.batch_size, eval_batch_size=data.batch_size, device=str(device))
    if recompute_bn and batchnorms(model):
        recalibrate_bn(model, DataLoader(data.train, batch_size=data.batch_size, shuffle=False), data.normalize)
    row: dict[str, float] = {}
    for split, ds in (("train", data.train), ("val", data.val)):
        if ds is None:
            continue
        r = evaluate(model, ds, data.num_classes, cfg=cfg, device=device, normalize=data.normalize)
        row[f"{split}_loss"], row[f"{split}_accuracy"] = float(r["loss"]), float(r["accuracy"])
    return row


def linear_path(model: nn.Module, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], data: PathData, *,
                ts: Sequence[float] | None = None, bn: str = BN_MODES[0], device: str | torch.device = "cpu",
                names: tuple[str, str] = ("A", "B"), progress=None) -> dict[str, Any]:
    """Evaluate ``model`` with the weights at every ``t`` of ``ts`` on the line from ``a`` to ``b`` (state dicts).

    Returns ``{"points": [{"t", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}], "barrier":
    {"train_loss", "val_loss", "val_error"}, "barrier_t": {...}, "bn"}``: see the module's docstring for the
    barrier and for what ``bn`` does. ``model`` is left holding the weights of the last point.
    """
    if bn not in BN_MODES:
        raise UserError(f"--bn {bn!r}: expected one of {', '.join(BN_MODES)}")
    check_compatible(a, b, names=names)
    ts = list(ts) if ts is not None else path_ts()
    device = torch.device(device)
    model.to(device)
    points = []
    for i, t in enumerate(ts):
        model.load_state_dict(lerp_state(a, b, t, bn=bn))
        row = {"t": float(t), **evaluate_at(model, data, device, recompute_bn=bn == "recompute")}
        points.append(row)
        if progress is not None:
            progress(i, row)
    out: dict[str, Any] = {"points": points, "bn": bn, "barrier": {}, "barrier_t": {}}
    ts_ = [p["t"] for p in points]
    curves = {"train_loss": [p["train_loss"] for p in points]}
    if data.val is not None:
        curves["val_loss"] = [p["val_loss"] for p in points]
        curves["val_error"] = [1 - p["val_accuracy"] for p in points]
    for key, values in curves.items():
        out["barrier"][key], out["barrier_t"][key] = barrier(ts_, values)
    return out
