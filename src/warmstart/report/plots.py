"""Figures shared by every experiment (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from warmstart.engine.io import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path, "figure") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def learning_curves(histories: Mapping[str, Sequence[Mapping]], path: Path, title: str = "",
                    spread: Mapping[str, Sequence[Mapping]] | None = None) -> Path:
    """Train/val loss and accuracy per epoch, one colour per arm (solid = val, dashed = train).

    ``spread`` (optional, per arm, per epoch: the std of ``val_loss`` / ``val_accuracy``, e.g. over seeds)
    shades mean ± std around the validation curves.
    """
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        c = f"C{i}"
        ep = [int(h["epoch"]) for h in hist]
        ax_l.plot(ep, [float(h["train_loss"]) for h in hist], "--", color=c, alpha=0.7)
        ax_l.plot(ep, [float(h["val_loss"]) for h in hist], "-o", color=c, ms=3, label=name)
        ax_a.plot(ep, [float(h["train_accuracy"]) for h in hist], "--", color=c, alpha=0.7)
        ax_a.plot(ep, [float(h["val_accuracy"]) for h in hist], "-o", color=c, ms=3, label=name)
        sd = (spread or {}).get(name)
        if sd:
            for ax, key in ((ax_l, "val_loss"), (ax_a, "val_accuracy")):
                m = np.array([float(h[key]) for h in hist])
                e = np.array([float(s.get(key, 0.0)) for s in sd][: len(m)] + [0.0] * max(0, len(m) - len(sd)))
                ax.fill_between(ep, m - e, m + e, color=c, alpha=0.15, lw=0)
    ax_l.set(xlabel="epoch", ylabel="loss", title="loss (solid: val, dashed: train)")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy (solid: val, dashed: train)", ylim=(0, 1.02))
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_a.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> Path:
    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 1.0 + 0.45 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if cm[i, j] > cm.max() / 2 else "black")
    return save_figure(fig, path)


def filter_grid(weights: Mapping[str, torch.Tensor], path: Path, max_filters: int = 32, title: str = "") -> Path:
    """First-layer filters side by side for each named state (e.g. 'before', 'after'); each filter scaled on its own.

    Each state is one mosaic image (filters tiled with a 1-pixel gap), so drawing stays cheap for many filters.
    """
    names = list(weights)
    cols = min(16, max_filters)
    mosaics = []
    for name in names:
        w = weights[name].detach().float().cpu()[:max_filters]
        n, k = w.shape[0], w.shape[-1]
        rows = int(np.ceil(n / cols))
        mosaic = np.ones(((k + 1) * rows - 1, (k + 1) * cols - 1, 3))
        for idx in range(n):
            f = w[idx]
            img = f.permute(1, 2, 0).numpy() if f.shape[0] == 3 else np.repeat(f.mean(0).numpy()[..., None], 3, axis=2)
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else np.full_like(img, 0.5)
            r, c = divmod(idx, cols)
            mosaic[r * (k + 1): r * (k + 1) + k, c * (k + 1): c * (k + 1) + k] = img
        mosaics.append(mosaic)
    fig, axes = plt.subplots(len(names), 1, figsize=(cols * 0.55, sum(m.shape[0] for m in mosaics) / mosaics[0].shape[1] * cols * 0.55 + 0.5 * len(names)),
                             squeeze=False)
    for ax, name, mosaic in zip(axes[:, 0], names, mosaics):
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def image_grid(images: Sequence[torch.Tensor], labels: Sequence[str], path: Path, cols: int = 8, title: str = "") -> Path:
    """uint8 CHW images with a caption each (e.g. 'true: ant / predicted: bee')."""
    n = max(1, len(images))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i].permute(1, 2, 0).cpu().numpy())
            ax.set_title(labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def tradeoff(points: Mapping[str, tuple[float, float, float, float]], path: Path, *, xlabel: str, ylabel: str,
             title: str = "", band: tuple[float, float, str] | None = None, percent: bool = False) -> Path:
    """One point per arm at (x, y) with error bars (xerr, yerr): e.g. accuracy against training time.

    ``points``: name -> (x, y, xerr, yerr); colours follow the order of ``points`` (as in
    :func:`learning_curves`). ``band`` = (low, high, label) shades a horizontal band, e.g. "within noise of
    the best". The x axis is logarithmic when the x values span more than a factor of 20.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    xs = [p[0] for p in points.values()]
    if band is not None:
        ax.axhspan(band[0], band[1], color="0.85", alpha=0.6, lw=0, label=band[2])
    for i, (name, (x, y, xe, ye)) in enumerate(points.items()):
        ax.errorbar([x], [y], xerr=[xe] if xe else None, yerr=[ye] if ye else None, fmt="o", ms=7, color=f"C{i}",
                    capsize=4)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(7, 5), fontsize=8, color=f"C{i}")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi + 0.12 * (hi - lo) if ax.get_xscale() == "linear" else hi * 1.6)  # room for the labels
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if band is not None:
        ax.legend(loc="best", fontsize=7)
    return save_figure(fig, path)


def plot_paths(paths: Mapping[str, Mapping[str, Any]], path: Path, title: str = "",
               ends: tuple[str, str] = ("first network", "second")) -> Path:
    """One colour per path; loss (left; log scale when it spans decades) and accuracy (right) against t; solid: validation, dashed:
    training images. The ends (t = 0 and 1, named ``ends`` on the x axis) are marked by vertical lines; points outside
    them (``--extend``) show the basin's walls."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, res) in enumerate(paths.items()):
        pts = res["points"]
        t = [p["t"] for p in pts]
        c = f"C{i % 10}"
        ax_l.plot(t, [p["train_loss"] for p in pts], "--o", color=c, ms=3, alpha=0.7)
        ax_a.plot(t, [p["train_accuracy"] for p in pts], "--o", color=c, ms=3, alpha=0.7)
        if "val_loss" in pts[0]:
            b = res.get("barrier", {}).get("train_loss")
            label = name + (f" (barrier {b:.3f})" if b is not None else "")
            ax_l.plot(t, [p["val_loss"] for p in pts], "-o", color=c, ms=3, label=label)
            ax_a.plot(t, [p["val_accuracy"] for p in pts], "-o", color=c, ms=3, label=label)
    for ax in (ax_l, ax_a):
        for x in (0, 1):
            ax.axvline(x, color="0.6", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.set_xlabel(f"t (0: {ends[0]}, 1: {ends[1]})")
    # the curves' own values: the end markers (axvline, y 0..1 in axes units) are lines too and must not count
    losses = [p[k] for res in paths.values() for p in res["points"] for k in ("train_loss", "val_loss") if p.get(k, 0) > 0]
    wide = bool(losses) and max(losses) / min(losses) > 20  # log scale only where the loss spans decades
    ax_l.set(yscale="log" if wide else "linear", ylabel="loss", title="loss (solid: val, dashed: train)")
    ax_a.set(ylabel="accuracy", ylim=(0, 1.02), title="accuracy (solid: val, dashed: train)")
    ax_l.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.16), ncol=1, frameon=False)  # below: never over a curve
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
