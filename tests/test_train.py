"""`warmstart train` through the real CLI on hymenoptera: what trains, BatchNorm, resume, unsafe weights, accuracy.

Mechanics run at 64 px on a few images per class (the real ImageNet tensors, read small); the accuracy floor
runs the real recipe at 224 px on the whole data set.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil

import pytest
import torch
from _runs import ARCH, V3, cli, small_weights, summary
from safetensors.torch import load_file

import warmstart as ws
import warmstart.transfer.recipe as train_mod
from warmstart.transfer.backbones import create_model
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.weights import load_tensors, resolve_weights

REQUIRED = {"strategy", "model", "weights", "epochs", "best_val_accuracy", "final_val_accuracy", "train_seconds",
            "train_images_per_second", "trainable_params", "total_params"}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def w64(weights_dir, tmp_path_factory):
    return small_weights(weights_dir, tmp_path_factory.mktemp("weights"), 64)


def quick(hymenoptera, weights, out, *args, subset=4):
    return cli("train", hymenoptera, "--weights", weights, "--out", out, "--subset", subset, "--batch-size", 4,
               "--quiet", "--deterministic", *args)


TIMING = ("seconds", "images_per_second", "val_seconds")  # wall-clock columns of metrics.csv


def metrics(run):
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def _expected_trainable(weights, last_groups: int | None) -> tuple[int, int]:
    """Parameters in the last ``last_groups`` layer groups (None: all), and in the whole model."""
    model = create_model(ARCH, 2, resolve_weights(str(weights)))
    groups = layer_groups(model)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    chosen = groups if last_groups is None else groups[-last_groups:]
    return sum(sizes[n] for g in chosen for n in g.params), sum(sizes.values())


@pytest.mark.parametrize("strategy, epochs, last_groups", [
    ("transfer", 1, 1),              # the head alone
    ("finetune-last:2", 1, 3),       # the head + classifier.0 + features.12
    ("gradual:1", 2, 2),             # the head, then classifier.0 too
    ("finetune-all", 1, None),
    ("scratch", 1, None),
])
def test_each_strategy_trains_exactly_its_layer_groups(hymenoptera, w64, tmp_path, strategy, epochs, last_groups):
    out = tmp_path / "run"
    assert quick(hymenoptera, w64, out, "--strategy", strategy, "--epochs", epochs) == 0
    s = summary(out)
    assert REQUIRED <= set(s)
    want, total = _expected_trainable(w64, last_groups)
    assert (s["trainable_params"], s["total_params"]) == (want, total)
    assert s["strategy"] == strategy and s["epochs"] == epochs == len(metrics(out))
    assert s["weights"] == ("none" if strategy == "scratch" else str(w64))
    assert 0 <= s["final_val_accuracy"] <= s["best_val_accuracy"] <= 1 and s["train_images_per_second"] > 0
    # the throughput is the training steps' own: the probe, the frozen features, validation and drift are apart
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = sum(float(r["seconds"]) for r in rows)
    assert s["step_seconds"] == pytest.approx(steps, abs=1e-3 * len(rows))  # each row's seconds rounded to 1 ms
    assert s["val_seconds"] == pytest.approx(sum(float(r["val_seconds"]) for r in rows), abs=1e-3 * len(rows))
    assert s["train_seconds"] == pytest.approx(steps + s["probe_seconds"] + s["feature_seconds"], abs=2e-3 * len(rows) + 2e-3)
    assert s["train_images_per_second"] == pytest.approx(s["train_images"] * epochs / steps, rel=1e-2)  # rounded to 0.1
    assert ("drift_seconds" in s) == (strategy in ("finetune-last:2", "gradual:1", "finetune-all"))
    assert s["head_init"] == "random" if strategy == "scratch" else s["head_init"]["prior"] in ("none", "pretrained")
    assert s["label_smoothing"] == (0.0 if strategy == "scratch" else 0.1)  # the recipe's, from a probe head
    meta = json.loads((out / "model.json").read_text())
    assert meta["categories"] == ["ants", "bees"] and meta["num_classes"] == 2 and meta["input_size"] == 64
    # the saved model is a valid --weights for the next run, and holds what was trained
    reloaded = create_model(ARCH, None, resolve_weights(str(out / "model.safetensors")))
    assert reloaded.classifier[3].out_features == 2


def _bn_stats(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_frozen_batchnorm_keeps_its_statistics_while_everything_trains(hymenoptera, w64, tmp_path):
    before = load_tensors(w64)
    assert quick(hymenoptera, w64, tmp_path / "frozen", "--strategy", "finetune-all", "--epochs", 1, "--bn", "frozen",
                 "--head-init", "random") == 0
    assert quick(hymenoptera, w64, tmp_path / "train", "--strategy", "finetune-all", "--epochs", 1, "--bn", "train",
                 "--head-init", "random") == 0
    frozen = load_file(str(tmp_path / "frozen" / "model.safetensors"))
    trained = load_file(str(tmp_path / "train" / "model.safetensors"))
    stats = _bn_stats(before)
    assert len(stats) == 2 * 34
    assert all(torch.equal(frozen[k], v) for k, v in stats.items())          # running statistics untouched
    assert not torch.equal(frozen["features.0.0.weight"], before["features.0.0.weight"])  # convolutions trained
    assert not torch.equal(frozen["features.0.1.weight"], before["features.0.1.weight"])  # BN's affine weight trained
    changed = [k for k, v in stats.items() if not torch.equal(trained[k], v)]
    assert len(changed) == len(stats)                                         # --bn train: every BN re-estimated


def test_the_recipe_smooths_labels_after_a_probe_head_only(hymenoptera, w64, tmp_path):
    """0.1 from a linear-probe head, 0 from a random one, and an explicit --label-smoothing wins; the loss uses it."""
    runs = {"probe": (), "random": ("--head-init", "random"), "explicit": ("--label-smoothing", 0.2)}
    loss = {}
    for name, args in runs.items():
        out = tmp_path / name
        assert quick(hymenoptera, w64, out, "--strategy", "finetune-all", "--epochs", 1, *args) == 0
        assert summary(out)["label_smoothing"] == {"probe": 0.1, "random": 0.0, "explicit": 0.2}[name]
        loss[name] = float(metrics(out)[0]["train_loss"])
        assert json.loads((out / "config.json").read_text())["options"]["label_smoothing"] == (0.2 if name == "explicit" else None)
    # smoothed targets put a floor under cross-entropy: the entropy of (1 - a/2, a/2) for 2 classes
    floor = {a: -((1 - a / 2) * math.log(1 - a / 2) + a / 2 * math.log(a / 2)) for a in (0.1, 0.2)}
    assert loss["probe"] > floor[0.1] and loss["explicit"] > floor[0.2]


def test_resume_across_a_phase_change_replays_the_run_exactly(hymenoptera, w64, tmp_path, monkeypatch):
    args = ("--strategy", "gradual:1", "--epochs", 3)   # phases: head | + classifier.0 | + features.12
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert quick(hymenoptera, w64, straight, *args) == 0

    real_fit = train_mod.fit

    def interrupted_fit(*a, callbacks=(), **kw):
        def stop(model, row):
            # callbacks run before the engine logs and checkpoints an epoch's row: interrupted at the end of epoch 3,
            # the run keeps epochs 1-2 (phase 2 finished) and must replay phase 3 from its start
            if row["epoch"] == 3:
                raise KeyboardInterrupt
        return real_fit(*a, callbacks=(*callbacks, stop), **kw)

    monkeypatch.setattr(train_mod, "fit", interrupted_fit)
    assert quick(hymenoptera, w64, broken, *args) == 130
    assert len(metrics(broken)) == 2 and not (broken / "summary.json").exists()
    monkeypatch.setattr(train_mod, "fit", real_fit)
    assert cli("train", hymenoptera, "--resume", broken, "--quiet") == 0
    assert metrics(broken) == metrics(straight)
    a, b = summary(straight), summary(broken)
    for k in ("best_val_accuracy", "final_val_accuracy", "best_epoch", "trainable_params", "confusion"):
        assert a[k] == b[k], k
    assert {**a["head_init"], "seconds": 0} == {**b["head_init"], "seconds": 0}  # the probe of the first start, reused
    assert [r["phase"] for r in metrics(broken)] == ["head", "unfreeze classifier.0", "unfreeze features.12"]
    assert all(torch.equal(x, y) for x, y in zip(load_file(str(straight / "model.safetensors")).values(),
                                                 load_file(str(broken / "model.safetensors")).values()))

    # resuming a finished run trains nothing more and reports the same figures
    assert cli("train", hymenoptera, "--resume", straight, "--quiet") == 0
    assert summary(straight)["final_val_accuracy"] == a["final_val_accuracy"] and metrics(straight) == metrics(broken)


def test_a_run_made_with_relative_paths_resumes_from_another_directory(hymenoptera, w64, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    shutil.copytree(hymenoptera, work / "ants")
    shutil.copy(w64, work / "w.pth"), shutil.copy(w64.with_suffix(".json"), work / "w.json")
    monkeypatch.chdir(work)
    assert quick("ants", "w.pth", "run", "--strategy", "transfer", "--epochs", 1) == 0
    options = json.loads((work / "run" / "config.json").read_text())["options"]
    assert (options["data"], options["weights"]) == (str(work / "ants"), str(work / "w.pth"))
    monkeypatch.chdir(elsewhere)
    assert cli("train", "--resume", work / "run", "--quiet") == 0      # finds its data and weights from here too
    assert summary(work / "run")["epochs"] == 1


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_before_anything_is_written(hymenoptera, weights_dir, tmp_path, capsys):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"features.0.0.weight": torch.zeros(1), "payload": _Evil(marker)}, evil)
    shutil.copy(weights_dir / f"{V3}.json", evil.with_suffix(".json"))
    assert quick(hymenoptera, evil, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to load") and "evil.pth" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_weights_file_names_its_architecture(hymenoptera, weights_dir, tmp_path, capsys):
    v2 = small_weights(weights_dir, tmp_path / "w", 64, stem="mobilenet_v2-imagenet", name="v2-64")
    # --model left at its default follows the sidecar: a MobileNetV2 file trains a MobileNetV2 (as rank reads it)
    assert quick(hymenoptera, v2, tmp_path / "ok", "--epochs", 1) == 0
    assert summary(tmp_path / "ok")["model"] == "mobilenet_v2"
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["options"]["model"] == "mobilenet_v2"
    # an explicitly given --model that the sidecar contradicts is an error, before anything is written
    assert quick(hymenoptera, v2, tmp_path / "a", "--model", "mobilenet_v3_small") == 2
    err = capsys.readouterr().err
    assert 'is for "mobilenet_v2"' in err and "drop --model" in err and err.count("\n") == 1
    # the same tensors behind a sidecar that claims mobilenet_v3_small: the first tensor that does not fit
    fake = tmp_path / "fake.pth"
    fake.symlink_to(v2)
    meta = json.loads((weights_dir / f"{V3}.json").read_text())
    fake.with_suffix(".json").write_text(json.dumps(meta))
    assert quick(hymenoptera, fake, tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert 'do not fit mobilenet_v3_small: "features.0.0.weight" has shape [32, 3, 3, 3] in the weights vs [16, 3, 3, 3]' in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_choices_fail_before_the_run_directory_exists(hymenoptera, w64, tmp_path, capsys):
    assert quick(hymenoptera, w64, tmp_path / "run", "--strategy", "finetune-lst:2") == 2
    assert 'did you mean "finetune-last"' in capsys.readouterr().err
    assert quick(hymenoptera, w64, tmp_path / "run", "--strategy", "finetune-last:99") == 2
    assert "K must be 1..14" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_transfer_recipe_reaches_the_issue_figure_on_all_of_hymenoptera(hymenoptera, weights_dir, tmp_path):
    out = tmp_path / "run"
    assert cli("train", hymenoptera, "--weights", weights_dir / f"{V3}.pth", "--out", out, "--quiet") == 0
    s = summary(out)
    assert s["strategy"] == "transfer" and s["feature_cache"] and s["train_images"] >= 244 and s["val_images"] == 153
    assert s["best_val_accuracy"] >= 0.93 and s["final_val_accuracy"] >= 0.93


def test_a_runs_figures_are_drawn_from_its_directory_alone(tmp_path):
    """train draws its figures from what the run wrote (report.run_figures, called by the command, not by the
    training layer): deleted, they are drawn again from metrics.csv and summary.json alone."""
    from warmstart.report.run_figures import run_figures

    out = tmp_path / "run"
    ws.train("digits", model="custom_3_layer", weights="none", strategy="scratch", subset=4, epochs=2, out=out, quiet=True)
    pictures = {out / "learning_curves.png", out / "confusion.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pictures)
    for p in pictures:
        p.unlink()
    assert set(run_figures(out)) == pictures and all(p.is_file() for p in pictures)
    assert run_figures(tmp_path / "empty-run") == []  # nothing written yet: nothing drawn, no error
