"""The benchmarks run: each one's --smoke mode (8 + 8 images, 1 epoch) prints its table and writes its JSON.

These check that the scripts work and that what they report is consistent, not how fast anything is: the
measured numbers live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WARMSTART_FASTAI_PYTHON"}  # the tests say which Python
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


def _bench(name: str, hymenoptera: Path, weights_dir: Path, tmp_path: Path, *extra: str, **env: str) -> tuple[dict | None, str]:
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / f"bench_{name}.py"), "--smoke", "--data", str(hymenoptera),
           "--weights", str(weights_dir / "mobilenet_v3_small-imagenet.pth"), "--json", str(out), *extra]
    done = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return (json.loads(out.read_text()) if out.exists() else None), done.stdout


def _machine_ok(doc: dict) -> None:
    assert doc["smoke"] is True
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["torch"] and doc["machine"]["cpu"] is not None


def test_transfer_smoke(hymenoptera, weights_dir, tmp_path):
    doc, stdout = _bench("transfer", hymenoptera, weights_dir, tmp_path)
    _machine_ok(doc)
    assert doc["images"] == {"train": 8, "val": 8} and doc["epochs"] == 1
    wall = doc["wall_seconds"]
    assert all(v > 0 for v in wall.values())
    assert doc["speedup"] == round(wall["baseline"] / wall["warmstart"], 2)
    assert doc["warmstart_over_floor"] == round(wall["warmstart"] / wall["floor_inference_pass"], 3)
    accs = doc["final_val_accuracy"]
    assert all(0 <= a <= 1 for a in accs.values())
    assert doc["accuracy_drop_pp"] == round(100 * (accs["baseline"] - accs["warmstart"]), 2)
    assert doc["warmstart_inside"]["feature_seconds"] > 0  # warmstart ran its feature cache
    assert len(doc["baseline_history"]) == 1 and doc["runs"]["baseline"][0]["load_before"] is not None
    assert "| wall time, whole process (s)" in stdout and "x faster" in stdout
    assert wall["warmstart_second_run"] > 0 and wall["own_floor"] > 0  # issue 15: own floor and second run side by side
    assert doc["warmstart_over_own_floor"] == round(wall["warmstart"] / wall["own_floor"], 3)
    assert doc["own_floor_inside"]["images"] == 16 and doc["peak_rss_mb"]["warmstart"] > 0


def test_finetune_smoke(hymenoptera, weights_dir, tmp_path):
    doc, stdout = _bench("finetune", hymenoptera, weights_dir, tmp_path)
    _machine_ok(doc)
    rates = doc["train_images_per_second"]
    assert rates["warmstart"] > 0 and rates["baseline"] > 0
    assert doc["ratio"] == round(rates["warmstart"] / rates["baseline"], 2)
    assert [k["knob"] for k in doc["knobs"]] == ["plain", "channels_last"]
    assert all(k["steady_images_per_second"] > 0 for k in doc["knobs"])
    assert "training images/s" in stdout and "vs plain" in stdout
    assert rates["floor_bare_step"] > 0 and doc["of_floor"] == round(rates["warmstart"] / rates["floor_bare_step"], 3)
    assert set(doc["thread_sweep_median"]) == {"train-step threads=1", "train-step threads=2", "forward threads=1", "forward threads=2"}


def test_inference_smoke(hymenoptera, weights_dir, tmp_path):
    doc, stdout = _bench("inference", hymenoptera, weights_dir, tmp_path)
    _machine_ok(doc)
    assert doc["images"] == 16
    rates = doc["images_per_second"]
    assert set(rates) == {"floor", "floor_contiguous", "warmstart_cached", "warmstart_from_files", "baseline"}
    assert all(v > 0 for v in rates.values())
    assert doc["fraction_of_floor"]["floor"] == 1.0
    assert "floor: forward pass only" in stdout


def _fastai_python() -> str | None:
    for py in (os.environ.get("WARMSTART_FASTAI_PYTHON"), sys.executable):
        if py and subprocess.run([py, "-c", "import fastai"], capture_output=True).returncode == 0:
            return py
    return None


def test_fastai_benchmark_without_fastai_says_so(hymenoptera, weights_dir, tmp_path):
    if subprocess.run([sys.executable, "-c", "import fastai"], capture_output=True).returncode == 0:
        pytest.skip("this Python has fastai, so the no-fastai message cannot be shown here")
    doc, stdout = _bench("fastai", hymenoptera, weights_dir, tmp_path, "--fastai-python", str(tmp_path / "no-such-python"))
    assert doc is None and stdout.startswith("skipped: fastai is not installed")


def test_fastai_smoke(hymenoptera, weights_dir, tmp_path):
    py = _fastai_python()
    if py is None:
        pytest.skip("fastai is not installed (pip install 'warmstart[bench]', or set WARMSTART_FASTAI_PYTHON to a Python "
                    "that has it): benchmark (d) against fastai cannot run")
    doc, stdout = _bench("fastai", hymenoptera, weights_dir, tmp_path, "--fastai-python", py)
    _machine_ok(doc)
    assert doc["warmstart"]["epochs"] == 1 and doc["fastai"]["epochs"] == 1
    assert 0 <= doc["warmstart"]["final_val_accuracy"] <= 1 and 0 <= doc["fastai"]["final_val_accuracy"] <= 1
    assert doc["wall_fraction_of_fastai"] == round(doc["warmstart"]["seconds"] / doc["fastai"]["seconds"], 3)
    assert "of fastai's" in stdout


def test_scale_and_memory_smoke(cifar10, weights_dir, tmp_path):
    """bench_scale.py (CIFAR-10 at 224, first and second run) and bench_memory.py run and report consistently."""
    w = str(weights_dir / "mobilenet_v3_small-imagenet.pth")
    for name in ("scale", "memory"):
        out = tmp_path / f"{name}.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / f"bench_{name}.py"), "--smoke", "--data", str(cifar10), "--weights", w,
               "--json", str(out), *(["--skip-baseline"] if name == "scale" else [])]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
        doc = json.loads(out.read_text())
        _machine_ok(doc)
        if name == "scale":
            rows = doc["rows"]
            assert doc["images"] == {"train": 20, "val": 20}
            assert set(rows) == {"own_floor", "transfer_first", "transfer_second", "finetune_first", "finetune_second"}
            assert all(r["peak_rss_mb"] > 0 and r["user_seconds"] > 0 for r in rows.values())
            assert doc["disk_cache_bytes"] == 2 * 40 * 3 * 256 * 256 + 4 * 128  # two folders, train + val each
        else:
            assert set(doc["feature_pass"]) == {"before", "after"} and set(doc["imports_seconds"]) == {"import torchvision", "import warmstart.data"}
