"""The symmetry report finds planted duplicate filters and layers in real torchvision models."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from warmstart.errors import UserError
from warmstart.init import explain_layer, symmetry_report
from warmstart.init import symmetry as symmetry_module


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None)


@pytest.fixture(scope="module")
def clean(mobilenet):
    return symmetry_report(mobilenet)


def _fresh(model: nn.Module) -> nn.Module:
    copy = torchvision.models.mobilenet_v3_small(weights=None)
    copy.load_state_dict(model.state_dict())
    return copy


def test_random_mobilenet_has_no_symmetry(mobilenet, clean):
    convs = [n for n, m in mobilenet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(clean) == convs and len(convs) == 54
    for row in clean.layers.values():
        assert row.distinct == row.filters and row.duplicate_of is None and row.max_cosine < 0.99
        assert row.rank == min(row.filters, math.prod(row.shape[1:]))


def test_planted_duplicate_filters_and_layer(mobilenet, clean):
    model = _fresh(mobilenet)
    conv = model.features[0][0]  # 16 filters 3x3x3
    same_shape = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            same_shape.setdefault(tuple(m.weight.shape), []).append((name, m))
    (first, a), (second, b) = next(v for v in same_shape.values() if len(v) >= 2 and v[0][1].groups == 1)[:2]
    with torch.no_grad():
        conv.weight[1:4] = conv.weight[0]
        b.weight.copy_(a.weight)
    before, after = clean, symmetry_report(model)
    assert after["features.0.0"].distinct == before["features.0.0"].distinct - 3 == 13
    assert after["features.0.0"].max_cosine == 1.0
    assert after["features.0.0"].rank == 13
    assert after[second].duplicate_of == first and after[first].duplicate_of is None
    changed = {n for n in after if after.to_dict()[n] != before.to_dict()[n]}
    assert changed == {"features.0.0", second}


def test_tolerance_is_relative_to_the_layer_scale():
    torch.manual_seed(0)
    for scale in (1e-3, 1.0, 1e3):
        lin = nn.Linear(40, 10)
        with torch.no_grad():
            lin.weight.mul_(scale), lin.bias.mul_(scale)
            top = float(torch.cat([lin.weight.flatten(), lin.bias]).abs().max())
            lin.weight[1] = lin.weight[0] + 2e-7 * top  # within tol 1e-6 of the largest |weight|
            lin.bias[1] = lin.bias[0]
            lin.weight[2] = lin.weight[0]
            lin.bias[2] = lin.bias[0] + 1e-3 * top  # same weights, different bias: distinct
        assert symmetry_report(nn.Sequential(lin))["0"].distinct == 9, scale
        assert symmetry_report(nn.Sequential(lin), tol=0)["0"].distinct == 10


def test_rank_counts_directions_not_rows():
    torch.manual_seed(0)
    lin = nn.Linear(50, 30, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(30, 3) @ torch.randn(3, 50))  # 30 distinct rows in a 3-d subspace
    row = symmetry_report(nn.Sequential(lin))["0"]
    assert (row.filters, row.distinct, row.rank) == (30, 30, 3)
    with torch.no_grad():
        lin.weight[0] = 0  # one dead unit: still 30 distinct, and its cosine with the others is 0, not nan
    row = symmetry_report(nn.Sequential(lin))["0"]
    assert (row.distinct, row.rank) == (30, 3) and 0 < row.max_cosine < 1


def test_chunked_gram_gives_the_same_answer(mobilenet, monkeypatch):
    model = _fresh(mobilenet)
    with torch.no_grad():
        w = model.classifier[3].weight  # 1000 x 1024
        w[500:700] = w[3]
        w[900] = w[10]
        model.classifier[3].bias[500:700] = model.classifier[3].bias[3]
        model.classifier[3].bias[900] = model.classifier[3].bias[10]
    whole = symmetry_report(model).to_dict()
    monkeypatch.setattr(symmetry_module, "CHUNK", 97)
    chunked = symmetry_report(model).to_dict()
    # the chunks sum the Gram matrix in another order, so the cosines may differ in the last bits (seen:
    # 0.1529995881434346 vs 0.15299958814343456); what the report decides from them must not
    assert chunked.keys() == whole.keys()
    for name, row in whole.items():
        other = chunked[name]
        for key, value in row.items():
            if isinstance(value, float):
                assert other[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key)
            else:
                assert other[key] == value, (name, key)
    assert whole["classifier.3"]["distinct"] == 1000 - 200 - 1


def test_state_dict_from_a_checkpoint_matches_the_model(mobilenet, clean, tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save(mobilenet.state_dict(), path)
    from_file = symmetry_report(torch.load(path, weights_only=True))
    assert from_file.to_dict() == clean.to_dict()
    with pytest.raises(UserError, match="under a key such as 'model'"):
        symmetry_report({"epoch": 3, "model": torch.load(path, weights_only=True)})
    with pytest.raises(UserError, match="nn.Module or a state_dict"):
        symmetry_report(42)


def test_resnet18_with_identical_zero_layers():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        resnet.layer4[0].conv2.weight.zero_()
        resnet.layer4[1].conv1.weight.zero_()
    report = symmetry_report(resnet)
    assert len(report) == 21
    row = report["layer4.1.conv1"]
    assert (row.filters, row.distinct, row.max_cosine, row.rank, row.duplicate_of) == (512, 1, 1.0, 0, "layer4.0.conv2")
    assert report["layer4.0.conv2"].distinct == 1 and report["layer4.0.conv2"].duplicate_of is None
    others = [r for n, r in report.layers.items() if n not in ("layer4.0.conv2", "layer4.1.conv1")]
    assert all(r.distinct == r.filters and r.duplicate_of is None for r in others)
    assert report["fc"].rank == 512 and report["layer1.0.conv1"].rank == 64


def test_to_text_dict_and_explanations(mobilenet):
    model = _fresh(mobilenet)
    with torch.no_grad():
        model.features[0][0].weight[:] = model.features[0][0].weight[0]
    report = symmetry_report(model)
    row = report.to_dict()["features.0.0"]
    assert {k: row[k] for k in ("filters", "distinct", "max_cosine", "rank", "duplicate_of")} == \
        {"filters": 16, "distinct": 1, "max_cosine": 1.0, "rank": 1, "duplicate_of": None}
    lines = report.to_text().splitlines()
    assert lines[0].split() == ["layer", "shape", "filters", "distinct", "max_cos", "rank", "duplicate_of"]
    assert lines[1].split() == ["features.0.0", "16x3x3x3", "16", "1", "1.0000", "1", "-"]
    assert explain_layer("conv1", row) == \
        "conv1: 16 filters but only 1 distinct: all 16 are identical, so the layer computes one feature 16 times"
    healthy = report.to_dict()["features.2.block.2.0"]
    assert "symmetry is broken" in explain_layer("x", healthy)
    assert "only 7 of 10 units distinct" in explain_layer("fc", {**healthy, "filters": 10, "distinct": 7, "shape": [10, 4]})
    assert "rank 9 of a possible 64" in explain_layer("conv3", {**healthy, "filters": 64, "distinct": 64, "rank": 9,
                                                                "shape": [64, 64, 3, 3]})
    assert "identical to conv2" in explain_layer("conv3", {**healthy, "duplicate_of": "conv2"})
