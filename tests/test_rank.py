"""`warmstart rank` end to end through the real CLI on real data: pretrained starts on a small hymenoptera
subset (with --verify), init schemes on the depth experiment's 30-layer plain net on digits, and one-line
errors for bad candidates with nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from _reliability import cli
from warmstart.experiments.rank import sections

V3 = "mobilenet_v3_small-imagenet"
V2 = "mobilenet_v2-imagenet"


@pytest.fixture(scope="module")
def starts_run(hymenoptera, weights_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rank") / "run"
    r = cli("rank", hymenoptera, "--candidates", f"{weights_dir / (V3 + '.pth')},{weights_dir / (V2 + '.pth')},none",
            "--subset", "8", "--verify", "transfer", "--epochs", "1", "--device", "cpu", "--tensorboard", "--quiet", "--out", out)
    assert r.code == 0, r.err
    return out, r


def test_rank_scores_every_start_and_verifies(starts_run):
    out, r = starts_run
    s = json.loads((out / "summary.json").read_text())
    names = {c["name"]: c for c in s["candidates"]}
    assert set(names) == {V3, V2, "none:mobilenet_v3_small"}
    assert s["ranking"] == [c["weights"] for c in s["candidates"]] and s["best"] == s["ranking"][0]
    for c in s["candidates"]:
        assert set(c["scores"]) == {"probe_cv", "knn_loo", "logme", "leep"} and c["seconds"] > 0
        assert c["verify"]["final_val_accuracy"] is not None
    for n in (V3, V2):  # pretrained: every score, LEEP over all 1000 source classes
        assert all(v is not None for v in names[n]["scores"].values()) and names[n]["source_classes"] == 1000
        assert names[n]["verify"]["strategy"] == "transfer"
    floor = names["none:mobilenet_v3_small"]
    assert floor["scores"]["leep"] is None and floor["verify"]["strategy"] == "scratch"
    # real data: pretrained features beat random ones on every score that both have, and in training
    for n in (V3, V2):
        for k in ("probe_cv", "logme"):
            assert names[n]["scores"][k] > floor["scores"][k]
        assert names[n]["verify"]["final_val_accuracy"] > floor["verify"]["final_val_accuracy"]
    corr = s["verify"]["correlations"]
    assert set(corr) == {"probe_cv", "knn_loo", "logme", "leep"} and corr["leep"]["kendall_tau"] is None  # 2 values only
    assert -1 <= corr["probe_cv"]["kendall_tau"] <= 1 and -1 <= corr["probe_cv"]["spearman"] <= 1
    assert isinstance(s["clear_winner"], bool) and s["verdict"]
    # one decode of the training images shared by all three candidates (same resize/crop), one of the validation ones
    assert s["decoded_datasets"] == 2
    assert (out / "config.json").is_file() and (out / "report.html").stat().st_size > 10_000
    assert "probe_cv" in r.out and "Kendall" not in r.out and "tau" in r.out  # the printed table and correlations
    # --tensorboard reaches the run: config.json records it and every verified candidate's training wrote events
    assert json.loads((out / "config.json").read_text())["train"]["tensorboard"] is True
    for c in s["candidates"]:
        assert _scalars(out / c["verify"]["run"] / "events") >= {"train_loss", "val_accuracy"}


def test_verify_takes_an_arm_with_its_modifiers(tmp_path, hymenoptera, weights_dir):
    """--verify reads its strategy as compare reads an arm: finetune-last:1+l2sp verifies with L2-SP."""
    out = tmp_path / "run"
    r = cli("rank", hymenoptera, "--candidates", weights_dir / (V3 + ".pth"), "--subset", "4", "--verify",
            "finetune-last:1+l2sp", "--epochs", "1", "--device", "cpu", "--quiet", "--out", out)
    assert r.code == 0, r.err
    c = json.loads((out / "summary.json").read_text())["candidates"][0]
    assert c["verify"]["strategy"] == "finetune-last:1+l2sp:0.01,0.01"
    assert "l2sp" in json.loads((out / c["verify"]["run"] / "summary.json").read_text())["reg"]["spec"]


def _scalars(events_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert events_dir.is_dir(), events_dir
    events = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
    events.Reload()
    return set(events.Tags()["scalars"])


def test_tensorboard_without_verify_is_refused_nothing_written(tmp_path, hymenoptera, weights_dir):
    out = tmp_path / "out"
    r = cli("rank", hymenoptera, "--candidates", str(weights_dir / (V3 + ".pth")), "--tensorboard", "--subset", "4",
            "--device", "cpu", "--out", out)
    assert r.code == 2 and "--tensorboard" in r.error and "--verify" in r.error
    assert not out.exists()


def test_rank_report_section_rebuilds(starts_run):
    out, _ = starts_run
    (sec,) = sections(out)
    assert sec.figures[0].path.is_file() and len(sec.tables) == 2 and sec.reading


def test_init_schemes_rank_he_orthogonal_lsuv_above_xavier_default_on_30_layer_net(tmp_path):
    out = tmp_path / "inits"
    r = cli("rank", "digits", "--model", "plain_mlp", "--candidates", "he,xavier,default,orthogonal,lsuv",
            "--device", "cpu", "--quiet", "--out", out)
    assert r.code == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "inits" and s["candidates"][0]["hidden_layers"] == 30
    assert set(s["ranking"][:3]) == {"he", "orthogonal", "lsuv"} and set(s["ranking"][3:]) == {"xavier", "default"}
    spread = {c["name"]: c["scores"]["signal_spread"] for c in s["candidates"]}
    assert max(spread[k] for k in ("he", "orthogonal", "lsuv")) < 2 < 8 < min(spread["xavier"], spread["default"])


def test_init_schemes_verify_scratch_correlates(tmp_path):
    out = tmp_path / "inits"
    r = cli("rank", "digits", "--model", "plain_mlp:12", "--candidates", "he,default,lsuv", "--verify", "scratch",
            "--epochs", "2", "--subset", "40", "--device", "cpu", "--tensorboard", "--quiet", "--out", out)
    assert r.code == 0, r.err
    s = json.loads((out / "summary.json").read_text())
    assert all(c["verify"]["final_val_accuracy"] is not None for c in s["candidates"])
    assert all("train_loss" in _scalars(out / c["verify"]["run"] / "events") for c in s["candidates"])
    assert s["verify"]["correlations"]["signal_spread"]["n"] == 3
    assert (out / "verify" / "summary.json").is_file()  # the depth experiment's own run directory


# --------------------------------------------------------------------------------------------- bad candidates
def _payload_file(tmp_path, weights_dir):
    from test_reliability_security import Payload, assert_live, craft

    evil = tmp_path / "evil.pth"
    real = torch.load(weights_dir / (V3 + ".pth"), weights_only=True)
    craft(evil, {**real, "classifier.3.bias": Payload(tmp_path / "pwned")}, "torch.save")
    shutil.copy(weights_dir / (V3 + ".json"), tmp_path / "evil.json")
    assert_live(evil, tmp_path / "pwned", "torch.save")  # the payload does run when unpickled without restriction
    return evil


def _wrong_arch(tmp_path, weights_dir):
    p = tmp_path / "v3-says-v2.pth"
    shutil.copy(weights_dir / (V3 + ".pth"), p)
    meta = json.loads((weights_dir / (V2 + ".json")).read_text())
    (tmp_path / "v3-says-v2.json").write_text(json.dumps(meta))
    return p


@pytest.mark.parametrize("case,expect", [
    ("missing", "not found"),
    ("wrong_arch", "do not fit"),
    ("payload", "refusing to load weights file"),
    ("duplicate", "twice"),
    ("folder_and_file", "twice"),
    ("mixed", "mixes init schemes"),
])
def test_bad_candidates_one_error_line_nothing_written(case, expect, tmp_path, hymenoptera, weights_dir):
    v3 = weights_dir / (V3 + ".pth")
    cands = {
        "missing": lambda: f"{v3},{tmp_path / 'nope.pth'}",
        "wrong_arch": lambda: f"{weights_dir / (V2 + '.pth')},{_wrong_arch(tmp_path, weights_dir)}",
        "payload": lambda: f"{v3},{_payload_file(tmp_path, weights_dir)}",
        "duplicate": lambda: f"{v3},none,{v3}",
        "folder_and_file": lambda: f"{weights_dir},{v3}",
        "mixed": lambda: f"he,{v3}",
    }[case]()
    out = tmp_path / "out"
    r = cli("rank", hymenoptera, "--candidates", cands, "--subset", "4", "--device", "cpu", "--out", out)
    assert r.code == 2
    assert expect in r.error
    assert not out.exists()
    assert not (tmp_path / "pwned").exists()


def test_verdict_names_no_winner_within_fold_noise():
    from warmstart.transfer.rank import Candidate, order, verdict

    def cand(name, folds):
        c = Candidate(name, name, None, "x")  # type: ignore[arg-type]
        c.scores = {"probe_cv": sum(folds) / len(folds)}
        c.details["probe_folds"] = folds
        return c

    a = cand("a", [0.96, 1.0, 0.94, 0.98, 1.0])
    b = cand("b", [0.98, 0.96, 0.96, 0.96, 0.98])   # 0.01 lower on average, but fold differences of +-0.04
    c = cand("c", [0.80, 0.82, 0.78, 0.84, 0.80])   # 0.17 lower on every fold
    tied, text = verdict(order([c, b, a], "probe_cv"), "probe_cv")
    assert tied == ["b"] and text.startswith("no clear winner: a")
    tied, text = verdict(order([c, a], "probe_cv"), "probe_cv")
    assert tied == [] and "beyond" in text
