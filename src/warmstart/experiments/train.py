"""`warmstart train`: one model, one strategy, one run directory.

The recipe (probe head, learning rates, label smoothing, augmentation, feature cache) is the library's
(:mod:`warmstart.transfer.recipe`); this command validates the parsed specs, makes the run directory, runs
the best-of-K restarts when asked, trains one arm, and returns a :class:`~warmstart.results.TrainResult`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine import layout
from warmstart.engine.distributed import init_from_env
from warmstart.engine.loop import resolve_device
from warmstart.engine.run import Run, RunSpec
from warmstart.report.run_figures import run_figures, signal_figures
from warmstart.results import TrainResult
from warmstart.transfer import recipe
from warmstart.transfer.recipe import DEFAULT_EPOCHS, Prepared
from warmstart.transfer.spec import TrainSpec


def run_train(data: DataSpec, spec: TrainSpec, cfg: TrainConfig, *, run: RunSpec | None = None,
              diagnostics: bool = False) -> TrainResult:
    """Train ``spec`` on ``data`` into a run directory (a fresh ``runs/train-<time>`` without ``out``).

    ``spec.restarts`` > 1 (scratch only): the best of K random inits after ``spec.restart_epochs`` each, trained
    on (see :mod:`warmstart.init.restarts`); the trials' run directories are ``OUT/restarts/seed-N``.
    ``diagnostics``: per-layer signal statistics at the start and after every epoch of the final run.
    ``run`` (a :class:`~warmstart.engine.run.RunSpec`): where to write, whether to resume or replace the run
    there, the options as given (config.json) and the command line.
    """
    cfg = cfg.with_defaults(epochs=DEFAULT_EPOCHS)
    # under torchrun: join the process group first, so that only rank 0 logs and writes the run directory
    init_from_env(resolve_device(cfg.device).type)
    run_spec = run or RunSpec()
    run_spec.check()
    resume = run_spec.resume
    if spec.augments and spec.strategy.keeps_frozen_layers and spec.feature_cache in ("memory", "disk"):
        log("augmentation is on, so the feature cache is off: every epoch sees new crops and must run the frozen layers again")
    prepared = recipe.prepare_for(data, spec, cfg)
    # everything that can still be wrong fails here, before the run directory exists
    net = recipe.check(prepared, spec, cfg)
    config = {"data_spec": data.to_dict(), "train_spec": spec.to_dict(), "train_config": cfg.to_dict(),
              "preprocess": prepared.weights.preprocess.to_dict()}
    with run_spec.open("train", config, tensorboard=cfg.tensorboard) as run:
        best = _best_of_k(prepared, run, spec, cfg, resume) if spec.restarts > 1 else None
        try:
            model, result, summary = recipe.run_arm(prepared, run, spec, cfg, resume=resume, model=best.model if best else net,
                                                    diagnostics=diagnostics)
        except BaseException:  # a run that fails part-way keeps its signal's pictures (what explains the failure)
            if run.main and diagnostics:
                signal_figures(run.dir, title=spec.model)
            raise
        if run.main:
            run_figures(run.dir, title=spec.model)
        if best is not None:
            summary["restarts"] = {**best.summary(), "restart_epochs": spec.restart_epochs}
            run.write_summary(summary)
    log(f"best val accuracy {summary['best_val_accuracy']:.4f} (epoch {summary['best_epoch']}), final {summary['final_val_accuracy']:.4f}; "
        f"{summary['train_seconds']:.1f} s; run directory {run.dir}")
    return TrainResult(model=model, run_dir=run.dir, summary=summary, history=list(result.history), weights=prepared.weights)


def _best_of_k(prepared: Prepared, run: Run, spec: TrainSpec, cfg: TrainConfig, resume: bool):
    from dataclasses import replace

    from warmstart.init.restarts import best_of_k

    def trial(m: nn.Module, s: int) -> float:
        with run.sub(f"{layout.RESTARTS}/seed-{s}", {"seed": s, "epochs": spec.restart_epochs}) as sub:
            result = recipe.run_arm(prepared, sub, spec, replace(cfg, epochs=spec.restart_epochs), resume=resume, model=m)[1]
            if sub.main:
                run_figures(sub.dir)
            return result.final_val_accuracy

    return best_of_k(spec.restarts, cfg.seed, lambda s: recipe.build_model(prepared, spec, seed=s, batch_size=cfg.batch_size), trial)


def sections(run_dir: str | Path) -> list:
    """The report section of a train run, rebuilt from its run directory alone (``warmstart report``)."""
    from warmstart.experiments.runs import run_sections

    return run_sections(run_dir)
