"""`warmstart train`: one model, one strategy, one run directory.

The recipe (probe head, learning rates, label smoothing, augmentation, feature cache) is the library's
(:mod:`warmstart.transfer.recipe`); this command validates the parsed specs, makes the run directory, runs
the best-of-K restarts when asked, trains one arm, and returns a :class:`~warmstart.results.TrainResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.distributed import init_from_env
from warmstart.engine.layout import MODEL as MODEL_FILE  # noqa: F401  (re-exported for compare)
from warmstart.engine.loop import resolve_device
from warmstart.engine.run import Run, check_out, default_out
from warmstart.results import TrainResult
from warmstart.transfer import recipe
from warmstart.transfer.recipe import (DEFAULT_EPOCHS, DEFAULT_LR, FEATURE_MEMORY_LIMIT, Prepared,  # noqa: F401  (re-exported)
                                       _features, default_label_smoothing, default_lr)
from warmstart.transfer.probe import fit_probe  # noqa: F401  (re-exported for rank)
from warmstart.transfer.spec import FEATURE_CACHE, HEAD_INITS, TrainSpec  # noqa: F401  (re-exported)
from warmstart.transfer.strategies import Strategy


def run_train(data: DataSpec, spec: TrainSpec, cfg: TrainConfig, *, out: str | Path | None = None, resume: bool = False,
              overwrite: bool = False, options: dict[str, Any] | None = None, argv: list[str] | None = None,
              diagnostics: bool = False) -> TrainResult:
    """Train ``spec`` on ``data`` into a run directory (a fresh ``runs/train-<time>`` without ``out``).

    ``spec.restarts`` > 1 (scratch only): the best of K random inits after ``spec.restart_epochs`` each, trained
    on (see :mod:`warmstart.init.restarts`); the trials' run directories are ``OUT/restarts/seed-N``.
    ``diagnostics``: per-layer signal statistics at the start and after every epoch of the final run.
    ``options``: the command's options as given, recorded in config.json; ``argv``: its command line.
    """
    cfg = cfg.with_defaults(epochs=DEFAULT_EPOCHS)
    # under torchrun: join the process group first, so that only rank 0 logs and writes the run directory
    init_from_env(resolve_device(cfg.device).type)
    if out is not None:
        check_out(out, overwrite=overwrite, resume=resume)
    if spec.augments and spec.strategy.keeps_frozen_layers and spec.feature_cache in ("memory", "disk"):
        log("augmentation is on, so the feature cache is off: every epoch sees new crops and must run the frozen layers again")
    prepared = recipe.prepare_for(data, spec, cfg)
    # everything that can still be wrong fails here, before the run directory exists
    net = recipe.check(prepared, spec, cfg)
    config = {"options": options or {}, "data_spec": data.to_dict(), "train_spec": spec.to_dict(), "train_config": cfg.to_dict(),
              "preprocess": prepared.weights.preprocess.to_dict()}
    run = Run(out if out is not None else default_out("train"), "train", config, resume=resume, overwrite=overwrite,
              tensorboard=cfg.tensorboard, argv=argv).start()
    best = _best_of_k(prepared, run, spec, cfg, resume) if spec.restarts > 1 else None
    model, result, summary = recipe.run_arm(prepared, run, spec, cfg, resume=resume, model=best.model if best else net,
                                            diagnostics=diagnostics)
    if best is not None:
        summary["restarts"] = {**best.summary(), "restart_epochs": spec.restart_epochs}
        run.write_summary(summary)
    run.close()
    log(f"best val accuracy {summary['best_val_accuracy']:.4f} (epoch {summary['best_epoch']}), final {summary['final_val_accuracy']:.4f}; "
        f"{summary['train_seconds']:.1f} s; run directory {run.dir}")
    return TrainResult(model=model, run_dir=run.dir, summary=summary, history=list(result.history), weights=prepared.weights)


def _best_of_k(prepared: Prepared, run: Run, spec: TrainSpec, cfg: TrainConfig, resume: bool):
    from dataclasses import replace

    from warmstart.init.restarts import best_of_k

    def trial(m: nn.Module, s: int) -> float:
        sub = run.sub(f"restarts/seed-{s}", {"seed": s, "epochs": spec.restart_epochs})
        try:
            return recipe.run_arm(prepared, sub, spec, replace(cfg, epochs=spec.restart_epochs), resume=resume,
                                  model=m)[1].final_val_accuracy
        finally:
            sub.close()

    return best_of_k(spec.restarts, cfg.seed, lambda s: recipe.build_model(prepared, spec, seed=s, batch_size=cfg.batch_size), trial)


def sections(run_dir: str | Path) -> list:
    """The report section of a train run, rebuilt from its run directory alone (``warmstart report``)."""
    from warmstart.experiments.runs import run_sections

    return run_sections(run_dir)


# ---------------------------------------------------------------------------------------------------------------------
# The recipe's functions with their keyword signatures of before the move, for callers written against them
# (compare, rank, benchmarks) until they call warmstart.transfer.recipe with specs.
def _spec(arch: str, strategy: Strategy, init=None, bn: str = "frozen", augment: bool = False, feature_cache: str = "auto",
          head_init: str = "probe") -> TrainSpec:
    return TrainSpec(model=arch, strategy=strategy, init=init if strategy.from_scratch else None, bn=bn, augment="on" if augment else "off",
                     feature_cache=feature_cache, head_init=head_init)


def prepare(data: str | Path, *, arch: str, weights: str, augment: bool, data_root=None, val_fraction: float = 0.2,
            subset: int | None = None, seed: int = 0, skip_bad_images: bool = False, classes: Sequence[str] | None = None) -> Prepared:
    spec = DataSpec.from_options({"data": data, "data_root": data_root, "val_fraction": val_fraction, "subset": subset,
                                  "skip_bad_images": skip_bad_images, "classes": classes})
    return recipe.prepare(spec, arch=arch, weights=weights, augment=augment, seed=seed)


def build_model(arch: str, prepared: Prepared, strategy: Strategy, *, init=None, seed: int, batch_size: int = 32) -> nn.Module:
    return recipe.build_model(prepared, _spec(arch, strategy, init), seed=seed, batch_size=batch_size)


def plan(model: nn.Module, strategy: Strategy, *, epochs: int, cfg: TrainConfig, lr=None, backbone_lr=None, lr_decay: float = 1.0,
         bn: str = "frozen", probed: bool = False) -> list:
    from dataclasses import replace

    arch = getattr(model, "warmstart_arch", "model")
    cfg = replace(cfg, epochs=epochs, lr=lr if lr is not None else cfg.lr,
                  backbone_lr=backbone_lr if backbone_lr is not None else cfg.backbone_lr, lr_decay=lr_decay)
    return recipe.plan(model, TrainSpec(model=arch, strategy=strategy, bn=bn), cfg, probed=probed)


def run_arm(prepared: Prepared, run: Run, *, arch: str, strategy: Strategy, epochs: int, cfg: TrainConfig, lr=None,
            backbone_lr=None, lr_decay: float = 1.0, bn: str = "frozen", init=None, augment: bool = False,
            feature_cache: str = "auto", head_init: str = "probe", resume: bool = False, model: nn.Module | None = None,
            callbacks: Sequence = (), diagnostics: bool = False):
    from dataclasses import replace

    cfg = replace(cfg, epochs=epochs, lr=lr if lr is not None else cfg.lr,
                  backbone_lr=backbone_lr if backbone_lr is not None else cfg.backbone_lr, lr_decay=lr_decay)
    return recipe.run_arm(prepared, run, _spec(arch, strategy, init, bn, augment, feature_cache, head_init), cfg, resume=resume,
                          model=model, callbacks=callbacks, diagnostics=diagnostics)


def default_augment(strategy: Strategy, augment: str, head_init: str = "probe") -> bool:
    return TrainSpec(model="model", strategy=strategy, augment=augment, head_init=head_init).augments
