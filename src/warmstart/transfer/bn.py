"""BatchNorm policy helpers: keep chosen modules in eval mode, and re-estimate running statistics (AdaBN).

``Phase.eval_modules`` (see :mod:`warmstart.transfer.strategies`) names modules that must stay in eval mode
while the rest of the model trains; :func:`freeze_bn` (the engine's, re-exported here) applies it after
``model.train()``.
:func:`recalibrate_bn` is AdaBN (Li et al., 2016): re-estimate every BatchNorm's running mean/var on the
target data with the weights unchanged, a cheap domain adaptation and a fix for models whose statistics
were never estimated (or were dragged off by small-batch training).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from warmstart.engine.loop import freeze_bn  # noqa: F401  (public here: the BN policy's helpers in one place)


def batchnorms(model: nn.Module) -> list[str]:
    """Names of every BatchNorm module (1d/2d/3d, SyncBatchNorm) in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_batches: int | None = None,
) -> int:
    """Re-estimate every BatchNorm's running statistics on ``loader``; returns the number of samples used.

    Running stats are reset and accumulated as a cumulative average (``momentum=None``), i.e. the exact
    mean over the batches seen. Only the BatchNorm layers run in train mode; everything else (dropout,
    stochastic depth) runs in eval mode, and every module's mode and momentum are restored afterwards.
    ``loader`` yields batches ``x`` or ``(x, y, ...)``; ``normalize`` (e.g. a
    :class:`~warmstart.data.transforms.Normalizer`) maps them to model inputs on the model's device.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    device = next(model.parameters()).device
    if normalize is not None and isinstance(normalize, nn.Module):
        normalize = normalize.to(device)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
    seen = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device)
            if normalize is not None:
                x = normalize(x)
            model(x)
            seen += x.shape[0]
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        for m, training in modes.items():
            m.training = training
        if seen == 0:  # nothing seen (or an error): give back the statistics we reset
            for m, state in zip(bns, saved):
                m.load_state_dict(state)
    if seen == 0:
        raise ValueError("recalibrate_bn: the loader gave no batches; running statistics left unchanged")
    return seen
