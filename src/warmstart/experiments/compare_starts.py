"""Several starts in one ``compare``: ``--weights W1,W2,...`` runs every start x strategy on the same data.

Each start is a :class:`Start`: a name for its arms (``<name>/<strategy>``: the weights file's stem, or its
folder's name for a run's ``model.safetensors``) and a :class:`~warmstart.transfer.recipe.Prepared` of its
own. Starts whose preprocessing crops and resizes alike share one decoded-image cache (only the weights and
the normalisation differ, and normalisation is applied on the fly); their feature caches are separate, keyed by
the weights' fingerprint. A start that crops differently gets its own decoded copy of the same split.
``scratch`` ignores the start: it runs once per seed (arm ``scratch``, the grid's row ``none``), with the first
start's preprocessing. With one ``--weights`` nothing changes: the arms keep their plain strategy names.

:func:`grid` arranges the aggregated arms as starts x strategies, and :func:`grid_paired` tests, strategy by
strategy, the best start against each other one on the same validation images (exact McNemar, seed by seed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine.console import log
from warmstart.errors import UserError
from warmstart.data.spec import DataSpec
from warmstart.experiments.compare_parse import parse_weights  # noqa: F401  (compare's import site)
from warmstart.transfer.recipe import Prepared, prepare
from warmstart.transfer.strategies import Strategy
from warmstart.transfer.weights import resolve_weights

SCRATCH_ROW = "none"
#: weights file stems that say nothing about the start: such a start is named after its folder
GENERIC_STEMS = ("model", "best", "checkpoint", "weights")


@dataclass
class Start:
    name: str          # the arms' prefix; "" when the compare has one start
    spec: str          # the --weights value it came from
    prepared: Prepared


def start_name(spec: str) -> str:
    """The name of a start in arm names and the grid: a file's stem (its folder's name for ``model.safetensors``)."""
    low = spec.strip().lower()
    if low in ("imagenet", "none"):
        return low
    p = Path(spec)
    return (p.parent.name if p.stem in GENERIC_STEMS and p.parent.name else p.stem).replace(":", "-").replace("/", "-")


def absolute(specs: Sequence[str]) -> str:
    """The --weights value to record in config.json: existing paths made absolute, so --resume works from anywhere."""
    return ",".join(os.path.abspath(s) if os.path.exists(s) else s for s in specs)


def prepare_starts(data: DataSpec, specs: Sequence[str], strats: Sequence[Strategy], *, arch: str, augment: bool,
                   seed: int = 0) -> list[Start]:
    """Resolve every start and prepare its data; every check runs before anything is written.

    ``augment``: decode the augmented view too (some arm augments); ``seed``: the split's (the first seed's).
    """
    reusing = [s.spec for s in strats if s.needs_pretrained]
    if len(specs) == 1:
        if reusing and specs[0].lower() == "none":
            raise UserError(f"--strategies {', '.join(reusing)} reuse pretrained layers but --weights is none; pass --weights "
                            "imagenet or a weights file (e.g. the model.safetensors of an earlier run), or compare scratch arms only")
        # scratch alone needs only the preprocessing of "imagenet" weights, not their tensors (as in train)
        w_spec = "none" if not reusing and specs[0] == "imagenet" else specs[0]
        return [Start("", specs[0], prepare(data, arch=arch, weights=w_spec, augment=augment, seed=seed))]
    if not reusing:
        raise UserError(f"--weights lists {len(specs)} starts but every strategy is scratch, which starts from random weights; "
                        "give one --weights, or add transfer or finetune-all to --strategies")
    if any(s.lower() == "none" for s in specs):
        raise UserError(f"--weights lists none among several starts, but --strategies {', '.join(reusing)} reuse pretrained "
                        "layers; drop none (scratch, in --strategies, is the random-init baseline)")
    resolved = [resolve_weights(s, arch) for s in specs]  # a missing file or another architecture fails here, first
    names: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for spec, w in zip(specs, resolved):
        name, ident = start_name(spec), (w.fingerprint, w.preprocess)  # the same tensors read otherwise are another start
        if ident in seen:
            raise UserError(f"--weights names the same start twice ({seen[ident]} and {spec}: same tensors, same "
                            "preprocessing); each start runs once")
        seen[ident] = spec
        if name in names:
            raise UserError(f"--weights: {names[name]} and {spec} would both be called {name!r} in the arm names; "
                            "rename one of the files (or its folder)")
        names[name] = spec
    first = prepare(data, arch=arch, weights=specs[0], augment=augment, seed=seed)
    starts = [Start(start_name(specs[0]), specs[0], first)]
    geometry = _geometry(first.weights.preprocess)
    for spec, w in zip(specs[1:], resolved[1:]):
        if _geometry(w.preprocess) == geometry:  # the same decoded images; own weights, own normalisation, own features
            p = Prepared(first.splits, w, first.train_plain, first.train_aug, first.val, first.features)
        else:
            log(f"{start_name(spec)} crops and resizes differently ({_describe(w.preprocess)} vs {_describe(first.weights.preprocess)}): "
                "its images are decoded again, from the same split")
            p = prepare(data, arch=arch, weights=spec, augment=augment, seed=seed)
            if p.splits.fingerprint != first.splits.fingerprint or len(p.val) != len(first.val):
                raise UserError(f"--weights {spec}: its images could not be read into the same split as {specs[0]}'s "
                                f"({len(p.val)} vs {len(first.val)} validation images); compare them in separate runs")
        starts.append(Start(start_name(spec), spec, p))
    return starts


def _geometry(pre) -> tuple:
    return pre.resize, pre.crop, pre.interpolation


def _describe(pre) -> str:
    return f"resize {pre.resize}, crop {pre.crop}, {pre.interpolation}"


def arm_plan(starts: Sequence[Start], strats: Sequence[Strategy]) -> list[tuple[str, Start, Strategy]]:
    """(arm name, start, strategy) in report order: strategy by strategy, each start's arm side by side.

    One start: the arms are named by their strategy alone (as ever). Several: ``<start>/<strategy>``, and
    ``scratch`` once, with the first start's preprocessing.
    """
    if len(starts) == 1:
        return [(s.spec, starts[0], s) for s in strats]
    out = []
    for s in strats:
        if not s.needs_pretrained:
            out.append((s.spec, starts[0], s))
        else:
            out.extend((f"{st.name}/{s.spec}", st, s) for st in starts)
    return out


def describe_starts(starts: Sequence[Start]) -> list[dict[str, Any]]:
    """``summary["starts"]``: each start's name, --weights value, where its tensors come from and its preprocessing."""
    return [{"name": st.name, "weights": st.spec, "where": st.prepared.weights.where,
             "preprocess": st.prepared.weights.preprocess.to_dict()} for st in starts]


def grid(summary: dict[str, Any], plan: Sequence[tuple[str, Start, Strategy]]) -> dict[str, Any]:
    """``summary["grid"]``: ``rows`` (starts, then ``none`` for scratch), ``columns`` (strategies), ``cells[row][column]``
    (``arm``, ``seeds``, mean/std of final and best validation accuracy), ``best_start`` per strategy."""
    per = summary["strategies"]
    rows: list[str] = []
    columns: list[str] = []
    cells: dict[str, dict[str, Any]] = {}
    for key, st, s in plan:
        row = st.name if s.needs_pretrained else SCRATCH_ROW
        rows += [row] if row not in rows else []
        columns += [s.spec] if s.spec not in columns else []
        p = per[key]
        cells.setdefault(row, {})[s.spec] = {"arm": key, "seeds": p["seeds"], "final_val_accuracy": p["final_val_accuracy"],
                                             "best_val_accuracy": p["best_val_accuracy"]}
    rows = [r for r in rows if r != SCRATCH_ROW] + ([SCRATCH_ROW] if SCRATCH_ROW in rows else [])
    best = {}
    for c in columns:
        cands = [r for r in rows if r != SCRATCH_ROW and c in cells.get(r, {})]
        if len(cands) > 1:
            best[c] = max(cands, key=lambda r: (cells[r][c]["final_val_accuracy"]["mean"], cells[r][c]["best_val_accuracy"]["mean"]))
    return {"rows": rows, "columns": columns, "cells": cells, "best_start": best}


def grid_paired(g: dict[str, Any], pairs_of) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Strategy by strategy, the best start against each other start: ``{strategy: {other start: rows}}`` with
    ``pairs_of(arm_a, arm_b)`` giving the seed-by-seed rows (``seed``, ``best_only``, ``other_only``, ``p``)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c, b in g["best_start"].items():
        for r in g["rows"]:
            if r in (b, SCRATCH_ROW) or c not in g["cells"].get(r, {}):
                continue
            rows = pairs_of(g["cells"][b][c]["arm"], g["cells"][r][c]["arm"])
            if rows:
                out.setdefault(c, {})[r] = rows
    return out
