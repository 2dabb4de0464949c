"""create_model: strict pretrained loading with helpful errors, new heads, zero-shot sanity on real images."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from _transfer_data import hymenoptera_batch

from warmstart.data.transforms import Normalizer
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model, find_head
from warmstart.transfer.weights import resolve_weights, save_weights

ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def v3_weights(weights_dir):
    return resolve_weights(str(weights_dir / "mobilenet_v3_small-imagenet.pth"), ARCH)


def test_pretrained_model_gets_a_new_head_initialised_the_torchvision_way(v3_weights):
    torch.manual_seed(0)
    sd = v3_weights.load_state_dict()
    model = create_model(ARCH, 2, v3_weights)
    assert model.warmstart_pretrained is True and model.warmstart_head == "classifier.3"
    head = model.classifier[3]
    assert (head.in_features, head.out_features) == (1024, 2)
    # torchvision's MobileNetV3 initialises Linear layers with N(0, 0.01) and zero bias
    assert 0.007 < head.weight.std().item() < 0.013 and torch.count_nonzero(head.bias) == 0
    own = model.state_dict()
    for k, v in sd.items():
        if not k.startswith("classifier.3."):
            assert torch.equal(own[k], v), k


def test_num_classes_none_keeps_the_pretrained_head(v3_weights):
    sd = v3_weights.load_state_dict()
    model = create_model(ARCH, None, v3_weights)
    assert model.classifier[3].out_features == 1000
    assert torch.equal(model.classifier[3].weight, sd["classifier.3.weight"])


def test_zero_shot_ants_vs_bees_with_imagenet_logits(v3_weights, hymenoptera):
    """The pretrained model with the .json preprocessing tells ants (310) from bees (309) on val images."""
    pre = v3_weights.preprocess
    x, y = hymenoptera_batch(hymenoptera, "val", per_class=20, resize=pre.resize, crop=pre.crop)
    model = create_model(ARCH, None, v3_weights).eval()
    with torch.inference_mode():
        logits = model(Normalizer.of(pre)(x))
    is_bee = logits[:, 309] > logits[:, 310]
    acc = (is_bee.long() == y).float().mean().item()
    print(f"zero-shot ants vs bees, {len(y)} val images: {acc:.3f}")
    assert acc >= 0.9


def _lying_copy(tmp_path, weights_dir, claims: str):
    """mobilenet_v2's tensors with a sidecar that claims another architecture."""
    pth = tmp_path / "v2.pth"
    (pth).symlink_to(weights_dir / "mobilenet_v2-imagenet.pth")
    meta = json.loads((weights_dir / "mobilenet_v2-imagenet.json").read_text())
    pth.with_suffix(".json").write_text(json.dumps({**meta, "arch": claims}))
    return resolve_weights(str(pth), claims)


def test_weights_of_another_arch_name_the_first_tensor_that_does_not_fit(tmp_path, weights_dir):
    w = _lying_copy(tmp_path, weights_dir, ARCH)
    with pytest.raises(UserError) as e:
        create_model(ARCH, 2, w)
    msg = str(e.value)
    assert '"features.0.0.weight" has shape [32, 3, 3, 3] in the weights vs [16, 3, 3, 3] in mobilenet_v3_small' in msg
    assert "v2.pth" in msg and "more" in msg


def test_missing_and_unexpected_tensors_are_named(tmp_path, v3_weights):
    meta = dict(v3_weights.meta)
    sd = v3_weights.load_state_dict()
    missing = dict(sd)
    del missing["features.3.block.1.0.weight"]
    w = resolve_weights(str(save_weights(tmp_path / "missing.pth", missing, meta)), ARCH)
    with pytest.raises(UserError, match='"features.3.block.1.0.weight" is missing from the weights'):
        create_model(ARCH, 2, w)
    extra = {**sd, "features.99.weight": torch.zeros(3)}
    w = resolve_weights(str(save_weights(tmp_path / "extra.pth", extra, meta)), ARCH)
    with pytest.raises(UserError, match='"features.99.weight" in the weights is not a tensor of mobilenet_v3_small'):
        create_model(ARCH, 2, w)
    # a head of the wrong size for the declared num_classes is a mismatch too
    w = resolve_weights(str(save_weights(tmp_path / "head.pth", sd, {**meta, "num_classes": 10, "categories": None})), ARCH)
    with pytest.raises(UserError, match=r'"classifier.3.weight" has shape \[1000, 1024\] in the weights vs \[10, 1024\]'):
        create_model(ARCH, 2, w)


@pytest.mark.parametrize(
    "arch, head",
    [("resnet18", "fc"), ("squeezenet1_1", "classifier.1"), ("vit_b_16", "heads.head"), ("convnext_tiny", "classifier.2"),
     ("efficientnet_b0", "classifier.1"), ("densenet121", "classifier"), ("swin_t", "head"), ("inception_v3", "fc")],
)
def test_every_family_builds_from_scratch_with_the_right_head(arch, head):
    with torch.device("meta"):  # structure only: no memory, no init cost
        model = create_model(arch, 7)
    assert find_head(model) == head and model.warmstart_pretrained is False
    layer = model.get_submodule(head)
    assert getattr(layer, "out_features", getattr(layer, "out_channels", None)) == 7


def test_scratch_model_runs():
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", 5).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_googlenet_file_with_builder_kwargs_and_aux_classifiers(tmp_path):
    """Builder kwargs travel in the sidecar; auxiliary classifiers in the file are skipped, as torchvision does."""
    torch.manual_seed(0)
    src = torchvision.models.googlenet(num_classes=10, aux_logits=True, init_weights=False)
    assert any(k.startswith("aux1.") for k in src.state_dict())
    meta = {"arch": "googlenet", "num_classes": 10, "input_size": 224, "resize": 256, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "model_kwargs": {"transform_input": True, "init_weights": False}}
    w = resolve_weights(str(save_weights(tmp_path / "g.pth", src.state_dict(), meta)), "googlenet")
    model = create_model("googlenet", 3, w)
    assert model.transform_input is True and model.aux1 is None and model.fc.out_features == 3
    assert torch.equal(model.inception5b.branch1.conv.weight, src.inception5b.branch1.conv.weight)


def test_unknown_arch_suggests_the_closest():
    with pytest.raises(UserError, match='unknown architecture "resnet19" \\(did you mean "resnet18"\\?\\)'):
        create_model("resnet19", 2)


def test_weights_for_another_arch_object_are_refused(v3_weights):
    with pytest.raises(UserError, match='are for "mobilenet_v3_small", not for "mobilenet_v2"'):
        create_model("mobilenet_v2", 2, v3_weights)
