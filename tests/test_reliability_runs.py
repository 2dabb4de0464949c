"""Runs that break in the middle: a full disk, a diverging loss, kill -9. The run directory stays consistent,
the error is one line, and --resume finishes the run with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _reliability import FAST, cli, env_one_thread, image_folder, leftovers, one_thread
from warmstart.engine import checkpoint
from warmstart.errors import UserError

TIMING = ("seconds", "images_per_second", "val_seconds")  # wall-clock columns: the only ones allowed to differ


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def numbers(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run)]


def assert_same_run(a: Path, b: Path) -> None:
    """Same metrics (every column but the timings, to the last bit), same summary numbers, same final weights."""
    assert numbers(a) == numbers(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    for k in ("best_val_accuracy", "final_val_accuracy", "best_epoch", "per_class_accuracy", "confusion", "epochs"):
        assert sa[k] == sb[k], k
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def folder(tmp_path, hymenoptera) -> Path:
    return image_folder(tmp_path / "d", hymenoptera, 4)


# ------------------------------------------------------------------------------------------------ a full disk
def test_full_disk_while_checkpointing_then_resume(folder, tmp_path, monkeypatch):
    """ENOSPC from os.fsync (as a full disk reports it) while the engine writes the 2nd checkpoint."""
    args = ["train", folder, *FAST, "--epochs", "3", "--deterministic", "--batch-size", "4", "-q"]
    writes = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(name).startswith(".checkpoint.pt."):
            writes.append(name)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    run = tmp_path / "full"
    with one_thread():
        monkeypatch.setattr(os, "fsync", fsync)
        r = cli(*args, "--out", run)
        monkeypatch.undo()
        assert r.code == 2 and len(writes) == 2
        assert r.error == (f"error: cannot write checkpoint {run / 'checkpoint.pt'}: No space left on device; free some disk "
                           f"space or choose another --out; training stopped in epoch 2; once that is fixed, --resume {run} "
                           "continues after epoch 1")
        # what is there is whole: the epoch-1 checkpoint, no temp file, no summary of an unfinished run
        assert leftovers(run) == [] and not (run / "summary.json").exists()
        state = checkpoint.load(run / "checkpoint.pt")
        assert [h["epoch"] for h in state["history"]] == [1]

        # what a kill -9 between creating a temp file and renaming it leaves behind: resuming clears it
        (run / ".checkpoint.pt.k9x2ab.tmp").write_bytes(b"half a checkpoint")
        (run / "features").mkdir(exist_ok=True)
        (run / "features" / ".val-0123.npy.zz81.tmp.npy").write_bytes(b"half a feature file")
        assert len(leftovers(run)) == 2
        resumed = cli("train", "--resume", run, "-q")  # DATA and every option come from the run's config.json
        assert resumed.code == 0, resumed.err
        assert leftovers(run) == []
        straight = cli(*args, "--out", tmp_path / "straight")
        assert straight.code == 0, straight.err
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3"]
    assert_same_run(run, tmp_path / "straight")


# ------------------------------------------------------------------------------------------------ NaN / inf
def test_diverging_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(folder, tmp_path):
    run = tmp_path / "nan"
    with one_thread():
        r = cli("train", folder, *FAST, "--epochs", "4", "--optimizer", "sgd", "--lr", "1e6", "--schedule", "constant",
                "--batch-size", "8", "--out", run, "-q")
    assert r.code == 2
    line = r.error
    assert "became nan" in line or "became inf" in line, line
    assert f"training stopped, the last good checkpoint is kept at {run / 'checkpoint.pt'}; lower --lr or add --grad-clip" in line
    state = checkpoint.load(run / "checkpoint.pt")  # loadable ...
    assert len(state["history"]) >= 1
    assert all(math.isfinite(h["val_loss"]) and math.isfinite(h["train_loss"]) for h in state["history"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())  # ... and finite
    assert len(rows(run)) == len(state["history"])  # metrics.csv ends with the last good epoch
    assert not (run / "summary.json").exists() and leftovers(run) == []


# ------------------------------------------------------------------------------------------------ kill -9
@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(cifar10, tmp_path):
    """SIGKILL while epoch 3 of 4 runs (epoch 2 is checkpointed), then --resume: bit-identical to a straight run.

    CIFAR-10, 100 images per class, batch 8: an epoch is 125 steps (about 2-3 s on a CPU), so the kill lands
    mid-epoch. Both processes use one torch thread, as the in-process runs do (identical reductions).
    """
    args = ["train", str(cifar10), *FAST, "--epochs", "4", "--batch-size", "8", "--subset", "100", "--deterministic", "--seed", "3"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", *args, "--out", str(killed), "-q"], env=env_one_thread(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = killed / "checkpoint.pt"
    deadline, seen = time.monotonic() + 400, None
    try:
        while True:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "epoch 2 was never checkpointed"
            if ck.exists() and ck.stat().st_mtime_ns != seen:
                seen = ck.stat().st_mtime_ns
                try:
                    if len(checkpoint.load(ck)["history"]) == 2:
                        break
                except UserError:  # never half a file (atomic writes); a file replaced while we read it is retried
                    pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # killed mid-epoch 3: two epochs on record, no summary, no final model
    assert len(checkpoint.load(ck)["history"]) == 2 and len(rows(killed)) == 2
    assert not (killed / "summary.json").exists() and not (killed / "model.safetensors").exists()

    with one_thread():
        resumed = cli("train", str(cifar10), "--resume", killed, "-q")
        assert resumed.code == 0, resumed.err
        straight = cli(*args, "--out", tmp_path / "straight", "-q")
        assert straight.code == 0, straight.err
    assert [r["epoch"] for r in rows(killed)] == ["1", "2", "3", "4"]
    assert_same_run(killed, tmp_path / "straight")
    # the run learned something (so equal numbers are not trivially equal constants)
    acc = [float(r["val_accuracy"]) for r in rows(killed)]
    assert max(acc) > 0.2 and len(set(acc)) > 1
