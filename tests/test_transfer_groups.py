"""layer_groups: stem -> blocks -> head, every parameter in exactly one group."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from warmstart.transfer.groups import LayerGroup, conv1_of, group_params, layer_groups


def _meta(arch: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return torchvision.models.get_model(arch, num_classes=3, **kw)


def _check_partition(model: nn.Module, groups: list[LayerGroup]) -> None:
    names = [n for n, _ in model.named_parameters()]
    flat = [p for g in groups for p in g.params]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))


def test_mobilenet_v3_small_groups():
    model = _meta("mobilenet_v3_small")
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["stem"] + [f"features.{i}" for i in range(1, 13)] + ["classifier.0", "head"]
    by = {g.name: g for g in groups}
    assert by["stem"].modules == ["features.0"]
    assert by["features.12"].modules == ["features.12", "avgpool"]
    assert by["classifier.0"].modules == ["classifier.0", "classifier.1", "classifier.2"]
    assert by["head"].modules == ["classifier.3"] and by["head"].params == ["classifier.3.weight", "classifier.3.bias"]
    assert by["stem"].batchnorms == ["features.0.1"] and by["head"].batchnorms == []
    assert by["features.4"].batchnorms == ["features.4.block.0.1", "features.4.block.1.1", "features.4.block.3.1"]
    _check_partition(model, groups)


def test_resnet_and_mobilenet_v2_groups():
    model = _meta("resnet18")
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert groups[0].modules == ["conv1", "bn1", "relu", "maxpool"]
    assert groups[-1].modules == ["fc"]
    _check_partition(model, groups)

    model = _meta("mobilenet_v2")
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["stem"] + [f"features.{i}" for i in range(1, 19)] + ["head"]
    assert groups[-2].modules == ["features.18", "classifier.0"]  # the dropout before the head
    _check_partition(model, groups)


def test_vit_bare_parameters_join_the_stem_and_the_final_norm_the_last_block():
    model = _meta("vit_b_16")
    groups = layer_groups(model)
    assert len(groups) == 14
    assert sorted(groups[0].modules) == ["class_token", "conv_proj", "encoder.dropout", "encoder.pos_embedding"]
    assert groups[12].modules == ["encoder.layers.encoder_layer_11", "encoder.ln"]
    assert groups[-1].modules == ["heads.head"]
    _check_partition(model, groups)


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_b0", "convnext_tiny", "swin_t", "squeezenet1_1", "vgg11_bn", "shufflenet_v2_x0_5"])
def test_other_families_partition_their_parameters(arch):
    model = _meta(arch)
    groups = layer_groups(model)
    assert groups[0].name == "stem" and groups[-1].name == "head" and len(groups) >= 5
    _check_partition(model, groups)


class TinyNet(nn.Module):
    """A hand-written net: the generic fallback must still give stem -> blocks -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.classifier(self.pool(self.blocks(self.bn(self.conv(x)))))


def test_generic_fallback_on_a_hand_written_net():
    model = TinyNet()
    groups = layer_groups(model)
    assert [(g.name, g.modules) for g in groups] == [
        ("stem", ["conv", "bn"]),
        ("blocks.0", ["blocks.0"]),
        ("blocks.1", ["blocks.1"]),
        ("blocks.2", ["blocks.2", "pool", "classifier.0"]),
        ("classifier.1", ["classifier.1", "classifier.2"]),
        ("head", ["classifier.3"]),
    ]
    assert groups[0].batchnorms == ["bn"]
    _check_partition(model, groups)


def test_group_params_checks_each_parameter_lands_in_exactly_one_group():
    model = TinyNet()
    groups = layer_groups(model)
    with pytest.raises(ValueError, match="'conv.weight' of TinyNet lies in no group"):
        group_params(model, groups[1:])
    overlapping = [LayerGroup("all", ["blocks"]), *groups]
    with pytest.raises(ValueError, match=r"'blocks.0.0.weight' of TinyNet lies in groups \['all', 'blocks.0'\]"):
        group_params(model, overlapping)


def test_conv1_of():
    name, conv = conv1_of(_meta("mobilenet_v3_small"))
    assert name == "features.0.0" and (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 16, (3, 3))
    assert conv1_of(_meta("resnet18"))[0] == "conv1"
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        conv1_of(nn.Sequential(nn.Linear(2, 2)))
