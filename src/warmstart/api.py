"""The front door's verbs that take the CLI's options as keywords: ``ws.train``, ``ws.compare``, ``ws.rank``, ``ws.load_run``.

``ws.train(data, weights=..., strategy=..., epochs=..., out=...)`` is ``warmstart train DATA --weights ...
--strategy ... --epochs ... --out ...``: the same keywords (options with ``-`` written ``_``), the same
defaults, the same recipe, the same numbers. The CLI calls :func:`train_options` with what it parsed, so
there is one path. Options are parsed once, here, into a DataSpec, a TrainSpec and a TrainConfig; bad
input raises :class:`~warmstart.errors.UserError` with the CLI's one-line message before anything is written.

Re-running a notebook cell is not a trap: without ``out`` every call makes a fresh run directory; an
existing non-empty ``out`` is an error unless ``overwrite=True`` (replaces that run) or ``resume=out``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from warmstart.errors import UserError
from warmstart.options import TRAINING, check, given_in_python, verb
from warmstart.transfer.candidates import model_for

#: options that may name a file or folder: recorded absolute, so a run continues (resume) from any directory
PATH_OPTIONS = ("data", "weights", "data_root", "run_a", "run_b")
#: not recorded in config.json's options (how this call writes, not what it trains)
NOT_RECORDED = ("overwrite",)
#: Python only: replace the run already in ``out`` (the command line asks you to choose another --out)
OVERWRITE = inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")


@verb("train", extra=[OVERWRITE])
def train(**options: Any):
    """Train a classifier on DATA exactly as ``warmstart train`` does; returns a :class:`~warmstart.results.TrainResult`.

    Every keyword is the CLI option of the same name (``warmstart train --help``), declared once in
    :mod:`warmstart.options`. Besides: ``resume=RUN_DIR`` continues that run (its options come from its
    config.json; a keyword given here with a value other than its default that differs from the run's is an
    error); ``overwrite=True`` replaces an existing run in ``out``; ``quiet=True`` silences the log and the bars.
    """
    return train_options(options, given=given_in_python("train", options))


def train_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``train`` from a dict of its options (what the CLI parsed); ``given``: the options named explicitly."""
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.console import quiet
    from warmstart.transfer.spec import TrainSpec

    options = _checked("train", resumed("train", normalised(options), given))
    if options.get("data") is None:
        raise UserError("train needs DATA: a folder, a CSV file or a data set name (or resume=RUN_DIR to continue a run)")
    options["model"] = model_for(options.get("model"), [options.get("weights") or "imagenet"], given="model" in set(given))
    # the strategy, the init spec and the config first: parsing them needs no torch, so a typo answers at once
    spec, cfg = TrainSpec.from_options(options), TrainConfig.from_dict(options)
    _check_paths(options["data"], [spec.weights])
    from warmstart.data.spec import DataSpec
    from warmstart.experiments.train import run_train

    with quiet(bool(options.get("quiet"))):
        data = DataSpec.from_options(options)
        return run_train(data, spec, cfg, run=_run_spec("train", options, argv))


@verb("compare", extra=[OVERWRITE])
def compare(**options: Any):
    """``warmstart compare``: every strategy x seed under the same data and budget; returns a
    :class:`~warmstart.results.CompareResult` (summary, reading, table, curves; inline HTML in Jupyter).
    ``strategies`` may be a list (``["transfer", "finetune_all"]``) and ``seeds`` a count or a list of seeds."""
    return compare_options(options, given=given_in_python("compare", options))


def compare_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``compare`` from a dict of its options (what the CLI parsed)."""
    from warmstart.engine.config import TrainConfig
    from warmstart.experiments.compare_parse import parse_seeds, parse_strategies, parse_weights
    from warmstart.init.spec import check_init
    from warmstart.transfer.prior import parse_reg

    o = _checked("compare", resumed("compare", normalised(options), given))
    if o.get("data") is None:
        raise UserError("compare needs DATA: a folder, a CSV file or a data set name (or resume=RUN_DIR to continue a run)")
    weights = parse_weights(o.get("weights") or "imagenet")
    o["model"] = model_for(o.get("model"), weights, given="model" in set(given))
    # --strategies, --seeds, --init and the config first: parsing them needs no torch, so a typo answers at once
    cfg = TrainConfig.from_dict(o)
    strats = parse_strategies(o["strategies"])
    parse_seeds(o["seeds"], cfg.seed)
    parse_reg(o.get("reg"))
    if o.get("init") and not all(s.needs_pretrained for s in strats):  # else compare() says --init has no scratch arm
        check_init(o["init"])
    _check_paths(o["data"], weights)
    from warmstart.data.spec import DataSpec
    from warmstart.engine.console import quiet
    from warmstart.experiments.compare import compare as run_compare, report_text
    from warmstart.results import CompareResult

    where = _run_spec("compare", o, argv)
    where.check()  # here, not in experiments.compare: the demo's compare writes beside its source run on purpose
    with quiet(bool(o.get("quiet"))):
        s = run_compare(DataSpec.from_options(o), strategies=o["strategies"], seeds=o["seeds"], model=o["model"],
                        weights=o["weights"], init=o["init"], bn=o["bn"], augment=o["augment"], feature_cache=o["feature_cache"],
                        reg=o.get("reg"), cfg=cfg, run=where)
    return CompareResult(run_dir=Path(s["report"]).parent, summary=s, text=report_text(s))


@verb("rank")
def rank(**options: Any):
    """``warmstart rank``: score candidate starts on DATA's training images (weights files, folders of them,
    ``imagenet``, ``none``; or init schemes with ``model``); ``verify=STRATEGY`` also trains each and correlates.
    ``epochs`` (of ``verify``): 2 for pretrained starts, 10 for init schemes when not given. Returns a
    :class:`~warmstart.results.RankResult` (summary, ranked table, verdict; the score chart inline in Jupyter)."""
    return rank_options(options, given=given_in_python("rank", options))


def rank_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``rank`` from a dict of its options (what the CLI parsed; ``epochs`` None: the command's default)."""
    from warmstart.engine.config import TrainConfig
    from warmstart.transfer.candidates import check_candidates
    from warmstart.transfer.spec import parse_arm

    o = _checked("rank", normalised(options))
    if o.get("data") is None:
        raise UserError("rank needs DATA: a folder, a CSV file or a data set name")
    if o.get("candidates") is None:
        raise UserError("rank needs candidates: weights files, folders of them, imagenet, none, or init schemes with model")
    given = set(given)
    unused = [k for k in TRAINING if k in given] if o.get("verify") is None else []
    if unused:  # nothing trains without --verify: these would be silently ignored
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise UserError(f"{flags} set{'s' if len(unused) == 1 else ''} how --verify trains, and rank without --verify trains "
                        f"nothing; add --verify STRATEGY or drop {flags}")
    # the candidates, --verify and the config first: checking them needs no torch, so a typo answers at once
    _, inits = check_candidates(o["candidates"], model=o.get("model"))
    if o.get("verify") is not None and not inits:
        parse_arm(o["verify"])  # a strategy, or an arm as compare takes it (finetune-all+l2sp)
    cfg = TrainConfig.from_dict(_set(o))
    _check_paths(o["data"], [])
    from warmstart.engine.console import quiet
    from warmstart.experiments.rank import format_table, rank as run_rank
    from warmstart.results import RankResult

    from warmstart.data.spec import DataSpec

    where = _run_spec("rank", o, argv)
    with quiet(bool(o.get("quiet"))):
        s = run_rank(DataSpec.from_options(o), o["candidates"], model=o.get("model"), by=o.get("by"), verify=o.get("verify"),
                     epochs=o.get("epochs"), cfg=cfg, run=where, verify_given=sorted(k for k in TRAINING if k in given))
    return RankResult(run_dir=Path(s["report"]).parent, summary=s, text=format_table(s))


@verb("symmetry")
def symmetry(**options: Any):
    """``warmstart symmetry`` from Python: the lecture's 3-layer CNN from a constant and a random start; returns a
    :class:`~warmstart.results.SymmetryResult` (summary, table per arm, the filters' picture; inline HTML)."""
    return symmetry_options(options, given=given_in_python("symmetry", options))


def symmetry_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``symmetry`` from a dict of its options (what the CLI parsed)."""
    o = _checked("symmetry", resumed("symmetry", normalised(options), given))
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.console import quiet
    from warmstart.experiments.symmetry import default_spec, report_text, symmetry as run
    from warmstart.results import SymmetryResult

    data = default_spec(o["data"], **_data_options(o))
    where = _run_spec("symmetry", o, argv)
    with quiet(bool(o.get("quiet"))):
        s = run(data, init=o["init"], constant_linear=o["constant_linear"], restarts=o["restarts"],
                restart_epochs=o["restart_epochs"], cfg=TrainConfig.from_dict(_set(o)), run=where)
    return SymmetryResult(run_dir=Path(where.out), summary=s, text=report_text(s))


@verb("depth")
def depth(**options: Any):
    """``warmstart depth`` from Python: one deep plain net per init scheme; returns a
    :class:`~warmstart.results.DepthResult` (summary, table per arm, reading, loss curves; inline HTML)."""
    return depth_options(options)


def depth_options(options: Mapping[str, Any], *, argv: list[str] | None = None):
    """``depth`` from a dict of its options (what the CLI parsed; ``epochs`` None: 30, or 10 with ``quick``)."""
    o = _checked("depth", normalised(options))
    from warmstart.data.spec import DataSpec
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.console import quiet
    from warmstart.experiments.depth import depth as run, report_text
    from warmstart.results import DepthResult

    where = _run_spec("depth", o, argv)
    with quiet(bool(o.get("quiet"))):
        s = run(DataSpec.from_options(o), arch=o["arch"], depth=o["depth"], width=o["width"], activation=o["activation"],
                arms=o["arms"], epochs=o["epochs"], image_size=o["image_size"], quick=o["quick"], seeds=o["seeds"],
                cfg=TrainConfig.from_dict({**_set(o), "epochs": None}), run=where)
    return DepthResult(run_dir=Path(where.out), summary=s, text=report_text(s))


@verb("demo")
def demo(**options: Any):
    """``warmstart demo``: every experiment, briefly, on digits, in one HTML report; returns a
    :class:`~warmstart.results.DemoResult` (summary, one table row per part, ``report``: the HTML report's path)."""
    return demo_options(options)


def demo_options(options: Mapping[str, Any]):
    o = _checked("demo", dict(options))
    from warmstart.engine.console import quiet
    from warmstart.engine.run import default_out
    from warmstart.experiments.demo import demo as run
    from warmstart.results import DemoResult

    out = Path(o.get("out") or default_out("demo"))
    with quiet(bool(o.get("quiet"))):
        s = run(out=out, quick=bool(o.get("quick")), seed=o["seed"], device=o["device"])
    return DemoResult(run_dir=out, summary=s)


@verb("path")
def path(**options: Any):
    """``warmstart path``: loss and accuracy along the straight line in weight space from RUN_A's start to its end,
    between the ends of RUN_A and RUN_B, or for every pair of a compare folder; returns a
    :class:`~warmstart.results.PathResult` (summary, ``table`` of points, ``barrier``, ``reading``, ``figure``)."""
    return path_options(options)


def path_options(options: Mapping[str, Any], *, argv: list[str] | None = None):
    """``path`` from a dict of its options (what the CLI parsed)."""
    o = _checked("path", normalised(options))
    if o.get("run_a") is None:
        raise UserError("path needs RUN_A: a train run, a compare arm or a compare folder")
    from warmstart.engine.console import quiet
    from warmstart.engine.run import RunSpec
    from warmstart.experiments.path import path as run, report_text
    from warmstart.results import PathResult

    where = RunSpec(out=o.get("out"), argv=argv, options=_recorded(o))  # no out: runs/path-<time>, or COMPARE/paths
    with quiet(bool(o.get("quiet"))):
        s = run(o["run_a"], o.get("run_b"), points=o["points"], extend=o["extend"], bn=o["bn"], max_images=o["max_images"],
                batch_size=o["batch_size"], device=o["device"], run=where)
    return PathResult(run_dir=Path(s["out"]), summary=s, text=report_text(s))


def load_run(run_dir: str | Path, device: str = "cpu"):
    """A finished ``train`` run directory as a :class:`~warmstart.results.TrainResult` (model from model.safetensors)."""
    from warmstart.results import load_run as load

    return load(run_dir, device=device)


# ----------------------------------------------------------------------------------------------------------- helpers
def _checked(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against their declarations (:mod:`warmstart.options`: ranges, choices, types), before
    anything is imported or written: Python's keywords get the checks click gives the command line."""
    check({k: v for k, v in options.items() if k != "data"}, command)
    return options


def _set(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that are set (None: the command's own default decides)."""
    return {k: v for k, v in options.items() if v is not None}


def _data_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The DataSpec's keywords among a command's options (DATA itself aside)."""
    from warmstart.options import DATA

    return {k: options[k] for k in DATA if k in options and k != "cache_dir"}


def _run_spec(command: str, options: Mapping[str, Any], argv: list[str] | None):
    """Where the command writes (``out``, or a fresh ``runs/<command>-<time>``) and what config.json records."""
    from warmstart.engine.run import RunSpec

    return RunSpec.from_options(command, options, argv=argv, recorded=_recorded(options))


def _recorded(options: Mapping[str, Any]) -> dict[str, Any]:
    """What config.json records of a call's options: all of them but how this call writes."""
    return {k: v for k, v in options.items() if k not in NOT_RECORDED}


def _check_paths(data: Any, weights: Sequence[str]) -> None:
    """A DATA or --weights file that does not exist: said before torch is imported (a typo costs no start-up).
    The same errors as loading them (:func:`~warmstart.data.load_data`, :func:`~warmstart.transfer.resolve_weights`)."""
    from warmstart.data.named import check_exists
    from warmstart.transfer.candidates import check_weights_file

    check_exists(data)
    for w in weights:
        check_weights_file(w)


def normalised(options: Mapping[str, Any]) -> dict[str, Any]:
    """Paths made absolute (not resolved: symlinks stay as named), ``classes`` as the CLI's comma text."""
    out = dict(options)
    for k in PATH_OPTIONS:
        v = out.get(k)
        if isinstance(v, Path):
            v = str(v)
        if isinstance(v, str) and v and os.path.exists(v):
            v = os.path.abspath(v)
        if k in out:
            out[k] = v
    for k in ("out", "resume"):
        if isinstance(out.get(k), Path):
            out[k] = str(out[k])
    c = out.get("classes")
    if c is not None and not isinstance(c, str):
        out["classes"] = ",".join(str(x) for x in c)
    return out


def resumed(command: str, options: dict[str, Any], given: Iterable[str]) -> dict[str, Any]:
    if not options.get("resume"):
        return options
    from warmstart.engine.run import merge_resume

    return merge_resume(command, options["resume"], options, given, names={"data": "DATA"})
