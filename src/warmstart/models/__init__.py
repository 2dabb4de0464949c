"""Small models defined by warmstart itself (torchvision backbones live in warmstart.transfer).

:data:`MODELS` registers them with the factory (``transfer.create_model``), so ``--model custom_3_layer``
works everywhere a torchvision name does: training, weights files, layer groups and the feature cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from warmstart.models.custom import (LECTURE_CONSTANT, LECTURE_CONSTANT_LINEAR, LECTURE_RANDOM, Custom3Layer,
                                     custom_3_layer)


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[[int], nn.Module]          # num_classes -> model
    meta: dict[str, Any] = field(default_factory=dict)  # default preprocessing (the weights metadata format)
    num_classes: int = 10                               # classes when the caller does not say


SMALL_META = {"input_size": 32, "resize": 32, "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

MODELS: dict[str, ModelEntry] = {
    "custom_3_layer": ModelEntry(lambda n: custom_3_layer(n), SMALL_META),
}

__all__ = ["LECTURE_CONSTANT", "LECTURE_CONSTANT_LINEAR", "LECTURE_RANDOM", "Custom3Layer", "custom_3_layer", "MODELS", "ModelEntry"]
