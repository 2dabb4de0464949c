"""transfer/drift.py: linear CKA against an independent formula, and how far real fine-tuning runs travel.

CKA is checked against the HSIC form with an explicit centring matrix (numpy, Kornblith et al. 2019 eq. 3-4)
and a case small enough to do by hand; drift on real 1-epoch runs of the shared MobileNetV2 on hymenoptera.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from _runs import cli, small_weights, summary
from warmstart.transfer.drift import linear_cka, relative_distance

V2 = "mobilenet_v2-imagenet"


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T, L = Y Y^T, HSIC = tr(K H L H) (the 1/(n-1)^2 cancels)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, lg = x @ x.T, y @ y.T

    def hsic(a, b):
        return float(np.trace(a @ h @ b @ h))

    return hsic(k, lg) / math.sqrt(hsic(k, k) * hsic(lg, lg))


def test_cka_of_a_representation_with_itself_is_one():
    x = torch.randn(30, 7, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n, p, q", [(20, 5, 8), (10, 40, 3), (50, 6, 6)])   # Gram path (n <= p or q) and covariance path
def test_cka_matches_the_hsic_formula(n, p, q):
    g = torch.Generator().manual_seed(n + p + q)
    x = torch.randn(n, p, generator=g)
    y = x[:, :min(p, q)] @ torch.randn(min(p, q), q, generator=g) + 0.7 * torch.randn(n, q, generator=g)
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x.double().numpy(), y.double().numpy()), rel=1e-10)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling_but_not_to_anisotropic_scaling():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randn(40, 9, generator=g, dtype=torch.float64)
    y = y + x @ torch.randn(6, 9, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))   # a random orthogonal matrix (float64:
    # the transforms themselves must not round more than the tolerance)
    base = linear_cka(x, y)
    assert linear_cka(x, y @ q) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y - 2.0) == pytest.approx(base, rel=1e-10)    # a shift of every example: centred away
    stretch = torch.ones(6, dtype=torch.float64)
    stretch[0] = 50.0
    assert abs(linear_cka(x * stretch, y) - base) > 1e-3                      # CKA is not invariant to any linear map


def test_cka_small_case_by_hand():
    # x = (1, 2, 3), y = (1, 3, 2): centred (-1, 0, 1) and (-1, 1, 0). In one dimension linear CKA is the squared
    # correlation: <xc, yc>^2 / (|xc|^2 |yc|^2) = 1^2 / (2 * 2) = 0.25.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-15)
    assert linear_cka(x, -x) == pytest.approx(1.0, abs=1e-15)
    assert math.isnan(linear_cka(x, torch.ones(3, 1)))   # a constant representation has no similarity to speak of


def test_relative_distance():
    w0 = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]        # |w0| = 5
    assert relative_distance(w0, w0) == 0.0
    assert relative_distance([torch.tensor([3.0, 1.0]), torch.tensor([4.0])], w0) == pytest.approx(0.2)
    assert relative_distance([torch.zeros(2), torch.zeros(1)], w0) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def v2(weights_dir, tmp_path_factory) -> Path:
    return small_weights(weights_dir, tmp_path_factory.mktemp("w"), 96, stem=V2, name=V2)  # MobileNetV2 at 96 px


@pytest.mark.parametrize("strategy", ["finetune-last:1", "finetune-all"])
def test_frozen_groups_stay_put_and_trained_ones_travel(hymenoptera, v2, tmp_path, strategy):
    out = tmp_path / "run"
    assert cli("train", hymenoptera, "--model", "mobilenet_v2", "--weights", v2, "--strategy", strategy, "--epochs", "1",
               "--subset", "4", "--batch-size", "4", "--device", "cpu", "--out", out, "-q") == 0
    s = summary(out)
    d = s["drift"]
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.groups import layer_groups
    from warmstart.transfer.weights import resolve_weights

    names = [g.name for g in layer_groups(create_model("mobilenet_v2", 2, resolve_weights("none", "mobilenet_v2")))]
    assert d["groups"] == names and set(d["final"]) == set(names)
    trained = set(d["trained"])
    if strategy == "finetune-all":
        assert trained == set(names)
    else:
        assert trained == {names[-2], "head"}                       # the last block and the new head
    for g in names:
        if g in trained:
            assert d["final"][g] > 0, (g, d["final"][g])
        else:
            assert d["final"][g] == 0.0, (g, d["final"][g])       # frozen: exactly the pretrained weights
    assert [e["epoch"] for e in d["per_epoch"]] == [1]
    assert d["per_epoch"][0] == pytest.approx({"epoch": 1, **d["final"]}, rel=1e-6, abs=1e-12)   # one epoch: the end
    # metrics.csv carries the same numbers, one column per group
    with open(out / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert {f"drift/{g}" for g in names} <= set(row)
    assert float(row[f"drift/{names[-2]}"]) == pytest.approx(d["final"][names[-2]], rel=1e-6)
    # the head's input moved, but one epoch at the recipe's small learning rates keeps it close to the start
    assert d["cka_images"] == s["val_images"]
    assert 0.5 < d["cka"] < 1.0


def test_transfer_and_scratch_record_no_drift(hymenoptera, v2, tmp_path):
    out = tmp_path / "t"
    assert cli("train", hymenoptera, "--model", "mobilenet_v2", "--weights", v2, "--strategy", "transfer", "--epochs", "1",
               "--subset", "4", "--device", "cpu", "--out", out, "-q") == 0
    assert "drift" not in summary(out)
    assert not any(k.startswith("drift/") for k in (out / "metrics.csv").read_text().splitlines()[0].split(","))
