"""`warmstart predict` through the real CLI: a trained run classifies real images as it did during validation."""

from __future__ import annotations

import json

import pytest
from _runs import V3, cli, summary

from warmstart.errors import UserError
from warmstart.experiments.predict import predict


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(hymenoptera, weights_dir, tmp_path_factory):
    """A transfer run at 224 px (the real preprocessing) on 10 images per class of train and of val."""
    out = tmp_path_factory.mktemp("runs") / "transfer"
    assert cli("train", hymenoptera, "--weights", weights_dir / f"{V3}.pth", "--out", out, "--subset", 10, "--epochs", 2,
               "--quiet") == 0
    return out


def val_images(hymenoptera, n):
    """The val images the run was validated on (--subset n with the default seed 0), their labels, the classes."""
    from warmstart.data import load_data

    splits = load_data(hymenoptera, subset=n)
    return [splits.val.describe(i) for i in range(len(splits.val))], list(splits.val.labels), splits.classes


def test_predict_reproduces_the_runs_validation(run, hymenoptera):
    paths, labels, classes = val_images(hymenoptera, 10)
    results = predict(run, paths, top_k=2)
    assert [r["image"] for r in results] == paths
    predicted = [classes.index(r["predictions"][0]["class"]) for r in results]
    confusion = [[0, 0], [0, 0]]
    for y, p in zip(labels, predicted):
        confusion[y][p] += 1
    s = summary(run)
    assert confusion == s["confusion"]                         # the same images, prepared the same way
    assert sum(y == p for y, p in zip(labels, predicted)) / len(labels) == s["final_val_accuracy"] >= 0.8
    for r in results:
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5


def test_the_cli_prints_classes_and_json(run, hymenoptera, tmp_path, capsys):
    bee = sorted((hymenoptera / "val" / "bees").iterdir())[0]
    assert cli("predict", run, bee, "--top-k", 1) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(bee) and out[1].split()[0] in ("ants", "bees") and len(out) == 2
    ants = tmp_path / "ants" / "nested"  # a folder stands for the images under it
    ants.mkdir(parents=True)
    for p in sorted((hymenoptera / "val" / "ants").iterdir())[-6:]:
        (ants / p.name).symlink_to(p)
    (ants / "notes.txt").write_text("not an image")
    assert cli("predict", run, tmp_path / "ants", "--json") == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(p) for p in sorted(ants.glob("*.jpg"))]
    assert all(len(r["predictions"]) == 2 for r in results)    # --top-k 5 capped at the 2 classes
    assert sum(r["predictions"][0]["class"] == "ants" for r in results) >= 4


def test_problems_are_one_line_errors(run, hymenoptera, tmp_path, capsys):
    assert cli("predict", tmp_path / "nowhere", hymenoptera / "val") == 2
    assert "no such run directory" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"")
    assert cli("predict", unfinished, hymenoptera / "val") == 2
    assert "finish it with 'warmstart train --resume" in capsys.readouterr().err
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert cli("predict", run, broken) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: cannot decode image") and err.count("\n") == 1
    with pytest.raises(UserError, match="top-k"):
        predict(run, [broken], top_k=0)
