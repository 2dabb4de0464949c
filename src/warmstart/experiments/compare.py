"""`warmstart compare`: several strategies (x several starts) x several seeds under one budget, one report.

    DATA, --weights ─ prepare_starts (one train/val split, one decoded-image cache; per start its weights and
                      feature cache) ─┐
    for seed in seeds, for arm in arm_plan (a strategy, or <start>/<strategy> with several starts):
        build_model ─ conv1 before ─ run_arm ─> OUT/<arm>-seed<S>/  (a complete train run directory)
    aggregate over seeds: mean ± std per arm ─> paired tests, grid ─> summary.json, figures, report.html + report.md

The parts: :mod:`~warmstart.experiments.compare_starts` (several starts, the grid),
:mod:`~warmstart.experiments.compare_arms` (one arm, aggregation, paired tests), :mod:`warmstart.report.stats`,
:mod:`warmstart.report.reading` (the written reading), :mod:`warmstart.report.compare_sections` and
:mod:`warmstart.report.compare_figures` (the report).

Every arm sees the same images, the same preprocessing (the weights' own, also for ``scratch``), the same
epochs and the same optimizer settings; seeds vary model initialisation, batch order and augmentation only
(the train/val split is the first seed's, for every arm). Augmentation follows ``train``'s rule
(``TrainSpec.augments``, :mod:`warmstart.transfer.spec`): on for arms that train convolutions, off for
``transfer`` (whose frozen features are computed once and shared by all its seeds).

Strategies are ranked by their mean **final** validation accuracy: the weights each run keeps. The best
epoch's accuracy is reported too, but it is chosen on the same validation images and so flatters. The
automatic reading compares every gap against the noise it can be measured with: one validation image, the
seed-to-seed spread (with several seeds), and a paired test on the same validation images (exact McNemar, seed by
seed, from each arm's predictions.json): a lead the images cannot separate is not called a win.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.layout import PATHS, REPORT_HTML, SUMMARY
from warmstart.engine.loop import resolve_device
from warmstart.engine.run import Run, RunSpec, read_config, read_summary
from warmstart.errors import UserError
from warmstart.experiments.compare_arms import (aggregate, arm_name, check_plans, figures, paired,  # noqa: F401
                                                paired_seeds, run_one, warm_up)
from warmstart.experiments.compare_parse import DEFAULT_STRATEGIES, MAX_SEEDS, parse_seeds, parse_strategies  # noqa: F401
from warmstart.experiments.compare_starts import (absolute, arm_plan, describe_starts, grid, grid_paired, parse_weights,
                                                  prepare_starts)
from warmstart.experiments.runs import pm
from warmstart.options import check as check_options
from warmstart.report.compare_sections import subtitle, title
from warmstart.report.reading import SIGNIFICANCE, reading  # noqa: F401
from warmstart.report.stats import mcnemar_p  # noqa: F401  (re-exported: the paired test)
from warmstart.transfer.prior import parse_reg
from warmstart.transfer.recipe import DEFAULT_EPOCHS
from warmstart.transfer.spec import TrainSpec



# ----------------------------------------------------------------------------------------------- the experiment
def compare(data: DataSpec | str | Path, *, strategies: str | Sequence[str] = DEFAULT_STRATEGIES,
            seeds: int | str | Sequence[int] = 1, model: str = TrainSpec.model, weights: str | Sequence[str] = TrainSpec.weights,
            init: str | None = None, bn: str = TrainSpec.bn, augment: str = TrainSpec.augment,
            feature_cache: str = TrainSpec.feature_cache, reg: str | None = None, cfg: TrainConfig | None = None,
            run: RunSpec | None = None) -> dict[str, Any]:
    """Train every strategy with every seed on ``data`` (a :class:`~warmstart.data.spec.DataSpec`: DATA, its
    split, subset, classes) under the same budget (``cfg``: epochs, learning rates, optimizer, ...); write one run
    directory with a sub-directory per arm, summary.json and report.html/report.md; return the summary.

    ``seeds``: a count (seeds ``cfg.seed``, ``cfg.seed + 1``, ...) or explicit seeds. ``weights``: one start, or
    several (``'W1,W2'`` or a list): every start x strategy then runs, arms named ``<start>/<strategy>``
    (:mod:`~warmstart.experiments.compare_starts`), and the summary gains ``starts`` and ``grid``. Every other
    option means what it means for ``warmstart train`` (:func:`warmstart.api.train`) and applies to every arm;
    ``reg`` (``--reg l2sp...``) applies to the arms that fine-tune pretrained layers. An arm may carry its own
    modifiers (``finetune-all+l2sp:0.1``, ``finetune-all+interpolate``: :mod:`~warmstart.transfer.strategies`).
    ``run`` (a :class:`~warmstart.engine.run.RunSpec`): where to write, whether to resume, what config.json records.
    """
    data_spec = data if isinstance(data, DataSpec) else DataSpec(str(data))
    cfg = (cfg or TrainConfig()).with_defaults(epochs=DEFAULT_EPOCHS)
    # under torchrun: join the process group first, so that only rank 0 logs and writes
    from warmstart.engine.distributed import init_from_env

    init_from_env(resolve_device(cfg.device).type)
    strats = parse_strategies(strategies)
    seed_list = parse_seeds(seeds, cfg.seed)
    arm_specs, augs = _arm_specs(strats, model=model, init=init, bn=bn, augment=augment, feature_cache=feature_cache, reg=reg)
    specs = parse_weights(weights)
    starts = prepare_starts(data_spec, specs, strats, arch=model, augment=any(augs.values()), seed=seed_list[0])
    prepared = starts[0].prepared  # the split, the validation images and scratch's preprocessing
    arms = arm_plan(starts, strats)
    check_plans(prepared, list(arm_specs.values()), cfg)

    run_spec = run or RunSpec()
    options = _recorded(run_spec.options, weights, specs) if run_spec.options is not None else \
        _called(data_spec, cfg, strategies=",".join(s.spec for s in strats), seeds=",".join(map(str, seed_list)), model=model,
                weights=",".join(specs) if len(specs) == 1 else absolute(specs), init=init, bn=bn, augment=augment,
                feature_cache=feature_cache, reg=str(reg or "none"))
    setup = {"preprocess": prepared.weights.preprocess.to_dict(),
             "strategies": [s.spec for s in strats], "seeds": seed_list, "train_config": cfg.to_dict()}
    if len(starts) > 1:
        setup["starts"] = describe_starts(starts)
    run = dataclasses.replace(run_spec, options=options).open("compare", setup, tensorboard=cfg.tensorboard)
    setup = {"options": options, **setup}
    warm_up(prepared, model, cfg)
    records = _run_arms(run, arms, seed_list, arm_specs, cfg, resume=run_spec.resume, setup=setup)
    summary = aggregate(records, strategies=[key for key, _, _ in arms], val_images=len(prepared.val))
    summary.update(data=prepared.splits.source, data_name=_short(data_spec.data), model=model,
                   weights="; ".join(st.prepared.weights.where for st in starts), epochs=cfg.epochs, seeds=seed_list,
                   classes=prepared.splits.classes, train_images=len(prepared.train_plain),
                   val_is_test=prepared.splits.val_is_test, augment=augs,
                   label_smoothing={r["strategy"]: r.get("label_smoothing") for r in records}, optimizer=cfg.optimizer, lr=cfg.lr,
                   batch_size=cfg.batch_size, device=str(resolve_device(cfg.device)), figures={})
    if run.main:
        _write_report(run, summary, starts, arms, prepared)
    run.close()
    b = summary["strategies"][summary["best"]]
    log(f"best: {summary['best']} {pm(b['final_val_accuracy']['mean'], b['final_val_accuracy']['std'], b['seeds'])} final val "
        f"accuracy; report {run.dir / REPORT_HTML}")
    return {**summary, "report": str(run.dir / REPORT_HTML)}  # returned, not in summary.json


def report_text(summary: dict[str, Any]) -> str:
    """What ``warmstart compare`` prints: one line per strategy, best first, then the best and the report."""
    lines = []
    for spec in summary["ranking"]:
        p = summary["strategies"][spec]
        f, t = p["final_val_accuracy"], p["train_seconds"]
        lines.append(f"{spec:<18} final val accuracy {100 * f['mean']:5.1f} %" + (f" ± {100 * f['std']:.1f}" if p["seeds"] > 1 else "")
                     + f"   {t['mean']:8.1f} s/run")
    return "\n".join([*lines, f"best: {summary['best']}; report: {Path(summary['report'])}"])


def _run_arms(run: Run, arms, seeds: list[int], arm_specs: dict[str, TrainSpec], cfg: TrainConfig, *, resume: bool,
              setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Every arm (start x strategy) with every seed, seed by seed (a stopped compare has whole seeds done); a
    finished arm of a resumed compare is read back, not retrained. One record per arm and seed."""
    records: list[dict[str, Any]] = []
    total = len(arms) * len(seeds)
    for seed in seeds:
        for key, start, strat in arms:
            log(f"── arm {len(records) + 1}/{total}: {key}, seed {seed}")
            records.append(run_one(start.prepared, run, arm_specs[strat.spec], dataclasses.replace(cfg, seed=seed),
                                   resume=resume, setup=setup, key=key, start=start.name if strat.needs_pretrained else None))
    return records


def _recorded(options: dict[str, Any], weights, specs: list[str]) -> dict[str, Any]:
    """The command's options as config.json records them: several weights paths absolute, for --resume anywhere."""
    return {**options, "weights": absolute(specs)} if len(specs) > 1 and options.get("weights") == weights else options


def _called(data: DataSpec, cfg: TrainConfig, **options: Any) -> dict[str, Any]:
    """The options of a library call, as the command line would give them (config.json's ``options``)."""
    return {**data.to_dict(), **options, **cfg.to_dict(), "classes": ",".join(data.classes) if data.classes else None}


def _arm_specs(strats, *, model: str, init: str | None, bn: str, augment: str, feature_cache: str, reg: str | None = None):
    """Every arm's TrainSpec, and whether each strategy augments (resolved per strategy, so all arms of a strategy
    see the same images); an --init with no scratch arm, or a bad one, a --reg with no fine-tuning arm, and a bad
    --augment or --feature-cache fail here, before anything is written."""
    check_options({"augment": augment, "feature_cache": feature_cache})
    if parse_reg(reg) is not None and not any(s.fine_tunes for s in strats):
        raise UserError(f"--reg {reg} pulls fine-tuned pretrained layers toward their start, but no arm of --strategies fine-tunes "
                        "(finetune-all, finetune-last:K, gradual); add one or drop --reg")
    if init:
        if all(s.needs_pretrained for s in strats):
            raise UserError(f"--init {init} initialises the scratch arms, but --strategies has none (the others start from "
                            "pretrained weights); add scratch to --strategies or drop --init")
        from warmstart.init.spec import check_init

        check_init(init)
    augs = {s.spec: TrainSpec(model=model, strategy=s, augment=augment).augments for s in strats}
    return {s.spec: TrainSpec(model=model, strategy=s, init=init if s.from_scratch else None, bn=bn,
                              augment="on" if augs[s.spec] else "off", feature_cache=feature_cache,
                              reg=reg if s.fine_tunes and s.reg is None else None) for s in strats}, augs


def _write_report(run: Run, summary: dict[str, Any], starts, arms, prepared) -> None:
    """The figures, the paired tests, the grid of starts (with several), the reading; summary.json and the report."""
    figures(run.dir, summary, prepared)
    summary["paired"] = paired(run.dir, summary)
    if len(starts) > 1:  # the starts x strategies grid, and each strategy's starts tested against each other
        summary["starts"] = describe_starts(starts)
        summary["grid"] = grid(summary, arms)
        summary["grid"]["paired"] = grid_paired(summary["grid"], lambda a, b: paired_seeds(run.dir, summary, a, b))
    summary["reading"] = reading(summary)
    run.write_summary(summary)
    from warmstart.report.html import write_report

    write_report(run.dir, title(summary), sections(run.dir), subtitle=subtitle(summary))


def sections(run_dir: str | Path) -> list:
    """The report sections of a compare run, rebuilt from its run directory alone (``warmstart report``).

    Given one arm's directory instead, the section of that single run.
    """
    from warmstart.experiments.runs import command_of, run_sections
    from warmstart.report.compare_sections import compare_sections

    config = read_config(run_dir)
    if "arm" in config:
        return run_sections(run_dir)
    parts = compare_sections(run_dir, read_summary(run_dir), command_of(config))
    if (Path(run_dir) / PATHS / SUMMARY).is_file():  # `warmstart path COMPARE` was run: its linear paths
        from warmstart.report.path_sections import sections as path_sections

        parts += path_sections(Path(run_dir) / PATHS)
    return parts


def _short(data: str | Path) -> str:
    p = Path(str(data))
    return p.name or str(data)
