"""report/stats.py: the seed spread and the exact McNemar test, checked against numpy and scipy."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.stats import binomtest

from warmstart.report.stats import disagreements, gap_se, mcnemar_p, mean_std

# (b, c): images only the first / only the second classifier gets right; small, balanced, lopsided, large
TABLE = [(0, 0), (1, 0), (0, 1), (1, 1), (3, 1), (2, 2), (5, 5), (6, 0), (0, 12), (10, 3), (3, 10), (26, 1), (47, 40),
         (79, 3), (187, 15), (78, 47), (250, 250), (400, 350)]


@pytest.mark.parametrize("b, c", TABLE)
def test_mcnemar_is_scipys_exact_two_sided_binomial_test(b, c):
    want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_p(b, c) == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert mcnemar_p(b, c) == mcnemar_p(c, b)          # symmetric: which arm is "first" does not matter
    assert 0.0 <= mcnemar_p(b, c) <= 1.0


def test_mcnemar_known_values():
    assert mcnemar_p(9, 0) == pytest.approx(2 / 2 ** 9)          # all 9 one way: 2 x (1/2)^9
    assert mcnemar_p(3, 1) == pytest.approx(2 * (1 + 4) / 16)    # 2 x P(X <= 1), X ~ Bin(4, 1/2) = 0.625
    assert mcnemar_p(2, 2) == 1.0                                # an even split is no evidence at all


def test_mean_std_is_the_sample_spread():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7):
        x = rng.uniform(0.5, 1.0, n)
        m, s = mean_std(list(x))
        assert m == pytest.approx(float(np.mean(x)), rel=1e-12)
        assert s == pytest.approx(float(np.std(x, ddof=1)), rel=1e-12)
    assert mean_std([0.9]) == (0.9, 0.0)
    m, s = mean_std([])
    assert math.isnan(m) and math.isnan(s)


def test_gap_se_is_welchs_standard_error():
    a, b = [0.90, 0.92, 0.91], [0.85, 0.80]
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    want = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 2)
    assert gap_se(sa, 3, sb, 2) == pytest.approx(want, rel=1e-12)


def test_disagreements_count_the_images_only_one_side_gets_right():
    rnd = random.Random(1)
    labels = [rnd.randrange(3) for _ in range(200)]
    a = [y if rnd.random() < 0.8 else (y + 1) % 3 for y in labels]
    b = [y if rnd.random() < 0.6 else (y + 2) % 3 for y in labels]
    a_only, b_only = disagreements(labels, a, b)
    assert a_only == sum(1 for i in range(200) if a[i] == labels[i] and b[i] != labels[i])
    assert b_only == sum(1 for i in range(200) if b[i] == labels[i] and a[i] != labels[i])
    # the gap in right answers is exactly the gap in accuracy
    assert a_only - b_only == sum(p == y for p, y in zip(a, labels)) - sum(q == y for q, y in zip(b, labels))
    # both wrong with different classes is no disagreement about who is right
    assert disagreements([0], [1], [2]) == (0, 0)
    with pytest.raises(ValueError):
        disagreements([0, 1], [0], [0, 1])
