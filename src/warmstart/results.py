"""What the verbs return (``ws.train``, ``ws.compare``, ``ws.rank``, ``ws.symmetry``, ``ws.depth``): the outcome
of a run, in memory and on disk, in one shape: ``.run_dir``, ``.summary`` (summary.json), ``.table`` (a list of
rows, one dict per strategy, candidate or arm), ``.text`` (what the command prints) and ``_repr_html_``.

A :class:`TrainResult` holds the trained model itself (``.model``), where its run directory is
(``.run_dir``), the dict written to ``summary.json`` (``.summary``), one row per epoch (``.history``) and
``.predict(images)``; in Jupyter it shows a table and the learning curves inline (``_repr_html_``).
:func:`load_run` rebuilds one from a finished run directory.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine import layout
from warmstart.engine.run import read_history, read_summary
from warmstart.report.html import data_uri, inline

#: summary.json keys shown in the HTML table (in this order, when present)
SHOWN = ("strategy", "model", "weights", "epochs", "best_val_accuracy", "final_val_accuracy", "best_epoch", "train_seconds",
         "train_images", "val_images", "lr", "backbone_lr", "label_smoothing", "augment", "feature_cache", "device")


def _png(path: Path) -> str:
    """An <img> with the PNG embedded as base64 (the notebook keeps it when the run directory moves)."""
    return f'<img src="{data_uri(path)}" style="max-width:100%">' if path.is_file() else ""


def _cell(v: Any) -> str:
    return html.escape(f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v))


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _rows_html(rows: Sequence[dict[str, Any]]) -> str:
    """A ``.table`` (list of dicts) as an HTML table, one column per key of the first row."""
    if not rows:
        return ""
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


@dataclass
class TrainResult:
    """One finished training run: ``model`` (in memory, on the CPU), ``run_dir``, ``summary``, ``history``."""

    model: Any = field(repr=False)
    run_dir: Path
    summary: dict[str, Any] = field(repr=False)
    history: list[dict[str, Any]] = field(repr=False)
    weights: Any = field(repr=False, default=None)  # the run's Weights: preprocessing and class names

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or [])

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per epoch (metrics.csv): the same type as every result's ``table``."""
        return list(self.history)

    def predict(self, images: Any, *, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-k classes with probabilities per image, prepared exactly as the validation images were.

        ``images``: a file, a folder (its images, recursively), a PIL image, a 3 x H x W tensor, or a list of them.
        Returns ``[{"image", "predictions": [{"class", "probability"}]}]`` like ``warmstart predict --json``.
        """
        from warmstart.transfer.inference import check_top_k, image_paths, probabilities, top_k as top_k_of

        check_top_k(top_k)
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        expanded: list[Any] = []
        for item in items:
            expanded += image_paths([item]) if isinstance(item, (str, Path)) else [item]
        labels = [str(x) if isinstance(x, (str, Path)) else f"<{type(x).__name__} {i}>" for i, x in enumerate(expanded)]
        probs = probabilities(self.model, self.weights, expanded)
        return top_k_of(probs, self.classes or self.weights.categories, labels, top_k)

    def __repr__(self) -> str:
        s = self.summary
        return (f"TrainResult({s.get('strategy')} {s.get('model')}: final val accuracy {s.get('final_val_accuracy', 0):.4f}, "
                f"best {s.get('best_val_accuracy', 0):.4f}; run_dir={str(self.run_dir)!r})")

    def _repr_html_(self) -> str:
        rows = [(k, self.summary[k]) for k in SHOWN if k in self.summary]
        return (f"<div><b>warmstart train</b> — {html.escape(str(self.run_dir))}{_table(rows)}"
                f"{_png(self.run_dir / layout.LEARNING_CURVES)}</div>")


@dataclass
class _ReportedRun:
    """A finished command that writes a report: its run directory, summary.json's content and the report's path."""

    run_dir: Path
    summary: dict[str, Any] = field(repr=False)
    #: what the command prints (made by the verb that ran it: results sit below experiments, so they format nothing)
    text: str = field(default="", repr=False)

    @property
    def report(self) -> Path:
        return Path(self.summary.get("report", self.run_dir / layout.REPORT_HTML))

    @property
    def table(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _html(self, command: str, headline: str, figure: Path) -> str:
        return (f"<div><b>warmstart {command}</b> — {html.escape(headline)} — {html.escape(str(self.run_dir))}"
                f"{_rows_html(self.table)}{_png(figure)}</div>")


@dataclass
class CompareResult(_ReportedRun):
    """One finished ``compare``: ``summary`` (summary.json), ``reading`` (its written reading), ``table``
    (one row per strategy), ``curves`` (the learning-curves PNG), ``run_dir`` and the report's path."""

    @property
    def table(self) -> list[dict[str, Any]]:
        rows = []
        for spec in self.summary.get("ranking", []):
            p = self.summary["strategies"][spec]
            rows.append({"strategy": spec, "final_val_accuracy": p["final_val_accuracy"]["mean"],
                         "final_val_accuracy_std": p["final_val_accuracy"].get("std", 0.0), "seeds": p.get("seeds", 1),
                         "train_seconds": p["train_seconds"]["mean"]})
        return rows

    @property
    def reading(self) -> str:
        """The written reading of the comparison (summary.json's ``reading``: ranking, gaps against the noise)."""
        r = self.summary.get("reading")
        return "\n".join(r) if isinstance(r, list) else str(r or f"best: {self.summary.get('best')}")

    @property
    def curves(self) -> Path:
        """The learning curves PNG (mean over seeds per strategy)."""
        return self.run_dir / self.summary.get("figures", {}).get("learning_curves", layout.LEARNING_CURVES)

    def __repr__(self) -> str:
        return f"CompareResult(best={self.summary.get('best')!r}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        head = "<tr><th>strategy</th><th>final val accuracy</th><th>± std</th><th>seeds</th><th>s/run</th></tr>"
        body = "".join(f"<tr><td>{html.escape(r['strategy'])}</td><td>{r['final_val_accuracy']:.4f}</td>"
                       f"<td>{r['final_val_accuracy_std']:.4f}</td><td>{r['seeds']}</td><td>{r['train_seconds']:.1f}</td></tr>"
                       for r in self.table)
        return (f"<div><b>warmstart compare</b> — best: {html.escape(str(self.summary.get('best')))} — "
                f"{html.escape(str(self.run_dir))}<table>{head}{body}</table>"
                f"<p>{inline(self.reading).replace(chr(10), '<br>')}</p>{_png(self.curves)}</div>")


@dataclass
class RankResult(_ReportedRun):
    """One finished ``rank``: ``summary`` (summary.json: ``candidates`` best first, ``ranking``, ``best``,
    ``verdict``), ``table`` (the ranked table ``warmstart rank`` prints), ``chart`` (the scores PNG), ``run_dir``."""

    @property
    def ranking(self) -> list[str]:
        return list(self.summary.get("ranking", []))

    @property
    def best(self) -> str | None:
        return self.summary.get("best")

    @property
    def verdict(self) -> str:
        """Whether the top candidate wins beyond the scores' noise, in one sentence."""
        return str(self.summary.get("verdict", ""))

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per candidate, best first: its name, every score, the real accuracy with ``verify``, seconds
        (``.text`` is the table as ``warmstart rank`` prints it, with the verdict)."""
        rows = []
        for c in self.summary.get("candidates", []):
            row = {"candidate": c.get("name", c["weights"]), "weights": c["weights"], **c["scores"]}
            if "verify" in self.summary:
                row["val_accuracy"] = (c.get("verify") or {}).get("final_val_accuracy")
            rows.append({**row, "seconds": c.get("seconds")})
        return rows

    @property
    def chart(self) -> Path:
        """The bar chart of every score per candidate, in ranked order (and the real accuracy with ``verify``)."""
        return self.run_dir / layout.RANK_SCORES_PNG

    def __repr__(self) -> str:
        return f"RankResult(best={self.best!r}, by={self.summary.get('by')!r}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        return (f"<div><b>warmstart rank</b> — best: {html.escape(str(self.best))} — {html.escape(str(self.run_dir))}"
                f"<pre>{html.escape(self.text)}</pre>{_png(self.chart)}</div>")


#: the layers of custom_3_layer whose filters ``symmetry`` counts
SYMMETRY_LAYERS = ("conv1", "conv2", "conv3", "fc1")


@dataclass
class SymmetryResult(_ReportedRun):
    """One finished ``symmetry``: ``summary`` (summary.json), ``table`` (one row per arm: accuracy and, per layer,
    distinct filters, filters and rank), ``filters`` (conv1's filters before/after, PNG), ``run_dir``, ``text``."""

    @property
    def table(self) -> list[dict[str, Any]]:
        rows = []
        for arm, a in self.summary.get("arms", {}).items():
            row = {"arm": arm, "init": a.get("init"), "val_accuracy": a.get("val_accuracy"), "seed": a.get("seed")}
            for n in SYMMETRY_LAYERS:
                if n in a.get("layers", {}):
                    layer = a["layers"][n]
                    row.update({f"{n}_distinct": layer["distinct"], f"{n}_filters": layer["filters"], f"{n}_rank": layer["rank"]})
            rows.append(row)
        return rows

    @property
    def filters(self) -> Path:
        return self.run_dir / self.summary.get("figures", {}).get("conv1_filters", layout.CONV1_FILTERS)

    def __repr__(self) -> str:
        acc = {arm: round(a.get("val_accuracy", 0.0), 4) for arm, a in self.summary.get("arms", {}).items()}
        return f"SymmetryResult(val_accuracy={acc}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        return self._html("symmetry", f"{self.summary.get('epochs')} epoch(s)", self.filters)


@dataclass
class DepthResult(_ReportedRun):
    """One finished ``depth``: ``summary`` (summary.json), ``table`` (one row per init scheme: final train loss,
    val accuracy, the signal's std ratios at init), ``curves`` (loss curves PNG), ``reading``, ``run_dir``, ``text``."""

    @property
    def table(self) -> list[dict[str, Any]]:
        keys = ("final_train_loss", "val_accuracy", "act_std_ratio", "grad_std_ratio")
        return [{"arm": arm, "init": r.get("init", arm), **{k: r.get(k) for k in keys}}
                for arm, r in self.summary.get("arms", {}).items()]

    @property
    def reading(self) -> str:
        return str(self.summary.get("reading", ""))

    @property
    def curves(self) -> Path:
        return self.run_dir / layout.DEPTH_LOSS_PNG

    def __repr__(self) -> str:
        s = self.summary
        return f"DepthResult({s.get('depth')}-layer {s.get('arch')}, arms={list(s.get('arms', {}))}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        s = self.summary
        return self._html("depth", f"{s.get('depth')}-layer plain {str(s.get('arch')).upper()}", self.curves)


@dataclass
class PathResult(_ReportedRun):
    """One finished ``path``: ``summary`` (summary.json: ``points``, ``barrier``, ``reading``; for a compare folder
    ``paths``), ``table`` (one row per point, or per path of a compare folder), ``barrier``, ``reading``,
    ``figure`` (the loss and accuracy along the path, PNG), ``run_dir``, ``text``."""

    @property
    def table(self) -> list[dict[str, Any]]:
        if "paths" in self.summary:
            return [{"strategy": p["strategy"], "kind": p["kind"], "path": p["label"], **{f"barrier_{k}": v for k, v in p["barrier"].items()}}
                    for p in self.summary["paths"]]
        return [dict(p) for p in self.summary.get("points", [])]

    @property
    def barrier(self) -> dict[str, float] | None:
        """How far the path rises above the straight line between its ends (train loss, val loss, val error)."""
        return self.summary.get("barrier")

    @property
    def reading(self) -> str:
        r = self.summary.get("reading", "")
        return "\n".join(r) if isinstance(r, list) else str(r)

    @property
    def figure(self) -> Path:
        figures = self.summary.get("figures")
        return self.run_dir / (next(iter(figures.values())) if figures else layout.PATH_PNG)

    def __repr__(self) -> str:
        what = f"paths={len(self.summary['paths'])}" if "paths" in self.summary else f"barrier={self.barrier}"
        return f"PathResult({self.summary.get('kind')}, {what}, run_dir={str(self.run_dir)!r})"

    def _repr_html_(self) -> str:
        return self._html("path", str(self.summary.get("label", self.summary.get("kind"))), self.figure)


@dataclass
class DemoResult(_ReportedRun):
    """One finished ``demo``: ``summary`` (summary.json: seconds per part, each part's headline figures),
    ``table`` (one row per part), ``report`` (the HTML report stitching the parts), ``run_dir``."""

    @property
    def table(self) -> list[dict[str, Any]]:
        return [{"part": part, "seconds": seconds, "run_dir": str(self.run_dir / part)}
                for part, seconds in self.summary.get("parts", {}).items()]

    def __repr__(self) -> str:
        return f"DemoResult(seconds={self.summary.get('seconds')}, report={str(self.report)!r})"

    def _repr_html_(self) -> str:
        return (f"<div><b>warmstart demo</b> — {html.escape(str(self.run_dir))}{_rows_html(self.table)}"
                f"<p>report: <a href=\"{html.escape(str(self.report))}\">{html.escape(str(self.report))}</a></p></div>")


def load_run(run_dir: str | Path, device: str = "cpu") -> TrainResult:
    """A finished ``train`` run directory as a :class:`TrainResult` (model loaded from model.safetensors)."""
    from warmstart.transfer.inference import load_model

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    model, weights = load_model(run_dir, device)
    return TrainResult(model=model, run_dir=run_dir, summary=summary, history=read_history(run_dir), weights=weights)
