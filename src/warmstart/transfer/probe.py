"""Linear probe: where a new classification layer starts, solved on frozen features before any epoch.

torchvision initialises a new head at random, so the first steps of training spend themselves on the head
and, while fine-tuning, send large, noisy gradients into the pretrained layers. fastai trains the head alone
for an epoch or two first; LP-FT (Kumar et al., *Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution*, ICLR 2022) solves the linear probe and fine-tunes from there. On frozen
features the probe is a convex problem (multinomial logistic regression), so :func:`fit_probe` solves it to
the optimum with full-batch L-BFGS instead of a few noisy epochs of minibatches:

    minimise   mean cross-entropy(x W^T + b, y)  +  l2 / 2 * ||W - W0||^2          (b is not penalised)

``W0 = 0`` is ordinary ridge-regularised logistic regression. With the pretrained classifier given
(``prior=``), a second family of candidates starts from, and is pulled towards, a *label mapping* of it:
each new class gets the row (and bias) of the pretrained class its training images score highest on, the
classes kept distinct (:func:`label_mapping`; Co-Tuning, You et al., NeurIPS 2020, learns a soft version).
For ants and bees, the ImageNet rows "ant" and "bee"; for classes ImageNet never saw, a poor prior.

Which prior, and how strong a pull ``l2``, is chosen by stratified k-fold cross-validation **on the
training data only** (held-out cross-entropy; a smoother criterion than accuracy on small data; ties go to
the stronger regularisation), so a poor prior loses to the plain probe. Then the chosen candidate is solved
on all the training features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from warmstart.engine.distributed import threads

#: Candidate regularisation strengths, strongest first (the warm-start path of the cross-validation).
L2_GRID = (1.0, 0.1, 0.01, 0.001)
#: Below this many multiply-adds per logits product, L-BFGS's many small ops run on one thread: extra
#: threads only spin (35 s instead of 3 s for hymenoptera's probe on a busy 2-core machine).
ONE_THREAD_BELOW = 50_000_000
#: Cross-validation runs on at most this many rows (a stratified sample); the final solve uses all of them.
MAX_SELECT_ROWS = 4096


@dataclass
class Probe:
    """The solved head: ``logits = x @ weight.T + bias`` on the features it was fitted on."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    prior: str                                   # "none" or "pretrained"
    mapped_classes: list[int] | None = None      # pretrained class per new class (the prior's rows)
    cv: list[dict[str, Any]] = field(default_factory=list)  # one row per candidate: prior, l2, loss, accuracy
    folds: int = 0
    train_accuracy: float = 0.0
    seconds: float = 0.0

    def describe(self, categories: Sequence[str] | None = None) -> str:
        """One line for the console: what was chosen and why."""
        how = f"{self.folds}-fold CV on the training split" if self.folds else "no CV (too few images per class)"
        text = f"linear probe: l2 {self.l2:g}, prior {self.prior}"
        if self.prior == "pretrained" and self.mapped_classes is not None:
            names = [_short(categories[j]) if categories and j < len(categories) else str(j) for j in self.mapped_classes]
            text += f" ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})"
        return f"{text}; chosen by {how}; train accuracy {self.train_accuracy:.3f}; {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {"l2": self.l2, "prior": self.prior, "mapped_classes": self.mapped_classes, "folds": self.folds,
                "train_accuracy": round(self.train_accuracy, 4), "seconds": round(self.seconds, 3), "cv": self.cv}


def _short(name: str) -> str:
    return name.split(",")[0].strip()


def label_mapping(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[int]:
    """For each new class, the pretrained class with the highest mean log-probability over its images.

    ``logits``: the pretrained head's outputs (N x K) on the training images, ``labels`` their new classes.
    Pairs are taken greedily by score, so two new classes never share a pretrained class (K >= classes).
    """
    if logits.shape[1] < num_classes:
        raise ValueError(f"label_mapping: {logits.shape[1]} pretrained classes cannot cover {num_classes} new ones")
    logp = logits.float().log_softmax(1)
    score = torch.stack([logp[labels == c].mean(0) if (labels == c).any() else torch.full_like(logp[0], -1e9)
                         for c in range(num_classes)])
    rows = [-1] * num_classes
    used: set[int] = set()
    for flat in score.flatten().argsort(descending=True).tolist():
        c, j = divmod(flat, score.shape[1])
        if rows[c] < 0 and j not in used:
            rows[c] = j
            used.add(j)
            if len(used) == num_classes:
                break
    return rows


def solve(x: torch.Tensor, y: torch.Tensor, l2: float, w0: torch.Tensor, b0: torch.Tensor,
          start: tuple[torch.Tensor, torch.Tensor] | None = None, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + l2/2 * ||W - w0||^2 by full-batch L-BFGS, from ``start`` (default w0, b0).

    The loss and its gradient are written out (softmax minus one-hot), not taken by autograd: the problem is
    small and L-BFGS evaluates it ~30 times per solve, so building and walking a graph each time was a third
    of the probe's time (0.81 -> 0.58 s on hymenoptera's 41 solves, same chosen prior and l2).
    """
    w = (start[0] if start is not None else w0).clone().requires_grad_(True)
    b = (start[1] if start is not None else b0).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)
    n = len(y)
    onehot = F.one_hot(y, w.shape[0]).to(x.dtype)

    def closure() -> torch.Tensor:
        with torch.no_grad():
            z = torch.addmm(b, x, w.T)
            lse = z.logsumexp(1)
            pull = w - w0
            loss = (lse - (z * onehot).sum(1)).mean() + l2 / 2 * pull.pow(2).sum()  # per image first: no cancellation
            g = (z - lse[:, None]).exp_().sub_(onehot).div_(n)  # d loss / d logits: (softmax - one-hot) / n
            w.grad = torch.addmm(pull, g.T, x, beta=l2)
            b.grad = g.sum(0)
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def stratified_folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """k disjoint index sets, each class dealt round-robin after a seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        for j, i in enumerate(idx.tolist()):
            out[(start + j) % k].append(i)
        start += len(idx)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in out]


def _sample(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A stratified sample of about n row indices."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        m = max(1, round(n * len(idx) / len(y)))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:m]])
    return torch.cat(keep).sort().values


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *,
              prior: tuple[torch.Tensor, torch.Tensor] | None = None, l2s: Sequence[float] = L2_GRID,
              folds: int = 5, seed: int = 0, max_select_rows: int = MAX_SELECT_ROWS) -> Probe:
    """Solve the linear probe on features ``x`` (N x D) with labels ``y``; choose prior and l2 by k-fold CV.

    ``prior``: the pretrained classifier ``(weight K x D, bias K)`` acting on the same features, or None.
    """
    small = x.shape[0] * (x.shape[1] if x.ndim > 1 else 1) * num_classes < ONE_THREAD_BELOW
    with threads(1 if small else None):
        return _fit_probe(x, y, num_classes, prior=prior, l2s=l2s, folds=folds, seed=seed, max_select_rows=max_select_rows)



def _fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, prior, l2s: Sequence[float], folds: int, seed: int,
               max_select_rows: int) -> Probe:
    t0 = time.perf_counter()
    x = x.detach().float().cpu()
    y = y.detach().long().cpu()
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"fit_probe: features must be N x D with N labels, got {tuple(x.shape)} and {len(y)} labels")
    d = x.shape[1]
    if prior is not None and (prior[0].shape[1] != d or prior[0].shape[0] < num_classes):
        prior = None  # the pretrained head reads other features, or has fewer classes than the new one
    prior = (prior[0].detach().float().cpu(), prior[1].detach().float().cpu()) if prior is not None else None

    def starts(xs: torch.Tensor, ys: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[int] | None]]:
        zero = (torch.zeros(num_classes, d), torch.zeros(num_classes), None)
        if prior is None:
            return {"none": zero}
        rows = label_mapping(xs @ prior[0].T + prior[1], ys, num_classes)
        return {"none": zero, "pretrained": (prior[0][rows].clone(), prior[1][rows].clone(), rows)}

    counts = torch.bincount(y, minlength=num_classes)
    k = int(min(folds, counts[counts > 0].min().item())) if len(y) else 0
    l2s = sorted({float(v) for v in l2s}, reverse=True)
    cv: list[dict[str, Any]] = []
    if k >= 2 and len(l2s) * (2 if prior is not None else 1) > 1:
        sel = _sample(y, max_select_rows, seed) if len(y) > max_select_rows else torch.arange(len(y))
        xs, ys = x[sel], y[sel]
        scores: dict[tuple[str, float], list[tuple[float, float]]] = {}
        for held in stratified_folds(ys, k, seed):
            fit_rows = torch.ones(len(ys), dtype=torch.bool)
            fit_rows[held] = False
            for name, (w0, b0, _) in starts(xs[fit_rows], ys[fit_rows]).items():
                w = None
                for l2 in l2s:  # strongest first: each solve starts from the previous one
                    w = solve(xs[fit_rows], ys[fit_rows], l2, w0, b0, start=w)
                    out = xs[held] @ w[0].T + w[1]
                    scores.setdefault((name, l2), []).append(
                        (F.cross_entropy(out, ys[held]).item(), (out.argmax(1) == ys[held]).float().mean().item()))
        for (name, l2), r in scores.items():
            cv.append({"prior": name, "l2": l2, "loss": round(sum(a for a, _ in r) / len(r), 5),
                       "accuracy": round(sum(b for _, b in r) / len(r), 5), "fold_accuracy": [round(b, 5) for _, b in r]})
        # lowest held-out loss; on a tie (to 1e-4), the stronger regularisation, then no prior
        best = min(cv, key=lambda row: (round(row["loss"], 4), -row["l2"], row["prior"] != "none"))
        name, l2 = best["prior"], best["l2"]
    else:
        name, l2 = "none", 0.01 if 0.01 in l2s else l2s[len(l2s) // 2]
    w0, b0, rows = starts(x, y)[name]
    w, b = solve(x, y, l2, w0, b0, max_iter=200)
    train_acc = ((x @ w.T + b).argmax(1) == y).float().mean().item()
    return Probe(weight=w, bias=b, l2=l2, prior=name, mapped_classes=rows, cv=cv, folds=k if cv else 0,
                 train_accuracy=train_acc, seconds=time.perf_counter() - t0)
