"""Weights: resolving none / imagenet / file specs, their preprocessing, and loading without running code."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from warmstart.data.transforms import Preprocess
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.weights import _densenet_legacy_keys, load_tensors, resolve_weights, save_weights

ARCH = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def v3_file(weights_dir) -> Path:
    return weights_dir / "mobilenet_v3_small-imagenet.pth"


@pytest.fixture(scope="module")
def v3_tensors(v3_file) -> dict[str, torch.Tensor]:
    return torch.load(v3_file, map_location="cpu", weights_only=True)


def _sha256sums(weights_dir: Path) -> dict[str, str]:
    lines = (weights_dir / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (ln.split() for ln in lines if ln.strip())}


def test_file_weights_carry_their_preprocessing_and_classes(v3_file, weights_dir, v3_tensors):
    w = resolve_weights(str(v3_file), ARCH)
    assert (w.kind, w.arch, w.path) == ("file", ARCH, v3_file.absolute())
    assert w.preprocess == Preprocess(resize=256, crop=224, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert w.num_classes == 1000 and len(w.categories) == 1000
    assert w.categories[310].startswith("ant") and w.categories[309].startswith("bee")
    assert w.fingerprint == _sha256sums(weights_dir)[v3_file.name]
    sd = w.load_state_dict()
    assert sd.keys() == v3_tensors.keys()
    assert all(torch.equal(sd[k], v3_tensors[k]) for k in sd)
    # the arch comes from the sidecar when not requested
    assert resolve_weights(str(v3_file)).arch == ARCH


def test_file_of_another_arch_is_refused(weights_dir):
    with pytest.raises(UserError, match=r'is for "mobilenet_v2".*not for the requested architecture "mobilenet_v3_small"'):
        resolve_weights(str(weights_dir / "mobilenet_v2-imagenet.pth"), ARCH)


def test_safetensors_and_checkpoint_dicts_load_the_same_tensors(tmp_path, v3_file, v3_tensors):
    meta = json.loads(v3_file.with_suffix(".json").read_text())
    st = save_weights(tmp_path / "copy.safetensors", v3_tensors, meta)
    assert st.with_suffix(".json").is_file()
    w = resolve_weights(str(st), ARCH)
    sd = w.load_state_dict()
    assert sd.keys() == v3_tensors.keys() and all(torch.equal(sd[k], v3_tensors[k]) for k in sd)
    assert w.fingerprint != resolve_weights(str(v3_file)).fingerprint  # different bytes, different file

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": v3_tensors, "epoch": 3, "optimizer": {"lr": 0.1}}, ckpt)
    shutil.copy(v3_file.with_suffix(".json"), ckpt.with_suffix(".json"))
    sd = resolve_weights(str(ckpt), ARCH).load_state_dict()
    assert sd.keys() == v3_tensors.keys()

    ddp = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in v3_tensors.items()}, ddp)
    assert load_tensors(ddp).keys() == v3_tensors.keys()


def test_sidecar_problems_name_the_file_and_the_key(tmp_path, v3_file):
    pth = tmp_path / "w.pth"
    shutil.copy(v3_file, pth)
    js = pth.with_suffix(".json")
    with pytest.raises(UserError, match=f"needs its metadata next to it in {js}"):
        resolve_weights(str(pth), ARCH)

    js.write_text("{not json")
    with pytest.raises(UserError, match=f"{js}: not valid JSON"):
        resolve_weights(str(pth), ARCH)

    meta = json.loads(v3_file.with_suffix(".json").read_text())
    for key in ("mean", "arch", "num_classes"):
        broken = {k: v for k, v in meta.items() if k != key}
        js.write_text(json.dumps(broken))
        with pytest.raises(UserError, match=f'{js}: missing key "{key}"'):
            resolve_weights(str(pth), ARCH)

    js.write_text(json.dumps({**meta, "categories": meta["categories"][:10]}))
    with pytest.raises(UserError, match="categories.*1000 class names"):
        resolve_weights(str(pth), ARCH)

    js.write_text(json.dumps({**meta, "std": [0.5, 0.0, 0.5]}))
    with pytest.raises(UserError, match="positive stds"):
        resolve_weights(str(pth), ARCH)


class _Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, v3_file):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.0.weight": torch.zeros(1), "payload": _Evil(marker)}, evil)
    shutil.copy(v3_file.with_suffix(".json"), evil.with_suffix(".json"))
    w = resolve_weights(str(evil), ARCH)
    with pytest.raises(UserError, match=r"refusing to load weights file .*evil\.pth: not plain tensors, it would run code when unpickled \(it calls or imports posix\.system\)"):
        w.load_state_dict()
    with pytest.raises(UserError, match="refusing to load"):
        create_model(ARCH, 2, w)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # proof that the payload is live: plain unpickling runs it
    assert marker.exists()


def test_none_takes_preprocessing_from_torchvision_defaults():
    w = resolve_weights("none", ARCH)
    assert (w.kind, w.path, w.pretrained, w.num_classes, w.categories) == ("none", None, False, None, None)
    t = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    assert w.preprocess == Preprocess(resize=t.resize_size[0], crop=t.crop_size[0], interpolation="bilinear", mean=tuple(t.mean), std=tuple(t.std))
    assert w.load_state_dict() == {}
    assert resolve_weights("none", "inception_v3").preprocess.crop == 299
    assert resolve_weights("none", "efficientnet_b0").preprocess.interpolation == "bicubic"


def _expected_hub_file(tmp_path: Path) -> Path:
    url = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    return tmp_path / "torch_home" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]


def test_imagenet_offline_and_not_cached_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    expected = _expected_hub_file(tmp_path)
    with pytest.raises(UserError) as e:
        resolve_weights("imagenet", ARCH)
    assert str(expected) in str(e.value) and "--weights PATH" in str(e.value)


def test_imagenet_download_failure_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("WARMSTART_OFFLINE", raising=False)
    calls = []

    def no_network(url, dst, *a, **k):
        calls.append((url, dst))
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError, match="could not be downloaded .*no network in this test") as e:
        resolve_weights("imagenet", ARCH)
    assert str(_expected_hub_file(tmp_path)) in str(e.value)
    assert calls and calls[0][1] == str(_expected_hub_file(tmp_path))


def test_imagenet_weights_found_in_the_torch_hub_cache_load(tmp_path, monkeypatch, v3_file, v3_tensors):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    cached = _expected_hub_file(tmp_path)
    cached.parent.mkdir(parents=True)
    shutil.copy(v3_file, cached)  # same shapes as torchvision's own file, other values
    w = resolve_weights("imagenet", ARCH)
    tvw = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    assert (w.kind, w.path) == ("imagenet", cached)
    assert w.categories == list(tvw.meta["categories"]) and w.num_classes == 1000
    assert w.preprocess.mean == tuple(tvw.transforms().mean)
    model = create_model(ARCH, 2, w)
    assert model.warmstart_pretrained is True
    assert torch.equal(model.features[0][0].weight, v3_tensors["features.0.0.weight"])
    assert model.classifier[3].out_features == 2


def test_unknown_specs_and_archs_suggest_the_closest():
    with pytest.raises(UserError, match='unknown weights "imagenett" \\(did you mean "imagenet"\\?\\)'):
        resolve_weights("imagenett", ARCH)
    with pytest.raises(UserError, match='unknown architecture "mobilenet_v3_smal" \\(did you mean "mobilenet_v3_small"\\?\\)'):
        resolve_weights("none", "mobilenet_v3_smal")
    with pytest.raises(UserError, match="weights file not found: .*nothere.pth"):
        resolve_weights("nothere.pth", ARCH)


def test_timm_models_without_timm_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail, installed or not
    with pytest.raises(UserError, match=r"pip install 'warmstart\[timm\]'"):
        resolve_weights("none", "timm:resnet18")
    with pytest.raises(UserError, match=r"pip install 'warmstart\[timm\]'"):
        create_model("timm:resnet18", 2)


def test_densenet_legacy_keys_are_renamed_like_torchvision_does():
    t = torch.zeros(1)
    sd = {"features.denseblock1.denselayer1.norm.1.weight": t, "features.denseblock1.denselayer1.conv.2.weight": t, "classifier.bias": t}
    assert list(_densenet_legacy_keys(sd)) == [
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer1.conv2.weight",
        "classifier.bias",
    ]
