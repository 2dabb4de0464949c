"""How far the start travelled: the distance of each layer group from its pretrained weights, and how much the
features entering the head changed.

The lecture calls fine-tuning a kind of initialisation: the net starts in a region good for another problem,
hopefully close to a good region for this one. :class:`DriftTracker` measures that "close", for every run
that trains pretrained layers:

* after every epoch, per layer group (:func:`~warmstart.transfer.groups.layer_groups`), the relative distance
  ``||w - w0|| / ||w0||`` over the group's parameters (weights and biases; BatchNorm running statistics are
  buffers, not counted), written into the epoch's metrics row as ``drift/<group>`` (metrics.csv,
  TensorBoard). A group that stays frozen has distance exactly 0;
* at the end, linear CKA (Kornblith et al., ICML 2019) between the penultimate features -- the input of the
  head -- of the start and of the trained network on the same validation images: 1 means the head sees the
  same representation up to rotation and scale, lower means fine-tuning changed what the features encode.

It is an engine callback (``fit(..., callbacks=[tracker])``); it holds the full model, so it measures the
same whether ``fit`` trains the whole network or only its trainable tail on cached features.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from warmstart.transfer.features import MIN_EVAL_BATCH
from warmstart.transfer.groups import LayerGroup

#: CKA on at most this many validation images (evenly spaced through the split, so every class is in)
CKA_MAX_IMAGES = 1024
PREFIX = "drift/"


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n examples (``x``: n x p, ``y``: n x q; flattened beyond).

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred Xc, Yc (Kornblith et al.
    2019, eq. 5 with a linear kernel), computed in float64 through the n x n Gram matrices when n is the
    smaller side, else through the feature covariances. Invariant to orthogonal transforms and isotropic
    scaling of either side; 1 for identical representations; nan when one side is constant.
    """
    x, y = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: x and y must describe the same examples, got {x.shape[0]} and {y.shape[0]} rows")
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    if x.shape[0] <= max(x.shape[1], y.shape[1]):
        k, lg = x @ x.T, y @ y.T
        cross, sx, sy = (k * lg).sum(), k.norm(), lg.norm()
    else:
        cross, sx, sy = (y.T @ x).norm() ** 2, (x.T @ x).norm(), (y.T @ y).norm()
    denom = float(sx * sy)
    return float(cross) / denom if denom > 0 else math.nan


def relative_distance(now: Sequence[torch.Tensor], start: Sequence[torch.Tensor]) -> float:
    """``||w - w0|| / ||w0||`` over several tensors taken as one vector (0 when both are zero)."""
    diff = sum(float((a.detach().double() - b.double()).pow(2).sum()) for a, b in zip(now, start))
    ref = sum(float(b.double().pow(2).sum()) for b in start)
    if ref == 0:
        return 0.0 if diff == 0 else math.inf
    return math.sqrt(diff / ref)


def head_inputs(model: nn.Module, head: str, images: Any, *, normalize: nn.Module | None = None, batch_size: int = MIN_EVAL_BATCH,
                max_images: int = CKA_MAX_IMAGES) -> torch.Tensor:
    """The input of ``model``'s module ``head`` (the penultimate features) on up to ``max_images`` of ``images``
    (``images[i] -> (image, label)``), in eval mode and without gradients; the model's train/eval flags and the
    global RNG are left as they were."""
    n = len(images)
    idx = sorted({round(i * (n - 1) / max(1, max_images - 1)) for i in range(max_images)}) if n > max_images else range(n)
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(head).register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().flatten(1).float().cpu()))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            idx = list(idx)
            for s in range(0, len(idx), batch_size):
                x = torch.stack([images[i][0] for i in idx[s:s + batch_size]]).to(device)
                model(normalize.to(device)(x) if normalize is not None else x)
    finally:
        hook.remove()
        for m, training in modes.items():
            m.training = training
    return torch.cat(captured)


class DriftTracker:
    """Engine callback: per-group distance from the start after every epoch, CKA of the head's input at the end.

    Args:
        model: the full network, at its start (pretrained layers and the new head as training begins).
        groups: its layer groups; ``trained``: the names of those the plan trains (the others must stay at 0).
        images: validation images for the CKA (``images[i] -> (image, label)``), or None for no CKA.
        normalize: what turns ``images`` into the network's input (e.g. ``Normalizer.of(preprocess)``).
        skip: group names whose start is unknown (a resumed run's head) -- not measured.
        start: the start's parameters by name (the run's one copy, e.g. ``recipe.snapshot``), read, not copied;
            None: copied from ``model`` now.
    """

    def __init__(self, model: nn.Module, groups: list[LayerGroup], *, trained: Sequence[str] = (), images: Any = None,
                 normalize: nn.Module | None = None, batch_size: int = MIN_EVAL_BATCH, skip: Sequence[str] = (),
                 start: Mapping[str, torch.Tensor] | None = None) -> None:
        t0 = time.perf_counter()
        self.model, self.groups, self.trained = model, [g for g in groups if g.name not in skip and g.params], list(trained)
        if start is None:
            start = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
        self.start = {g.name: [start[n].float().cpu() for n in g.params] for g in self.groups}
        self.images, self.normalize, self.batch_size = images, normalize, batch_size
        self.head = groups[-1].modules[0]
        self.features0 = head_inputs(model, self.head, images, normalize=normalize, batch_size=batch_size) \
            if images is not None and len(images) > 1 else None
        self.seconds = time.perf_counter() - t0  # what measuring the drift costs (summary.json's drift_seconds)

    def distances(self) -> dict[str, float]:
        """Each group's relative distance from its start, now."""
        params = dict(self.model.named_parameters())
        return {g.name: relative_distance([params[n].detach().float().cpu() for n in g.params], self.start[g.name])
                for g in self.groups}

    def __call__(self, model: nn.Module, row: dict[str, Any]) -> None:
        """The engine's per-epoch callback: adds ``drift/<group>`` to the epoch's row (before it is logged)."""
        t0 = time.perf_counter()
        row.update({PREFIX + k: v for k, v in self.distances().items()})
        self.seconds += time.perf_counter() - t0

    def finish(self, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The run's ``summary["drift"]``: ``per_epoch`` (from the metrics rows, so a resumed run keeps its earlier
        epochs), ``final`` (group -> distance now), ``trained`` and, with images, ``cka`` and ``cka_images``."""
        t0 = time.perf_counter()
        per_epoch = [{"epoch": int(r["epoch"]), **{k[len(PREFIX):]: float(v) for k, v in r.items()
                                                   if k.startswith(PREFIX) and v not in (None, "")}} for r in history]
        out: dict[str, Any] = {"per_epoch": per_epoch, "final": self.distances(), "trained": self.trained,
                               "groups": [g.name for g in self.groups]}
        if self.features0 is not None:
            after = head_inputs(self.model, self.head, self.images, normalize=self.normalize, batch_size=self.batch_size)
            out["cka"] = linear_cka(self.features0, after)
            out["cka_images"] = len(after)
        self.seconds += time.perf_counter() - t0
        return out

    @staticmethod
    def measures(model: nn.Module, strategy: Any) -> bool:
        """Whether a run of ``strategy`` from ``model`` trains pretrained layers (``finetune-*``, ``gradual``): not
        ``scratch`` (no start to travel from) nor ``transfer`` (only the new head trains)."""
        return not (strategy.from_scratch or strategy.head_only) and bool(getattr(model, "warmstart_pretrained", False))

    @classmethod
    def for_run(cls, model: nn.Module, groups: list[LayerGroup], strategy: Any, phases: Sequence[Any], *, images: Any = None,
                normalize: nn.Module | None = None, batch_size: int = MIN_EVAL_BATCH, resumed: bool = False,
                device: torch.device | None = None, start: Mapping[str, torch.Tensor] | None = None) -> "DriftTracker | None":
        """A tracker for a run that trains pretrained layers (:meth:`measures`), else None. ``resumed``: the head's
        start (its linear probe) is not in memory, so the head is not measured. ``device``: where the model will train
        (it moves there now, so the start's features are computed there). ``start``: the run's copy of its start."""
        if not cls.measures(model, strategy):
            return None
        if device is not None:
            model.to(device)
        trained = list(dict.fromkeys(pg.name for ph in phases for pg in ph.groups))
        return cls(model, groups, trained=trained, images=images, normalize=normalize, batch_size=batch_size,
                   skip=("head",) if resumed else (), start=start)
