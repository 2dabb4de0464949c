"""`warmstart report`: one HTML report from existing run directories (e.g. runs made on different machines).

Each run directory's ``config.json`` names the command that made it; :data:`SECTIONS` maps the command to
the module whose ``sections(run_dir)`` rebuilds that run's part of the report. Modules are imported only
when a run needs them, so an experiment that is not installed only matters when one of its runs is given.
With several ``train``/``compare`` runs, a combined table puts them side by side.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

from warmstart.engine.run import read_config, read_summary
from warmstart.errors import UserError
from warmstart.experiments.runs import data_name, pm, seconds

#: command name -> module with ``sections(run_dir) -> list[Section]``
SECTIONS: dict[str, str] = {
    "train": "warmstart.experiments.train",
    "compare": "warmstart.experiments.compare",
    "symmetry": "warmstart.experiments.symmetry",
    "depth": "warmstart.experiments.depth",
    "rank": "warmstart.experiments.rank",
    "path": "warmstart.experiments.path",
}


def sections_for(command: str) -> Callable[[Path], list]:
    """The ``sections`` function of the experiment behind ``command``."""
    if command not in SECTIONS:
        raise UserError(f"runs made by 'warmstart {command}' have no report section; "
                        f"warmstart report knows runs of: {', '.join(sorted(SECTIONS))}")
    try:
        module = importlib.import_module(SECTIONS[command])
    except ModuleNotFoundError as e:
        if e.name and SECTIONS[command].startswith(e.name):
            raise UserError(f"this warmstart has no '{command}' experiment, so it cannot render that run; "
                            "use the warmstart version that made it") from None
        raise
    fn = getattr(module, "sections", None)
    if fn is None:
        raise UserError(f"the '{command}' experiment cannot rebuild a report section (it has no sections())")
    return fn


def report(run_dirs: Sequence[str | Path], *, out: str | Path, title: str | None = None) -> Path:
    """Rebuild one report (``out/report.html`` + ``report.md``) from run directories; return the HTML's path."""
    from warmstart.report.html import Section, Table, write_report

    if not run_dirs:
        raise UserError("give at least one run directory (the --out folder of an earlier warmstart command)")
    dirs = list(dict.fromkeys(Path(d) for d in run_dirs))
    found: list[tuple[Path, dict[str, Any]]] = []
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"{d} is not a folder; pass the --out folder of an earlier warmstart command")
        found.append((d, read_config(d)))
    renderers = [(d, c, sections_for(str(c.get("command")))) for d, c in found]  # every run checked before any output

    parts: list = []
    rows = [row for d, c in found for row in _rows(d, c)]
    if len(rows) > 1 and sum(c.get("command") in ("train", "compare") for _, c in found) > 1:
        datas = sorted({r["data"] for r in rows})
        note = ("" if len(datas) == 1 else
                " These runs used different data (" + "; ".join(datas) + "): their accuracies are not comparable.")
        cols = ["run", "data", "model", "strategy", "seeds", "final val accuracy", "best val accuracy", "train time / run"]
        best = max(range(len(rows)), key=lambda i: rows[i]["key"])
        parts.append(Section("All runs side by side", tables=[Table(cols, [r["row"] for r in rows],
                                                                    highlight=[best] if len(datas) == 1 else [],
                                                                    caption="One row per train run and per strategy of a "
                                                                            "compare run; mean ± std over seeds." + note)],
                             anchor="all-runs"))
    for d, _, fn in renderers:
        parts.extend(fn(d))
    out = Path(out)
    names = ", ".join(d.name for d in dirs)
    return write_report(out, title or (f"warmstart report: {names}" if len(dirs) > 1 else f"warmstart report: {dirs[0].name}"),
                        parts, subtitle=f"rebuilt from {len(dirs)} run director{'ies' if len(dirs) > 1 else 'y'}")


def _rows(d: Path, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the combined table for one run: ``row`` (the cells), ``data`` (what makes runs comparable), ``key``
    (mean final accuracy)."""
    cmd = config.get("command")
    if cmd not in ("train", "compare"):
        return []
    s = read_summary(d)
    if cmd == "compare" and "arm" not in config:
        out = []
        for spec, p in s["strategies"].items():
            f, b, t = p["final_val_accuracy"], p["best_val_accuracy"], p["train_seconds"]
            out.append({"row": [d.name, data_name(s.get("data", "")), s.get("model", ""), spec, p["seeds"],
                                pm(f["mean"], f["std"], p["seeds"]), pm(b["mean"], b["std"], p["seeds"]), seconds(t["mean"])],
                        "data": s.get("data", ""), "key": f["mean"]})
        return out
    f = s["final_val_accuracy"]
    return [{"row": [d.name, data_name(s.get("data", "")), s.get("model", ""), s.get("strategy", ""), 1, pm(f, 0, 1),
                     pm(s["best_val_accuracy"], 0, 1), seconds(float(s.get("train_seconds", 0)))],
             "data": s.get("data", ""), "key": f}]
