"""`warmstart path RUN_A [RUN_B]`: where did fine-tuning end — in the start's basin or another?

Loss and accuracy on the training and validation images along the straight line in weight space
(:mod:`warmstart.transfer.path`) between

* RUN_A's start and its end (RUN_A alone): ``start.safetensors`` (the model as training began: the
  pretrained layers with the linear probe's head, or the seeded random init) and ``model.safetensors``;
* the ends of two runs (RUN_A RUN_B), e.g. two seeds of one strategy: one basin or two (Neyshabur, Sedghi &
  Zhang, NeurIPS 2020: fine-tuned runs from one pretrained start land in one basin, runs from random starts
  in different ones);
* every such pair of a compare run (a ``compare`` OUT folder alone): per strategy with two seeds or more,
  the path between the first two seeds' ends, and each run's start -> end. The results go to OUT/paths/
  and the compare report gets a section.

The images are RUN_A's (its data options and seed, read from its config.json), prepared as its validation
images (centre crops); BatchNorm statistics are recomputed at every point on the training images (see
:mod:`warmstart.transfer.path` for why and for ``bn="interpolate"``). ``max_images`` evaluates at most that
many images per split (a fixed random choice), for speed.

The output folder::

    config.json  summary.json  path.csv  path.png     (compare: OUT/paths/, one path_<strategy>.png each)
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine import layout
from warmstart.engine.console import log
from warmstart.engine.run import RunSpec, read_config, read_summary
from warmstart.options import OPTIONS, command_options
from warmstart.options import check as check_options
from warmstart.errors import UserError
from warmstart.report.path_sections import barrier_text, reading, reading_lines, sections  # noqa: F401
from warmstart.transfer.path import BN_MODES, DEFAULT_POINTS, check_compatible, check_points, path_ts

#: images per batch of the evaluation passes (declared with the options of `warmstart path`)
BATCH_SIZE = command_options("path")["batch_size"].default

PATH_PNG, PATH_CSV, PATHS = layout.PATH_PNG, layout.PATH_CSV, layout.PATHS


@dataclass
class End:
    """One end of a path: a run directory and which of its networks (``start`` or ``end``)."""

    run: Path
    which: str

    @property
    def file(self) -> Path:
        return self.run / (layout.START if self.which == "start" else layout.MODEL)

    @property
    def label(self) -> str:
        return f"{self.run.name} ({self.which})"


def _run_dir(run: str | Path, what: str) -> Path:
    p = Path(run).expanduser()
    if not p.is_dir():
        raise UserError(f"{what} {p}: no such run directory; pass the --out folder of a 'warmstart train' run or a compare arm")
    read_config(p)  # a run directory at all
    return p


def end_of(run: Path, which: str) -> End:
    """RUN's ``start`` or ``end`` network, checked to exist."""
    e = End(run, which)
    if not e.file.is_file():
        if which == "start":
            raise UserError(f"{run} has no {layout.START}: it was trained before warmstart saved a run's start, or is not a "
                            f"train run; retrain it to get one, or give two runs (warmstart path RUN_A RUN_B)")
        hint = (f"finish it with --resume {run}" if (run / layout.CHECKPOINT).is_file()
                else "pass the --out folder of a finished 'warmstart train' run or compare arm")
        raise UserError(f"{run} has no {layout.MODEL}: {hint}")
    return e


def data_of(run: Path) -> tuple[Any, int]:
    """The DataSpec and seed RUN trained with (a train run's config.json, or a compare arm's options)."""
    from warmstart.data.spec import DataSpec

    config = read_config(run)
    if config.get("data_spec"):
        spec = DataSpec.from_dict(config["data_spec"])
    elif (config.get("options") or {}).get("data"):
        spec = DataSpec.from_options(config["options"])
    else:
        raise UserError(f"{run}/config.json does not say which data it trained on; pass a 'warmstart train' run or a compare arm")
    if "arm" in config and config.get("seeds"):  # a compare arm: compare splits its data once, with its first seed
        seed = config["seeds"][0]
    else:
        seed = (config.get("train_config") or {}).get("seed", (config.get("options") or {}).get("seed", 0))
    return spec, int(seed or 0)


def _loaded(ends: Sequence[End]):
    """Weights (metadata) and state dicts of the ends, checked to be one architecture with the same classes."""
    from warmstart.transfer.weights import load_tensors, resolve_weights

    weights = [resolve_weights(str(e.file)) for e in ends]
    states = [load_tensors(e.file) for e in ends]
    a, b = ends[0], ends[-1]
    wa, wb = weights[0], weights[-1]
    if wa.arch != wb.arch:
        raise UserError(f"{a.label} is a {wa.arch} and {b.label} a {wb.arch}: different architectures; a linear path "
                        "needs two networks of one architecture (the same --model)")
    ca, cb = list(wa.categories or []), list(wb.categories or [])
    if ca and cb and ca != cb:
        raise UserError(f"{a.label} and {b.label} classify different classes ({', '.join(ca[:4])}... vs "
                        f"{', '.join(cb[:4])}...); a linear path needs two runs on the same data")
    check_compatible(states[0], states[-1], names=(a.label, b.label))
    return weights, states


def path_data(run: Path, weights, *, max_images: int | None = None, batch_size: int = BATCH_SIZE):
    """RUN's training and validation images, prepared as its validation images, for :func:`linear_path`."""
    from warmstart.data import ImageDataset, Normalizer
    from warmstart.transfer.path import PathData

    spec, seed = data_of(run)
    splits = spec.load(seed=seed)
    sets = []
    for source in (splits.train, splits.val):
        if max_images is not None and len(source) > max_images:
            source = source.select(sorted(random.Random(seed).sample(range(len(source)), max_images)))
        sets.append(ImageDataset(source, weights.preprocess, train=source is splits.train, skip_bad_images=spec.skip_bad_images))
    log(f"path on {splits.source}: {len(sets[0])} training and {len(sets[1])} validation images")
    return PathData(sets[0], sets[1], splits.num_classes, Normalizer.of(weights.preprocess), batch_size)


def _one(a: End, b: End, data, weights, states, *, ts, bn: str, device) -> dict[str, Any]:
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.path import linear_path

    model = create_model(weights[0].arch or "", None, weights[0])
    log(f"path {a.label} -> {b.label}: {len(ts)} points")
    res = linear_path(model, states[0], states[-1], data, ts=ts, bn=bn, device=device, names=(a.label, b.label),
                      progress=lambda i, r: log(f"  t = {r['t']:+.2f}: train loss {r['train_loss']:.4f}, "
                                                f"val accuracy {r.get('val_accuracy', float('nan')):.3f}"))
    return {"a": {"run": str(a.run), "which": a.which}, "b": {"run": str(b.run), "which": b.which},
            "label": f"{a.label} -> {b.label}", **res}


def path(run_a: str | Path, run_b: str | Path | None = None, *, points: int = DEFAULT_POINTS, extend: bool = False,
         bn: str = BN_MODES[0], max_images: int | None = None, batch_size: int = BATCH_SIZE,
         device: str = OPTIONS["device"].default, run: RunSpec | None = None) -> dict[str, Any]:
    """The linear path of RUN_A's start -> end, or RUN_A's end -> RUN_B's end (or, for a compare folder, all of
    them: :func:`compare_paths`); writes the folder ``run`` names (a :class:`~warmstart.engine.run.RunSpec`;
    default ``runs/path-<time>``) and returns summary.json's content plus ``out``, the folder.

    Everything (runs, architectures, classes, ``points`` >= 2, ``bn``, ``out``) is checked before anything is written.
    """
    from warmstart.engine.loop import resolve_device

    check_points(points)
    check_options({"bn": bn, "max_images": max_images, "batch_size": batch_size}, "path")
    a_dir = _run_dir(run_a, "RUN_A")
    config = read_config(a_dir)
    if config.get("command") == "compare" and "arm" not in config:
        if run_b is not None:
            raise UserError(f"{a_dir} is a compare folder: give it alone (its paths are computed per strategy), "
                            f"or two of its arm folders (e.g. {a_dir}/finetune-all-seed0 {a_dir}/finetune-all-seed1)")
        if run is not None and run.out is not None:
            raise UserError(f"--out {run.out}: the paths of a compare folder are written into it ({a_dir / PATHS}), "
                            "where its report finds them; drop --out")
        return compare_paths(a_dir, points=points, extend=extend, bn=bn, max_images=max_images, batch_size=batch_size,
                             device=device, run=run)
    ends = (end_of(a_dir, "start"), end_of(a_dir, "end")) if run_b is None else \
        (end_of(a_dir, "end"), end_of(_run_dir(run_b, "RUN_B"), "end"))
    weights, states = _loaded(ends)
    dev = resolve_device(device)
    run_spec = run or RunSpec()
    run_spec.check()
    ts = path_ts(points, extend)
    data = path_data(a_dir, weights[0], max_images=max_images, batch_size=batch_size)
    run = run_spec.open("path", {}, options={"run_a": str(a_dir), "run_b": str(run_b) if run_b else None, "points": points,
                                             "extend": extend, "bn": bn, "max_images": max_images, "batch_size": batch_size,
                                             "device": device})
    res = _one(ends[0], ends[1], data, weights, states, ts=ts, bn=bn, device=dev)
    summary = {"kind": "start-end" if run_b is None else "end-end", **res, "train_images": len(data.train),
               "val_images": len(data.val) if data.val is not None else 0, "device": str(dev)}
    _write_csv(run.dir / PATH_CSV, res["points"])
    from warmstart.report.plots import plot_paths

    plot_paths({res["label"]: res}, run.dir / PATH_PNG, title=f"linear path: {res['label']}",
               ends=("start", "end") if run_b is None else ("first network", "second"))
    summary["reading"] = reading(summary)
    run.write_summary(summary)
    run.close()
    log(f"path written to {run.dir}")
    return {**summary, "out": str(run.dir)}


def compare_paths(compare_dir: Path, *, points: int = DEFAULT_POINTS, extend: bool = False, bn: str = BN_MODES[0],
                  max_images: int | None = None, batch_size: int = BATCH_SIZE,
                  device: str = OPTIONS["device"].default, run: RunSpec | None = None) -> dict[str, Any]:
    """The paths of a compare run, per strategy: between the first two seeds' ends (two seeds or more), and each
    seed's start -> end. Written to COMPARE/paths/; the compare report (report.html, report.md) is rebuilt with
    their section. Returns paths/summary.json's content."""
    from warmstart.engine.loop import resolve_device

    s = read_summary(compare_dir)
    by: dict[str, list[dict[str, Any]]] = {}
    for r in s.get("runs", []):
        by.setdefault(r["strategy"], []).append(r)
    plan: list[tuple[str, str, End, End]] = []
    for strategy, runs in by.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        if len(runs) >= 2:
            plan.append((strategy, "seeds", end_of(compare_dir / runs[0]["dir"], "end"), end_of(compare_dir / runs[1]["dir"], "end")))
        for r in runs:
            plan.append((strategy, "start-end", end_of(compare_dir / r["dir"], "start"), end_of(compare_dir / r["dir"], "end")))
    if not plan:
        raise UserError(f"{compare_dir}: the compare run lists no finished arms; finish it with --resume {compare_dir}")
    loaded = [_loaded((a, b)) for _, _, a, b in plan]  # every pair checked before anything is written
    dev = resolve_device(device)
    run_spec = replace(run or RunSpec(), out=str(compare_dir / PATHS), overwrite=True, resume=False)
    run_spec.check()
    ts = path_ts(points, extend)
    # the images prepared as each start's own validation images: a grid of starts (--weights W1,W2) may differ
    datas: dict[str, Any] = {}

    def data_for(a: End, weights) -> Any:
        key = json.dumps(weights[0].preprocess.to_dict(), sort_keys=True)
        if key not in datas:
            datas[key] = path_data(a.run, weights[0], max_images=max_images, batch_size=batch_size)
        return datas[key]

    data = data_for(plan[0][2], loaded[0][0])
    run = run_spec.open("path", {}, options={"compare": str(compare_dir), "points": points, "extend": extend, "bn": bn,
                                             "max_images": max_images, "batch_size": batch_size, "device": device})
    results = []
    for (strategy, kind, a, b), (weights, states) in zip(plan, loaded):
        res = _one(a, b, data_for(a, weights), weights, states, ts=ts, bn=bn, device=dev)
        results.append({"strategy": strategy, "kind": kind, **res})
    from warmstart.report.plots import plot_paths

    figures = {}
    for strategy in by:
        mine = {(r["label"] if r["kind"] == "start-end" else f"between seeds: {r['label']}"): r
                for r in results if r["strategy"] == strategy}
        name = f"path_{strategy.replace(':', '-')}.png"
        plot_paths(mine, run.dir / name, title=f"{strategy}: linear paths")
        figures[strategy] = name
    summary = {"kind": "compare", "compare": str(compare_dir), "paths": results, "figures": figures,
               "train_images": len(data.train), "val_images": len(data.val) if data.val is not None else 0, "device": str(dev)}
    summary["reading"] = reading(summary)
    run.write_summary(summary)
    run.close()
    _rebuild_compare_report(compare_dir)
    log(f"paths written to {run.dir}; compare report rebuilt")
    return {**summary, "out": str(run.dir)}


def _rebuild_compare_report(compare_dir: Path) -> None:
    from warmstart.experiments.compare import sections
    from warmstart.report.compare_sections import subtitle, title
    from warmstart.report.html import write_report

    s = read_summary(compare_dir)
    write_report(compare_dir, title(s), sections(compare_dir), subtitle=subtitle(s))


def _write_csv(path: Path, points: Sequence[dict[str, Any]]) -> None:
    from warmstart.engine.io import write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(points[0]))
    w.writeheader()
    w.writerows(points)
    write_text(path, buf.getvalue(), "path")


# ------------------------------------------------------------------------------------------ reading and report
def format_table(result: dict[str, Any]) -> str:
    """The points of one path as aligned text, then its barrier (what the command prints)."""
    cols = ["t", "train loss", "train acc", "val loss", "val acc"]
    rows = [[f"{p['t']:+.2f}", f"{p['train_loss']:.4f}", f"{p['train_accuracy']:.3f}",
             f"{p.get('val_loss', float('nan')):.4f}", f"{p.get('val_accuracy', float('nan')):.3f}"] for p in result["points"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([result["label"], *lines, "Barrier (largest loss above the line between the ends, 0 <= t <= 1): "
                      + barrier_text(result) + "."])


def report_text(summary: dict[str, Any]) -> str:
    if summary.get("kind") != "compare":
        return format_table(summary)
    return "\n\n".join([*(format_table({**r, "label": f"[{r['strategy']}] {r['label']}"}) for r in summary["paths"]),
                        f"compare report rebuilt: {Path(summary['compare']) / layout.REPORT_HTML}"])
