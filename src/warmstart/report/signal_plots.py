"""Pictures of signal propagation: per-layer std curves and activation histograms (PNG).

:func:`plot_layer_stats` draws, for each arm (init scheme), the std of every weight layer's output and
of the gradient w.r.t. it against layer index on a log scale -- the curves of Glorot & Bengio 2010
fig. 6-7 and He et al. 2015 fig. 3 -- measured solid, predicted (theory chained from the input) dashed.
:func:`plot_histograms` shows the distribution of activations at a few depths.

Figures are drawn with matplotlib's object API (``Figure`` + Agg canvas): no pyplot state, no display,
safe in worker threads; files are written atomically. :func:`plot_signal` draws the pictures of
:class:`~warmstart.init.diagnostics.SignalDiagnostics` (the run writing them calls it, from above).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from warmstart.engine.io import atomic_path
from warmstart.engine.layout import SIGNAL_HIST_FINAL_PNG, SIGNAL_HIST_INIT_PNG, SIGNAL_LAYERS_PNG
from warmstart.errors import UserError, unknown
from warmstart.init.signal import LayerStats, SignalStats


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def _positive(values: Sequence[float]) -> list[float]:
    """Values for a log axis: non-positive and non-finite ones become NaN (a gap in the line)."""
    return [v if (math.isfinite(v) and v > 0) else math.nan for v in values]


def plot_layer_stats(stats_by_arm: Mapping[str, SignalStats], path: str | Path, *, title: str | None = None) -> Path:
    """Two panels, one line per arm: output std (left) and dLoss/d(output) std (right) vs layer index.

    Measured values are solid lines with markers; the predicted output std (``sqrt(pred_var)``) is the
    dashed line of the same colour. Layers whose value is 0 or NaN leave a gap (log scale).
    """
    if not stats_by_arm:
        raise UserError("plot_layer_stats: nothing to plot (no arms given)")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_act, ax_grad = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(stats_by_arm))]
    for color, (arm, stats) in zip(colors, stats_by_arm.items()):
        idx = [layer.index for layer in stats]
        label = f"{arm} (ratio {stats.act_std_ratio:.2g})"
        ax_act.plot(idx, _positive([l.out_std for l in stats]), "-o", ms=3, color=color, label=label)
        pred = _positive([l.pred_std for l in stats])
        if any(math.isfinite(p) for p in pred):
            ax_act.plot(idx, pred, "--", color=color, alpha=0.8)
        ax_grad.plot(
            idx, _positive([l.grad_out_std for l in stats]), "-o", ms=3, color=color,
            label=f"{arm} (ratio {stats.grad_std_ratio:.2g})",
        )  # fmt: skip
    ax_act.set_title("forward: std of layer output (dashed: predicted)")
    ax_grad.set_title("backward: std of dLoss/d(layer output)")
    for ax in (ax_act, ax_grad):
        ax.set_yscale("log")
        ax.set_xlabel("layer index (execution order)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_act.set_ylabel("std")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _pick_layers(stats: SignalStats, max_layers: int) -> list[LayerStats]:
    """Evenly spaced hidden layers, first and last included."""
    hidden = stats.hidden or stats.layers
    if len(hidden) <= max_layers:
        return list(hidden)
    step = (len(hidden) - 1) / (max_layers - 1)
    return [hidden[round(i * step)] for i in range(max_layers)]


def plot_histograms(
    stats: SignalStats,
    path: str | Path,
    *,
    layers: Sequence[str] | None = None,
    max_layers: int = 6,
    title: str | None = None,
) -> Path:
    """Activation histograms (density over ``stats.bin_edges``) of a few layers, one panel each.

    The post-nonlinearity value is shown where the layer has one (``act``), else the layer output.
    Entries outside the bins are counted in the panel's caption. ``layers`` picks layers by name;
    by default up to ``max_layers`` hidden layers evenly spread over depth.
    """
    if not stats.layers:
        raise UserError("plot_histograms: the statistics hold no layers")
    if max_layers < 1:
        raise UserError(f"plot_histograms: max_layers must be >= 1, got {max_layers}")
    unknown_names = [n for n in layers or [] if n not in stats.names]
    if unknown_names:
        raise unknown("layer", unknown_names[0], stats.names)
    chosen = [stats[n] for n in layers] if layers else _pick_layers(stats, max_layers)
    edges = stats.bin_edges
    widths = [b - a for a, b in zip(edges, edges[1:])]
    cols = min(3, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(4 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, layer in zip(axes, chosen):
        post = layer.act is not None and sum(layer.act_hist) > 0
        hist = layer.act_hist if post else layer.out_hist
        total = sum(hist)
        inside = hist[1:-1]
        density = [c / (total * w) if total else 0.0 for c, w in zip(inside, widths)]
        ax.stairs(density, edges, fill=True, alpha=0.7)
        what = f"after {layer.act}" if post else "layer output"
        ax.set_title(f"{layer.name} ({what})", fontsize=9)
        outside = (hist[0] + hist[-1]) / total if total else 0.0
        zero = layer.act_zero_frac if post else layer.out_zero_frac
        ax.text(
            0.02, 0.97, f"std {layer.act_std if post else layer.out_std:.3g}\n|x|<{stats.zero_tol:g}: {zero:.0%}"
            f"\noutside bins: {outside:.0%}", transform=ax.transAxes, va="top", fontsize=7,
        )  # fmt: skip
        ax.set_xlabel("value")
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle(title or f"activation histograms{f' ({stats.tag})' if stats.tag else ''}")
    return _save(fig, path)


def snapshots_to_plot(history: Sequence[SignalStats], max_lines: int = 5) -> dict[str, SignalStats]:
    """Init, the last snapshot and evenly spaced ones between: at most ``max_lines``, by tag."""
    if len(history) <= max_lines:
        picked = list(history)
    else:
        step = (len(history) - 1) / (max_lines - 1)
        picked = [history[round(i * step)] for i in range(max_lines)]
    return {s.tag or f"#{i}": s for i, s in enumerate(picked)}


def plot_signal(history: Sequence[SignalStats], out_dir: str | Path, *, title: str = "") -> list[Path]:
    """The diagnostics PNGs of :class:`SignalDiagnostics` from a list of snapshots (e.g. :func:`load_signal`)."""
    if not history:
        raise UserError("no signal snapshots to plot")
    out_dir = Path(out_dir)
    prefix = f"{title}: " if title else ""
    paths = [plot_layer_stats(snapshots_to_plot(history), out_dir / SIGNAL_LAYERS_PNG,
                              title=f"{prefix}per-layer signal on the probe batch, during training")]
    paths.append(plot_histograms(history[0], out_dir / SIGNAL_HIST_INIT_PNG, title=f"{prefix}activations at init"))
    if len(history) > 1:
        paths.append(plot_histograms(history[-1], out_dir / SIGNAL_HIST_FINAL_PNG,
                                     title=f"{prefix}activations after training ({history[-1].tag})"))
    return paths
