"""`warmstart depth` through the real CLI on scikit-learn's bundled digits: the He et al. fig. 3 ordering,
diagnostics files, TensorBoard histograms, the report section, and one-line errors for bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import pytest
import torch

from warmstart.cli import main
from warmstart.experiments.depth import sections, split_arms
from warmstart.init.diagnostics import load_signal

LN10 = math.log(10)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.fixture(autouse=True)
def restore_threads():
    """depth() picks one thread for small nets itself; make sure it puts the setting back."""
    before = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == before


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    """Depth 30, width 128, 5 epochs, four arms: the reduced budget of the default command."""
    out = tmp_path_factory.mktemp("depth") / "run"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:  # capsys is per test; this run is shared by the module
        patch.setattr(sys, "stdout", stdout)
        code = run_cli(["depth", "--epochs", "5", "--arms", "xavier,he,default,lsuv", "--out", str(out), "-q"])
    assert code == 0
    return out, stdout.getvalue()


def test_deep_plain_net_trains_with_he_and_lsuv_only(depth_run):
    out, _ = depth_run
    summary = json.loads((out / "summary.json").read_text())
    assert {"depth", "classes", "arms", "seconds"} <= set(summary)
    assert summary["depth"] == 30 and summary["classes"] == 10 and summary["seconds"] > 0
    arms = summary["arms"]
    assert list(arms) == ["xavier", "he", "default", "lsuv"]
    for r in arms.values():
        assert {"final_train_loss", "val_accuracy", "act_std_ratio", "grad_std_ratio"} <= set(r)
        assert all(isinstance(r[k], float) for k in ("final_train_loss", "val_accuracy", "act_std_ratio", "grad_std_ratio"))
    # xavier (x1/2 per ReLU layer) and PyTorch's default (x1/6) lose the signal: the loss stays at ln 10
    for arm in ("xavier", "default"):
        assert abs(arms[arm]["final_train_loss"] - LN10) < 0.05, arm
        assert arms[arm]["val_accuracy"] < 0.2, arm
    # he (x1) and lsuv (measured to unit variance) keep it and train
    for arm in ("he", "lsuv"):
        assert arms[arm]["final_train_loss"] < LN10 - 0.5, arm
        assert arms[arm]["val_accuracy"] > 0.3, arm
    # at init: the activation std ratio over 29 layers is (1/2)^(29/2) ~ 4e-5 for xavier, ~1 for he
    assert arms["xavier"]["act_std_ratio"] < 1e-3 < 0.3 < arms["he"]["act_std_ratio"] < 3
    assert arms["xavier"]["grad_std_ratio"] < 1e-3 < 0.3 < arms["he"]["grad_std_ratio"] < 3
    assert arms["default"]["grad_std_ratio"] < 1e-6  # x1/6 per layer backwards: ~1e-11
    assert arms["xavier"]["train_loss"][-1] == pytest.approx(arms["xavier"]["final_train_loss"], abs=1e-5)
    assert len(arms["he"]["train_loss"]) == 5


def test_prints_table_and_reading(depth_run):
    _, stdout = depth_run
    lines = stdout.splitlines()
    assert any(line.startswith("arm") and "final train loss" in line for line in lines)
    reading = next(line for line in lines if line.startswith("Reading:"))
    assert "xavier and default stayed at chance (loss ≈ ln 10 = 2.303)" in reading
    trained = reading.split(" trained")[0]
    assert "he" in trained and "lsuv" in trained
    assert "SGD" in stdout and "Adam" in stdout


def test_diagnostics_files_per_arm(depth_run):
    out, _ = depth_run
    assert (out / "loss_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "layer_std_init.png").read_bytes()[:8] == PNG_MAGIC
    config = json.loads((out / "config.json").read_text())
    assert config["arms"]["lsuv"] == "lsuv" and config["options"]["epochs"] == 5 and config["channels"] == 1
    for arm in ("xavier", "he", "default", "lsuv"):
        d = out / arm
        snapshots = load_signal(d / "signal.json")
        assert [s.tag for s in snapshots] == ["init"] + [f"epoch {e}" for e in range(1, 6)]
        assert all(len(s) == 31 for s in snapshots)  # 30 hidden layers + the head
        with open(d / "signal.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 6 * 31 and {"tag", "out_var", "pred_var", "grad_out_std"} <= set(rows[0])
        for name in ("signal_layers.png", "signal_histograms_init.png", "signal_histograms_final.png"):
            assert (d / name).read_bytes()[:8] == PNG_MAGIC
        metrics = list(csv.DictReader(open(d / "metrics.csv", newline="")))
        assert len(metrics) == 5
    # the prediction beside the measurement: xavier halves the variance per ReLU layer, he keeps it
    x0, h0 = load_signal(out / "xavier")[0], load_signal(out / "he")[0]
    for stats, factor in ((x0, 0.5), (h0, 1.0)):
        pred = [layer.pred_var for layer in stats.hidden]
        assert pred[20] / pred[10] == pytest.approx(factor**10, rel=0.3)
        measured = [layer.out_var for layer in stats.hidden]
        assert measured[25] == pytest.approx(pred[25], rel=0.8)  # one network at width 128: a random walk around it


def test_lsuv_arm_starts_at_unit_variance(depth_run):
    """LSUV scales each layer on one training batch; on the (larger, different) probe batch every hidden
    layer's output variance is still ~1."""
    out, _ = depth_run
    init = load_signal(out / "lsuv")[0]
    variances = [layer.out_var for layer in init.hidden]
    assert max(abs(v - 1) for v in variances) < 0.3
    summary = json.loads((out / "lsuv" / "summary.json").read_text())
    assert summary["init_details"]["spec"] == "lsuv" and len(summary["init_details"]["lsuv"]) == 31


def test_report_section_from_run_dir(depth_run):
    out, _ = depth_run
    (section,) = sections(out)
    assert [row[0] for row in section.tables[0].rows] == ["xavier", "he", "default", "lsuv"]
    assert any(p.startswith("Reading:") and "stayed at chance" in p for p in section.paragraphs)
    assert [f.path.name for f in section.figures] == ["loss_curves.png", "layer_std_init.png"]
    assert all(f.path.is_file() for f in section.figures)
    assert "depth" in section.command


def test_cnn_tanh_tensorboard_and_adamw_warning(tmp_path, capsys):
    """A tiny plain CNN, any activation, TensorBoard histograms per layer; adamw is allowed with a warning."""
    out = tmp_path / "cnn"
    code = run_cli(["depth", "--arch", "cnn", "--depth", "3", "--width", "4", "--epochs", "1", "--activation", "tanh",
                    "--arms", "orthogonal,lsuv", "--subset", "8", "--optimizer", "adamw", "--lr", "0.001",
                    "--tensorboard", "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0
    assert "warning: --optimizer adamw" in captured.err
    assert "not the paper's setting" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["depth"] == 3 and summary["arch"] == "cnn" and list(summary["arms"]) == ["orthogonal", "lsuv"]
    assert summary["arms"]["orthogonal"]["init"] == "orthogonal(1.66667)"  # tanh's gain 5/3
    assert json.loads((out / "config.json").read_text())["standardize"] == "per channel"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "lsuv" / "events"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"signal/out/layers.0", "signal/act/layers.2", "signal/out/head"} <= set(tags["histograms"])
    assert [e.step for e in events.Histograms("signal/out/layers.1")] == [0, 1]
    assert "signal/grad_out_std/layers.0" in tags["scalars"] and "train_loss" in tags["scalars"]


def test_exploding_arm_is_reported_as_diverged_and_the_rest_still_runs(tmp_path, capsys):
    out = tmp_path / "boom"
    code = run_cli(["depth", "--width", "16", "--epochs", "1", "--subset", "10", "--arms", "normal(1),he", "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0 and "warning: arm normal(1): loss became nan" in captured.err
    arms = json.loads((out / "summary.json").read_text())["arms"]
    assert arms["normal(1)"]["diverged"] is True and arms["normal(1)"]["final_train_loss"] is None
    assert arms["normal(1)"]["act_std_ratio"] > 1e6  # (16 * 1 / 2)^(29/2): exploding
    assert arms["he"]["diverged"] is False and math.isfinite(arms["he"]["final_train_loss"])
    assert "normal(1) diverged" in captured.out
    assert load_signal(out / "normal_1")[0].tag == "init"


@pytest.mark.parametrize("args, message", [
    (["--arms", "xavier,hee"], 'unknown arm "hee" (did you mean "he"?)'),
    (["--arms", "he,,lsuv"], "empty arm"),
    (["--arms", "he,he"], "given twice"),
    (["--arms", "normal(-1)"], "normal"),
    (["--depth", "0"], "--depth must be a whole number >= 1, got 0"),
    (["--width", "-3"], "--width must be a whole number >= 1"),
    (["--activation", "rleu"], 'unknown activation "rleu" (did you mean "relu"?)'),
    (["--arch", "rnn"], "invalid value for '--arch'"),
    (["/no/such/folder"], "/no/such/folder"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    data = [a for a in args if a.startswith("/")]
    opts = [a for a in args if not a.startswith("/")]
    assert run_cli(["depth", *data, *opts, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_split_arms_keeps_scheme_arguments():
    assert split_arms("he, normal(0.01),he_uniform(fan_in, relu)") == ["he", "normal(0.01)", "he_uniform(fan_in, relu)"]


def test_seeds_give_mean_range_and_a_reading_that_holds_in_every_seed(tmp_path, capsys):
    """--seeds 2: every arm trained from seeds 0 and 1 into <arm>/seed-<s>/; summary.json's figure is the mean
    of the per-seed ones, with their [min, max]; seed 0 of the pair is the single-seed run of seed 0."""
    common = ["depth", "--depth", "4", "--width", "16", "--epochs", "2", "--arms", "xavier,he", "--subset", "20", "-q"]
    assert run_cli([*common, "--seeds", "2", "--out", str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out
    assert run_cli([*common, "--out", str(tmp_path / "one")]) == 0
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert two["seeds"] == [0, 1] and one["seeds"] == [0] and two["cpu"]
    for arm in ("xavier", "he"):
        r = two["arms"][arm]
        assert [row["seed"] for row in r["per_seed"]] == [0, 1]
        losses = [row["final_train_loss"] for row in r["per_seed"]]
        assert r["final_train_loss"] == pytest.approx(sum(losses) / 2, rel=1e-12)
        assert r["final_train_loss_range"] == [min(losses), max(losses)]
        # the same seed, data, threads and process: the same computation, so the same float
        assert losses[0] == pytest.approx(one["arms"][arm]["final_train_loss"], rel=1e-6)
        for s in (0, 1):
            assert (tmp_path / "two" / arm / f"seed-{s}" / "metrics.csv").is_file()
    assert "2 seeds (0, 1) per arm" in out and "(mean [min, max])" in out
    reading = next(line for line in out.splitlines() if line.startswith("Reading:"))
    assert "in every seed" in reading or "of 2 seeds" in reading


def test_reading_over_seeds_says_only_what_every_seed_shows():
    from warmstart.experiments.depth import over_seeds, reading

    def arm(*losses):
        return over_seeds([{"seed": i, "init": "he", "final_train_loss": loss, "diverged": loss is None}
                           for i, loss in enumerate(losses)])

    summary = {"classes": 10, "seeds": [0, 1, 2],
               "arms": {"xavier": arm(LN10, LN10, LN10), "he": arm(0.4, 0.8, 1.1), "lsuv": arm(0.3, LN10, 1.5),
                        "big": arm(None, None, None)}}
    text = reading(summary)
    assert "he trained in every seed (final train loss he 0.40–1.10)" in text
    assert "xavier stayed at chance in every seed" in text and "big diverged in every seed" in text
    assert "lsuv trained in 2 of 3 seeds, stayed at chance in 1 of 3 seeds" in text
    assert summary["arms"]["big"]["final_train_loss"] is None and summary["arms"]["he"]["final_train_loss_range"] == [0.4, 1.1]
