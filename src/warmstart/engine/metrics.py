"""Classification metrics from a confusion matrix (rows = true class, columns = predicted)."""

from __future__ import annotations

import torch


def confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def accuracy(cm: torch.Tensor) -> float:
    total = int(cm.sum())
    return float(cm.diag().sum()) / total if total else 0.0


def per_class_accuracy(cm: torch.Tensor) -> list[float]:
    rows = cm.sum(dim=1).clamp(min=1)
    return (cm.diag().double() / rows.double()).tolist()
