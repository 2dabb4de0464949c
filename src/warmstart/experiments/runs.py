"""Finished run directories, read back: epoch history, number formatting, and the report section of one run.

Used by ``warmstart report`` (which rebuilds a report from run directories alone) and by the experiments'
``sections(run_dir)`` functions.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine.layout import CONFUSION, LEARNING_CURVES
from warmstart.engine.run import read_config, read_history, read_summary  # noqa: F401  (read_history: re-exported)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def pct(x: float, digits: int = 1) -> str:
    """0.9346 -> '93.5 %'."""
    return f"{100 * x:.{digits}f} %"


def pm(mean: float, std: float, n: int, *, scale: float = 100.0, unit: str = " %", digits: int = 1) -> str:
    """'93.5 ± 1.2 %' (several values) or '93.5 %' (one)."""
    if n > 1:
        return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}{unit}"
    return f"{scale * mean:.{digits}f}{unit}"


def seconds(s: float) -> str:
    """A duration the way people read it: '0.8 s', '42 s', '3 min 05 s', '1 h 02 min'."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def command_of(config: dict[str, Any]) -> str:
    argv = config.get("argv") or []
    return " ".join(argv) if argv else f"warmstart {config.get('command', '')}".strip()


def run_sections(run_dir: str | Path) -> list:
    """The report section of one training run (``warmstart train``, or one arm of ``compare``)."""
    from warmstart.report.html import Figure, Section, Table

    run_dir = Path(run_dir)
    s, config = read_summary(run_dir), read_config(run_dir)
    hist = read_history(run_dir)
    setup = (f"`{s.get('model')}` from {_weights(s.get('weights'))}, strategy **{s.get('strategy')}**, {s.get('epochs')} epochs "
             f"on {s.get('train_images')} training images; validated on {s.get('val_images')} images "
             f"({'the data set’s test split' if s.get('val_is_test') else 'held-out validation split'}). Data: {s.get('data')}.")
    head = s.get("head_init")
    if isinstance(head, dict):
        prior = "the pretrained classifier's rows of its best-matching classes" if head.get("prior") == "pretrained" else "zero"
        setup += (f" The new head started at its linear probe (L2 {head.get('l2'):g} towards {prior}, chosen by "
                  f"{head.get('folds')}-fold cross-validation on the training split).")
    elif s.get("strategy") != "scratch":
        setup += " The new head started at torchvision's random initialisation."
    tp, tot = s.get("trainable_params"), s.get("total_params")
    table = Table(["final val accuracy", "best val accuracy", "best epoch", "train time", "images/s", "trainable params"],
                  [[pct(s["final_val_accuracy"]), pct(s["best_val_accuracy"]), s.get("best_epoch", ""),
                    seconds(float(s.get("train_seconds", 0))), f"{s.get('train_images_per_second', 0):,.0f}",
                    f"{tp:,} of {tot:,}" if tp is not None and tot else ""]],
                  caption="Final = the weights the run keeps (model.safetensors); best = the best epoch's accuracy, "
                          "chosen on the same validation images, so it flatters.")
    figures = [Figure(run_dir / LEARNING_CURVES, "Loss and accuracy per epoch (solid: validation, dashed: training).",
                      wide=True),
               Figure(run_dir / CONFUSION, "Confusion matrix on the validation images, final epoch.")]
    highlights = [("final val accuracy", pct(s["final_val_accuracy"])), ("best epoch", str(s.get("best_epoch", "")) +
                   (f" of {len(hist)}" if hist else "")), ("train time", seconds(float(s.get("train_seconds", 0))))]
    return [Section(f"Train: {s.get('strategy')} · {s.get('model')} · {data_name(s.get('data', ''))} ({run_dir.name})", paragraphs=[setup],
                    tables=[table], figures=figures, highlights=highlights, command=command_of(config),
                    anchor=f"train-{run_dir.name}")]


def _weights(w: Any) -> str:
    return "random initialisation (no pretrained weights)" if w in (None, "none") else f"`{w}`"


def data_name(data: str) -> str:
    """The data set's short name from a splits description such as '/path/hymenoptera_data (train/val folders)'."""
    first = str(data).split(";")[0].split(" (")[0].strip()
    return Path(first).name or first
