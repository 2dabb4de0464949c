"""`warmstart compare` and `warmstart report` through the real CLI, on scikit-learn's digits with custom_3_layer.

The "pretrained" network is a tiny scratch run on digits 0-4; compare transfers it to digits 5-9 (the demo's
"train on dogs, adapt to cats"), two strategies x two seeds, two epochs each.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import pytest

from warmstart.cli import main
from warmstart.experiments.compare import aggregate, arm_name, mcnemar_p, parse_seeds, parse_strategies, reading
from warmstart.errors import UserError

STRATEGIES = ["transfer", "finetune-all"]
SEEDS = [0, 1]


def cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return e.value.code


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("src") / "source"
    assert cli("train", "digits", "--model", "custom_3_layer", "--weights", "none", "--strategy", "scratch", "--classes", "0,1,2,3,4",
               "--subset", "10", "--epochs", "1", "--lr", "3e-3", "--seed", "100", "--device", "cpu", "--out", out, "-q") == 0
    return out


@pytest.fixture(scope="module")
def compared(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "compare"
    assert cli("compare", "digits", "--model", "custom_3_layer", "--weights", source / "model.safetensors", "--classes", "5,6,7,8,9",
               "--subset", "8", "--strategies", ",".join(STRATEGIES), "--seeds", "2", "--epochs", "2", "--lr", "1e-2",
               "--batch-size", "16", "--device", "cpu", "--out", out, "-q") == 0
    return out


def test_summary_has_the_issue_keys_and_one_run_per_strategy_and_seed(compared):
    s = json.loads((compared / "summary.json").read_text())
    assert {"runs", "best"} <= set(s)
    assert sorted((r["strategy"], r["seed"]) for r in s["runs"]) == sorted((st, se) for st in STRATEGIES for se in SEEDS)
    for r in s["runs"]:
        assert {"strategy", "seed", "best_val_accuracy", "final_val_accuracy", "train_seconds"} <= set(r)
        arm = json.loads((compared / arm_name(r["strategy"], r["seed"]) / "summary.json").read_text())
        for k in ("best_val_accuracy", "final_val_accuracy", "train_seconds"):
            assert r[k] == arm[k]
        assert 0 <= r["final_val_accuracy"] <= r["best_val_accuracy"] <= 1
        assert r["train_seconds"] > 0
    assert s["best"] in STRATEGIES and s["val_images"] == 40  # 8 per class, 5 classes


def test_mean_and_std_are_over_seeds(compared):
    s = json.loads((compared / "summary.json").read_text())
    for spec in STRATEGIES:
        vals = [r["final_val_accuracy"] for r in s["runs"] if r["strategy"] == spec]
        agg = s["strategies"][spec]
        assert agg["seeds"] == 2
        assert agg["final_val_accuracy"]["mean"] == pytest.approx(statistics.fmean(vals))
        assert agg["final_val_accuracy"]["std"] == pytest.approx(statistics.stdev(vals))
    means = {k: v["final_val_accuracy"]["mean"] for k, v in s["strategies"].items()}
    assert means[s["best"]] == max(means.values())
    # the seeds are different runs of the same strategy (another initial head, batch order, ...)
    for spec in STRATEGIES:
        a, b = ((compared / arm_name(spec, se) / "metrics.csv").read_text().splitlines()[1] for se in SEEDS)
        assert a.split(",")[2] != b.split(",")[2]  # epoch 1 train loss


def test_arms_share_data_and_transfer_keeps_conv1(compared):
    s = json.loads((compared / "summary.json").read_text())
    per = s["strategies"]
    assert per["transfer"]["conv1_change"] == 0.0          # frozen: identical filters
    assert per["finetune-all"]["conv1_change"] > 0.0
    assert per["transfer"]["trainable_params"] == 64 * 5 + 5  # the new head only
    assert per["finetune-all"]["trainable_params"] == per["finetune-all"]["total_params"]
    configs = [json.loads((compared / arm_name(st, se) / "config.json").read_text()) for st in STRATEGIES for se in SEEDS]
    assert {c["arm"]["seed"] for c in configs} == set(SEEDS)
    sums = [json.loads((compared / arm_name(st, se) / "summary.json").read_text()) for st in STRATEGIES for se in SEEDS]
    assert len({(x["data"], x["train_images"], x["val_images"]) for x in sums}) == 1
    preds = json.loads((compared / s["best_run"]["dir"] / "predictions.json").read_text())
    assert len(preds["predictions"]) == len(preds["labels"]) == 40
    assert s["best_run"]["misclassified"] == sum(p != y for p, y in zip(preds["predictions"], preds["labels"]))


def test_report_files_are_self_contained(compared):
    html = (compared / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") >= 4
    for spec in STRATEGIES:
        assert spec in html
    md = (compared / "report.md").read_text()
    assert "| strategy" in md and "](learning_curves.png)" in md
    for name in ("learning_curves.png", "accuracy_vs_time.png", "confusion.png", "conv1_filters.png"):
        assert (compared / name).stat().st_size > 1000


def test_resume_reuses_complete_arms(compared, tmp_path):
    copy = tmp_path / "again"
    shutil.copytree(compared, copy)
    before = json.loads((copy / "summary.json").read_text())
    (copy / arm_name("finetune-all", 1) / "arm.json").unlink()   # this arm is "unfinished": it resumes from its checkpoint
    assert cli("compare", "--resume", copy, "-q") == 0
    after = json.loads((copy / "summary.json").read_text())
    assert [(r["strategy"], r["seed"], r["final_val_accuracy"]) for r in after["runs"]] == \
           [(r["strategy"], r["seed"], r["final_val_accuracy"]) for r in before["runs"]]


def test_report_rebuilds_from_run_directories(compared, source, tmp_path):
    out = tmp_path / "rep"
    assert cli("report", compared, source, "--out", out) == 0
    html = (out / "report.html").read_text()
    assert "All runs side by side" in html and "Compare:" in html and "Train: scratch" in html
    assert "not comparable" in html  # digits 5-9 vs digits 0-4
    table = html.split("<section id='all-runs'>")[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(STRATEGIES) + 1  # header, one row per compare strategy, the train run
    assert html.count("data:image/png;base64,") >= 6
    assert (out / "report.md").is_file()


def test_report_refuses_what_it_cannot_render(tmp_path, capsys):
    assert cli("report", tmp_path, "--out", tmp_path / "rep") == 2
    assert "not a warmstart run directory" in capsys.readouterr().err
    run = tmp_path / "odd"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"command": "frobnicate"}))
    assert cli("report", run, "--out", tmp_path / "rep") == 2
    err = capsys.readouterr().err
    assert "frobnicate" in err and "compare" in err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("args, message", [
    (["--strategies", "transfer,finetune-all", "--weights", "none"], "--weights is none"),
    (["--strategies", "scratch,scratch"], "twice"),
    (["--strategies", "scratch,finetune-lats:2"], 'did you mean "finetune-last"'),
    (["--strategies", "finetune-last:9", "--weights", "IMAGENET_SOURCE"], "K must be 1..4"),
    (["--seeds", "two"], "--seeds must be a count"),
    (["--seeds", "0,0"], "twice"),
    (["--classes", "5,x"], "'x' is not a class"),
    (["--strategies", "transfer", "--init", "he"], "add scratch to --strategies"),
    (["--strategies", "scratch", "--init", "conv=he_nromal"], 'did you mean "he_normal"'),
])
def test_bad_options_fail_before_anything_is_written(tmp_path, capsys, source, args, message):
    out = tmp_path / "out"
    args = [str(source / "model.safetensors") if a == "IMAGENET_SOURCE" else a for a in args]
    code = cli("compare", "digits", "--model", "custom_3_layer", "--weights", source / "model.safetensors", "--subset", "5",
               "--epochs", "1", *args, "--out", out)
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert not out.exists()


def test_parsers():
    assert [s.spec for s in parse_strategies("scratch, finetune-last:2,gradual")] == ["scratch", "finetune-last:2", "gradual:1"]
    assert parse_seeds("3", first=5) == [5, 6, 7] and parse_seeds("4,2") == [4, 2] and parse_seeds(2) == [0, 1]
    # Python's lists and ints read as the CLI's strings; a strategy's aliases are one strategy (twice is an error)
    assert parse_strategies(["transfer", "finetune_all"]) == parse_strategies("transfer,finetune-all")
    assert parse_seeds([4, 2]) == parse_seeds("4,2") and parse_seeds(3, first=1) == parse_seeds("3", first=1)
    with pytest.raises(UserError, match="twice"):
        parse_strategies(["finetune-all", "finetune_all"])
    assert arm_name(parse_strategies("finetune-last:2")[0], 3) == "finetune-last-2-seed3"
    with pytest.raises(UserError):
        parse_seeds(0)


def _records(accs: dict[str, list[float]], secs: dict[str, float]) -> list[dict]:
    return [{"strategy": k, "seed": i, "final_val_accuracy": a, "best_val_accuracy": a, "train_seconds": secs[k], "best_epoch": 3,
             "train_images_per_second": 100.0, "trainable_params": 10, "total_params": 100, "feature_seconds": 0.0,
             "dir": f"{k}-seed{i}", "conv1": {"layer": "conv1", "change": 0.0}}
            for k, v in accs.items() for i, a in enumerate(v)]


def test_reading_measures_gaps_against_the_noise():
    # 153 val images: one image = 0.65 pp. finetune-all leads transfer by 5 images with tight seeds: a real gap.
    n = 153
    s = aggregate(_records({"scratch": [60 / n, 62 / n, 61 / n], "transfer": [140 / n, 141 / n, 140 / n],
                            "finetune-all": [145 / n, 146 / n, 145 / n]}, {"scratch": 30.0, "transfer": 5.0, "finetune-all": 40.0}),
                  strategies=["scratch", "transfer", "finetune-all"], val_images=n)
    assert s["best"] == "finetune-all" and s["ranking"] == ["finetune-all", "transfer", "scratch"]
    text = reading(s)
    assert any("**finetune-all** beat **transfer** by 3.3 pp (5 of 153" in t and "8.0 × the training time" in t for t in text), text
    # one image apart, noisy seeds: within noise, and the cheaper strategy is named
    s = aggregate(_records({"transfer": [140 / n, 146 / n], "finetune-all": [144 / n, 143 / n]},
                           {"transfer": 5.0, "finetune-all": 40.0}), strategies=["transfer", "finetune-all"], val_images=n)
    text = reading(s)
    assert any("within noise" in t and "**transfer** gets there 8.0 × faster" in t for t in text), text
    assert any("(0.5 of 153 validation images)" in t for t in text), text   # means sit between whole images
    # a single seed: the reading says the seed noise is not measured
    s = aggregate(_records({"transfer": [0.9], "finetune-all": [0.95]}, {"transfer": 1.0, "finetune-all": 2.0}),
                  strategies=["transfer", "finetune-all"], val_images=n)
    assert any("--seeds 3" in t for t in reading(s))
    # a single seed and a lead of two images: reported as a lead that may be luck, not as a win
    s = aggregate(_records({"transfer": [139 / n], "finetune-all": [141 / n]}, {"transfer": 1.0, "finetune-all": 2.0}),
                  strategies=["transfer", "finetune-all"], val_images=n)
    text = reading(s)
    assert any("leads **transfer** by only 1.3 pp (2 of 153" in t and "may be luck" in t for t in text), text
    assert not any("beat" in t for t in text)
    # a strategy at chance level is named as such
    s = aggregate(_records({"scratch": [0.5, 0.49], "transfer": [0.9, 0.91]}, {"scratch": 1.0, "transfer": 1.0}),
                  strategies=["scratch", "transfer"], val_images=n)
    s.update(classes=["ants", "bees"], epochs=5)
    assert any("**scratch** stays at chance level (1 in 2 = 50 %)" in t for t in reading(s))
    s["strategies"]["scratch"].update(final_train_loss=0.69, final_train_accuracy=0.52)    # did not even fit the training set
    assert any("even its training loss ended at 0.69" in t and "lower `--lr`" in t for t in reading(s))
    s["strategies"]["scratch"].update(final_train_loss=0.05, final_train_accuracy=0.99)    # memorised it
    assert any("it fits the training images (99 % train accuracy)" in t for t in reading(s))


def test_mcnemar_matches_scipys_exact_binomial_test():
    from scipy.stats import binomtest

    for b, c in ((0, 0), (1, 0), (3, 1), (2, 2), (6, 0), (10, 3), (79, 3), (0, 12)):
        want = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
        assert mcnemar_p(b, c) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_a_lead_the_validation_images_cannot_separate_is_not_called_a_win():
    # tight seeds (2 x SE below the gap), but seed by seed the two disagree on a handful of images, split nearly evenly
    n = 153
    s = aggregate(_records({"transfer": [144 / n] * 3, "finetune-all": [146 / n, 145 / n, 146 / n]},
                           {"transfer": 1.0, "finetune-all": 10.0}), strategies=["transfer", "finetune-all"], val_images=n)
    s["paired"] = {"transfer": [{"seed": i, "best_only": b, "other_only": c, "p": mcnemar_p(b, c)}
                                for i, (b, c) in enumerate(((3, 1), (3, 2), (4, 2)))]}
    text = reading(s)
    assert not any("beat" in t for t in text), text
    assert any("leads **transfer** by 1.1 pp" in t and "cannot separate them" in t and "right on 3, 3, 4 of the 153" in t
               and "p = 0.62 to 1" in t for t in text), text
    # the same gap, but every image they disagree on goes one way, in every seed: a win, with the test quoted
    s["paired"] = {"transfer": [{"seed": i, "best_only": 9, "other_only": 0, "p": mcnemar_p(9, 0)} for i in range(3)]}
    assert any("**finetune-all** beat **transfer**" in t and "p = 0.0039" in t for t in reading(s)), reading(s)


def test_a_win_in_every_seed_is_a_win_even_when_the_seeds_spread_widely():
    # the demo's case: 851 val images, scratch 70 % or 89 % by seed, transfer 90 % in both; each seed a clear paired win
    n = 851
    s = aggregate(_records({"scratch": [596 / n, 760 / n], "transfer": [768 / n, 767 / n]}, {"scratch": 0.2, "transfer": 2.2}),
                  strategies=["scratch", "transfer"], val_images=n)
    base = reading(s)
    assert any("within noise" in t and "the better buy" in t for t in base), base   # by the seeds alone
    s["paired"] = {"scratch": [{"seed": 0, "best_only": 187, "other_only": 15, "p": mcnemar_p(187, 15)},
                               {"seed": 1, "best_only": 47, "other_only": 40, "p": mcnemar_p(47, 40)}]}
    mixed = reading(s)   # seed 1's split (47 : 40) is a coin toss: no win, and no "better buy" either
    assert not any("beat" in t or "better buy" in t for t in mixed), mixed
    s["paired"]["scratch"][1].update(best_only=78, other_only=47, p=mcnemar_p(78, 47))
    text = reading(s)
    assert any("**transfer** beat **scratch**" in t and "yet **transfer** wins in every one of them" in t for t in text), text


def test_paired_counts_agree_with_each_arms_accuracy(compared):
    s = json.loads((compared / "summary.json").read_text())
    other = next(k for k in STRATEGIES if k != s["best"])
    assert [r["seed"] for r in s["paired"][other]] == SEEDS
    for r in s["paired"][other]:
        acc = {k: next(x["final_val_accuracy"] for x in s["runs"] if (x["strategy"], x["seed"]) == (k, r["seed"])) for k in STRATEGIES}
        assert r["best_only"] - r["other_only"] == round(40 * (acc[s["best"]] - acc[other]))   # 40 validation images
        assert r["p"] == mcnemar_p(r["best_only"], r["other_only"])
    for st in STRATEGIES:
        for se in SEEDS:
            preds = json.loads((compared / arm_name(st, se) / "predictions.json").read_text())
            assert len(preds["predictions"]) == len(preds["labels"]) == 40


# ----------------------------------------------------------------------------------------------- a real browser
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'warmstart[dev]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(prefix='warmstart-chromium-')}",
              "--window-size=1280,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_report_renders_in_a_real_browser(compared, tmp_path):
    driver = _browser()
    try:
        driver.get((compared / "report.html").resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        rows = driver.execute_script("return document.querySelector('section table tbody').rows.length")
        assert rows == len(STRATEGIES)
        sizes = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(sizes) >= 5 and all(c and w > 0 and h > 0 for c, w, h in sizes), sizes
        remote = driver.execute_script("return performance.getEntriesByType('resource').map(r => r.name)"
                                       ".filter(n => !n.startsWith('data:') && !n.startsWith('file:'))")
        assert remote == []
        driver.set_window_size(1280, driver.execute_script("return document.body.scrollHeight") + 100)
        assert driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
