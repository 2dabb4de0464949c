"""The figure of how far each start travelled (:mod:`warmstart.transfer.drift`), one line per fine-tuning arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def cka_text(cka: float) -> str:
    """'CKA 0.912', or for a representation that barely moved '1 − CKA 1.6e-09' (four decimals would read 1.0000)."""
    return f"CKA {cka:.3f}" if 1 - cka >= 1e-3 else f"1 − CKA {1 - cka:.1e}"


def drift_figure(drift: Mapping[str, dict[str, Any]], path: Path) -> Path:
    """Left: each layer group's final distance from the start, ``||w - w0|| / ||w0||``, input to output (log scale;
    frozen groups, at exactly 0, are left out). Right: per epoch, the mean distance of the pretrained groups
    that train (the new head excluded). ``drift``: arm -> its ``summary["drift"]``; CKA in the legend."""
    import matplotlib.ticker

    from warmstart.report.plots import save_figure, plt

    fig, (ax_g, ax_e) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    names: list[str] = []
    for i, (arm, d) in enumerate(drift.items()):
        groups = d.get("groups") or list(d["final"])
        names = groups if len(groups) > len(names) else names
        c = f"C{i}"
        ys = [d["final"].get(g) for g in groups]
        xs = [j for j, y in enumerate(ys) if y]
        label = arm + (f" ({cka_text(d['cka'])})" if d.get("cka") is not None else "")
        ax_g.plot(xs, [ys[j] for j in xs], "-o", color=c, ms=3, label=label)
        body = [g for g in d.get("trained", groups) if g != "head" and g in groups]
        ep = [e for e in d.get("per_epoch", []) if all(g in e for g in body)]
        if body and ep:
            ax_e.plot([int(e["epoch"]) for e in ep], [sum(e[g] for g in body) / len(body) for e in ep], "-o", color=c, ms=3)
    if names:
        step = max(1, len(names) // 12)
        ax_g.set_xticks(range(0, len(names), step), [names[j] for j in range(0, len(names), step)], rotation=45, ha="right",
                        fontsize=7)
    ax_g.set(yscale="log", ylabel="‖w − w₀‖ / ‖w₀‖ after training", title="distance from the start, per layer group")
    ax_e.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_e.set(yscale="log", xlabel="epoch", ylabel="mean over trained pretrained groups", title="during training")
    for ax in (ax_g, ax_e):
        ax.grid(alpha=0.3)
    ax_g.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)
