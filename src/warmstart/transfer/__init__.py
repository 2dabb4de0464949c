"""Transfer learning: pretrained weights, backbones, layer groups, strategies, BatchNorm policy, feature cache.

The pieces, in the order a run uses them::

    weights = resolve_weights("imagenet" | "none" | PATH, arch)     # tensors + preprocessing + class names
    model   = create_model(arch, num_classes, weights)              # new head, initialised the torchvision way
    groups  = layer_groups(model)                                   # stem -> blocks -> head: the one grouping
    plan    = parse_strategy("finetune-last:3").phases(groups, epochs=5, lr=1e-3)   # list[Phase]
"""

from warmstart.transfer.backbones import create_model, find_head
from warmstart.transfer.bn import batchnorms, freeze_bn, recalibrate_bn
from warmstart.transfer.features import FeatureCache, Stages, cache_key, split_at
from warmstart.transfer.groups import LayerGroup, conv1_of, group_params, layer_groups
from warmstart.transfer.strategies import Strategy, parse_strategy
from warmstart.transfer.weights import Weights, load_tensors, resolve_weights, save_weights

__all__ = [
    "FeatureCache",
    "LayerGroup",
    "Stages",
    "Strategy",
    "Weights",
    "batchnorms",
    "cache_key",
    "conv1_of",
    "create_model",
    "find_head",
    "freeze_bn",
    "group_params",
    "layer_groups",
    "load_tensors",
    "parse_strategy",
    "recalibrate_bn",
    "resolve_weights",
    "save_weights",
    "split_at",
]
