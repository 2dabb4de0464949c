"""The report sections of a ``compare`` run, from its summary.json alone (so ``warmstart report`` rebuilds them).

The main section (reading, table of arms, trade-off and learning-curve figures), the best arm up close
(confusion matrix, misclassified images), the first layer's filters before and after, and every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.report.compare_figures import MISCLASSIFIED_SHOWN
from warmstart.report.reading import one_image_pp, reading
from warmstart.report.text import epochs, pct, pm, seconds, share, sig


def title(summary: dict[str, Any]) -> str:
    return f"{' vs '.join(summary['strategies'])} on {summary.get('data_name') or 'the data'}"


def subtitle(summary: dict[str, Any]) -> str:
    seeds = summary.get("seeds", [])
    return (f"warmstart compare · `{summary.get('model')}` · {summary.get('epochs')} epochs × {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
            f" · {summary.get('device', '')}")


def compare_sections(run_dir: str | Path, s: dict[str, Any], command: str) -> list:
    """The sections of the compare run in ``run_dir`` whose summary is ``s``; ``command`` is its command line."""
    run_dir = Path(run_dir)
    figs, anchor = s.get("figures", {}), f"compare-{run_dir.name}"
    out = [main_section(run_dir, s, command, anchor)]
    if s.get("best_run"):
        out.append(best_run_section(run_dir, s, anchor))
    if "filters" in figs:
        out.append(filters_section(run_dir, s, anchor))
    if s.get("grid"):
        out.append(grid_section(s, anchor))
    if "drift" in figs:
        out.append(drift_section(run_dir, s, anchor))
    out.append(runs_section(s, anchor))
    return out


def several_seeds(s: dict[str, Any]) -> bool:
    """Whether some strategy ran with more than one seed (then tables and figures show mean ± std)."""
    return any(p["seeds"] > 1 for p in s["strategies"].values())


def main_section(run_dir: Path, s: dict[str, Any], command: str, anchor: str):
    """The reading, the setup, the table of arms, the best arm's highlights, the trade-off and learning-curve figures."""
    from warmstart.report.html import Figure, Section

    per, figs, multi = s["strategies"], s.get("figures", {}), several_seeds(s)
    b = per[s["best"]]
    highlights = [("best strategy", f"**{s['best']}**"), ("final val accuracy", pm(b["final_val_accuracy"]["mean"],
                                                                                   b["final_val_accuracy"]["std"], b["seeds"])),
                  ("train time / run", seconds(b["train_seconds"]["mean"])),
                  ("runs", f"{len(s['runs'])} ({len(per)} × {len(s.get('seeds', [])) or 1})")]
    figures = []
    if "tradeoff" in figs:
        figures.append(Figure(run_dir / figs["tradeoff"], "Final validation accuracy against training time per run"
                              + (" (error bars: std over seeds)" if multi else "") + "; grey: within noise of the best "
                              "(one image, or 2 × its seed std)."))
    if "learning_curves" in figs:
        figures.append(Figure(run_dir / figs["learning_curves"], "Loss and accuracy per epoch, per strategy (solid: validation, "
                              "dashed: training" + ("; lines: mean over seeds, shading: ± std" if multi else "") + ").",
                              wide=True))
    return Section(f"Compare: {title(s)}", reading=reading(s), paragraphs=[setup_text(run_dir, s)], tables=[arms_table(s)],
                   figures=figures, highlights=highlights, command=command, anchor=anchor)


def arms_table(s: dict[str, Any]):
    """One row per strategy: final and best accuracy, best epoch, train time, throughput, trainable parameters."""
    from warmstart.report.html import Table

    per, n_val, best, multi = s["strategies"], s["val_images"], s["best"], several_seeds(s)
    rows, order = [], list(per)
    for spec in order:
        p = per[spec]
        n = p["seeds"]
        f, bv, ts = p["final_val_accuracy"], p["best_val_accuracy"], p["train_seconds"]
        tp, tot = p["trainable_params"], p["total_params"]
        rows.append([spec, pm(f["mean"], f["std"], n), pm(bv["mean"], bv["std"], n), epochs(p["best_epochs"]),
                     pm(ts["mean"], ts["std"], n, scale=1.0, unit=" s"), f"{p['train_images_per_second']['mean']:,.0f}",
                     f"{tp:,} ({share(tp, tot)})"])
    cols = ["strategy", "final val accuracy", "best val accuracy", "best epoch" + (" (per seed)" if multi else ""),
            "train time / run", "images/s", "trainable params"]
    fc = [spec for spec in order if per[spec].get("feature_seconds")]
    caption = (f"{'Mean ± std over ' + str(per[best]['seeds']) + ' seeds' if multi else 'One seed'}; {n_val} validation images "
               f"(one image = {one_image_pp(n_val):.2f} pp). Final = the weights each run keeps; best = its best epoch, "
               "chosen on the same validation images (optimistic). Train time includes computing frozen features"
               + (f" ({', '.join(fc)}: computed once, shared by every seed)" if fc and multi else "") + ".")
    return Table(cols, rows, caption=caption, highlight=[order.index(best)])


def setup_text(run_dir: Path, s: dict[str, Any]) -> str:
    """The paragraph saying what every arm shares: model, epochs, data, preprocessing, optimizer, seeds, augmentation."""
    aug = s.get("augment", {})
    return (f"Every strategy trains `{s.get('model')}` for {s.get('epochs')} epochs on the same {s.get('train_images')} training "
            f"images with the same preprocessing, optimizer ({s.get('optimizer')}, "
            + (f"lr {s['lr']:g} for the head" if s.get("lr") else "train's default learning rates") + ") and "
            f"batch size ({s.get('batch_size')}); pretrained weights: `{s.get('weights')}`. Seeds: "
            f"{', '.join(map(str, s.get('seeds', [])))} (initialisation, batch order, augmentation; the train/val split is "
            f"fixed). Augmentation (random crops + flips): "
            + (("on" if any(aug.values()) else "off") + " for every strategy" if len(set(aug.values())) == 1 else
               ", ".join(f"{k} {'on' if v else 'off'}" for k, v in aug.items()))
            + smoothing_text(s.get("label_smoothing") or {})
            + f". Data: {s.get('data')}. Run directory: `{run_dir.name}`.")


def best_run_section(run_dir: Path, s: dict[str, Any], anchor: str):
    """The best strategy's typical run up close: its confusion matrix and misclassified images."""
    from warmstart.report.html import Figure, Section

    br, figs = s["best_run"], s.get("figures", {})
    bfigs, paras = [], []
    if "confusion" in figs:
        bfigs.append(Figure(run_dir / figs["confusion"], f"Confusion matrix of {br.get('strategy')} (seed {br.get('seed')}) on the "
                            "validation images, final epoch: rows are the true classes."))
    if "misclassified" in figs:
        k = br.get("misclassified", 0)
        bfigs.append(Figure(run_dir / figs["misclassified"], f"Misclassified validation images ({min(k, MISCLASSIFIED_SHOWN)} of {k} "
                            "shown), as the network sees them (after resizing and cropping), with true and predicted labels.",
                            wide=True))
    else:
        paras.append(f"{br.get('strategy')} (seed {br.get('seed')}) classifies every validation image correctly.")
    paras.insert(0, f"The run shown is {br.get('strategy')} with seed {br.get('seed')}: of the best strategy's seeds, the one "
                    f"whose final accuracy is nearest its mean (a typical run, not the luckiest). Its directory: `{br.get('dir')}`.")
    return Section(f"The best strategy up close: {br.get('strategy')}", paragraphs=paras, figures=bfigs, level=3,
                   anchor=anchor + "-best")


def filters_section(run_dir: Path, s: dict[str, Any], anchor: str):
    """The first layer's filters before and after training, and how far each strategy moved them."""
    from warmstart.report.html import Figure, Section

    changes = {k: p.get("conv1_change") for k, p in s["strategies"].items() if p.get("conv1_change") is not None}
    frozen = [k for k, c in changes.items() if c == 0]
    moved = [f"{k} {sig(100 * c)} %" for k, c in changes.items() if c]
    text = ("Relative change of the first layer's weights, ‖after − before‖ / ‖before‖: " + ", ".join(moved) + ". "
            if moved else "")
    if frozen:
        text += (f"{' and '.join(frozen)} keep{'s' if len(frozen) == 1 else ''} the first layer frozen: its filters after "
                 "training are identical to the pretrained ones (change exactly 0), so the two rows are the same picture.")
    return Section("First-layer filters, before and after training", paragraphs=[text] if text else [],
                   figures=[Figure(run_dir / s["figures"]["filters"], "The first convolution's filters at the start (pretrained, "
                                   "or random for scratch) and after training, first seed of each strategy; each filter "
                                   "is scaled to its own range, so shapes compare, not magnitudes.")],
                   level=3, anchor=anchor + "-filters")


def runs_section(s: dict[str, Any], anchor: str):
    """Every run of the comparison, one row each, with its directory."""
    from warmstart.report.html import Section, Table

    run_rows = [[r["strategy"], r["seed"], pct(r["final_val_accuracy"]), pct(r["best_val_accuracy"]), r.get("best_epoch", ""),
                 seconds(r["train_seconds"]), f"`{r['dir']}`"] for r in s["runs"]]
    return Section("Every run", tables=[Table(["strategy", "seed", "final val accuracy", "best val accuracy", "best epoch",
                                               "train time", "directory"], run_rows,
                                              caption="Each run's directory is a complete train run (metrics.csv, "
                                                      "summary.json, model.safetensors usable as --weights).")],
                   level=3, anchor=anchor + "-runs")


def grid_section(s: dict[str, Any], anchor: str):
    """Starts x strategies: mean ± std of the final validation accuracy, and each strategy's paired tests between starts."""
    from warmstart.report.html import Section, Table

    g, n_val = s["grid"], s["val_images"]
    rows = []
    for r in g["rows"]:
        cells = g["cells"].get(r, {})
        rows.append([r if r != "none" else "none (random init)"]
                    + [pm(c["final_val_accuracy"]["mean"], c["final_val_accuracy"]["std"], c["seeds"]) if (c := cells.get(col)) else "—"
                       for col in g["columns"]])
    starts = {st["name"]: st for st in s.get("starts", [])}
    where = "; ".join(f"{k}: `{v.get('weights')}`" for k, v in starts.items())
    grid_table = Table(["start"] + g["columns"], rows,
                       caption=f"Final validation accuracy, {'mean ± std over seeds' if len(s.get('seeds', [])) > 1 else 'one seed'}; "
                               f"every start trains under the same data, seeds and budget. Starts: {where}."
                               + (" scratch ignores the start: one row, random init." if "none" in g["rows"] else ""))
    test_rows = [[col, b, r, p["seed"], p["best_only"], p["other_only"], f"{p['p']:.2g}"]
                 for col, against in (g.get("paired") or {}).items() for b in [g["best_start"][col]]
                 for r, ps in against.items() for p in ps]
    tables = [grid_table]
    if test_rows:
        tables.append(Table(["strategy", "best start", "other start", "seed", "best alone right", "other alone right", "p"],
                            test_rows, caption=f"Paired on the same {n_val} validation images: images only one of the two "
                                               "gets right, and the exact McNemar test of that split."))
    return Section("Starts × strategies", tables=tables, level=3, anchor=anchor + "-grid")


def drift_section(run_dir: Path, s: dict[str, Any], anchor: str):
    """How far each fine-tuning arm travelled from its start: the figure, and CKA of the head's input per arm."""
    from warmstart.report.html import Figure, Section, Table

    per = s["strategies"]
    from warmstart.report.drift_plot import cka_text

    rows = [[k, cka_text(p["cka"]), sig(100 * max((v for g, v in p["drift"].items() if g != "head"), default=0.0)) + " %",
             sig(100 * p["drift"]["head"]) + " %" if p["drift"].get("head") is not None else "—"]
            for k, p in per.items() if p.get("cka") is not None and p.get("drift")]
    text = ("Fine-tuning starts the network in a region good for another problem; how far it moves from there is measured "
            "per layer group as ‖w − w₀‖ / ‖w₀‖ after every epoch, and as linear CKA (Kornblith et al. 2019) between the "
            "features entering the head before and after training, on the validation images (1: the same representation "
            "up to rotation and scale).")
    tables = [Table(["arm", "similarity of the head's input", "largest pretrained-group move", "head move"], rows,
                    caption="Mean over seeds. Frozen groups move exactly 0.")] if rows else []
    return Section("How far the start travelled", paragraphs=[text], tables=tables,
                   figures=[Figure(run_dir / s["figures"]["drift"], "Distance from the start per layer group after training "
                                   "(left; frozen groups, at 0, not drawn) and per epoch (right), first seed of each "
                                   "fine-tuning arm; the legend gives each arm's CKA.", wide=True)],
                   level=3, anchor=anchor + "-drift")


def smoothing_text(by_strategy: dict[str, float | None]) -> str:
    """The setup sentence's label smoothing part: one value for all, or each strategy's (the recipe: 0.1 from a probe head)."""
    known = {k: v for k, v in by_strategy.items() if v is not None}
    if not known:
        return ""
    if len(set(known.values())) == 1:
        return f". Label smoothing: {next(iter(known.values())):g} for every strategy"
    return ". Label smoothing: " + ", ".join(f"{k} {v:g}" for k, v in known.items())
