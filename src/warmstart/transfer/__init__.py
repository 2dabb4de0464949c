"""Transfer learning: pretrained weights, backbones, layer groups, strategies, BatchNorm policy, feature cache.

The pieces, in the order a run uses them::

    weights = resolve_weights("imagenet" | "none" | PATH, arch)     # tensors + preprocessing + class names
    model   = create_model(arch, num_classes, weights)              # new head, initialised the torchvision way
    groups  = layer_groups(model)                                   # stem -> blocks -> head: the one grouping
    plan    = parse_strategy("finetune-last:3").phases(groups, epochs=5, lr=1e-3)   # list[Phase]
"""

from __future__ import annotations

from warmstart._lazy import lazy_names

#: public name -> the module that defines it (imported lazily)
_LAZY = {
    "create_model": "warmstart.transfer.backbones",
    "find_head": "warmstart.transfer.backbones",
    "batchnorms": "warmstart.transfer.bn",
    "freeze_bn": "warmstart.transfer.bn",
    "recalibrate_bn": "warmstart.transfer.bn",
    "FeatureCache": "warmstart.transfer.features",
    "Stages": "warmstart.transfer.features",
    "cache_key": "warmstart.transfer.features",
    "split_at": "warmstart.transfer.features",
    "LayerGroup": "warmstart.transfer.groups",
    "conv1_of": "warmstart.transfer.groups",
    "group_params": "warmstart.transfer.groups",
    "layer_groups": "warmstart.transfer.groups",
    "Strategy": "warmstart.transfer.strategies",
    "parse_strategy": "warmstart.transfer.strategies",
    "Weights": "warmstart.transfer.weights",
    "load_tensors": "warmstart.transfer.weights",
    "resolve_weights": "warmstart.transfer.weights",
    "save_weights": "warmstart.transfer.weights",
}
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
