"""Feature cache: head(trunk(x)) == model(x), memory vs disk caches, and training on cached features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from _transfer_data import TensorImages, hymenoptera_batch

from warmstart.data.transforms import Normalizer
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.bn import freeze_bn
from warmstart.transfer.features import FeatureCache, cache_key, labels_path, split_at
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.strategies import parse_strategy

NORM = Normalizer((0.5,) * 3, (0.5,) * 3)



@pytest.fixture()
def model(v3_weights):
    torch.manual_seed(0)
    return create_model("mobilenet_v3_small", 2, v3_weights).eval()


@pytest.fixture(scope="module")
def images(hymenoptera):
    return hymenoptera_batch(hymenoptera, "val", per_class=5)  # 10 real images


def test_head_of_trunk_equals_the_model_at_every_split(model, images):
    x = NORM(images[0][::3])  # 4 images: ants and bees
    groups = layer_groups(model)
    with torch.inference_mode():
        ref = model(x)
        for n_frozen in (0, 1, 7, 13, 14):
            trunk, head = split_at(model, groups, n_frozen)
            torch.testing.assert_close(head(trunk(x)), ref, rtol=0, atol=1e-5)


def test_transfer_split_ends_inside_the_classifier(model, images):
    groups = layer_groups(model)
    frozen = parse_strategy("transfer").frozen_prefix(groups)
    trunk, head = split_at(model, groups, len(frozen))
    assert head.stage_names == ["classifier.3"]
    assert [n for n, _ in head.named_parameters()] == ["classifier.3.weight", "classifier.3.bias"]
    assert head.get_submodule("classifier.3") is model.classifier[3]  # a view of the model, not a copy
    with torch.inference_mode():
        assert trunk(NORM(images[0][:2])).shape == (2, 1024)
    # finetune-last:2 cuts before features.12: the head keeps the model's parameter names
    trunk, head = split_at(model, groups, len(parse_strategy("finetune-last:2").frozen_prefix(groups)))
    assert head.stage_names[:3] == ["features.12", "avgpool", None]
    assert {n for n, _ in head.named_parameters()} == {n for n, _ in model.named_parameters() if n.startswith(("features.12.", "classifier."))}


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "squeezenet1_1"])
def test_split_other_architectures(arch):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=3).eval()
    groups = layer_groups(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        for n_frozen in (1, len(groups) - 1):
            trunk, head = split_at(model, groups, n_frozen)
            torch.testing.assert_close(head(trunk(x)), ref, rtol=0, atol=1e-5)


def test_unsupported_models_get_a_clear_error():
    with torch.device("meta"):
        model = torchvision.models.vit_b_16(num_classes=2)
    with pytest.raises(UserError, match="does not know how VisionTransformer composes its layers.*without the feature cache"):
        split_at(model, layer_groups(model), 3)


def test_memory_and_disk_caches_agree(model, images, tmp_path):
    groups = layer_groups(model)
    trunk, _ = split_at(model, groups, len(groups) - 1)
    data = TensorImages(*images)
    mem = FeatureCache.build(trunk, data, normalize=NORM, batch_size=4)
    with torch.inference_mode():
        direct = trunk(NORM(images[0]))
    x_mem, y_mem = mem.tensors()
    # batches of 4 vs one batch of all: the convolutions may sum in another order, so equal to float rounding
    assert x_mem.dtype == torch.float32 and y_mem.tolist() == images[1].tolist()
    torch.testing.assert_close(x_mem, direct, rtol=1e-5, atol=1e-5)

    path = tmp_path / "cache" / "feats.npy"
    disk = FeatureCache.build(trunk, data, normalize=NORM, batch_size=3, path=path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["feats.labels.npy", "feats.npy"]  # no temp files left
    assert np.load(path, mmap_mode="r").dtype == np.float16 and disk.feature_shape == (1024,)
    x_disk, y_disk = disk.tensors()
    torch.testing.assert_close(x_disk, x_mem, rtol=1e-3, atol=1e-3)  # float16 rounding
    assert torch.equal(y_disk, y_mem)
    f, label = disk[7]
    assert f.dtype == torch.float32 and label == int(images[1][7]) and torch.allclose(f, x_mem[7], rtol=1e-3, atol=1e-3)
    batch = next(iter(torch.utils.data.DataLoader(disk, batch_size=4, shuffle=False)))
    torch.testing.assert_close(batch[0], x_mem[:4], rtol=1e-3, atol=1e-3)
    assert model.training is False and all(not m.training for m in model.modules())  # modes restored

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("a complete cache on disk must be reused, not recomputed")

    again = FeatureCache.build(Boom(), data, normalize=NORM, path=path)
    assert torch.equal(again.tensors()[0], x_disk)
    assert labels_path(path).name == "feats.labels.npy"


def test_training_the_head_on_cached_features_equals_training_on_images(model, images):
    """One SGD step of ``transfer`` on cached features gives the same head as the step on images."""
    groups = layer_groups(model)
    strategy = parse_strategy("transfer")
    phase = strategy.phases(groups, epochs=1, lr=0.1)[0]
    trunk, head = split_at(model, groups, len(strategy.frozen_prefix(groups)))
    feats, y = FeatureCache.build(trunk, TensorImages(*images), normalize=NORM).tensors()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def step(forward, params):
        opt = torch.optim.SGD(params, lr=0.1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(), y).backward()
        opt.step()
        return {n: p.detach().clone() for n, p in head.named_parameters()}

    trainable = set(phase.trainable)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    model.train()
    freeze_bn(model, phase.eval_modules)
    on_images = step(lambda: model(NORM(images[0])), [p for p in model.parameters() if p.requires_grad])

    model.load_state_dict(start)
    head.train()
    on_features = step(lambda: head(feats), list(head.parameters()))
    assert on_images.keys() == {"classifier.3.weight", "classifier.3.bias"}
    for k in on_images:
        assert not torch.equal(on_images[k], start[k])
        torch.testing.assert_close(on_features[k], on_images[k], rtol=0, atol=1e-6)


def test_cache_keys_and_fingerprints(v3_weights, model):
    weights = v3_weights
    pre = weights.preprocess
    k = cache_key(weights.fingerprint, pre, "data-abc", "classifier.0")
    assert len(k) == 16 and int(k, 16) >= 0
    assert k == cache_key(weights.fingerprint, pre.to_dict(), "data-abc", "classifier.0")
    others = {
        cache_key("0" * 64, pre, "data-abc", "classifier.0"),
        cache_key(weights.fingerprint, type(pre)(crop=192), "data-abc", "classifier.0"),
        cache_key(weights.fingerprint, pre, "data-abd", "classifier.0"),
        cache_key(weights.fingerprint, pre, "data-abc", "features.11"),
    }
    assert k not in others and len(others) == 4
