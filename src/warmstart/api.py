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

#: options that may name a file or folder: recorded absolute, so a run continues (resume) from any directory
PATH_OPTIONS = ("data", "weights", "data_root")
#: not recorded in config.json's options (how this call writes, not what it trains)
NOT_RECORDED = ("overwrite",)


def train(data: str | Path | None = None, *, model: str = "mobilenet_v3_small", weights: str = "imagenet",
          strategy: str = "transfer", epochs: int = 5, init: str | None = None, lr: float | None = None,
          backbone_lr: float | None = None, lr_decay: float = 1.0, bn: str = "frozen", augment: str = "auto",
          feature_cache: str = "auto", head_init: str = "probe", classes: str | Sequence[str] | None = None,
          restarts: int = 1, restart_epochs: int = 1, batch_size: int = 32, optimizer: str = "adamw", momentum: float = 0.9,
          weight_decay: float = 1e-4, schedule: str = "cosine", warmup_epochs: float = 0.0, label_smoothing: float | None = None,
          grad_clip: float = 0.0, early_stopping: int = 0, seed: int = 0, deterministic: bool = False, device: str = "auto",
          amp: str = "none", channels_last: bool | None = None, workers: int = 0, tensorboard: bool = False,
          data_root: str | Path | None = None, val_fraction: float = 0.2, subset: int | None = None,
          skip_bad_images: bool = False, out: str | Path | None = None, overwrite: bool = False,
          resume: str | Path | None = None, quiet: bool = False):
    """Train a classifier on DATA exactly as ``warmstart train`` does; returns a :class:`~warmstart.results.TrainResult`.

    Every keyword is the CLI option of the same name (``warmstart train --help``). Besides: ``overwrite=True``
    replaces an existing run in ``out``; ``resume=RUN_DIR`` continues that run (its options come from its
    config.json; a keyword given here with a value other than its default that differs from the run's is an
    error); ``quiet=True`` silences the log and the progress bars.
    """
    options = {k: v for k, v in locals().items()}
    return train_options(options, given=_given(train, options))


def train_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``train`` from a dict of its options (what the CLI parsed); ``given``: the options named explicitly."""
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.console import quiet
    from warmstart.transfer.spec import TrainSpec

    options = _resumed("train", _normalised(options), given)
    if options.get("data") is None:
        raise UserError("train needs DATA: a folder, a CSV file or a data set name (or resume=RUN_DIR to continue a run)")
    # the strategy, the init spec and the config first: parsing them needs no torch, so a typo answers at once
    spec, cfg = TrainSpec.from_options(options), TrainConfig.from_dict(options)
    _check_paths(options["data"], [spec.weights])
    from warmstart.data.spec import DataSpec
    from warmstart.experiments.train import run_train

    with quiet(bool(options.get("quiet"))):
        data = DataSpec.from_options(options)
        return run_train(data, spec, cfg, out=options.get("out"), resume=bool(options.get("resume")),
                         overwrite=bool(options.get("overwrite")), argv=argv,
                         options={k: v for k, v in options.items() if k not in NOT_RECORDED})


def compare(data: str | Path | None = None, *, strategies: str = "scratch,transfer,finetune-all", seeds: str | int = "1",
            model: str = "mobilenet_v3_small", weights: str = "imagenet", epochs: int = 5, init: str | None = None,
            lr: float | None = None, backbone_lr: float | None = None, lr_decay: float = 1.0, bn: str = "frozen",
            augment: str = "auto", feature_cache: str = "auto", classes: str | Sequence[str] | None = None,
            batch_size: int = 32, optimizer: str = "adamw", momentum: float = 0.9, weight_decay: float = 1e-4,
            schedule: str = "cosine", warmup_epochs: float = 0.0, label_smoothing: float | None = None, grad_clip: float = 0.0,
            early_stopping: int = 0, seed: int = 0, deterministic: bool = False, device: str = "auto", amp: str = "none",
            channels_last: bool | None = None, workers: int = 0, tensorboard: bool = False, data_root: str | Path | None = None,
            val_fraction: float = 0.2, subset: int | None = None, skip_bad_images: bool = False, out: str | Path | None = None,
            overwrite: bool = False, resume: str | Path | None = None, quiet: bool = False):
    """``warmstart compare``: every strategy x seed under the same data and budget; returns a
    :class:`~warmstart.results.CompareResult` (summary, reading, table, curves; inline HTML in Jupyter)."""
    options = {k: v for k, v in locals().items()}
    return compare_options(options, given=_given(compare, options))


def compare_options(options: Mapping[str, Any], *, given: Iterable[str] = (), argv: list[str] | None = None):
    """``compare`` from a dict of its options (what the CLI parsed)."""
    from warmstart.engine.config import TrainConfig
    from warmstart.experiments.compare_parse import parse_seeds, parse_strategies, parse_weights
    from warmstart.init.spec import check_init

    o = _resumed("compare", _normalised(options), given)
    if o.get("data") is None:
        raise UserError("compare needs DATA: a folder, a CSV file or a data set name (or resume=RUN_DIR to continue a run)")
    # --strategies, --seeds, --init and the config first: parsing them needs no torch, so a typo answers at once
    cfg = TrainConfig.from_dict(o)
    strats = parse_strategies(o["strategies"])
    parse_seeds(o["seeds"], cfg.seed)
    if o.get("init") and not all(s.needs_pretrained for s in strats):  # else compare() says --init has no scratch arm
        check_init(o["init"])
    _check_paths(o["data"], parse_weights(o.get("weights") or "imagenet"))
    from warmstart.data.spec import parse_classes
    from warmstart.engine.console import quiet
    from warmstart.engine.run import check_out
    from warmstart.experiments.compare import compare as run_compare
    from warmstart.results import CompareResult

    if o.get("out") is not None:
        check_out(o["out"], overwrite=bool(o.get("overwrite")), resume=bool(o.get("resume")))
    with quiet(bool(o.get("quiet"))):
        s = run_compare(o["data"], strategies=o["strategies"], seeds=o["seeds"], model=o["model"], weights=o["weights"],
                        epochs=o["epochs"], init=o["init"], lr=cfg.lr, backbone_lr=cfg.backbone_lr, lr_decay=cfg.lr_decay,
                        bn=o["bn"], augment=o["augment"], feature_cache=o["feature_cache"],
                        classes=list(parse_classes(o.get("classes")) or []) or None, out=o.get("out"), resume=bool(o.get("resume")),
                        data_root=o.get("data_root"), val_fraction=o["val_fraction"], subset=o.get("subset"),
                        skip_bad_images=o["skip_bad_images"], cfg=cfg, argv=argv, overwrite=bool(o.get("overwrite")),
                        options={k: v for k, v in o.items() if k not in NOT_RECORDED})
    return CompareResult(run_dir=Path(s["report"]).parent, summary=s)


def rank(data: str | Path, candidates: str | Sequence[str], *, model: str | None = None, by: str = "probe_cv",
         verify: str | None = None, epochs: int | None = None, batch_size: int = 32, seed: int = 0, device: str = "auto",
         amp: str = "none", channels_last: bool | None = None, workers: int = 0, data_root: str | Path | None = None,
         val_fraction: float = 0.2, subset: int | None = None, skip_bad_images: bool = False, out: str | Path | None = None,
         quiet: bool = False):
    """``warmstart rank``: score candidate starts on DATA's training images (weights files, folders of them,
    ``imagenet``, ``none``; or init schemes with ``model``); ``verify=STRATEGY`` also trains each and correlates.
    ``epochs`` (of ``verify``): 2 for pretrained starts, 10 for init schemes when not given. Returns a
    :class:`~warmstart.results.RankResult` (summary, ranked table, verdict; the score chart inline in Jupyter)."""
    options = {k: v for k, v in locals().items()}
    return rank_options(options)


def rank_options(options: Mapping[str, Any], *, argv: list[str] | None = None):
    """``rank`` from a dict of its options (what the CLI parsed; ``epochs`` None: the command's default)."""
    from warmstart.engine.config import TrainConfig
    from warmstart.transfer.candidates import check_candidates
    from warmstart.transfer.strategies import parse_strategy

    o = _normalised(options)
    if o.get("data") is None:
        raise UserError("rank needs DATA: a folder, a CSV file or a data set name")
    # the candidates, --verify and the config first: checking them needs no torch, so a typo answers at once
    _, inits = check_candidates(o["candidates"], model=o.get("model"))
    if o.get("verify") is not None and not inits:
        parse_strategy(o["verify"])
    cfg = TrainConfig.from_dict({k: v for k, v in o.items() if v is not None})
    _check_paths(o["data"], [])
    from warmstart.engine.console import quiet
    from warmstart.experiments.rank import rank as run_rank
    from warmstart.results import RankResult

    with quiet(bool(o.get("quiet"))):
        s = run_rank(o["data"], o["candidates"], model=o.get("model"), by=o.get("by"), verify=o.get("verify"),
                     epochs=o.get("epochs"), out=o.get("out"), cfg=cfg, options=o, argv=argv, data_root=o.get("data_root"),
                     val_fraction=o.get("val_fraction", 0.2), subset=o.get("subset"),
                     skip_bad_images=bool(o.get("skip_bad_images")))
    return RankResult(run_dir=Path(s["report"]).parent, summary=s)


def symmetry(data: str | Path | None = None, *, quiet: bool = False, **options):
    """``warmstart symmetry`` from Python: the lecture's 3-layer CNN from a constant and a random start; returns
    summary.json's content. Keywords as :func:`warmstart.experiments.symmetry.symmetry`; ``quiet=True`` silences
    the log and the progress bars."""
    from warmstart.engine.console import quiet as silenced
    from warmstart.experiments.symmetry import symmetry as run

    with silenced(quiet):
        return run(data, **options)


def depth(data: str | Path = "digits", *, quiet: bool = False, **options):
    """``warmstart depth`` from Python: one deep plain net per init scheme; returns summary.json's content.
    Keywords as :func:`warmstart.experiments.depth.depth`; ``quiet=True`` silences the log and the progress bars."""
    from warmstart.engine.console import quiet as silenced
    from warmstart.experiments.depth import depth as run

    with silenced(quiet):
        return run(data, **options)


def path(run_a: str | Path, run_b: str | Path | None = None, *, quiet: bool = False, **options):
    """``warmstart path`` from Python: loss and accuracy along the line in weight space from RUN_A's start to its end,
    or between the ends of RUN_A and RUN_B (or all the paths of a compare folder); returns summary.json's content
    (``points``, ``barrier``, ``reading``, ``out``). Keywords as :func:`warmstart.experiments.path.path`."""
    from warmstart.engine.console import quiet as silenced
    from warmstart.experiments.path import path as run

    with silenced(quiet):
        return run(run_a, run_b, **options)


def load_run(run_dir: str | Path, device: str = "cpu"):
    """A finished ``train`` run directory as a :class:`~warmstart.results.TrainResult` (model from model.safetensors)."""
    from warmstart.results import load_run as load

    return load(run_dir, device=device)


# ----------------------------------------------------------------------------------------------------------- helpers
def _given(fn, options: Mapping[str, Any]) -> set[str]:
    """The keywords of a Python call that differ from ``fn``'s defaults: those a resumed run must agree with."""
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()}
    return {k for k, v in options.items() if k in defaults and v != defaults[k]}


def _check_paths(data: Any, weights: Sequence[str]) -> None:
    """A DATA or --weights file that does not exist: said before torch is imported (a typo costs no start-up).
    The same errors as loading them (:func:`~warmstart.data.load_data`, :func:`~warmstart.transfer.resolve_weights`)."""
    from warmstart.data.named import check_exists
    from warmstart.transfer.candidates import check_weights_file

    check_exists(data)
    for w in weights:
        check_weights_file(w)


def _normalised(options: Mapping[str, Any]) -> dict[str, Any]:
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


def _resumed(command: str, options: dict[str, Any], given: Iterable[str]) -> dict[str, Any]:
    if not options.get("resume"):
        return options
    from warmstart.engine.run import merge_resume

    return merge_resume(command, options["resume"], options, given, names={"data": "DATA"})
