"""Small models defined by warmstart itself (torchvision backbones live in warmstart.transfer)."""

from warmstart.models.custom import (LECTURE_CONSTANT, LECTURE_CONSTANT_LINEAR, LECTURE_RANDOM, Custom3Layer,
                                     custom_3_layer)

__all__ = ["LECTURE_CONSTANT", "LECTURE_CONSTANT_LINEAR", "LECTURE_RANDOM", "Custom3Layer", "custom_3_layer"]
