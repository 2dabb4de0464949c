"""Layer groups: the one description of a network's depth that everything else reads.

Freezing, back-to-front unfreezing, layer-wise learning rates, BatchNorm policy, the feature cache's split
point and the "first conv" pictures all use :func:`layer_groups` (timm's ``group_matcher`` plays this role
there). Groups are contiguous slices of the forward pass, ordered input to output:

- ``stem``: the first unit (plus bare parameters such as ViT's class token and position embedding);
- one group per block: the children of block containers (``features``, ``layers``, ``blocks``,
  ``trunk_output``, ``stages``, ``encoder``) and other top-level children that hold parameters;
- ``head``: the classification layer alone (the layer :func:`~warmstart.transfer.backbones.find_head`
  finds, the one a new task replaces). Pretrained layers around it in the classifier container become
  groups of their own (MobileNetV3's ``classifier.0``, the 576->1024 layer), so "only the head trains"
  means exactly the new layer.

A normalisation layer that is a unit of its own (ResNet's ``bn1``, a final LayerNorm) joins the unit before
it; units without parameters (pooling, activations, dropout) join the group before them, so a frozen group
put in eval mode also silences its dropout. MobileNetV3-Small gives ``stem`` (features.0),
``features.1`` ... ``features.12`` (+ avgpool), ``classifier.0`` (+ Hardswish, Dropout), ``head``
(classifier.3); ResNet gives ``stem`` (conv1, bn1, relu, maxpool), ``layer1`` ... ``layer4``, ``head`` (fc).

A group's ``modules`` are module names or bare parameter names; a parameter belongs to the group when its
name equals an entry or starts with an entry followed by a dot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from warmstart.init.schemes import NORM_TYPES
from warmstart.transfer.backbones import find_head

#: Attribute names of containers whose children are the network's blocks (torchvision and timm naming).
BLOCK_CONTAINERS = frozenset({"features", "layers", "blocks", "trunk_output", "stages", "encoder"})


@dataclass
class LayerGroup:
    """A contiguous slice of the network: its module names, and (filled by :func:`layer_groups`) the names of
    its parameters and of the BatchNorm modules inside it."""

    name: str
    modules: list[str]
    params: list[str] = field(default_factory=list)
    batchnorms: list[str] = field(default_factory=list)

    def owns(self, name: str) -> bool:
        """Whether the parameter/module ``name`` lies inside this group."""
        return any(name == m or name.startswith(m + ".") for m in self.modules)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's layer groups, ordered stem -> blocks -> head (the head is always last)."""
    head = find_head(model)
    units: list[tuple[str, nn.Module | None]] = [(n, None) for n, _ in model.named_parameters(recurse=False)]
    _collect_units(model, "", head, units)

    groups: list[LayerGroup] = []
    pending: list[str] = []  # bare parameters and parameterless units met before the stem
    for name, mod in units:
        if mod is None:  # a bare parameter (class token, position embedding): part of the stem
            (groups[0].modules if groups else pending).append(name)
        elif name == head:
            groups.append(LayerGroup("head", [name]))
        elif not groups:
            (pending.append(name) if not _has_params(mod) else groups.append(LayerGroup("stem", pending + [name])))
        elif groups[-1].name == "head" or not _has_params(mod) or isinstance(mod, NORM_TYPES):
            groups[-1].modules.append(name)
        else:
            groups.append(LayerGroup(name, [name]))
    if not groups or groups[-1].name != "head":
        raise ValueError(f"layer_groups: the classification layer {head!r} is not a unit of {type(model).__name__}")
    fill = group_params(model, groups)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for g in groups:
        g.params = fill[g.name]
        g.batchnorms = [n for n in bns if g.owns(n)]
    return groups


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _collect_units(module: nn.Module, prefix: str, head: str, units: list) -> None:
    """Append (name, module) for each unit in registration order, (name, None) for bare parameters."""
    for name, child in module.named_children():
        full = prefix + name
        if full == head:
            units.append((full, child))
        elif head.startswith(full + ".") or (name in BLOCK_CONTAINERS and len(list(child.children())) > 1):
            units.extend((f"{full}.{p}", None) for p, _ in child.named_parameters(recurse=False))
            _collect_units(child, full + ".", head, units)
        else:
            units.append((full, child))


def group_params(model: nn.Module, groups: list[LayerGroup]) -> dict[str, list[str]]:
    """Parameter names per group (in ``named_parameters`` order), checking each lands in exactly one group."""
    out: dict[str, list[str]] = {g.name: [] for g in groups}
    if len(out) != len(groups):
        raise ValueError(f"layer groups need distinct names, got {[g.name for g in groups]}")
    for pname, _ in model.named_parameters():
        owners = [g.name for g in groups if g.owns(pname)]
        if len(owners) != 1:
            where = "no group" if not owners else f"groups {owners}"
            raise ValueError(f"parameter {pname!r} of {type(model).__name__} lies in {where}; each must lie in exactly one")
        out[owners[0]].append(pname)
    return out


def conv1_of(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first 2-d convolution in registration order (the input layer whose filters are worth a picture)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d")
