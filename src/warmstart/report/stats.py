"""The statistics behind a comparison, as pure functions: the spread over seeds and the exact paired test.

* :func:`mean_std`: mean and sample standard deviation of a strategy's results over seeds;
* :func:`gap_se`: the standard error of the difference of two such means (Welch): twice it is the seed noise
  a gap between two strategies is measured against;
* :func:`disagreements` + :func:`mcnemar_p`: two classifiers on the same images, paired image by image -- how
  many each alone gets right, and the exact (binomial) McNemar test of that split.

No torch, no files: numbers in, numbers out (unit-tested against scipy).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value); (nan, nan) for none."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def gap_se(std_a: float, n_a: int, std_b: float, n_b: int) -> float:
    """The standard error of ``mean_a - mean_b`` from the two seed spreads (Welch): sqrt(sa²/na + sb²/nb)."""
    return math.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)


def disagreements(labels: Sequence[int], a: Sequence[int], b: Sequence[int]) -> tuple[int, int]:
    """(images only ``a`` classifies right, images only ``b`` classifies right), paired image by image."""
    if not len(labels) == len(a) == len(b):
        raise ValueError(f"paired predictions need equal lengths, got {len(labels)} labels, {len(a)} and {len(b)} predictions")
    a_only = sum(p == y != q for p, q, y in zip(a, b, labels))
    b_only = sum(q == y != p for p, q, y in zip(a, b, labels))
    return a_only, b_only


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: the chance of a split at least as uneven as b : c of the b + c images on which
    two classifiers disagree, if either were equally likely to be the right one (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
