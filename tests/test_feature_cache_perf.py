"""Feature caches fast and at scale.

A million images must not need a million x D floats in RAM: above ``memory_limit`` bytes (float32) the
cache is a memory-mapped float16 file that building writes one batch at a time. The one pass of the frozen
layers may run on channels-last batches and under autocast; the features stay those of the trunk.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from warmstart.transfer.recipe import FEATURE_MEMORY_LIMIT
from warmstart.transfer.features import FeatureCache


class Scalars(torch.utils.data.Dataset):
    """Sample i is the 1-vector [i / n] with label i % 3: n samples that take no memory to hold."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i / self.n]), i % 3


def _trunk(width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, width), nn.Tanh())


def test_memory_limit_chooses_memory_or_disk(tmp_path):
    data = Scalars(40)  # 40 x 64 float32 = 10,240 bytes
    small = FeatureCache.build(_trunk(), data, normalize=None, batch_size=16, path=tmp_path / "a.npy", memory_limit=10_240)
    assert small.path is None and isinstance(small.features, torch.Tensor) and not (tmp_path / "a.npy").exists()
    big = FeatureCache.build(_trunk(), data, normalize=None, batch_size=16, path=tmp_path / "b.npy", memory_limit=10_239)
    assert big.path == tmp_path / "b.npy" and isinstance(big.features, np.memmap) and big.features.dtype == np.float16
    torch.testing.assert_close(big.tensors()[0], small.tensors()[0], rtol=1e-3, atol=1e-3)
    assert big.tensors()[1].tolist() == [i % 3 for i in range(40)]
    # train's threshold: a quarter of a million MobileNetV3-Small feature vectors (1024 floats) stay in memory
    assert 262_144 * 1024 * 4 <= FEATURE_MEMORY_LIMIT < 262_145 * 1024 * 4


def test_building_a_disk_cache_streams_batches(tmp_path):
    """60,000 x 1024 features: float32 in RAM would be 246 MB; building them on disk takes a few tens of MB."""
    script = textwrap.dedent(f"""
        import resource, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_feature_cache_perf import Scalars, _trunk
        from warmstart.transfer.features import FeatureCache
        torch.set_num_threads(1)
        data, trunk = Scalars(60_000), _trunk(1024)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cache = FeatureCache.build(trunk, data, normalize=None, batch_size=1000, path={str(tmp_path / "f.npy")!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert cache.features.shape == (60_000, 1024), cache.features.shape
        print((after - before) * 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grew = int(done.stdout.split()[-1])
    fp32_bytes = 60_000 * 1024 * 4
    # batches are written to the file as they come (no memory map while building): the process holds about one
    # batch, not the 246 MB of float32 features, nor even the 123 MB float16 file
    assert grew < fp32_bytes / 4, f"peak RSS grew by {grew / 1e6:.0f} MB"
    assert (tmp_path / "f.npy").stat().st_size >= 60_000 * 1024 * 2


def _conv_trunk() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, groups=8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], i % 2


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1


def test_channels_last_and_autocast_give_the_trunks_features():
    trunk, data = _conv_trunk(), Images(12)
    plain = FeatureCache.build(trunk, data, normalize=_norm, batch_size=5).tensors()[0]
    fast = FeatureCache.build(trunk, data, normalize=_norm, batch_size=5, channels_last=True).tensors()[0]
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in trunk.parameters())  # only the batches change layout, not the model
    half = FeatureCache.build(trunk, data, normalize=_norm, batch_size=5, autocast=torch.bfloat16).tensors()[0]
    assert half.dtype == torch.float32 and not torch.equal(half, plain)  # it did run in bfloat16
    torch.testing.assert_close(half, plain, rtol=0.05, atol=0.02)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "resnet18"])
def test_folding_batchnorm_keeps_the_trunks_function(arch, hymenoptera):
    from _transfer_data import hymenoptera_batch

    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.features import fold_batchnorm, split_at
    from warmstart.transfer.groups import layer_groups

    torch.manual_seed(0)
    model = create_model(arch, 2, None)
    x, _ = hymenoptera_batch(hymenoptera, "val", per_class=2)
    x = x.float() / 127.5 - 1
    model.train()
    with torch.no_grad():  # give the BatchNorms non-trivial running statistics
        for _ in range(3):
            model(x)
    model.eval()
    groups = layer_groups(model)
    trunk, _ = split_at(model, groups, len(groups) - 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(trunk)
    bns = lambda m: sum(isinstance(c, nn.BatchNorm2d) for c in m.modules())  # noqa: E731
    assert bns(folded) < bns(trunk) and bns(trunk) > 0
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), trunk(x), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
    f = FeatureCache.build(trunk, torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), normalize=None,
                           fold_bn=True).tensors()[0]
    with torch.inference_mode():
        torch.testing.assert_close(f, trunk(x), rtol=1e-4, atol=1e-4)


def test_feature_pass_reuses_memory_instead_of_faulting_in_fresh_pages(single_thread):
    """Before: every batch's activations came from fresh kernel pages (CIFAR-10 at 224 px: 1,229 minor page faults
    per image, a quarter of the CPU time in the kernel). Now batches stay under the allocator's mmap threshold and
    freed memory is reused: measured 57 per image."""
    import resource

    import torchvision

    from warmstart.data import Normalizer
    from warmstart.transfer.features import ACTIVATION_LIMIT

    torch.manual_seed(0)
    trunk = torchvision.models.mobilenet_v3_small().features
    images = torch.randint(0, 256, (96, 3, 224, 224), dtype=torch.uint8)
    data = torch.utils.data.TensorDataset(images, torch.arange(96) % 3)
    norm = Normalizer((0.5,) * 3, (0.5,) * 3)
    first = FeatureCache.build(trunk, data, normalize=norm, batch_size=64, channels_last=True, fold_bn=True)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = FeatureCache.build(trunk, data, normalize=norm, batch_size=64, channels_last=True, fold_bn=True)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 96
    print(f"{faults:.0f} minor page faults per image")
    assert faults < 400, f"{faults:.0f} minor page faults per image"
    torch.testing.assert_close(again.tensors()[0], first.tensors()[0])
    assert 3 * 224 * 224 * 4 * 64 > ACTIVATION_LIMIT  # a batch of 64 float inputs alone is over the limit: it shrank
