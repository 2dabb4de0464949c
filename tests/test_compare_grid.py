"""`warmstart compare DATA --weights W1,W2`: every start x strategy on the same data, seeds and budget.

Real runs on hymenoptera with the shared MobileNetV2 starts (ImageNet and iNaturalist insects): the grid's shape,
that the arms differ by start, the paired tests between starts, starts that crop differently, the drift figure,
and bad start lists refused before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _runs import cli, small_weights, summary

IMAGENET, INSECT = "mobilenet_v2-imagenet", "mobilenet_v2-inat-insect"


@pytest.fixture(scope="module")
def grid_run(hymenoptera, weights_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "cmp"
    starts = f"{weights_dir / (IMAGENET + '.pth')},{weights_dir / (INSECT + '.pth')}"
    assert cli("compare", hymenoptera, "--model", "mobilenet_v2", "--weights", starts, "--strategies", "transfer",
               "--subset", "8", "--epochs", "1", "--device", "cpu", "--out", out, "-q") == 0
    return out


def test_the_grid_is_starts_by_strategies(grid_run):
    s = summary(grid_run)
    g = s["grid"]
    assert g["rows"] == [IMAGENET, INSECT] and g["columns"] == ["transfer"]
    assert [st["name"] for st in s["starts"]] == [IMAGENET, INSECT]
    assert sorted(s["strategies"]) == sorted(f"{n}/transfer" for n in (IMAGENET, INSECT))   # arm names carry the start
    for name in (IMAGENET, INSECT):
        cell = g["cells"][name]["transfer"]
        run = next(r for r in s["runs"] if r["strategy"] == cell["arm"])
        assert run["start"] == name and run["dir"] == f"{name}/transfer-seed0"
        assert cell["seeds"] == 1 and cell["final_val_accuracy"]["mean"] == run["final_val_accuracy"]
        arm = summary(grid_run / run["dir"])
        assert arm["final_val_accuracy"] == run["final_val_accuracy"] and arm["val_images"] == s["val_images"] == 16
        assert arm["weights"].endswith(f"{name}.pth")
    assert g["best_start"]["transfer"] in (IMAGENET, INSECT)
    assert set(s["label_smoothing"]) == set(s["strategies"]) and s["best"] in s["strategies"]   # the existing keys stay


def test_arms_differ_by_start_and_share_everything_else(grid_run):
    a, b = (grid_run / n / "transfer-seed0" for n in (IMAGENET, INSECT))
    pa, pb = (json.loads((d / "predictions.json").read_text()) for d in (a, b))
    assert pa["labels"] == pb["labels"]                                     # the same validation images, in order
    sa, sb = summary(a), summary(b)
    assert (sa["train_images"], sa["val_images"], sa["data"]) == (sb["train_images"], sb["val_images"], sb["data"])
    la, lb = ((d / "metrics.csv").read_text().splitlines()[1].split(",") for d in (a, b))
    assert la[4] != lb[4]                                                   # epoch 1 validation loss: another start
    qa, qb = (json.loads((d / "probe.json").read_text()) for d in (a, b))
    assert qa["mapped_classes"] == [310, 309]            # each probe reads its own start's classifier: ImageNet's ant, bee
    assert qb["mapped_classes"] != qa["mapped_classes"]  # ... and two insect species of the iNaturalist start
    assert qa["cv"] != qb["cv"]


def test_starts_are_tested_against_each_other_on_the_same_images(grid_run):
    s = summary(grid_run)
    g = s["grid"]
    best = g["best_start"]["transfer"]
    other = INSECT if best == IMAGENET else IMAGENET
    [row] = g["paired"]["transfer"][other]
    acc = {n: g["cells"][n]["transfer"]["final_val_accuracy"]["mean"] for n in (IMAGENET, INSECT)}
    assert row["seed"] == 0 and row["best_only"] - row["other_only"] == round(16 * (acc[best] - acc[other]))
    from warmstart.report.stats import mcnemar_p

    assert row["p"] == mcnemar_p(row["best_only"], row["other_only"])
    assert any(t.startswith("Starts for **transfer**") for t in s["reading"])
    html = (grid_run / "report.html").read_text()
    assert "Starts × strategies" in html and f"{best}/transfer" in html


def test_starts_that_crop_differently_and_the_drift_figure(hymenoptera, weights_dir, tmp_path):
    w = [small_weights(weights_dir, tmp_path / "w", 64, stem=IMAGENET, name=IMAGENET),
         small_weights(weights_dir, tmp_path / "w", 80, stem=INSECT, name=INSECT)]
    out = tmp_path / "cmp"
    assert cli("compare", hymenoptera, "--model", "mobilenet_v2", "--weights", f"{w[0]},{w[1]}", "--strategies",
               "scratch,finetune-last:1", "--subset", "4", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
               "--out", out, "-q") == 0
    s = summary(out)
    assert s["grid"]["rows"] == [IMAGENET, INSECT, "none"] and s["grid"]["columns"] == ["scratch", "finetune-last:1"]
    assert s["grid"]["cells"]["none"] == {"scratch": s["grid"]["cells"]["none"]["scratch"]}   # scratch once, no start
    assert [st["preprocess"]["crop"] for st in s["starts"]] == [64, 80]
    for name in (IMAGENET, INSECT):
        arm = f"{name}/finetune-last:1"
        assert 0 < s["strategies"][arm]["cka"] <= 1
        assert s["strategies"][arm]["drift"]["stem"] == 0.0 and s["strategies"][arm]["drift"]["head"] > 0
    assert s["strategies"]["scratch"].get("cka") is None
    assert (out / "drift.png").stat().st_size > 1000 and s["figures"]["drift"] == "drift.png"
    assert "How far the start travelled" in (out / "report.html").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["weights"] == f"{w[0]},{w[1]}"               # absolute already: --resume from anywhere


@pytest.mark.parametrize("weights, extra, message", [
    ("{I},{I}", [], "same start twice"),
    ("{I},{V3}", [], 'is for "mobilenet_v3_small"'),
    ("{I},none", [], "drop none"),
    ("{I},{N}", ["--strategies", "scratch"], "every strategy is scratch"),
    ("{I},missing.pth", [], "missing.pth"),
])
def test_bad_start_lists_fail_before_anything_is_written(hymenoptera, weights_dir, tmp_path, capsys, weights, extra, message):
    spec = weights.format(I=weights_dir / f"{IMAGENET}.pth", N=weights_dir / f"{INSECT}.pth",
                          V3=weights_dir / "mobilenet_v3_small-imagenet.pth")
    out = tmp_path / "out"
    code = cli("compare", hymenoptera, "--model", "mobilenet_v2", "--weights", spec, "--subset", "2", "--epochs", "1",
               "--device", "cpu", *extra, "--out", out)
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert not out.exists()


def test_start_names_and_weights_lists(tmp_path):
    from warmstart.errors import UserError
    from warmstart.experiments.compare_starts import parse_weights, start_name

    odd = tmp_path / "a,b.pth"                      # an existing file whose name has a comma is one start, not two
    odd.write_bytes(b"")
    assert parse_weights(str(odd)) == [str(odd)]
    assert parse_weights(" x.pth , imagenet ,") == ["x.pth", "imagenet"] and parse_weights(["x.pth"]) == ["x.pth"]
    with pytest.raises(UserError):
        parse_weights(" , ")
    assert start_name("../shared/weights/mobilenet_v2-inat-bird.pth") == "mobilenet_v2-inat-bird"
    assert start_name("runs/ants-ft/model.safetensors") == "ants-ft"   # a finished run: named after its folder
    assert start_name("IMAGENET") == "imagenet"
