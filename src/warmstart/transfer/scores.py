"""Transferability scores: how well frozen features of a start suit a target task, before any training.

Pure functions of a feature matrix ``x`` (N x D, float) and labels ``y`` (N, int64, classes 0..C-1):

- :func:`probe_cv`: the recipe's own linear probe (:func:`~warmstart.transfer.probe.fit_probe`), its
  stratified k-fold cross-validated accuracy on the training split, with the per-fold accuracies (the noise);
- :func:`knn_loo`: k-nearest-neighbour leave-one-out accuracy under cosine similarity, ``k`` chosen by
  stratified k-fold cross-validation on the same split (:func:`knn_brute_force` is the reference loop);
- :func:`logme`: LogME (You et al., *LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning*, ICML 2021), the log marginal likelihood ("evidence") per sample of a Bayesian linear regression
  from the features to each class's one-hot target, maximised over its prior precision ``alpha`` and noise
  precision ``beta`` by the paper's fixed-point iteration, averaged over classes; one SVD of ``x`` serves
  every class and every iteration (:func:`evidence` evaluates it at given ``alpha``, ``beta``);
- :func:`leep`: LEEP (Nguyen et al., *LEEP: A New Measure to Evaluate Transferability of Learned
  Representations*, ICML 2020) from the source classifier's logits over its own classes.

Higher is better for all four. They are not on one scale: accuracies in [0, 1], LogME and LEEP are
log-likelihoods per sample (LEEP <= 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: candidate k of the kNN score (those >= the smallest class's training size are dropped)
KNN_KS = (1, 3, 5, 7, 9, 15, 21, 31)
#: LogME's fixed-point iteration: stop when alpha/beta changes by less than this relative amount
LOGME_TOL = 1e-3
LOGME_MAX_ITER = 100


# --------------------------------------------------------------------------------------------- probe
@dataclass
class ProbeScore:
    accuracy: float                 # mean held-out accuracy over the folds, of the candidate the CV chose
    fold_accuracy: list[float] = field(default_factory=list)
    folds: int = 0
    l2: float = 0.0
    prior: str = "none"

    @property
    def spread(self) -> float:
        """Standard error of the mean fold accuracy (std over folds / sqrt(folds)); NaN with < 2 folds."""
        f = self.fold_accuracy
        if len(f) < 2:
            return math.nan
        m = sum(f) / len(f)
        return math.sqrt(sum((a - m) ** 2 for a in f) / (len(f) - 1) / len(f))


def probe_cv(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, prior=None, seed: int = 0, folds: int = 5) -> ProbeScore:
    """Cross-validated accuracy of the recipe's linear probe (prior and L2 chosen by its own CV on ``x``).

    The probe's cross-validation picks the candidate with the lowest held-out loss; its held-out accuracy,
    per fold and on average, is the score. With too few images per class for 2 folds: NaN.
    """
    from warmstart.transfer.probe import fit_probe

    p = fit_probe(x.float(), y.long(), num_classes, prior=prior, seed=seed, folds=folds)
    if not p.cv:
        return ProbeScore(math.nan, folds=0, l2=p.l2, prior=p.prior)
    row = next(r for r in p.cv if r["prior"] == p.prior and r["l2"] == p.l2)
    return ProbeScore(float(row["accuracy"]), [float(a) for a in row.get("fold_accuracy", [])], p.folds, p.l2, p.prior)


# --------------------------------------------------------------------------------------------- kNN
def _normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double().flatten(1), dim=1)


def _vote(sim: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Majority vote of the ``k`` most similar columns per row; ties go to the class with the larger summed
    similarity among those neighbours, then to the lower class index."""
    top, idx = sim.topk(k, dim=1)
    lab = labels[idx]
    counts = torch.zeros(len(sim), num_classes, dtype=torch.float64).scatter_add_(1, lab, torch.ones_like(top))
    sims = torch.zeros(len(sim), num_classes, dtype=torch.float64).scatter_add_(1, lab, top)
    # counts are integers; similarities lie in [-k, k], so scaled by 1/(4k) they only break ties
    return (counts + sims / (4 * k)).argmax(1)


def knn_predict_loo(x: torch.Tensor, y: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Leave-one-out kNN predictions (cosine similarity): each sample voted on by its k nearest others."""
    xn = _normalize(x)
    sim = xn @ xn.T
    sim.fill_diagonal_(-math.inf)
    return _vote(sim, y.long(), k, num_classes)


@dataclass
class KnnScore:
    accuracy: float   # leave-one-out accuracy at the chosen k
    k: int
    cv: dict[int, float] = field(default_factory=dict)  # k -> cross-validated accuracy used to choose it


def knn_loo(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, ks=KNN_KS, folds: int = 5, seed: int = 0) -> KnnScore:
    """kNN leave-one-out accuracy, k chosen by stratified ``folds``-fold cross-validation on ``(x, y)``.

    In the CV each held-out fold is classified by its neighbours in the other folds; the k with the best mean
    accuracy wins (ties: the larger k, the smoother vote). Then every sample is classified by its k nearest
    other samples (leave-one-out) and that accuracy is the score.
    """
    from warmstart.transfer.probe import stratified_folds

    y = y.long()
    counts = torch.bincount(y, minlength=num_classes)
    smallest = int(counts[counts > 0].min())
    usable = [k for k in ks if k < len(y)] or [1]
    n_folds = min(folds, smallest)
    xn = _normalize(x)
    sim = xn @ xn.T
    cv: dict[int, float] = {}
    if n_folds >= 2 and len(usable) > 1:
        parts = stratified_folds(y, n_folds, seed)
        for k in usable:
            accs = []
            for held in parts:
                rest = torch.ones(len(y), dtype=torch.bool)
                rest[held] = False
                if int(rest.sum()) < k:
                    continue
                pred = _vote(sim[held][:, rest], y[rest], k, num_classes)
                accs.append((pred == y[held]).double().mean().item())
            if accs:
                cv[k] = sum(accs) / len(accs)
        best_k = max(cv, key=lambda k: (round(cv[k], 9), k))
    else:
        best_k = usable[0]
    loo = sim.clone()
    loo.fill_diagonal_(-math.inf)
    acc = (_vote(loo, y, best_k, num_classes) == y).double().mean().item()
    return KnnScore(acc, best_k, cv)


def knn_brute_force(x: torch.Tensor, y: torch.Tensor, k: int, num_classes: int) -> list[int]:
    """Reference leave-one-out kNN, one sample at a time in plain Python (the tests' independent check)."""
    rows = [[float(v) for v in r] for r in x.double().flatten(1)]
    norms = [math.sqrt(sum(v * v for v in r)) or 1e-12 for r in rows]
    labels = [int(c) for c in y]
    preds = []
    for i, r in enumerate(rows):
        sims = sorted(((sum(a * b for a, b in zip(r, rows[j])) / (norms[i] * norms[j]), j) for j in range(len(rows)) if j != i),
                      key=lambda t: -t[0])[:k]
        count = [0] * num_classes
        total = [0.0] * num_classes
        for s, j in sims:
            count[labels[j]] += 1
            total[labels[j]] += s
        best = max(range(num_classes), key=lambda c: (count[c], total[c], -c))
        preds.append(best)
    return preds


# --------------------------------------------------------------------------------------------- LogME
@dataclass
class Spectrum:
    """The SVD of the feature matrix shared by all classes: ``x = u diag(s) v^T`` (thin), N, D."""

    u: torch.Tensor
    s: torch.Tensor
    n: int
    d: int

    @classmethod
    def of(cls, x: torch.Tensor) -> "Spectrum":
        """From the eigendecomposition of the smaller Gram matrix (``x x^T`` or ``x^T x``, float64): the same
        ``u`` and ``s`` as ``svd(x)`` on the non-null part, about 10x cheaper than the SVD of a 245 x 1280 matrix."""
        x = x.double().flatten(1)
        n, d = x.shape
        if n <= d:
            lam, u = torch.linalg.eigh(x @ x.T)
        else:
            lam, v = torch.linalg.eigh(x.T @ x)
            u = x @ v
        lam = lam.clamp_min(0)
        keep = lam > lam.max() * 1e-12 if len(lam) else lam > 0
        s = lam[keep].sqrt()
        u = u[:, keep] if n <= d else u[:, keep] / s
        return cls(u, s, n, d)


def _evidence_parts(sp: Spectrum, z: torch.Tensor, yy: float, alpha: float, beta: float):
    """Quantities of the evidence at (alpha, beta) in the SVD basis; ``z = u^T t``, ``yy = |t|^2``.

    ``m = beta A^-1 x^T t`` with ``A = alpha I + beta x^T x``; in the right-singular basis ``m_i = beta s_i z_i /
    (alpha + beta s_i^2)``, ``|t - x m|^2 = |t|^2 - |z|^2 + sum (z_i - s_i m_i)^2``.
    """
    s2 = sp.s ** 2
    m = beta * sp.s * z / (alpha + beta * s2)
    mm = float((m ** 2).sum())
    res = max(yy - float((z ** 2).sum()), 0.0) + float(((z - sp.s * m) ** 2).sum())
    gamma = float((beta * s2 / (alpha + beta * s2)).sum())
    logdet = float(torch.log(alpha + beta * s2).sum()) + (sp.d - len(sp.s)) * math.log(alpha)
    return mm, res, gamma, logdet


def evidence(sp: Spectrum, t: torch.Tensor, alpha: float, beta: float) -> float:
    """log p(t | x, alpha, beta) / N for the linear model t = x w + noise, w ~ N(0, I/alpha), noise ~ N(0, 1/beta)."""
    t = t.double()
    z = sp.u.T @ t
    mm, res, _, logdet = _evidence_parts(sp, z, float(t @ t), alpha, beta)
    n, d = sp.n, sp.d
    ev = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * math.log(2 * math.pi)
          - beta / 2 * res - alpha / 2 * mm - logdet / 2)
    return ev / n


def maximize_evidence(sp: Spectrum, t: torch.Tensor, *, tol: float = LOGME_TOL, max_iter: int = LOGME_MAX_ITER
                      ) -> tuple[float, float, float]:
    """The paper's fixed point (its Algorithm 1): ``gamma = sum beta s_i^2 / (alpha + beta s_i^2)``,
    ``alpha = gamma / |m|^2``, ``beta = (N - gamma) / |t - x m|^2``, from alpha = beta = 1.
    Returns ``(evidence per sample, alpha, beta)`` at the fixed point."""
    t = t.double()
    z = sp.u.T @ t
    yy = float(t @ t)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        mm, res, gamma, _ = _evidence_parts(sp, z, yy, alpha, beta)
        new_alpha = gamma / max(mm, 1e-12)
        new_beta = (sp.n - gamma) / max(res, 1e-12)
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return evidence(sp, t, alpha, beta), alpha, beta


def logme(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """LogME: the mean over classes of the maximised evidence per sample of the one-hot target of that class."""
    sp = Spectrum.of(x)
    y = y.long()
    return sum(maximize_evidence(sp, (y == c).double())[0] for c in range(num_classes)) / num_classes


# --------------------------------------------------------------------------------------------- LEEP
def leep(source_logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    """LEEP: the mean log-likelihood of the target labels under the "expected empirical predictor".

    ``theta = softmax(source_logits)`` (N x Z over the source classes, all of them); the empirical joint
    ``P(y, z) = mean_i theta_iz [y_i = y]``, ``P(y | z) = P(y, z) / P(z)``; LEEP ``= mean_i log sum_z P(y_i | z)
    theta_iz``.
    """
    theta = source_logits.double().softmax(1)
    onehot = F.one_hot(y.long(), num_classes).double()
    joint = onehot.T @ theta / len(y)                       # C x Z
    cond = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)
    eep = theta @ cond.T                                    # N x C
    return float(torch.log(eep.gather(1, y.long()[:, None]).clamp_min(1e-300)).mean())
