"""Best of K random starts: the best trial is kept and continued; the spread over K is reported."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
from _cli import run_cli
import torch
from sklearn.datasets import load_digits
from torch import nn


from warmstart.errors import UserError
from warmstart.init.restarts import best_of_k, check_restarts


pytestmark = pytest.mark.usefixtures("single_thread")


cli = run_cli


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits: 1,000 train / 797 val images as 64 features."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16
    y = torch.tensor(y)
    return (x[:1000], y[:1000]), (x[1000:], y[1000:])


def linear(seed: int) -> nn.Module:
    """A softmax regression with a deliberately poor, seed-dependent start (std 1), so starts differ."""
    model = nn.Linear(64, 10)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.randn(10, 64, generator=g))
        model.bias.zero_()
    return model


def trainer(digits, steps: int = 3):
    (xt, yt), (xv, yv) = digits

    def train(model: nn.Module, seed: int) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(xt), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((model(xv).argmax(1) == yv).float().mean())

    return train


def test_best_of_k_keeps_and_returns_the_best_trial(digits):
    result = best_of_k(6, 10, linear, trainer(digits))
    accs = [t.val_accuracy for t in result.trials]
    assert [t.seed for t in result.trials] == list(range(10, 16))
    assert len(set(accs)) > 1  # the starts do differ
    assert result.chosen.val_accuracy == max(accs) and result.chosen.seed == 10 + accs.index(max(accs))
    # the model returned is that seed's model after its trial: rebuilding and retraining it gives the same weights
    again = linear(result.chosen.seed)
    trainer(digits)(again, result.chosen.seed)
    assert torch.equal(again.weight, result.model.weight)
    s = result.summary()
    assert s == {"k": 6, "val_accuracy": {"min": min(accs), "median": statistics.median(accs), "max": max(accs)},
                 "chosen_seed": result.chosen.seed, "per_seed": [{"seed": 10 + i, "val_accuracy": a} for i, a in enumerate(accs)]}


def test_ties_go_to_the_lowest_seed():
    result = best_of_k(3, 4, lambda s: nn.Linear(2, 2), lambda m, s: 0.5)
    assert result.chosen.seed == 4 and result.summary()["val_accuracy"] == {"min": 0.5, "median": 0.5, "max": 0.5}


@pytest.mark.parametrize("k, epochs", [(0, 1), (2, 0), (True, 1), (1.5, 1)])
def test_bad_counts_are_user_errors(k, epochs):
    with pytest.raises(UserError, match="must be a whole number >= 1"):
        check_restarts(k, epochs)


def test_symmetry_restarts_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(["symmetry", "digits", "--subset", "10", "--restarts", "3", "--seed", "5", "--out", str(out), "-q"],
                            capsys)
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    r = s["restarts"]
    assert r["k"] == 3 and r["arm"] == "random" and r["restart_epochs"] == 1
    assert [p["seed"] for p in r["per_seed"]] == [5, 6, 7]
    accs = [p["val_accuracy"] for p in r["per_seed"]]
    for p in r["per_seed"]:  # each trial is a run of its own; its last epoch's val accuracy is what was compared
        with open(out / "random" / "restarts" / f"seed-{p['seed']}" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 1 and float(rows[0]["val_accuracy"]) == pytest.approx(p["val_accuracy"])
    assert r["val_accuracy"] == {"min": min(accs), "median": statistics.median(accs), "max": max(accs)}
    assert r["chosen_seed"] == 5 + accs.index(max(accs)) == s["arms"]["random"]["seed"]
    assert s["arms"]["constant"]["seed"] == 5 and "restarts" not in s["arms"]["constant"]
    assert f"random = best of 3: seed {r['chosen_seed']}" in stdout
    assert (out / "random" / "checkpoint.pt").is_file() and s["arms"]["random"]["layers"]["conv1"]["distinct"] == 32


def test_restarts_zero_is_refused_before_anything_is_written(tmp_path, capsys):
    code, _, err = cli(["symmetry", "digits", "--restarts", "0", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith("error: ") and "--restarts" in err and not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- train --restarts
def test_train_restarts_scratch(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = cli(["train", "digits", "--model", "custom_3_layer", "--strategy", "scratch", "--weights", "none",
                             "--subset", "20", "--lr", "3e-3", "--restarts", "3", "--epochs", "1", "--batch-size", "16",
                             "--out", str(out), "-q"], capsys)
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    r = s["restarts"]
    accs = [p["val_accuracy"] for p in r["per_seed"]]
    assert r["k"] == 3 and [p["seed"] for p in r["per_seed"]] == [0, 1, 2]
    assert len(set(accs)) > 1  # different inits really give different models
    assert r["chosen_seed"] == accs.index(max(accs)) and r["val_accuracy"]["max"] == max(accs)
    assert all((out / "restarts" / f"seed-{k}" / "metrics.csv").is_file() for k in (0, 1))
    assert json.loads(stdout)["restarts"]["chosen_seed"] == r["chosen_seed"]


def test_train_restarts_need_scratch(tmp_path, capsys):
    code, _, err = cli(["train", "digits", "--strategy", "transfer", "--restarts", "2", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--restarts 2 needs --strategy scratch" in err and not (tmp_path / "r").exists()
