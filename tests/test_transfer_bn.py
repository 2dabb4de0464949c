"""BatchNorm helpers: freeze_bn and AdaBN recalibration on real images."""

from __future__ import annotations

import pytest
import torch
from _transfer_data import hymenoptera_batch

from warmstart.data.transforms import Normalizer
from warmstart.transfer.backbones import create_model
from warmstart.transfer.bn import batchnorms, freeze_bn, recalibrate_bn
from warmstart.transfer.weights import resolve_weights


@pytest.fixture()
def model(weights_dir):
    w = resolve_weights(str(weights_dir / "mobilenet_v3_small-imagenet.pth"), "mobilenet_v3_small")
    return create_model("mobilenet_v3_small", None, w)


@pytest.fixture(scope="module")
def batches(hymenoptera):
    x, y = hymenoptera_batch(hymenoptera, "train", per_class=6)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(y), 4)]  # 3 batches of 4


def test_freeze_bn_puts_named_modules_in_eval_mode(model):
    model.train()
    freeze_bn(model, ["features.1", "features.2.block.0.1"])
    assert not model.features[1].training and not model.features[1].block[0][1].training
    assert not model.features[2].block[0][1].training and model.features[2].block[1][1].training
    with pytest.raises(AttributeError):
        freeze_bn(model, ["features.99"])
    model.train()
    freeze_bn(model, ["features.99", "features.3"], strict=False)
    assert not model.features[3].training and model.features[4].training


def test_recalibrate_bn_is_the_exact_average_of_batch_statistics(model, batches):
    norm = Normalizer((0.5,) * 3, (0.5,) * 3)
    bn0 = model.features[0][1]
    with torch.no_grad():
        bn0.running_mean.fill_(5.0)
        bn0.running_var.fill_(100.0)
        # expected: the mean over batches of the per-batch statistics of the first conv's output
        outs = [model.features[0][0](norm(x)) for x, _ in batches]
        want_mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
        want_var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    model.train()
    model.classifier.eval()
    n = recalibrate_bn(model, batches, normalize=norm)
    assert n == 12
    torch.testing.assert_close(bn0.running_mean, want_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn0.running_var, want_var, rtol=1e-4, atol=1e-5)
    assert bn0.momentum == 0.01  # torchvision MobileNetV3's momentum, restored
    assert model.training and model.features.training and not model.classifier.training  # modes restored
    assert int(bn0.num_batches_tracked) == 3


def test_recalibrate_bn_max_batches_and_empty_loader(model, batches):
    assert recalibrate_bn(model, batches, normalize=Normalizer((0.5,) * 3, (0.5,) * 3), max_batches=2) == 8
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    names = batchnorms(model)
    assert names[0] == "features.0.1"
    assert [n + ".running_mean" for n in names] == [k for k in model.state_dict() if k.endswith(".running_mean")]
