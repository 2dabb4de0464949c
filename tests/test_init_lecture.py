"""The lecture's symmetry experiment, measured: a constant start never breaks symmetry.

custom_3_layer trains for 20 SGD steps on 260 real CIFAR-10 images (26 per class) in each arm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from warmstart.errors import UserError
from warmstart.init import apply_init, symmetry_report
from warmstart.models import LECTURE_CONSTANT, LECTURE_CONSTANT_LINEAR, LECTURE_RANDOM, custom_3_layer

MEAN, STD = (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)  # CIFAR-10 train (shared/README.md)


@pytest.fixture(scope="module")
def cifar_batch(cifar10):
    classes = sorted(p.name for p in (cifar10 / "train").iterdir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((cifar10 / "train" / name).glob("*.jpg"))[:26]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return x, torch.tensor(labels)


def train(spec: str, batch, steps: int = 20):
    """Init by ``spec`` (seeded), then SGD; returns (initial state, trained model, last loss)."""
    torch.manual_seed(0)
    model = custom_3_layer()
    apply_init(model, spec, generator=0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    order = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=order)[:64]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, model, loss.item()


def moved(start, model, name: str) -> float:
    return float((model.state_dict()[name] - start[name]).norm() / start[name].norm())


def test_custom_3_layer_shapes():
    model = custom_3_layer()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [k for k in model.state_dict()] == [f"{layer}.{p}" for layer in ("conv1", "conv2", "conv3", "fc1", "fc2")
                                               for p in ("weight", "bias")]
    assert model.fc1.in_features == 1600 and model.conv2.padding == (0, 0)
    assert custom_3_layer(num_classes=4, in_channels=1)(torch.zeros(1, 1, 32, 32)).shape == (1, 4)
    with pytest.raises(UserError, match="num_classes must be a positive integer"):
        custom_3_layer(num_classes=0)


def test_constant_arm_starts_symmetric():
    model = custom_3_layer()
    fc1_default = model.fc1.weight.detach().clone()
    apply_init(model, LECTURE_CONSTANT, generator=0)
    for conv in (model.conv1, model.conv2, model.conv3):
        w = conv.weight.detach()
        assert torch.equal(w, w[0, 0].expand_as(w))  # one 3x3 kernel in every (out, in) slot
        assert torch.all(conv.bias == 1)
    assert torch.equal(model.fc1.weight, fc1_default)  # linear layers keep their default init
    report = symmetry_report(model)
    assert [report[n].distinct for n in ("conv1", "conv2", "conv3", "fc1", "fc2")] == [1, 1, 1, 64, 10]


def test_constant_start_never_breaks_symmetry(cifar_batch):
    start, model, loss_constant = train(LECTURE_CONSTANT, cifar_batch)
    for name in ("conv1.weight", "conv2.weight", "conv3.weight"):
        assert moved(start, model, name) > 1e-3, name  # it trained ...
    report = symmetry_report(model)
    assert report["conv1"].distinct == 1 and report["conv2"].distinct == 1  # ... but never separated its filters
    assert report["conv1"].max_cosine == 1.0
    # fc1's random weights give conv3's filters different gradients, yet each filter is still one 3x3
    # kernel repeated over its 64 identical input channels: 64 distinct filters spanning only 9 directions
    assert report["conv3"].distinct >= 60
    assert report["conv3"].rank <= 9

    start, model, _ = train(LECTURE_CONSTANT_LINEAR, cifar_batch)
    assert moved(start, model, "conv3.weight") > 1e-3
    report = symmetry_report(model)
    assert [report[n].distinct for n in ("conv1", "conv2", "conv3")] == [1, 1, 1]

    start, model, loss_random = train(LECTURE_RANDOM, cifar_batch)
    report = symmetry_report(model)
    assert report["conv1"].distinct == 32 and report["conv1"].rank == 27
    assert report["conv3"].distinct == 64 and report["conv3"].rank == 64
    assert loss_random < loss_constant


def test_lecture_specs_use_he_scale():
    model = custom_3_layer()
    table = apply_init(model, LECTURE_RANDOM, generator=0)
    assert table["conv2.weight"].eps == pytest.approx(math.sqrt(2 / (32 * 9)))
    table = apply_init(model, LECTURE_CONSTANT_LINEAR, generator=0)
    assert table["conv2.weight"].eps == pytest.approx(math.sqrt(2 / 9) / 32)
    assert torch.all(model.fc1.weight == math.sqrt(2) / 1600)
