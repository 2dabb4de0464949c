"""Optimizer and LR schedule of one phase (built fresh for every phase)."""

from __future__ import annotations

import math

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
        for sub, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)):
            if sub:
                groups.append({"params": sub, "lr": g.lr, "weight_decay": wd, "name": g.name})
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
