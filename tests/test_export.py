"""`warmstart export` through the real CLI: an ONNX file that onnxruntime runs like PyTorch, written atomically."""

from __future__ import annotations

import builtins
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _runs import cli, small_weights

from warmstart.data import Normalizer
from warmstart.errors import UserError
from warmstart.experiments.export import export
from warmstart.experiments.predict import image_paths, load_images, load_model, predict


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(hymenoptera, weights_dir, tmp_path_factory):
    w = small_weights(weights_dir, tmp_path_factory.mktemp("weights"), 96)
    out = tmp_path_factory.mktemp("runs") / "transfer"
    assert cli("train", hymenoptera, "--weights", w, "--out", out, "--subset", 6, "--epochs", 1, "--quiet") == 0
    return out


def test_export_runs_in_onnxruntime_like_pytorch(run, hymenoptera, tmp_path, capsys):
    target = tmp_path / "out" / "model.onnx"
    assert cli("export", run, "--onnx", target) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["onnx"] == str(target) and report["bytes"] == target.stat().st_size
    assert report["check_inputs"] == 4 and report["same_top1"] and report["max_abs_logit_diff"] < 1e-3
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]     # no temporary file left behind

    proto = onnx.load(str(target))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["warmstart.categories"]) == ["ants", "bees"]
    assert json.loads(meta["warmstart.preprocess"])["crop"] == 96
    # any batch size; images prepared as the metadata says give predict's probabilities
    paths = image_paths([hymenoptera / "val" / "bees"])[:5]
    model, weights = load_model(run)
    x = Normalizer.of(weights.preprocess)(load_images(paths, weights)).numpy()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": x})[0]
    assert logits.shape == (5, 2)
    probs = torch.from_numpy(logits).softmax(1)
    ref = predict(run, paths, top_k=2)
    for p, r in zip(probs, ref):
        mine = {c: float(p[i]) for i, c in enumerate(["ants", "bees"])}
        assert all(abs(mine[q["class"]] - q["probability"]) < 1e-4 for q in r["predictions"])
    assert np.isfinite(logits).all()


def test_export_checks_on_given_images_and_refuses_bad_targets(run, hymenoptera, tmp_path):
    given = sorted((hymenoptera / "val" / "ants").iterdir())[:3]
    report = export(run, onnx=tmp_path / "m.onnx", images=given)
    assert report["check_images"] == [str(p) for p in given] and report["check_inputs"] == 3 and report["same_top1"]
    with pytest.raises(UserError, match="should end in .onnx"):
        export(run, onnx=tmp_path / "m.onx")
    with pytest.raises(UserError, match="no such run directory"):
        export(tmp_path / "nowhere", onnx=tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_without_onnxruntime_the_error_says_what_to_install(run, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ort(name, *a, **kw):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert cli("export", run, "--onnx", tmp_path / "m.onnx") == 2
    err = capsys.readouterr().err
    assert "onnxruntime is missing" in err and "pip install 'warmstart[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()
