"""`warmstart train`: one model, one strategy, one run directory.

    DATA ─ load_data ─> splits ─ ImageDataset (decoded once, preprocessing from the weights) ─┐
    --weights ─ resolve_weights ─> Weights ─ create_model ─> model ─ layer_groups ─ Strategy.phases ─> plan
    plan + frozen prefix + no augmentation ─> FeatureCache (trunk run once) ─> engine.fit(head)
    otherwise                                                               ─> engine.fit(model)

The run directory ends with ``model.safetensors`` + ``model.json`` (the weights' metadata, updated for the
new head): a finished run is itself a valid ``--weights PATH`` for the next run, for ``predict`` and ``export``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from warmstart.data import DataSplits, ImageDataset, Normalizer, describe_splits, load_data
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.distributed import cores_per_rank, init_from_env
from warmstart.engine.loop import FitResult, amp_dtype, fast_cpu_channels_last, fit, resolve_device
from warmstart.engine.run import Run, default_out
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.features import FeatureCache, cache_key, split_at
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.strategies import Strategy, parse_strategy
from warmstart.transfer.weights import Weights, resolve_weights, save_weights

#: default head learning rate per optimizer; fine-tuned blocks get a tenth of it (Strategy.phases)
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
FEATURE_CACHE = ("auto", "memory", "disk", "off")
MODEL_FILE = "model.safetensors"
#: --feature-cache auto keeps features in memory up to this many bytes (float32), e.g. 262,144 images of
#: MobileNetV3-Small's 1024 features; above it they go to disk as a float16 memory map (2 bytes per value)
FEATURE_MEMORY_LIMIT = 1 << 30


@dataclass
class Prepared:
    """Everything a training arm needs, built once and shareable between arms (``compare``)."""

    splits: DataSplits
    weights: Weights
    train_plain: ImageDataset        # centre crops: evaluation transform, what a feature cache stores
    train_aug: ImageDataset | None   # random crops + flips (the same decoded cache)
    val: ImageDataset
    features: dict[str, Any]         # shared feature caches, keyed by cache_key


def prepare(data: str | Path, *, arch: str, weights: str, augment: bool, data_root=None, val_fraction: float = 0.2,
            subset: int | None = None, seed: int = 0, skip_bad_images: bool = False, classes: Sequence[str] | None = None) -> Prepared:
    """Resolve weights and data, decode the images once. Validates everything before anything is written."""
    w = resolve_weights(weights, arch)
    splits = load_data(data, data_root=data_root, val_fraction=val_fraction, subset=subset, seed=seed,
                       skip_bad_images=skip_bad_images)
    if classes:
        splits = restrict_classes(splits, classes)
    log(describe_splits(splits) + (" (validation = the data set's test split)" if splits.val_is_test else ""))
    pre = w.preprocess
    threads = cores_per_rank()  # decoding scales with cores (PIL releases the GIL)
    plain = ImageDataset(splits.train, pre, train=True, skip_bad_images=skip_bad_images, workers=threads)
    aug = plain.with_augmentation(scale=(0.35, 1.0)) if augment else None
    val = ImageDataset(splits.val, pre, skip_bad_images=skip_bad_images, workers=threads)
    return Prepared(splits, w, plain, aug, val, {})


def restrict_classes(splits: DataSplits, classes: Sequence[str]) -> DataSplits:
    """Keep only ``classes`` (names), relabelled 0..k-1 in the given order."""
    missing = [c for c in classes if c not in splits.classes]
    if missing:
        raise UserError(f"--classes: {missing[0]!r} is not a class of {splits.name} (it has: {', '.join(splits.classes)})")
    if len(set(classes)) < 2:
        raise UserError("--classes needs at least 2 distinct classes")
    old = [splits.classes.index(c) for c in classes]
    remap = {o: i for i, o in enumerate(old)}

    def keep(src):
        if src is None:
            return None
        idx = [i for i, y in enumerate(src.labels) if y in remap]
        sub = src.select(idx)
        sub.labels = [remap[y] for y in sub.labels]
        sub.classes = list(classes)
        return sub

    return DataSplits(train=keep(splits.train), val=keep(splits.val), test=keep(splits.test), classes=list(classes),
                      source=splits.source + f"; classes {', '.join(classes)}", fingerprint=f"{splits.fingerprint}:{','.join(classes)}",
                      val_is_test=splits.val_is_test)


def build_model(arch: str, prepared: Prepared, strategy: Strategy, *, init: str | None, seed: int) -> nn.Module:
    """The model of one arm: pretrained with a new head, or (scratch) randomly initialised by ``init``."""
    torch.manual_seed(seed)
    n = prepared.splits.num_classes
    if strategy.kind == "scratch":
        model = create_model(arch, n, resolve_weights("none", arch))
        if init:
            from warmstart.init import apply_init

            apply_init(model, init, generator=torch.Generator().manual_seed(seed))
        return model
    if not prepared.weights.pretrained:
        raise UserError(f"strategy {strategy.spec} reuses pretrained layers but --weights is none; "
                        "pass --weights imagenet or a weights file, or use --strategy scratch")
    return create_model(arch, n, prepared.weights)


def run_arm(prepared: Prepared, run: Run, *, arch: str, strategy: Strategy, epochs: int, cfg: TrainConfig,
            lr: float | None = None, backbone_lr: float | None = None, lr_decay: float = 1.0, bn: str = "frozen",
            init: str | None = None, augment: bool = False, feature_cache: str = "auto", resume: bool = False,
            model: nn.Module | None = None, callbacks: Sequence = ()) -> tuple[nn.Module, FitResult, dict[str, Any]]:
    """Train one (model, strategy) arm into ``run``; returns the model, the fit result and the summary.

    ``augment`` trains on random crops + flips (``prepared`` must have been made with augmentation); it turns
    the feature cache off, since every epoch then needs the frozen layers again.
    """
    if feature_cache not in FEATURE_CACHE:
        from warmstart.errors import unknown

        raise unknown("feature cache mode", feature_cache, FEATURE_CACHE)
    t0 = time.perf_counter()
    model = model if model is not None else build_model(arch, prepared, strategy, init=init, seed=cfg.seed)
    groups = layer_groups(model)
    lr = lr if lr is not None else DEFAULT_LR[cfg.optimizer]
    phases = strategy.phases(groups, epochs=epochs, lr=lr, backbone_lr=backbone_lr, lr_decay=lr_decay, bn=bn,
                             pretrained=bool(getattr(model, "warmstart_pretrained", False)))
    frozen = strategy.frozen_prefix(groups, epochs=epochs) if strategy.kind != "scratch" else []
    if augment and prepared.train_aug is None:
        raise ValueError("run_arm(augment=True) needs prepare(..., augment=True)")
    augmenting = augment
    train_set = prepared.train_aug if augmenting else prepared.train_plain
    normalize = Normalizer.of(prepared.weights.preprocess)
    use_cache = feature_cache != "off" and frozen and not augmenting
    feature_seconds = 0.0
    net = model
    if feature_cache in ("memory", "disk") and not frozen:
        log(f"feature cache off: strategy {strategy.spec} trains every layer, nothing stays frozen to cache")
    if use_cache:
        f0 = time.perf_counter()
        trunk, net = split_at(model, groups, len(frozen))
        train_set, val_set = (_features(prepared, trunk, ds, which, frozen[-1].name, cfg, feature_cache, run)
                              for ds, which in ((prepared.train_plain, "train"), (prepared.val, "val")))
        feature_seconds = time.perf_counter() - f0
        log(f"feature cache: {len(frozen)} frozen groups run once ({feature_seconds:.1f} s); the head trains on "
            f"{tuple(train_set.feature_shape)} features")
        normalize = None
    else:
        val_set = prepared.val
    result = fit(net, train_set, val_set, phases, cfg, num_classes=prepared.splits.num_classes, run=run,
                 normalize=normalize, resume=resume, callbacks=callbacks)
    model.to("cpu")
    trainable = {n for ph in phases for n in ph.trainable}
    summary = {
        "strategy": strategy.spec, "model": arch, "weights": prepared.weights.where if strategy.kind != "scratch" else "none",
        "epochs": epochs, "best_val_accuracy": result.best_val_accuracy, "final_val_accuracy": result.final_val_accuracy,
        "train_seconds": round(result.train_seconds + feature_seconds, 3),
        "train_images_per_second": round(len(prepared.train_plain) * len(result.history) / max(1e-9, result.train_seconds + feature_seconds), 1),
        "trainable_params": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "classes": prepared.splits.classes, "data": prepared.splits.source,
        "val_is_test": prepared.splits.val_is_test, "train_images": len(prepared.train_plain), "val_images": len(prepared.val),
        "feature_cache": bool(use_cache), "feature_seconds": round(feature_seconds, 3), "augment": augmenting,
        "stopped_early": result.stopped_early, "per_class_accuracy": result.per_class_accuracy, "confusion": result.confusion,
        "seconds": round(time.perf_counter() - t0, 3), "device": str(resolve_device(cfg.device)),
    }
    if run.main:
        meta = dict(prepared.weights.meta)
        meta.update(arch=arch, num_classes=prepared.splits.num_classes, categories=prepared.splits.classes,
                    source=f"warmstart train ({strategy.spec}) in {run.dir}")
        save_weights(run.dir / MODEL_FILE, model.state_dict(), meta)
        run.write_summary(summary)
        _plots(run, result, prepared.splits.classes)
    return model, result, summary


def _features(prepared: Prepared, trunk, dataset, which: str, layer: str, cfg: TrainConfig, mode: str, run: Run) -> FeatureCache:
    w = prepared.weights
    key = cache_key(w.fingerprint, w.preprocess, f"{prepared.splits.fingerprint}:{which}", layer)
    if key in prepared.features:
        return prepared.features[key]
    # auto: in memory (float32) up to FEATURE_MEMORY_LIMIT, else memory-mapped float16 on disk in the run directory
    path = run.dir / "features" / f"{which}-{key}.npy" if mode in ("disk", "auto") else None
    device = resolve_device(cfg.device)
    cache = FeatureCache.build(trunk, dataset, normalize=Normalizer.of(w.preprocess), batch_size=max(64, cfg.batch_size),
                               device=device, path=path, memory_limit=FEATURE_MEMORY_LIMIT if mode == "auto" else None,
                               channels_last=cfg.channels_last or fast_cpu_channels_last(device),
                               autocast=amp_dtype(device, cfg.amp), fold_bn=True)
    prepared.features[key] = cache
    return cache


def _plots(run: Run, result: FitResult, classes: list[str]) -> None:
    from warmstart.report.plots import confusion_matrix, learning_curves

    learning_curves({run.dir.name: result.history}, run.dir / "learning_curves.png")
    confusion_matrix(result.confusion, classes, run.dir / "confusion.png", title="validation, final epoch")


def train(data: str | Path, *, model: str = "mobilenet_v3_small", weights: str = "imagenet", strategy: str = "transfer",
          epochs: int = 5, init: str | None = None, lr: float | None = None, backbone_lr: float | None = None,
          lr_decay: float = 1.0, bn: str = "frozen", augment: str = "auto", feature_cache: str = "auto",
          classes: Sequence[str] | None = None, out: str | Path | None = None, resume: bool = False,
          data_root=None, val_fraction: float = 0.2, subset: int | None = None, skip_bad_images: bool = False,
          cfg: TrainConfig | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on DATA with ``strategy``; write a run directory; return its summary (summary.json)."""
    cfg = cfg or TrainConfig()
    # under torchrun: join the process group first, so that only rank 0 logs and writes the run directory
    init_from_env(resolve_device(cfg.device).type)
    strat = parse_strategy(strategy)
    if augment not in ("auto", "on", "off"):
        from warmstart.errors import unknown

        raise unknown("augment mode", augment, ("auto", "on", "off"))
    # augmentation: on for every strategy that trains convolutions; off for transfer, whose frozen
    # features can then be computed once (feature cache)
    aug = augment == "on" or (augment == "auto" and strat.kind != "transfer")
    if aug and strat.kind not in ("scratch", "finetune-all") and feature_cache in ("memory", "disk"):
        log("augmentation is on, so the feature cache is off: every epoch sees new crops and must run the frozen layers again")
    # scratch needs only the preprocessing of "imagenet" weights, not their tensors (nothing to download)
    prepared = prepare(data, arch=model, weights="none" if strat.kind == "scratch" and weights == "imagenet" else weights,
                       augment=aug, data_root=data_root, val_fraction=val_fraction, subset=subset,
                       seed=cfg.seed, skip_bad_images=skip_bad_images, classes=classes)
    out = Path(out) if out else default_out("train")
    run = Run(out, "train", {"options": options or {}, "preprocess": prepared.weights.preprocess.to_dict()},
              resume=resume, tensorboard=cfg.tensorboard).start()
    _, _, summary = run_arm(prepared, run, arch=model, strategy=strat, epochs=epochs, cfg=cfg, lr=lr, backbone_lr=backbone_lr,
                            lr_decay=lr_decay, bn=bn, init=init, augment=aug, feature_cache=feature_cache, resume=resume)
    run.close()
    log(f"best val accuracy {summary['best_val_accuracy']:.4f} (epoch {summary['best_epoch']}), final {summary['final_val_accuracy']:.4f}; "
        f"{summary['train_seconds']:.1f} s; run directory {run.dir}")
    return summary
