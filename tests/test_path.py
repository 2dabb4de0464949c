"""`warmstart path` / ws.path on tiny real runs (hymenoptera, the shared MobileNetV3-Small read at 64 px): the ends
of the path are the ends evaluated on their own, a network's barrier with itself is 0, BatchNorm is re-estimated
as a train-mode pass would, a compare run gets its paths and report section, and bad input is one error line."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import warmstart as ws
from warmstart.engine import layout
from warmstart.transfer.path import PathData, barrier, evaluate_at, lerp_state, path_ts

from _runs import cli, small_weights
from warmstart.options import COMMANDS

SIZE = 64


@pytest.fixture(scope="module")
def cmp(hymenoptera, weights_dir, tmp_path_factory):
    """A compare run: finetune-all from one pretrained start, seeds 0 and 1, 8 training and 8 validation images."""
    root = tmp_path_factory.mktemp("path")
    w = small_weights(weights_dir, root / "w", SIZE)
    assert cli("compare", hymenoptera, "--weights", w, "--strategies", "finetune-all", "--seeds", "2", "--subset", "4",
               "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--out", root / "cmp", "-q") == 0
    return root / "cmp"


@pytest.fixture(scope="module")
def runs(cmp, tmp_path_factory):
    """The compare's two arms (complete run directories), as s0 and s1."""
    root = tmp_path_factory.mktemp("arms")
    for seed in (0, 1):
        (root / f"s{seed}").symlink_to(cmp / f"finetune-all-seed{seed}")
    return root


def _end_on_its_own(file, run_dir):
    """The network in ``file`` evaluated without the path code: BatchNorm re-estimated by torch's own
    swa_utils.update_bn over the same batches of training images, then cross-entropy and accuracy by hand."""
    from torch.optim.swa_utils import update_bn

    from warmstart.data import ImageDataset, Normalizer
    from warmstart.experiments.path import data_of
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.weights import resolve_weights

    w = resolve_weights(str(file))
    model = create_model(w.arch, None, w)
    spec, seed = data_of(run_dir)
    splits = spec.load(seed=seed)
    norm = Normalizer.of(w.preprocess)
    train = ImageDataset(splits.train, w.preprocess, train=True)
    val = ImageDataset(splits.val, w.preprocess)
    xs = [norm(torch.stack([ds[i][0] for i in range(len(ds))])) for ds in (train, val)]
    ys = [torch.tensor([int(ds[i][1]) for i in range(len(ds))]) for ds in (train, val)]
    update_bn([xs[0][i:i + 64] for i in range(0, len(xs[0]), 64)], model)  # MobileNetV3's dropout comes after every BN
    model.eval()
    out = {}
    with torch.no_grad():
        for split, x, y in zip(("train", "val"), xs, ys):
            logits = model(x)
            out[f"{split}_loss"] = float(F.cross_entropy(logits, y))
            out[f"{split}_accuracy"] = float((logits.argmax(1) == y).float().mean())
    return out


def test_path_ends_are_the_ends_evaluated_on_their_own(runs, tmp_path):
    r = ws.path(runs / "s0", points=3, out=tmp_path / "p", quiet=True)
    assert isinstance(r, ws.PathResult) and r.run_dir == tmp_path / "p" and "barrier" in r.text
    assert [p["t"] for p in r.table] == [0.0, 0.5, 1.0] and r.summary["kind"] == "start-end"
    for p, file in ((r.table[0], runs / "s0" / layout.START), (r.table[-1], runs / "s0" / layout.MODEL)):
        alone = _end_on_its_own(file, runs / "s0")
        for k, v in alone.items():
            # the same weights (torch.lerp is exact at t = 0 and 1) and images; the BN statistics and the mean loss are
            # float32 sums taken in another grouping (per batch vs. whole split): relative differences ~1e-6 expected
            assert p[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    assert r.barrier["train_loss"] >= 0 and set(r.barrier) == {"train_loss", "val_loss", "val_error"}
    out = tmp_path / "p"
    assert (out / layout.PATH_PNG).read_bytes()[:4] == b"\x89PNG"
    assert len((out / layout.PATH_CSV).read_text().splitlines()) == 4
    assert json.loads((out / "summary.json").read_text())["barrier"] == r.barrier
    assert r.figure == out / layout.PATH_PNG and "<img" in r._repr_html_()


def test_barrier_of_a_network_with_itself_is_zero(runs, tmp_path, capsys):
    assert cli("path", runs / "s1", runs / "s1", "--points", "3", "--extend", "--out", tmp_path / "same", "-q") == 0
    printed = capsys.readouterr().out
    s = json.loads((tmp_path / "same" / "summary.json").read_text())
    assert [p["t"] for p in s["points"]] == path_ts(3, extend=True) and s["points"][0]["t"] < 0 < 1 < s["points"][-1]["t"]
    losses = {p["train_loss"] for p in s["points"]}
    assert len(losses) == 1  # lerp(a, a, t) is a, bit for bit, at every t (also outside [0, 1]): one network, one loss
    # the straight line (1 - t) L + t L can differ from L in the last bit: the barrier is 0 up to rounding
    assert abs(s["barrier"]["train_loss"]) <= 1e-6 * max(losses) and s["barrier"]["val_error"] == 0
    assert "Barrier" in printed and "train-loss barrier 0.000" in printed
    recorded = json.loads((tmp_path / "same" / "config.json").read_text())["options"]  # every option reaches the run
    assert {o.name for o in COMMANDS["path"]} <= set(recorded) and (recorded["points"], recorded["extend"]) == (3, True)


def test_bn_recomputation_matches_a_train_mode_pass_over_the_same_images(runs):
    """At t = 0.5 between the two seeds' ends: every BatchNorm's running mean and variance after the path's
    recomputation are the mean and (unbiased) variance of that layer's input in a train-mode forward pass over
    the same images (one batch holds them all)."""
    from warmstart.experiments.path import _loaded, end_of, path_data
    from warmstart.transfer.backbones import create_model

    ends = (end_of(runs / "s0", "end"), end_of(runs / "s1", "end"))
    weights, (a, b) = _loaded(ends)
    data = path_data(runs / "s0", weights[0], batch_size=1000)
    model = create_model(weights[0].arch, None, weights[0])
    model.load_state_dict(lerp_state(a, b, 0.5))
    fresh = copy.deepcopy(model)
    evaluate_at(model, PathData(data.train, None, data.num_classes, data.normalize, 1000), torch.device("cpu"), recompute_bn=True)

    seen = {}
    bns = {n: m for n, m in fresh.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda m, inp, n=n: seen.__setitem__(n, inp[0].detach())) for n, m in bns.items()]
    fresh.train()
    for m in fresh.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    x = data.normalize(torch.stack([data.train[i][0] for i in range(len(data.train))]))
    with torch.no_grad():
        fresh(x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(bns) > 10
    got = dict(model.named_modules())
    for n, inp in seen.items():
        mean = inp.mean((0, 2, 3))
        var = inp.var((0, 2, 3), unbiased=True)
        # the same forward pass; float32 reductions in another order: relative error ~1e-6, tiny channels need abs
        assert torch.allclose(got[n].running_mean, mean, rtol=1e-4, atol=1e-5), n
        assert torch.allclose(got[n].running_var, var, rtol=1e-4, atol=1e-5), n


def test_barrier_is_the_largest_gap_above_the_line():
    ts = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
    height, where = barrier(ts, [9.0, 1.0, 1.5, 3.0, 2.0, 2.0, 9.0])  # the line at 0.5 is 1.5: gap 1.5; outside [0, 1] ignored
    assert height == pytest.approx(1.5) and where == 0.5
    assert barrier([0.0, 0.5, 1.0], [1.0, 0.5, 1.0])[0] == 0.0  # a valley: only the ends touch the line


def test_a_compare_run_gets_its_paths_and_a_report_section(cmp, capsys):
    assert cli("path", cmp, "--points", "2", "-q") == 0
    s = json.loads((cmp / "paths" / "summary.json").read_text())
    kinds = sorted(p["kind"] for p in s["paths"])
    assert kinds == ["seeds", "start-end", "start-end"]
    assert all(p["strategy"] == "finetune-all" and p["barrier"]["train_loss"] >= 0 for p in s["paths"])
    assert (cmp / "paths" / s["figures"]["finetune-all"]).is_file()
    report = (cmp / "report.html").read_text()
    assert "Linear paths between starts and ends" in report and "between seeds" in report
    assert "compare report rebuilt" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["points", "no-start", "architectures", "compare-and-run", "compare-and-out"])
def test_bad_input_is_one_error_line_and_writes_nothing(case, runs, tmp_path, capsys):
    out = tmp_path / "out"
    if case == "points":
        args = [runs / "s0", "--points", "1"]
        expect = "invalid value for '--points': 1 is not in the range x>=2"  # click's range check, as every command's
    elif case == "no-start":
        old = tmp_path / "old"
        shutil.copytree(runs / "s0", old)
        (old / layout.START).unlink()
        args = [old]
        expect = "has no start.safetensors"
    elif case == "architectures":
        other = tmp_path / "digits"
        assert cli("train", "digits", "--model", "custom_3_layer", "--weights", "none", "--strategy", "scratch", "--subset", "4",
                   "--epochs", "1", "--device", "cpu", "--out", other, "-q") == 0
        capsys.readouterr()
        args = [runs / "s0", other]
        expect = "different architectures"
    else:
        cmp = tmp_path / "cmp"
        cmp.mkdir()
        (cmp / "config.json").write_text(json.dumps({"command": "compare", "options": {}}))
        args, expect = ([cmp, runs / "s0"], "is a compare folder") if case == "compare-and-run" else \
            ([cmp], "the paths of a compare folder are written into it")  # --out would be ignored: refused
    assert cli("path", *args, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], err
    assert not out.exists()


def test_the_reading_says_the_barrier_in_words_relative_to_the_loss_at_the_ends():
    from warmstart.report.path_sections import reading

    def summary(barrier, mid):
        points = [{"t": 0.0, "train_loss": 0.2}, {"t": 0.5, "train_loss": mid}, {"t": 1.0, "train_loss": 0.4}]
        return {"label": "a -> b", "points": points, "barrier": {"train_loss": barrier}}

    flat = reading(summary(0.0, 0.3))
    assert "train-loss barrier 0.000" in flat and "one basin" in flat
    bump = reading(summary(0.6, 0.9))  # 0.6 above the line's 0.3 at t = 0.5; the ends' mean loss is 0.3
    assert "rises 0.6 above" in bump and "(200% of their mean loss)" in bump and "one basin" not in bump


def test_a_compare_arm_is_read_on_the_split_compare_made_with_its_first_seed(tmp_path):
    """compare splits its data once, with the first of its seeds (--seeds 5,6 and --seed 0: seed 5), so the path
    reloads that split, not the one of train_config's base seed."""
    from warmstart.experiments.path import data_of

    arm = tmp_path / "finetune-all-seed5"
    arm.mkdir()
    (arm / "config.json").write_text(json.dumps({"command": "compare", "options": {"data": "digits", "seed": 0},
                                                 "seeds": [5, 6], "train_config": {"seed": 0},
                                                 "arm": {"strategy": "finetune-all", "seed": 5}}))
    spec, seed = data_of(arm)
    assert spec.data == "digits" and seed == 5
