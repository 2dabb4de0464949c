"""The report of `warmstart path`: its reading (one sentence per path) and its report section, also the compare
report's section when `warmstart path COMPARE` was run (called by experiments.compare and experiments.path, so it
lives below both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.engine.layout import PATH_PNG
from warmstart.engine.run import read_config, read_summary


def barrier_text(r: dict[str, Any]) -> str:
    b = r["barrier"]
    text = f"train-loss barrier {b['train_loss']:.3f}"
    if "val_error" in b:
        text += f", val-error barrier {100 * b['val_error']:.1f} points"
    return text


def reading(summary: dict[str, Any]) -> str:
    """One sentence per path: its barrier (train loss, and validation error in points)."""
    return " ".join(reading_lines(summary))


def reading_lines(summary: dict[str, Any]) -> list[str]:
    paths = summary["paths"] if summary.get("kind") == "compare" else [summary]
    lines = []
    for r in paths:
        what = (f"{r['strategy']}, between two seeds' ends" if r.get("kind") == "seeds" else
                f"{r['strategy']}, {Path(r['a']['run']).name} start -> end" if "strategy" in r else r["label"])
        lines.append(f"{what}: {barrier_text(r)}{in_words(r)}.")
    return lines


#: a barrier below this share of the ends' mean train loss is float noise: the loss never rises above the line
FLAT = 1e-3


def in_words(r: dict[str, Any]) -> str:
    """What the train-loss barrier says, in words: the line stays in one basin, or how high it rises, relative to
    the loss at its ends (a number a student can weigh without knowing the loss's scale)."""
    ends = [p["train_loss"] for p in r.get("points", []) if p["t"] in (0.0, 1.0)]
    if not ends:
        return ""
    scale = max(sum(ends) / len(ends), 1e-12)
    b = r["barrier"]["train_loss"]
    if b <= FLAT * scale:
        return " — the training loss never rises above the straight line between the ends: along this line, one basin"
    return (f" — the training loss rises {b:.3g} above the straight line between the ends ({100 * b / scale:.0f}% of their mean "
            "loss): a bump between them (a large one: two basins)")


INTRO = ("Loss along the straight line in weight space between two networks, at evenly spaced points t (0: the first, "
         "1: the second; for a run's start -> end, 0 is its start), with BatchNorm statistics recomputed on the training images at every point. The barrier is the "
         "largest loss above the straight line between the two ends' losses: about 0 when both lie in one basin, clearly "
         "more when a ridge separates them (Frankle et al. 2020; Neyshabur, Sedghi & Zhang 2020: fine-tuned runs from one "
         "pretrained start share a basin, runs from random starts do not).")


def sections(run_dir: str | Path) -> list:
    """The report section of a path run (or a compare run's paths/ folder), rebuilt from its directory."""
    from warmstart.report.html import Figure, Section, Table

    run_dir = Path(run_dir)
    summary, config = read_summary(run_dir), read_config(run_dir)
    paths = summary["paths"] if summary.get("kind") == "compare" else [summary]
    cols = ["strategy", "path", "train loss at ends", "train-loss barrier", "val accuracy at ends", "val-error barrier (points)"]
    rows = []
    for r in paths:
        p0 = next(p for p in r["points"] if p["t"] == 0.0)
        p1 = next(p for p in r["points"] if p["t"] == 1.0)
        rows.append([r.get("strategy", "-"), "between seeds' ends" if r.get("kind") == "seeds" else r["label"],
                     f"{p0['train_loss']:.3f} / {p1['train_loss']:.3f}", round(r["barrier"]["train_loss"], 4),
                     f"{p0.get('val_accuracy', float('nan')):.3f} / {p1.get('val_accuracy', float('nan')):.3f}",
                     round(100 * r["barrier"].get("val_error", float("nan")), 1)])
    figs = ([Figure(run_dir / f, f"{s}: loss and accuracy along each path (BatchNorm recomputed at every point).")
             for s, f in summary.get("figures", {}).items()] if summary.get("kind") == "compare"
            else [Figure(run_dir / PATH_PNG, "Loss and accuracy along the path (BatchNorm recomputed at every point).")])
    argv = config.get("argv") or []
    return [Section(title="Is fine-tuning an initialization? Linear paths between starts and ends", paragraphs=[INTRO],
                    reading=reading_lines(summary), tables=[Table(cols, rows, caption=(
                        f"{summary.get('train_images')} training / {summary.get('val_images')} validation images; "
                        "barrier: max over 0 <= t <= 1 of loss(t) minus the straight line between the ends."))],
                    figures=[f for f in figs if f.path.is_file()],
                    command=" ".join(argv) if argv else "warmstart path", anchor="paths")]
