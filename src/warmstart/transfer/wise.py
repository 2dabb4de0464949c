"""Pick a point on the path: weight-space interpolation between the start and the end of fine-tuning (WiSE-FT,
Wortsman et al., CVPR 2022).

Fine-tuning starts at ``theta0`` (the pretrained layers with the new head at its linear probe: the run's start)
and ends at ``theta1``. ``--interpolate`` evaluates the straight line between them,

    theta(a) = (1 - a) * theta0 + a * theta1,   a in 0, 0.1, ..., 1   (:data:`GRID`)

and keeps the point that classifies best a **held-out part of the training split** (:data:`HOLDOUT` of every
class, stratified, seeded; those images are taken out of training, the probe included) -- never the validation
images whose accuracy the run reports. Ties in held-out accuracy go to the lower held-out loss. a = 1 is the
plain fine-tuned model, bit for bit (``0 * theta0 + 1 * theta1``); a = 0 is the start.

**BatchNorm.** With ``--bn frozen`` (the default) the running statistics are the pretrained ones at both ends,
so mixing them is exact (they are equal). With ``--bn train`` the statistics of a mixed network are not the mix
of the two ends' statistics: every point of the grid gets its statistics recomputed on the (fitting) training
images, centre crops, before it is scored (:func:`~warmstart.transfer.bn.recalibrate_bn`, the exact mean as
``torch.optim.swa_utils.update_bn``): 11 extra passes over the training images without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

#: the mixing coefficients evaluated, 0 (the start) to 1 (the fine-tuned end)
GRID = tuple(i / 10 for i in range(11))
#: the share of every class of the training split held out to choose the coefficient
HOLDOUT = 0.2


def mix(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], a: float) -> dict[str, torch.Tensor]:
    """``(1 - a) * start + a * end`` for every floating-point tensor of two state dicts; integer buffers (BatchNorm's
    ``num_batches_tracked``) are taken from ``end``. a = 1 gives ``end`` exactly, a = 0 gives ``start``."""
    if start.keys() != end.keys():
        raise ValueError("mix: the two state dicts hold different tensors")
    return {k: (1 - a) * start[k] + a * end[k] if end[k].is_floating_point() else end[k].clone() for k in end}


@dataclass
class Interpolation:
    """The chosen coefficient and what chose it (summary.json's ``interpolate``)."""

    alpha: float
    grid: list[float]
    heldout_accuracy: list[float]
    heldout_loss: list[float]
    heldout_images: int
    bn_recomputed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "grid": self.grid, "heldout_accuracy": self.heldout_accuracy,
                "heldout_loss": self.heldout_loss, "heldout_images": self.heldout_images,
                "bn_recomputed": self.bn_recomputed, **self.extra}


def choose(model: nn.Module, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor],
           score: Callable[[nn.Module], dict[str, Any]], *, heldout_images: int, grid: Sequence[float] = GRID,
           recompute_bn: Callable[[nn.Module], None] | None = None) -> Interpolation:
    """Load every ``theta(a)`` of ``grid`` into ``model``, ``score`` it (a dict with ``accuracy`` and ``loss``: the
    held-out images' evaluation), keep the best (highest accuracy, then lowest loss, then the larger a) and leave
    ``model`` holding it. ``recompute_bn(model)``: refresh BatchNorm statistics of each point before scoring."""
    accs, losses = [], []
    for a in grid:
        model.load_state_dict(mix(start, end, a))
        if recompute_bn is not None:
            recompute_bn(model)
        r = score(model)
        accs.append(float(r["accuracy"]))
        losses.append(float(r["loss"]))
    best = max(range(len(grid)), key=lambda i: (accs[i], -losses[i], grid[i]))
    model.load_state_dict(mix(start, end, grid[best]))
    if recompute_bn is not None:
        recompute_bn(model)
    return Interpolation(alpha=float(grid[best]), grid=[float(a) for a in grid], heldout_accuracy=accs, heldout_loss=losses,
                         heldout_images=heldout_images, bn_recomputed=recompute_bn is not None)


def bn_refresher(images, normalize: nn.Module | None, *, batch_size: int, changed: Sequence[str] | None = None
                 ) -> Callable[[nn.Module], None]:
    """A ``recompute_bn`` for :func:`choose`: BatchNorm running statistics recomputed over ``images`` (a dataset of
    (uint8 image, label)) by :func:`~warmstart.transfer.bn.recalibrate_bn` (the exact mean over the images, as
    ``torch.optim.swa_utils.update_bn``, with dropout off). ``changed``: the BatchNorm modules whose statistics
    training changed; the others (a frozen group's) keep theirs."""
    from torch.utils.data import DataLoader

    from warmstart.transfer.bn import batchnorms, recalibrate_bn

    def refresh(model: nn.Module) -> None:
        keep = {n: {k: v.clone() for k, v in model.get_submodule(n).state_dict().items()}
                for n in batchnorms(model) if changed is not None and n not in changed}
        recalibrate_bn(model, DataLoader(images, batch_size=batch_size, shuffle=False), normalize)
        for n, sd in keep.items():
            model.get_submodule(n).load_state_dict(sd)

    return refresh


def changed_batchnorms(model: nn.Module, start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]) -> list[str]:
    """The BatchNorm modules of ``model`` whose running statistics differ between two of its state dicts."""
    from warmstart.transfer.bn import batchnorms

    return [n for n in batchnorms(model) if f"{n}.running_mean" in start
            and not torch.equal(start[f"{n}.running_mean"], end[f"{n}.running_mean"])]
