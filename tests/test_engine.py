"""The one training loop, on real data (scikit-learn's bundled digits)."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch
from _data import digits_images
from torch import nn

from warmstart.data.transforms import Normalizer
from warmstart.engine import checkpoint, io
from warmstart.engine.config import TrainConfig
from warmstart.engine.loop import fit
from warmstart.engine.optim import build_scheduler
from warmstart.engine.plan import ParamGroup, Phase, single_phase
from warmstart.engine.run import Run
from warmstart.errors import TrainingDiverged, UserError

NORM = Normalizer((0.5,) * 3, (0.5,) * 3)


@pytest.fixture(scope="module")
def digits():
    return digits_images(slice(None, 1200), slice(1200, None))


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))


def two_phases(model, lr=3e-3):
    head = [n for n, _ in model.named_parameters() if n.startswith(("5.", "8."))]
    everything = [n for n, _ in model.named_parameters()]
    return [Phase(2, [ParamGroup("head", head, lr)], eval_modules=["1"], name="head"),
            Phase(2, [ParamGroup("all", everything, lr / 3)], name="all")]


def test_fit_learns_digits(digits):
    m = net()
    r = fit(m, *digits, single_phase(m, 3, 3e-3), TrainConfig(lr=3e-3, quiet=True), num_classes=10, normalize=NORM)
    assert r.final_val_accuracy > 0.85
    assert len(r.history) == 3 and r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert sum(map(sum, r.confusion)) == len(digits[1])
    assert len(r.per_class_accuracy) == 10


def test_same_seed_same_numbers(digits):
    runs = []
    for _ in range(2):
        m = net(1)
        runs.append(fit(m, *digits, single_phase(m, 2, 1e-2), TrainConfig(lr=1e-2, seed=3, deterministic=True, optimizer="sgd"),
                        num_classes=10, normalize=NORM))
    keys = ("train_loss", "val_loss", "val_accuracy")
    assert [[h[k] for k in keys] for h in runs[0].history] == [[h[k] for k in keys] for h in runs[1].history]


def test_phase_freezes_and_keeps_frozen_bn_in_eval(digits):
    m = net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    phases = two_phases(m)[:1]
    fit(m, *digits, phases, TrainConfig(quiet=True), num_classes=10, normalize=NORM)
    after = m.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])            # frozen conv unchanged
    assert torch.equal(before["1.running_mean"], after["1.running_mean"])  # frozen BN stats did not drift
    assert not torch.equal(before["5.weight"], after["5.weight"])         # the head trained


class Interrupt(Exception):
    pass


def test_resume_across_a_phase_change_is_exact(digits, tmp_path):
    cfg = TrainConfig(lr=3e-3, seed=7, deterministic=True, quiet=True)
    m = net()
    full = fit(m, *digits, two_phases(m), cfg, num_classes=10, normalize=NORM, run=Run(tmp_path / "a", "t", {}).start())

    def stop_after_3(model, row):
        if row["epoch"] == 3:  # inside the second phase
            raise Interrupt

    m = net()
    run_b = Run(tmp_path / "b", "t", {}).start()
    with pytest.raises(Interrupt):
        fit(m, *digits, two_phases(m), cfg, num_classes=10, normalize=NORM, run=run_b, callbacks=[stop_after_3])
    m = net(99)  # whatever the fresh model holds, resume restores it
    resumed = fit(m, *digits, two_phases(m), cfg, num_classes=10, normalize=NORM, run=Run(tmp_path / "b", "t", {}, resume=True).start(),
                  resume=True)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert resumed.final_val_accuracy == full.final_val_accuracy
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 5  # header + 4 epochs, epoch 4 written once


def test_nan_loss_stops_and_keeps_last_good_checkpoint(digits, tmp_path):
    m = net()
    run = Run(tmp_path / "r", "t", {}).start()
    phases = [Phase(1, [ParamGroup("all", [n for n, _ in m.named_parameters()], 1e-3)], name="ok"),
              Phase(2, [ParamGroup("all", [n for n, _ in m.named_parameters()], 1e12)], name="huge")]
    with pytest.raises(TrainingDiverged, match="last good checkpoint is kept"):
        fit(m, *digits, phases, TrainConfig(optimizer="sgd", lr=1e-3, quiet=True), num_classes=10, normalize=NORM, run=run)
    state = checkpoint.load(run.checkpoint_path)
    assert len(state["history"]) == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_full_disk_leaves_previous_file_intact(tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.pt"
    io.torch_save({"a": torch.ones(2)}, p)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="No space left on device; free some disk space"):
        io.torch_save({"a": torch.zeros(2)}, p)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(p)["a"], torch.ones(2))
    assert [f.name for f in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.pt", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(UserError, match="refusing to load"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_schedules(schedule):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = TrainConfig(schedule=schedule, lr=1.0, step_size=2, warmup_epochs=1 if schedule == "cosine" else 0)
    s = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=4)
    lrs = []
    for _ in range(40):
        lrs.append(s.get_last_lr()[0])
        opt.step()
        s.step()
    if schedule == "constant":
        assert set(lrs) == {1.0}
    elif schedule == "step":
        assert lrs[0] == 1.0 and lrs[25] == pytest.approx(0.1)
    elif schedule == "cosine":
        assert lrs[0] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0, abs=0.02) and lrs[-1] < 0.01
    else:
        assert lrs[0] == pytest.approx(1 / 25) and max(lrs) == pytest.approx(1.0, abs=1e-3) and lrs[-1] < 0.01


@pytest.mark.parametrize("bad", [dict(lr=-1), dict(batch_size=0), dict(optimizer="adamm"), dict(schedule="cosin")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(UserError):
        TrainConfig(**bad)


def test_a_run_is_a_context_manager_closed_however_the_block_ends(tmp_path):
    """``with Run(...).start() as run`` closes its TensorBoard writer also when the block raises: the events
    written so far are on disk and the writer is gone."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.raises(RuntimeError, match="stop"):
        with Run(tmp_path / "run", "train", {}, tensorboard=True).start() as run:
            run.log_epoch({"epoch": 1, "train_loss": 0.5})
            assert run._tb is not None
            raise RuntimeError("stop")
    assert run._tb is None
    events = EventAccumulator(str(tmp_path / "run" / "events"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("train_loss")] == [0.5]
