"""The device path, on every device there is: CUDA-marked cases run on a GPU and skip without one.

On a machine with a GPU, ``pytest -m cuda`` runs just these (``benchmarks/gpu_session.sh`` does). The round
trip runs on the CPU too (tiny), so the same code is exercised where there is no GPU; the comparisons of a
device against the CPU only mean something where the device is not the CPU, so they are CUDA-only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _runs import cli, small_weights, summary

HAS_CUDA = torch.cuda.is_available()
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")])



@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_train_resume_predict_export_round_trip(device, hymenoptera, weights_dir, tmp_path, capsys):
    """finetune-all for an epoch on the device, --resume of the finished run (nothing left to do: the weights
    stay), predict on the device, export to ONNX (checked against PyTorch by export itself)."""
    from safetensors.torch import load_file

    w = small_weights(weights_dir, tmp_path / "w", 64)
    out = tmp_path / "run"
    amp = ["--amp", "bf16", "--channels-last"] if device == "cuda" else []
    assert cli("train", hymenoptera, "--weights", w, "--strategy", "finetune-all", "--subset", 3, "--batch-size", 4,
               "--epochs", 1, "--device", device, "--quiet", "--out", out, *amp) == 0
    trained = load_file(out / "model.safetensors")
    assert summary(out)["device"].startswith(device)
    assert json.loads((out / "config.json").read_text())["options"]["device"] == device

    assert cli("train", "--resume", out, "--quiet") == 0
    again = load_file(out / "model.safetensors")
    assert all(torch.equal(again[k], v) for k, v in trained.items())

    capsys.readouterr()
    bees = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[:3]
    assert cli("predict", out, *bees, "--json", "--device", device) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [Path(p["image"]).name for p in preds] == [b.name for b in bees]
    for p in preds:
        probs = [c["probability"] for c in p["predictions"]]
        assert {c["class"] for c in p["predictions"]} == {"ants", "bees"}
        assert math.isclose(sum(probs), 1.0, abs_tol=1e-4)

    onnx = tmp_path / "m.onnx"
    assert cli("export", out, "--onnx", onnx) == 0
    assert onnx.is_file() and onnx.stat().st_size > 1_000_000


@pytest.mark.parametrize("scale", [(0.35, 1.0), None], ids=["resized-crop", "crop"])
def test_batch_augment_on_the_gpu_draws_the_cpu_crops(scale):
    """The boxes and flips come from the CPU generator, so a seed gives the same crops on any device; the pixels
    are the same bilinear samples, rounded to uint8: at most 1 level apart (float order in grid_sample)."""
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU")
    from warmstart.data.augment import BatchAugment

    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 3, 72, 72), dtype=torch.uint8, generator=g)
    aug = BatchAugment(64, scale=scale)
    torch.manual_seed(0)
    on_cpu = aug(x)
    torch.manual_seed(0)
    on_gpu = aug(x.cuda()).cpu()
    diff = (on_cpu.int() - on_gpu.int()).abs()
    assert on_gpu.dtype == torch.uint8 and on_gpu.shape == (32, 3, 64, 64)
    assert diff.max().item() <= 1 and diff.float().mean().item() < 0.01


def test_feature_cache_on_the_gpu_matches_the_cpu(hymenoptera, weights_dir):
    """The frozen pass on the GPU (TF32 convolutions, so ~1e-3 relative) gives the CPU's features."""
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU")
    from torch import nn

    from warmstart.data import ImageDataset, Normalizer, Preprocess, load_data
    from warmstart.transfer.features import FeatureCache
    from warmstart.transfer.probe import fit_probe

    meta = json.loads((weights_dir / "mobilenet_v3_small-imagenet.json").read_text())
    import torchvision

    model = torchvision.models.mobilenet_v3_small()
    model.load_state_dict(torch.load(weights_dir / "mobilenet_v3_small-imagenet.pth", weights_only=True))
    trunk = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), *model.classifier[:3])
    pre = Preprocess(resize=meta.get("resize", 256), crop=meta.get("input_size", 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    data = ImageDataset(load_data(hymenoptera, subset=8).train, pre, cache_dir=False)
    cpu = FeatureCache.build(trunk, data, normalize=Normalizer.of(pre), device="cpu").tensors()
    gpu = FeatureCache.build(trunk, data, normalize=Normalizer.of(pre), device="cuda").tensors()
    torch.testing.assert_close(gpu[0], cpu[0], rtol=1e-2, atol=1e-2)
    assert torch.equal(gpu[1], cpu[1])
    probe = fit_probe(gpu[0], gpu[1], 2)
    assert probe.train_accuracy == 1.0  # 16 images of two ImageNet classes: separable on these features


def test_compare_and_rank_on_the_gpu(hymenoptera, weights_dir, tmp_path):
    """compare (two strategies) and rank (the four shared starts) run on the GPU, above chance where they train."""
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU")
    cmp_out, rank_out = tmp_path / "cmp", tmp_path / "rank"
    assert cli("compare", hymenoptera, "--weights", weights_dir / "mobilenet_v3_small-imagenet.pth", "--strategies",
               "transfer,finetune-all", "--subset", 8, "--epochs", 1, "--device", "cuda", "--quiet", "--out", cmp_out) == 0
    arms = summary(cmp_out)["strategies"]
    assert set(arms) == {"transfer", "finetune-all"}
    assert all(a["final_val_accuracy"]["mean"] > 0.5 for a in arms.values())  # ImageNet features know ants from bees
    starts = ",".join(str(weights_dir / f"{n}.pth") for n in ("mobilenet_v3_small-imagenet", "mobilenet_v2-imagenet",
                                                                "mobilenet_v2-inat-insect", "mobilenet_v2-inat-bird"))
    assert cli("rank", hymenoptera, "--candidates", starts, "--subset", 8, "--device", "cuda", "--out", rank_out) == 0
    assert len(summary(rank_out)["candidates"]) == 4


for _name in ("test_batch_augment_on_the_gpu_draws_the_cpu_crops", "test_feature_cache_on_the_gpu_matches_the_cpu",
              "test_compare_and_rank_on_the_gpu"):
    globals()[_name] = pytest.mark.cuda(globals()[_name])
