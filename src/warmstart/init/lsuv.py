"""LSUV: layer-sequential unit-variance initialisation (Mishkin & Matas 2016, "All you need is a good init").

Instead of deriving the weight scale from fan-in (He, Xavier), LSUV *measures* it on data: start from
orthonormal weights, then, front to back, rescale each layer's weights until its output has unit
variance on a real batch. It works for any architecture (the variance is measured through whatever sits
between the layers) and reaches unit variance layer by layer where the analytic schemes only do so in
expectation.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from warmstart.errors import UserError
from warmstart.init.signal import restore_modes, save_modes, weight_layers


class LSUVWarning(UserWarning):
    """A layer's output variance did not reach 1 within the tolerance."""


class LSUVLayer(NamedTuple):
    """What LSUV did to one layer: how many rescalings, and the output variance it ended with."""

    name: str
    iterations: int
    final_var: float


class _Stop(Exception):
    """Raised by a forward hook to skip the rest of the forward pass once the layer of interest ran."""


def _output_var(model: nn.Module, name: str, layer: nn.Module, batch: torch.Tensor) -> float:
    """Variance (all entries pooled) of ``layer``'s output on ``batch``; the forward stops right after it."""
    seen: list[float] = []

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        seen.append(float(output.detach().float().var(correction=0)))
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise UserError(f"lsuv_init: layer {name} did not run on the batch")
    return seen[0]


def _execution_order(model: nn.Module, batch: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Weight layers in the order they first run on ``batch`` (layers that never run are left out)."""
    order: dict[str, nn.Module] = {}

    def hook(name: str, module: nn.Module, args: object, output: object) -> None:
        order.setdefault(name, module)

    handles = [m.register_forward_hook(partial(hook, n)) for n, m in weight_layers(model)]
    try:
        model(batch)
    finally:
        for h in handles:
            h.remove()
    return list(order.items())


def lsuv_init(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    orthonormal: bool = True,
    generator: torch.Generator | None = None,
) -> list[LSUVLayer]:
    """Initialise ``model``'s Linear/Conv layers in place with LSUV and report what happened per layer.

    1. If ``orthonormal``: every Linear/Conv weight gets ``torch.nn.init.orthogonal_`` (drawn with
       ``generator`` or the global RNG) and every bias is zeroed.
    2. Front to back (in the order the layers run), with the model in eval mode and no gradients, the
       layer's output variance on ``batch`` is measured and its weight divided by ``sqrt(var)``, until
       ``|var - 1| < tol`` or ``max_iters`` rescalings were made (then a :class:`LSUVWarning` is issued).

    Returns one :class:`LSUVLayer` ``(name, iterations, final_var)`` per layer, in that order. The
    model's train/eval mode (per submodule) is restored. Layers that do not run on ``batch`` are left
    untouched after step 1 and are not listed.
    """
    if not isinstance(batch, torch.Tensor) or batch.numel() == 0:
        raise UserError("lsuv_init: batch must be a non-empty tensor (a batch of real inputs)")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise UserError(f"lsuv_init: tol must be a number in (0, 1), got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise UserError(f"lsuv_init: max_iters must be an integer >= 1, got {max_iters!r}")
    if not weight_layers(model):
        raise UserError(f"lsuv_init: {type(model).__name__} has no Linear/Conv layer to initialise")
    param = next(model.parameters())
    batch = batch.to(param.device)

    modes = save_modes(model)
    try:
        model.eval()
        with torch.no_grad():
            if orthonormal:
                _orthonormal(model, generator)
            results: list[LSUVLayer] = []
            for name, layer in _execution_order(model, batch):
                results.append(_unit_variance(model, name, layer, batch, tol, max_iters))
            return results
    finally:
        restore_modes(modes)


def _orthonormal(model: nn.Module, generator: torch.Generator | None) -> None:
    """LSUV's start: every Linear/Conv weight orthogonal (``torch.nn.init.orthogonal_``), every bias zero."""
    for _, layer in weight_layers(model):
        nn.init.orthogonal_(layer.weight, generator=generator)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def _unit_variance(model: nn.Module, name: str, layer: nn.Module, batch: torch.Tensor, tol: float,
                   max_iters: int) -> LSUVLayer:
    """Divide ``layer``'s weight by the square root of its output variance on ``batch`` until that variance is within
    ``tol`` of 1 or ``max_iters`` rescalings were made (then an :class:`LSUVWarning`, for :func:`lsuv_init`'s caller)."""
    var, iterations = _output_var(model, name, layer, batch), 0
    while abs(var - 1.0) >= tol and iterations < max_iters and math.isfinite(var) and var > 0:
        layer.weight.div_(math.sqrt(var))
        iterations += 1
        var = _output_var(model, name, layer, batch)
    if not abs(var - 1.0) < tol:
        why = "its output is constant" if var == 0 else ("not finite" if not math.isfinite(var) else "")
        warnings.warn(
            f"lsuv_init: layer {name} reached output variance {var:.4g} after {iterations} "
            f"rescalings, not within {tol} of 1{' (' + why + ')' if why else ''}; "
            "raise max_iters or tol, or check the batch",
            LSUVWarning,
            stacklevel=3,  # the line that called lsuv_init
        )
    return LSUVLayer(name, iterations, var)
