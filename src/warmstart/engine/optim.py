"""Optimizer and LR schedule of one phase (built fresh for every phase), and the pull toward an anchor."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from warmstart.engine.config import TrainConfig
from warmstart.engine.plan import Phase


def build_optimizer(model: nn.Module, phase: Phase, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = dict(model.named_parameters())
    groups = []
    for g in phase.groups:
        ps = [params[n] for n in g.params if n in params]
        if not ps:
            continue
        # no weight decay on biases and normalisation parameters (1-d tensors), as timm and fastai do
        decay = [p for p in ps if p.ndim > 1]
        no_decay = [p for p in ps if p.ndim <= 1]
        wd = cfg.weight_decay if g.weight_decay is None else g.weight_decay
        for sub, w in ((decay, wd), (no_decay, 0.0)):
            if sub:
                groups.append({"params": sub, "lr": g.lr, "weight_decay": w, "name": g.name, "anchor": g.anchor})
    lr = phase.groups[-1].lr  # every group sets its own rate (the phase's plan); this default is never used
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=False)
    return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, epochs: int):
    """A per-step LambdaLR: constant, step, cosine (with linear warmup) or one-cycle."""
    total = max(1, steps_per_epoch * epochs)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if cfg.schedule == "onecycle":
            # fastai/Smith: warm up over 25% from lr/25, cosine-anneal to lr/1e4
            up = max(1, int(0.25 * total))
            if step < up:
                t = step / up
                return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * t)) / 2
            t = min(1.0, (step - up) / max(1, total - up))
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * t)) / 2
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.gamma ** (step // max(1, cfg.step_size * steps_per_epoch))
        t = min(1.0, (step - warm) / max(1, total - warm))  # cosine
        return 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class AnchorPull:
    """Weight decay toward a start ``w0`` instead of toward 0, for the param groups whose ``anchor`` (alpha) is > 0,
    in the optimizer's own convention for weight decay (L2-SP, :mod:`warmstart.transfer.prior`):

    * AdamW: decoupled, ``w -= lr * alpha * (w - w0)`` with the group's current (scheduled) ``lr``, as AdamW
      applies its own ``weight_decay`` before the Adam update;
    * SGD: ``alpha * (w - w0)`` added to the gradient, as SGD adds ``weight_decay * w``.

    Call :meth:`apply` after the backward pass (and gradient clipping), just before ``optimizer.step()``. Like the
    optimizers' own decay it skips parameters without a gradient. ``anchors``: the start of every anchored
    parameter, by name in ``model.named_parameters()``; read as they are when already on the parameter's device and
    in its dtype (the run's one snapshot of its start, :func:`~warmstart.transfer.recipe.snapshot`; another memory
    format, e.g. channels_last weights, is fine for the element-wise pull), else copied once to them. Never written.
    """

    def __init__(self, model: nn.Module, anchors: Mapping[str, torch.Tensor], *, coupled: bool) -> None:
        self.coupled = coupled
        self.start: dict[torch.Tensor, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if name in anchors:
                a = anchors[name]
                if a.shape != p.shape:
                    raise ValueError(f"AnchorPull: the anchor of {name} has shape {tuple(a.shape)}, the parameter {tuple(p.shape)}")
                same = a.device == p.device and a.dtype == p.dtype
                self.start[p] = a if same else torch.empty_like(p).copy_(a)

    @torch.no_grad()
    def apply(self, opt: torch.optim.Optimizer) -> None:
        for g in opt.param_groups:
            alpha = g.get("anchor", 0.0)
            if not alpha:
                continue
            ps = [p for p in g["params"] if p.grad is not None]
            missing = [i for i, p in enumerate(ps) if p not in self.start]
            if missing:
                raise ValueError(f"AnchorPull: param group {g.get('name')!r} is anchored but {len(missing)} of its parameters "
                                 "have no anchor")
            if not ps:
                continue
            diff = torch._foreach_sub(ps, [self.start[p] for p in ps])
            if self.coupled:
                torch._foreach_add_([p.grad for p in ps], diff, alpha=alpha)
            else:
                torch._foreach_add_(ps, diff, alpha=-g["lr"] * alpha)
