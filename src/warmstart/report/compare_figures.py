"""The figures of a ``compare`` report, drawn from what the arms left behind (given as data, not read here).

:func:`write_figures` writes every PNG into the run directory and records its file name in
``summary["figures"]`` (the report embeds those): learning curves (mean ± std over seeds), accuracy against
training time, the typical run of the best arm (confusion matrix, misclassified images), the first layer's
filters before and after, and -- when fine-tuning runs measured it -- how far each start travelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from warmstart.engine.layout import COMPARE_FIGURES
from warmstart.report.stats import mean_std

MISCLASSIFIED_SHOWN = 24


def typical_run(summary: dict[str, Any]) -> dict[str, Any]:
    """Of the best arm's seeds, the run whose final accuracy is nearest the arm's mean (a typical run, not the luckiest)."""
    best = summary["strategies"][summary["best"]]
    runs = [r for r in summary["runs"] if r["strategy"] == summary["best"]]
    return min(runs, key=lambda r: (abs(r["final_val_accuracy"] - best["final_val_accuracy"]["mean"]), r["seed"]))


def write_figures(run_dir: Path, summary: dict[str, Any], *, histories: Mapping[str, list[dict[str, Any]]],
                  typical: dict[str, Any], confusion: Sequence[Sequence[int]], predictions: dict[str, Any] | None,
                  val: Any, classes: Sequence[str], filters: Mapping[str, Any],
                  drift: Mapping[str, dict[str, Any]] | None = None) -> None:
    """Draw the report's figures into ``run_dir``; fills ``summary["figures"]`` and ``summary["best_run"]``.

    ``histories``: each run's metrics rows by its ``dir``; ``typical``: the run :func:`typical_run` picked,
    ``confusion`` and ``predictions`` (its predictions.json, or None) are that run's; ``val``: the validation
    images (``val[i] -> (image, label)``, with ``.labels``); ``filters``: ``"<arm>: start"`` / ``"<arm>: trained"``
    -> first-layer weights; ``drift``: arm -> its first seed's ``summary["drift"]`` (fine-tuning runs only).
    """
    from warmstart.report import plots

    per, order = summary["strategies"], list(summary["strategies"])
    figs = summary["figures"]
    means, spreads = {}, {}
    for spec in order:
        hists = [histories[r["dir"]] for r in summary["runs"] if r["strategy"] == spec]
        means[spec], spreads[spec] = mean_history(hists)
    plots.learning_curves(means, run_dir / COMPARE_FIGURES["learning_curves"],
                          spread=spreads if any(per[s]["seeds"] > 1 for s in order) else None)
    figs["learning_curves"] = COMPARE_FIGURES["learning_curves"]

    best = per[summary["best"]]
    one = 1.0 / max(1, summary["val_images"])
    lo = best["final_val_accuracy"]["mean"] - max(one, 2 * best["final_val_accuracy"]["std"])
    plots.tradeoff({s: (per[s]["train_seconds"]["mean"], per[s]["final_val_accuracy"]["mean"], per[s]["train_seconds"]["std"],
                        per[s]["final_val_accuracy"]["std"]) for s in order}, run_dir / COMPARE_FIGURES["tradeoff"],
                   xlabel="training time per run (s)", ylabel="final validation accuracy", percent=True,
                   band=(lo, best["final_val_accuracy"]["mean"], "within noise of the best"))
    figs["tradeoff"] = COMPARE_FIGURES["tradeoff"]

    summary["best_run"] = {"strategy": typical["strategy"], "seed": typical["seed"], "dir": typical["dir"]}
    plots.confusion_matrix(confusion, classes, run_dir / COMPARE_FIGURES["confusion"],
                           title=f"{typical['strategy']}, seed {typical['seed']}: validation, final epoch")
    figs["confusion"] = COMPARE_FIGURES["confusion"]
    preds = predictions["predictions"] if predictions else []
    wrong = [i for i, (p, y) in enumerate(zip(preds, val.labels)) if p != y]
    if predictions:
        summary["best_run"]["misclassified"] = len(wrong)
    if wrong:
        shown = wrong[:MISCLASSIFIED_SHOWN]
        plots.image_grid([val[i][0] for i in shown], [f"true: {classes[val.labels[i]]}\npred: {classes[preds[i]]}" for i in shown],
                         run_dir / COMPARE_FIGURES["misclassified"], cols=min(8, len(shown)))
        figs["misclassified"] = COMPARE_FIGURES["misclassified"]

    if filters:
        plots.filter_grid(dict(filters), run_dir / COMPARE_FIGURES["filters"], max_filters=16)
        figs["filters"] = COMPARE_FIGURES["filters"]
    if drift:
        from warmstart.report.drift_plot import drift_figure

        drift_figure(drift, run_dir / COMPARE_FIGURES["drift"])
        figs["drift"] = COMPARE_FIGURES["drift"]


def mean_history(hists: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-epoch mean and std over seeds (an epoch counts the seeds that reached it, e.g. after early stopping)."""
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    n = max((len(h) for h in hists), default=0)
    mean, spread = [], []
    for e in range(n):
        rows = [h[e] for h in hists if len(h) > e]
        stats = {k: mean_std([float(r[k]) for r in rows]) for k in keys}
        mean.append({"epoch": e + 1, **{k: v[0] for k, v in stats.items()}})
        spread.append({"epoch": e + 1, **{k: v[1] for k, v in stats.items()}})
    return mean, spread
