"""`warmstart rank` over the model zoo by name: imagenet:ARCH / timm:NAME / none:ARCH mixed with weights files in one
table, each with its own weights' preprocessing, offline from the torch hub cache, and one error line naming every
missing file. No network: the hub cache is a temporary TORCH_HOME holding files under the exact names torchvision
expects (the shared MobileNetV2 start, and a random ShuffleNetV2 x0.5), used as torch.hub uses an existing file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from _reliability import cli
from warmstart.transfer.candidates import check_candidates, is_init_token, zoo_candidate
from warmstart.transfer.weights import imagenet_checkpoint, save_weights
from warmstart.errors import UserError

V3 = "mobilenet_v3_small-imagenet"
SRC = str(Path(__file__).resolve().parents[1] / "src")
IMAGENET_MEAN = [0.485, 0.456, 0.406]


def test_zoo_names_parse_without_torch_work():
    assert zoo_candidate("imagenet:resnet18") == ("imagenet", "resnet18")
    assert zoo_candidate("timm:convnext_tiny") == ("imagenet", "timm:convnext_tiny")
    assert zoo_candidate("none:resnet18") == ("none", "resnet18") and zoo_candidate("he") is None
    tokens, inits = check_candidates("imagenet:mobilenet_v3_small,timm:convnext_tiny,none:resnet18,w/a.pth")
    assert len(tokens) == 4 and not inits and not is_init_token("imagenet:resnet18")
    with pytest.raises(UserError, match="no architecture after 'imagenet:'"):
        check_candidates("imagenet:,imagenet:resnet18")
    with pytest.raises(UserError, match="mixes init schemes"):
        check_candidates("he,imagenet:resnet18")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, weights_dir):
    """A torch hub cache with torchvision's file names: MobileNetV2 (the shared start's tensors) and ShuffleNetV2 x0.5
    (random, seeded); plus a ResNet-18 (random, seeded) as a weights file with its sidecar .json."""
    root = tmp_path_factory.mktemp("zoo")
    for arch, make in (("mobilenet_v2", None), ("shufflenet_v2_x0_5", torchvision.models.shufflenet_v2_x0_5)):
        _, path = _in(root / "torch", arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        if make is None:
            shutil.copy(weights_dir / "mobilenet_v2-imagenet.pth", path)
        else:
            torch.manual_seed(1)
            torch.save(make().state_dict(), path)
    torch.manual_seed(2)
    meta = {**json.loads((weights_dir / f"{V3}.json").read_text()), "arch": "resnet18", "mean": IMAGENET_MEAN,
            "std": [0.229, 0.224, 0.225]}
    save_weights(root / "resnet18-random.pth", torchvision.models.resnet18().state_dict(), meta)
    return root


def _in(torch_home, arch):
    """(URL, path) of torchvision's file for ``arch`` under ``torch_home``."""
    url, path = imagenet_checkpoint(arch)
    return url, torch_home / "hub" / "checkpoints" / path.name


def test_rank_mixes_architectures_by_name_each_with_its_own_preprocessing(hub, hymenoptera, weights_dir, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(hub / "torch"))
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    out = hub / "run"
    r = cli("rank", hymenoptera, "--candidates", f"{weights_dir / (V3 + '.pth')},imagenet:mobilenet_v2,"
            f"imagenet:shufflenet_v2_x0_5,{hub / 'resnet18-random.pth'}", "--subset", "8", "--device", "cpu",
            "--quiet", "--out", out)
    assert r.code == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    c = {x["name"]: x for x in s["candidates"]}
    assert set(c) == {V3, "imagenet:mobilenet_v2", "imagenet:shufflenet_v2_x0_5", "resnet18-random"}
    assert [c[n]["arch"] for n in sorted(c)] == ["mobilenet_v2", "shufflenet_v2_x0_5", "mobilenet_v3_small", "resnet18"]
    # each start's own trunk (the width of the features entering its classifier) and its own preprocessing
    width = {n: x["features"][1] for n, x in c.items()}
    assert width == {V3: 1024, "imagenet:mobilenet_v2": 1280, "imagenet:shufflenet_v2_x0_5": 1024, "resnet18-random": 512}
    pre = {n: x["preprocess"] for n, x in c.items()}
    assert pre[V3]["resize"] == 256 and pre[V3]["mean"] == [0.5] * 3  # its sidecar .json
    assert pre["imagenet:mobilenet_v2"]["resize"] == 232 and pre["imagenet:mobilenet_v2"]["mean"] == IMAGENET_MEAN  # torchvision's
    assert pre["imagenet:shufflenet_v2_x0_5"]["resize"] == 256 and pre["resnet18-random"]["mean"] == IMAGENET_MEAN
    assert all(x["preprocess"]["crop"] == 224 for x in s["candidates"])
    # the training images decoded once per distinct resize (256 and 232), not once per candidate
    assert s["decoded_datasets"] == 2
    assert all(x["source_classes"] == 1000 and None not in x["scores"].values() for x in s["candidates"])
    # real data: the two pretrained MobileNets beat the two random networks
    for k in ("probe_cv", "logme"):
        assert min(c[n]["scores"][k] for n in (V3, "imagenet:mobilenet_v2")) > max(
            c[n]["scores"][k] for n in ("imagenet:shufflenet_v2_x0_5", "resnet18-random"))
    assert "imagenet:shufflenet_v2_x0_5" in r.out and "resnet18-random" in r.out  # the printed table


def test_missing_zoo_files_are_named_in_one_error_line(hub, hymenoptera, weights_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    out = tmp_path / "out"
    r = cli("rank", hymenoptera, "--candidates", f"imagenet:resnet18,{weights_dir / (V3 + '.pth')},imagenet:mnasnet0_5",
            "--subset", "4", "--device", "cpu", "--out", out)
    assert r.code == 2 and r.err.count("\n") == 1 and r.err.startswith("error: ")
    for arch in ("resnet18", "mnasnet0_5"):
        url, path = _in(tmp_path / "empty", arch)
        assert path.name in r.error and url in r.error
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in r.error and not out.exists()
    # the same start by name and by --model: a duplicate
    monkeypatch.setenv("TORCH_HOME", str(hub / "torch"))
    r = cli("rank", hymenoptera, "--candidates", "imagenet,imagenet:mobilenet_v2", "--model", "mobilenet_v2",
            "--subset", "4", "--device", "cpu", "--out", out)
    assert r.code == 2 and "given twice" in r.error and not out.exists()


def test_timm_candidates_without_timm_say_how_to_install_it(hymenoptera, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail, installed or not
    out = tmp_path / "out"
    for offline in ("1", "0"):  # the offline file check and the resolution both say it
        monkeypatch.setenv("WARMSTART_OFFLINE", offline)
        r = cli("rank", hymenoptera, "--candidates", "timm:resnet18,none:resnet18", "--subset", "4", "--device", "cpu",
                "--out", out)
        assert r.code == 2 and r.err.count("\n") == 1 and not out.exists()
        assert "--candidates timm:resnet18" in r.error and "pip install 'warmstart[timm]'" in r.error


def test_timm_models_rank_offline_from_the_hugging_face_cache(hymenoptera, weights_dir, tmp_path):
    """timm:resnet18 beside a weights file, with timm's pretrained config as preprocessing; its file comes from a
    Hugging Face cache made here (random tensors of the right shapes, in the cache's own layout). Subprocesses:
    huggingface_hub reads HF_HUB_CACHE once, at import."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    cfg = timm.models.get_pretrained_cfg("resnet18")
    hf, out = tmp_path / "hf", tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_CACHE": str(hf), "HF_HUB_OFFLINE": "1", "WARMSTART_OFFLINE": "1"}
    argv = [sys.executable, "-m", "warmstart", "rank", str(hymenoptera), "--candidates",
            f"{weights_dir / (V3 + '.pth')},timm:resnet18", "--subset", "8", "--device", "cpu", "--quiet", "--out", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and not out.exists()
    assert f"model.safetensors of {cfg.hf_hub_id} for timm:resnet18" in done.stderr and str(hf) in done.stderr

    repo = hf / ("models--" + cfg.hf_hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(3)
    save_file(timm.create_model("resnet18").state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    c = {x["name"]: x for x in s["candidates"]}
    assert set(c) == {V3, "timm:resnet18"} and c["timm:resnet18"]["arch"] == "timm:resnet18"
    crop = cfg.input_size[-1]
    assert c["timm:resnet18"]["preprocess"] == {"resize": int(crop / cfg.crop_pct), "crop": crop,
                                                "interpolation": cfg.interpolation, "mean": list(cfg.mean),
                                                "std": list(cfg.std)}
    assert c["timm:resnet18"]["features"][1] == 512 and c["timm:resnet18"]["source_classes"] == 1000
    assert s["decoded_datasets"] == 2  # 256 bilinear for the MobileNet, timm's own resize for the ResNet
    assert s["ranking"][0] == str(weights_dir / (V3 + ".pth"))  # pretrained beats random on real photos


def test_train_takes_a_network_by_name_as_its_weights(hub, hymenoptera, tmp_path, monkeypatch):
    """`train --weights imagenet:ARCH` (and none:ARCH) names the architecture with the weights, as rank's candidates do:
    no --model needed; an explicit --model the name contradicts is one error line, nothing written."""
    monkeypatch.setenv("TORCH_HOME", str(hub / "torch"))
    monkeypatch.setenv("WARMSTART_OFFLINE", "1")
    out = tmp_path / "v2"
    r = cli("train", hymenoptera, "--weights", "imagenet:mobilenet_v2", "--subset", "2", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", out)
    assert r.code == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "mobilenet_v2"
    assert json.loads((out / "model.json").read_text())["arch"] == "mobilenet_v2"
    scratch = tmp_path / "scratch"
    r = cli("train", hymenoptera, "--weights", "none:resnet18", "--strategy", "scratch", "--subset", "2", "--epochs", "1",
            "--device", "cpu", "--quiet", "--out", scratch)
    assert r.code == 0, r.err
    assert json.loads((scratch / "summary.json").read_text())["model"] == "resnet18"
    bad = tmp_path / "bad"
    r = cli("train", hymenoptera, "--weights", "imagenet:mobilenet_v2", "--model", "resnet18", "--out", bad)
    assert r.code == 2 and r.err.count("\n") == 1 and r.err.startswith("error: --weights imagenet:mobilenet_v2 is for")
    assert not bad.exists()
