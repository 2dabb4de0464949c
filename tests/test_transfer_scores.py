"""The transferability scores against independent computations, on real data (scikit-learn's digits pixels).

LogME's SVD-based evidence is compared with the Gaussian marginal likelihood written with dense matrices
(y ~ N(0, I/beta + X X^T / alpha)), at fixed alpha and beta; kNN leave-one-out with a plain-Python loop;
LEEP with its definition written as loops.
"""

from __future__ import annotations

import math

import pytest
import torch

from warmstart.transfer import scores as S


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float64) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def dense_evidence(x: torch.Tensor, t: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(t; 0, I/beta + X X^T/alpha) / N, with dense matrices (the marginal of t = X w + noise)."""
    n = x.shape[0]
    cov = torch.eye(n, dtype=torch.float64) / beta + x @ x.T / alpha
    _, logdet = torch.linalg.slogdet(cov)
    quad = t @ torch.linalg.solve(cov, t)
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + quad)) / n


@pytest.mark.parametrize("n,d", [(40, 64), (200, 64)])  # more features than samples, and fewer
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.3, 7.0), (25.0, 0.5)])
def test_logme_evidence_matches_dense_closed_form(digits, n, d, alpha, beta):
    x, y = digits
    x = x[:n, :d]
    t = (y[:n] == 3).double()
    sp = S.Spectrum.of(x)
    assert S.evidence(sp, t, alpha, beta) == pytest.approx(dense_evidence(x, t, alpha, beta), rel=1e-9, abs=1e-9)


def test_logme_fixed_point_maximises_the_evidence(digits):
    x, y = digits
    x, y = x[:300], y[:300]
    sp = S.Spectrum.of(x)
    t = (y == 7).double()
    ev, alpha, beta = S.maximize_evidence(sp, t, tol=1e-8, max_iter=500)
    assert ev == pytest.approx(dense_evidence(x, t, alpha, beta), rel=1e-9)
    for fa, fb in [(1.3, 1), (1 / 1.3, 1), (1, 1.3), (1, 1 / 1.3)]:
        assert dense_evidence(x, t, alpha * fa, beta * fb) < ev
    # LogME is the mean over classes of those maxima
    want = sum(S.maximize_evidence(sp, (y == c).double())[0] for c in range(10)) / 10
    assert S.logme(x, y, 10) == pytest.approx(want, rel=1e-12)


def test_logme_prefers_informative_features(digits):
    x, y = digits
    x, y = x[:400], y[:400]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert S.logme(x, y, 10) > S.logme(noise, y, 10) + 0.1


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_knn_loo_matches_brute_force(digits, k):
    x, y = digits
    x, y = x[:150], y[:150]
    fast = S.knn_predict_loo(x, y, k, 10)
    assert fast.tolist() == S.knn_brute_force(x, y, k, 10)


def test_knn_loo_score_is_loo_accuracy_at_chosen_k(digits):
    x, y = digits
    x, y = x[:200], y[:200]
    s = S.knn_loo(x, y, 10)
    assert s.k in s.cv and s.cv[s.k] == max(s.cv.values())
    brute = S.knn_brute_force(x, y, s.k, 10)
    assert s.accuracy == pytest.approx(sum(int(p == q) for p, q in zip(brute, y.tolist())) / len(y))
    assert 0.85 < s.accuracy <= 1.0  # digits pixels: kNN is strong


def test_leep_matches_loop_definition(digits):
    x, y = digits
    x, y = x[:120], y[:120]
    g = torch.Generator().manual_seed(1)
    logits = x @ torch.randn(64, 15, generator=g, dtype=torch.float64)  # a "source classifier" with 15 classes
    theta = logits.softmax(1).tolist()
    n, z, c = len(y), 15, 10
    joint = [[sum(theta[i][j] for i in range(n) if y[i] == a) / n for j in range(z)] for a in range(c)]
    pz = [sum(joint[a][j] for a in range(c)) for j in range(z)]
    want = sum(math.log(sum(joint[int(y[i])][j] / pz[j] * theta[i][j] for j in range(z))) for i in range(n)) / n
    assert S.leep(logits, y, 10) == pytest.approx(want, rel=1e-10)
    # a source head that already separates the classes scores near the maximum, 0
    perfect = torch.nn.functional.one_hot(y, 15).double() * 50
    assert S.leep(perfect, y, 10) > -1e-6 > want
