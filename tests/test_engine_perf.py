"""Engine speed paths: channels_last (auto on x86 CPUs) is a layout, not another model; the divergence check
records the first non-finite loss on the device without a sync per step."""

from __future__ import annotations

import math

import pytest
import torch
from _data import digits_images
from torch import nn

from warmstart.data.transforms import Normalizer
from warmstart.engine.config import TrainConfig
from warmstart.engine.loop import (
    _note_nonfinite,
    _raise_if_diverged,
    fast_cpu_channels_last,
    fit,
    use_channels_last,
)
from warmstart.engine.plan import single_phase
from warmstart.errors import TrainingDiverged, UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return digits_images(slice(None, 600), slice(1500, None))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))


def test_channels_last_auto_and_explicit():
    assert TrainConfig().channels_last is None
    assert use_channels_last(TrainConfig(), CPU) == fast_cpu_channels_last(CPU)
    assert use_channels_last(TrainConfig(channels_last=False), CPU) is False
    assert use_channels_last(TrainConfig(channels_last=True), CPU) is True
    assert fast_cpu_channels_last(torch.device("cuda")) is False  # auto is off on GPUs until measured there
    with pytest.raises(UserError, match="channels-last"):
        TrainConfig(channels_last="yes")


def test_channels_last_trains_the_same_model(digits):
    results = {}
    for cl in (False, True):
        m = net()
        # SGD: AdamW would turn rounding-level gradient differences of near-zero gradients into lr-sized steps
        cfg = TrainConfig(optimizer="sgd", lr=0.05, quiet=True, channels_last=cl, deterministic=True)
        r = fit(m, *digits, single_phase(m, 2, 0.05), cfg,
                num_classes=10, normalize=Normalizer((0.5,) * 3, (0.5,) * 3))
        results[cl] = (r, m)
    (a, ma), (b, mb) = results[False], results[True]
    assert mb[0].weight.is_contiguous(memory_format=torch.channels_last) and ma[0].weight.is_contiguous()
    for ha, hb in zip(a.history, b.history, strict=True):
        assert math.isclose(ha["train_loss"], hb["train_loss"], rel_tol=1e-4)
        assert math.isclose(ha["val_loss"], hb["val_loss"], rel_tol=1e-4)
    for (n, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        torch.testing.assert_close(pb, pa, rtol=1e-3, atol=1e-4, msg=n)


def test_first_nonfinite_loss_is_recorded_without_reading_it_each_step():
    bad = torch.full((2,), -1.0, dtype=torch.float64)
    for step, loss in enumerate([0.5, 0.4, float("inf"), float("nan"), 0.3]):
        _note_nonfinite(bad, torch.tensor(loss), step)
    assert bad.tolist() == [2.0, float("inf")]  # the first one, not overwritten by the later NaN

    class Sched:
        def get_last_lr(self):
            return [0.1]

    with pytest.raises(TrainingDiverged, match="loss became inf at epoch 4, step 3"):
        _raise_if_diverged(bad, 3, Sched(), None)
    ok = torch.full((2,), -1.0, dtype=torch.float64)
    _note_nonfinite(ok, torch.tensor(1.0), 0)
    _raise_if_diverged(ok, 0, Sched(), None)  # nothing to report
