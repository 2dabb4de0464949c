"""The figures of one training run, drawn from its run directory alone, by the command that made it.

``recipe.run_arm`` writes what a run measured (metrics.csv, summary.json, signal.json); the commands above it
(``train``, ``compare``'s arms, ``rank --verify``) draw the pictures with :func:`run_figures`, so the training
layer imports no reporting, and any run directory's figures can be redrawn later from its files.
"""

from __future__ import annotations

from pathlib import Path

from warmstart.engine import layout
from warmstart.engine.run import read_history, read_summary


def run_figures(run_dir: str | Path, *, title: str = "") -> list[Path]:
    """Learning curves (metrics.csv), the final confusion matrix (summary.json) and, when the run recorded them,
    the signal diagnostics (:func:`signal_figures`) of a finished run. Draws what is there. Returns the files written."""
    from warmstart.report.plots import confusion_matrix, learning_curves

    run_dir = Path(run_dir)
    written: list[Path] = []
    summary = read_summary(run_dir) if (run_dir / layout.SUMMARY).is_file() else {}
    history = read_history(run_dir)
    if history and summary:
        written.append(learning_curves({run_dir.name: history}, run_dir / layout.LEARNING_CURVES))
    if summary.get("confusion") and summary.get("classes"):
        written.append(confusion_matrix(summary["confusion"], summary["classes"], run_dir / layout.CONFUSION,
                                        title="validation, final epoch"))
    return written + signal_figures(run_dir, title=title)


def signal_figures(run_dir: str | Path, *, title: str = "") -> list[Path]:
    """The signal diagnostics' PNGs from signal.json, when the run recorded one (also for a run that failed
    part-way: its snapshots up to the failure are what explains it)."""
    run_dir = Path(run_dir)
    if not (run_dir / layout.SIGNAL_JSON).is_file():
        return []
    from warmstart.init.diagnostics import load_signal
    from warmstart.report.signal_plots import plot_signal

    snapshots = load_signal(run_dir)
    return plot_signal(snapshots, run_dir, title=title) if snapshots else []
