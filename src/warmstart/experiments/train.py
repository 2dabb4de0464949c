"""`warmstart train`: one model, one strategy, one run directory.

    DATA ─ load_data ─> splits ─ ImageDataset (decoded once, preprocessing from the weights) ─┐
    --weights ─ resolve_weights ─> Weights ─ create_model ─> model ─ layer_groups ─┐
    head input features (trunk run once) ─ fit_probe ─> the new head starts at the linear probe
    Strategy.phases (learning rates from the recipe) ─> plan
    plan + frozen prefix + no augmentation ─> FeatureCache (trunk run once) ─> engine.fit(head)
    otherwise                                                               ─> engine.fit(model)

**The recipe** (the defaults; every part can be overridden). For every strategy that starts from pretrained
weights, the new head starts where a linear probe on the frozen features ends (``transfer.probe``: logistic
regression solved to the optimum, pulled towards the best-matching rows of the pretrained classifier when
cross-validation on the training split says that helps). The epochs then train at a tenth of the usual head
learning rate (AdamW 1e-4; the blocks that fine-tune get a tenth of that, 1e-5) with label smoothing 0.1
(:func:`default_label_smoothing`), pretrained BatchNorm statistics frozen, on centre crops. This is LP-FT
(Kumar et al., ICLR 2022): starting fine-tuning from a random head lets its large early gradients distort the
pretrained features. Measured on hymenoptera (README; 153 validation images, one image = 0.65 points), best /
final: the probe lifts transfer from 0.908 (final) to 0.948/0.948 (0.948/0.941 with label smoothing) and
fine-tuning all layers from 0.915/0.908 to 0.941/0.935, and label smoothing to 0.961/0.954; random crops and a
10x larger learning rate never helped from a probe head (0-1.3 points lower). Training from scratch (or
``--head-init random``) keeps AdamW 1e-3, no label smoothing, and random crops + flips.

The run directory ends with ``model.safetensors`` + ``model.json`` (the weights' metadata, updated for the
new head): a finished run is itself a valid ``--weights PATH`` for the next run, for ``predict`` and ``export``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from warmstart.data import DataSplits, ImageDataset, Normalizer, describe_splits, load_data
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.distributed import cores_per_rank, init_from_env, threads
from warmstart.engine.loop import FitResult, amp_dtype, fast_cpu_channels_last, fit, resolve_device
from warmstart.engine.run import Run, default_out
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.features import FeatureCache, cache_key, split_at
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.strategies import Strategy, parse_strategy
from warmstart.transfer.weights import Weights, resolve_weights, save_weights

#: default learning rate of a head that starts at random, per optimizer; a head that starts at its linear probe
#: gets a tenth of it (PROBE_LR_FACTOR), and fine-tuned blocks a tenth of the head's (Strategy.phases)
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
PROBE_LR_FACTOR = 0.1
#: label smoothing of the epochs after a linear-probe head (timm's default for fine-tuning); 0 from a random head
PROBE_LABEL_SMOOTHING = 0.1
#: heads on cached features smaller than this train on one thread
SMALL_HEAD_PARAMS = 1_000_000
FEATURE_CACHE = ("auto", "memory", "disk", "off")
HEAD_INITS = ("probe", "random")
MODEL_FILE = "model.safetensors"
#: --feature-cache auto keeps features in memory up to this many bytes (float32), e.g. 262,144 images of
#: MobileNetV3-Small's 1024 features; above it they go to disk as a float16 memory map (2 bytes per value)
FEATURE_MEMORY_LIMIT = 1 << 30
PROBE_FILE = "probe.json"


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
    decoders = cores_per_rank()  # decoding scales with cores (PIL releases the GIL)
    plain = ImageDataset(splits.train, pre, train=True, skip_bad_images=skip_bad_images, workers=decoders)
    aug = plain.with_augmentation(scale=(0.35, 1.0)) if augment else None
    val = ImageDataset(splits.val, pre, skip_bad_images=skip_bad_images, workers=decoders)
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


def default_lr(optimizer: str, *, probed: bool) -> float:
    """The recipe's head learning rate: DEFAULT_LR, a tenth of it when the head starts at its linear probe."""
    return DEFAULT_LR[optimizer] * (PROBE_LR_FACTOR if probed else 1.0)


def default_label_smoothing(*, probed: bool) -> float:
    """The recipe's label smoothing: PROBE_LABEL_SMOOTHING when the head starts at its linear probe, else 0.

    The probe already fits the training crops (hymenoptera: train accuracy 0.996, loss 0.03), so under plain
    cross-entropy what is left to learn is a handful of images, while AdamW's steps keep their size (the first
    conv moved as far with smoothing as without, measured). Our reading, not proven: smoothed targets, which no
    image reaches, make the fine-tuning steps follow the whole batch rather than those few. Measured (README):
    fine-tuning all layers of MobileNetV3-Small on hymenoptera, final accuracy 0.950 vs 0.941 over 3 seeds;
    MobileNetV2 0.984 vs 0.974 (2 seeds); a CIFAR-10 subset 0.569 vs 0.573 (2 seeds, within noise).
    """
    return PROBE_LABEL_SMOOTHING if probed else 0.0


def augment_by_default(strategy: Strategy, head_init: str) -> bool:
    """``--augment auto``: random crops + flips when training from scratch or fine-tuning from a random head.

    Not for a head that starts at its linear probe: the probe is fitted on centre crops, and on hymenoptera
    random crops never helped there (0-1.3 points lower, measured, README), while centre crops let the frozen
    layers of transfer, finetune-last and gradual run once (feature cache).
    """
    return strategy.kind == "scratch" or (head_init == "random" and strategy.kind != "transfer")


def build_model(arch: str, prepared: Prepared, strategy: Strategy, *, init: str | None, seed: int,
                batch_size: int = 32) -> nn.Module:
    """The model of one arm: pretrained with a new head, or (scratch) randomly initialised by ``init``.

    ``init`` ``lsuv`` is measured on one training batch (``batch_size`` images drawn with ``seed``).
    """
    torch.manual_seed(seed)
    n = prepared.splits.num_classes
    if strategy.kind == "scratch":
        model = create_model(arch, n, resolve_weights("none", arch))
        if init:
            from warmstart.init.data_init import init_model, is_lsuv, sample_batch

            batch = sample_batch(prepared.train_plain, batch_size, seed=seed, normalize=Normalizer.of(prepared.weights.preprocess))[0] \
                if is_lsuv(init) else None
            init_model(model, init, batch=batch, generator=seed)
        return model
    if not prepared.weights.pretrained:
        raise UserError(f"strategy {strategy.spec} reuses pretrained layers but --weights is none; "
                        "pass --weights imagenet or a weights file, or use --strategy scratch")
    return create_model(arch, n, prepared.weights)


def plan(model: nn.Module, strategy: Strategy, *, epochs: int, cfg: TrainConfig, lr: float | None = None,
         backbone_lr: float | None = None, lr_decay: float = 1.0, bn: str = "frozen", probed: bool = False) -> list:
    """The phases ``strategy`` trains ``model`` in (validates K, learning rates and the BN policy).

    ``lr`` defaults to the recipe's (:func:`default_lr`: lower when the head starts at its linear probe).
    """
    lr = lr if lr is not None else default_lr(cfg.optimizer, probed=probed)
    return strategy.phases(layer_groups(model), epochs=epochs, lr=lr, backbone_lr=backbone_lr, lr_decay=lr_decay, bn=bn,
                           pretrained=bool(getattr(model, "warmstart_pretrained", False)))


def run_arm(prepared: Prepared, run: Run, *, arch: str, strategy: Strategy, epochs: int, cfg: TrainConfig,
            lr: float | None = None, backbone_lr: float | None = None, lr_decay: float = 1.0, bn: str = "frozen",
            init: str | None = None, augment: bool = False, feature_cache: str = "auto", head_init: str = "probe",
            resume: bool = False, model: nn.Module | None = None, callbacks: Sequence = (), diagnostics: bool = False
            ) -> tuple[nn.Module, FitResult, dict[str, Any]]:
    """Train one (model, strategy) arm into ``run``; returns the model, the fit result and the summary.

    ``diagnostics`` records per-layer signal statistics of the trained network at init and after every epoch
    (:class:`~warmstart.experiments.diagnostics.SignalDiagnostics`: signal.json/csv and PNGs in the run
    directory, TensorBoard histograms with ``cfg.tensorboard``).

    ``augment`` trains on random crops + flips (``prepared`` must have been made with augmentation); it turns
    the feature cache off, since every epoch then needs the frozen layers again.
    """
    if feature_cache not in FEATURE_CACHE:
        from warmstart.errors import unknown

        raise unknown("feature cache mode", feature_cache, FEATURE_CACHE)
    if head_init not in HEAD_INITS:
        from warmstart.errors import unknown

        raise unknown("head init", head_init, HEAD_INITS)
    t0 = time.perf_counter()
    model = model if model is not None else build_model(arch, prepared, strategy, init=init, seed=cfg.seed,
                                                        batch_size=cfg.batch_size)
    groups = layer_groups(model)
    probe_info: dict[str, Any] | None = None
    probe_seconds = 0.0
    if head_init == "probe" and strategy.kind != "scratch" and getattr(model, "warmstart_pretrained", False):
        p0 = time.perf_counter()
        probe_info = _probe_head(prepared, run, model, groups, cfg, feature_cache, resume=resume)
        probe_seconds = time.perf_counter() - p0
    phases = plan(model, strategy, epochs=epochs, cfg=cfg, lr=lr, backbone_lr=backbone_lr, lr_decay=lr_decay, bn=bn,
                  probed=probe_info is not None)
    lr = phases[-1].groups[-1].lr  # the head's, as the recipe resolved it (the head group is last)
    if cfg.label_smoothing is None:
        cfg = dataclasses.replace(cfg, label_smoothing=default_label_smoothing(probed=probe_info is not None))
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
    from warmstart.transfer.drift import DriftTracker  # how far the start travels: drift/* in metrics, summary["drift"]

    drift = DriftTracker.for_run(model, groups, strategy, phases, images=prepared.val, normalize=Normalizer.of(prepared.weights.preprocess),
                                 batch_size=max(64, cfg.batch_size), resumed=resume and run.checkpoint_path.exists(),
                                 device=resolve_device(cfg.device)) if run.main else None
    callbacks = [*callbacks, drift] if drift is not None else callbacks
    diag = None
    if diagnostics and run.main:
        from warmstart.experiments.diagnostics import SignalDiagnostics
        from warmstart.init.data_init import sample_batch

        probe = sample_batch(prepared.train_plain if not use_cache else train_set, cfg.batch_size, seed=cfg.seed, normalize=normalize)
        diag = SignalDiagnostics(probe, run.dir, tensorboard=run.tensorboard() if cfg.tensorboard else None)
        if not (resume and diag.restore(len(run.rows))):
            diag.start(net)
        callbacks = [*callbacks, diag]
    # a small head on cached features is many tiny ops: extra intra-op threads only spin (measured on a busy
    # 2-core machine: hymenoptera's 5 transfer epochs took 2.4 s with 2 threads, 0.1 s with one)
    small = use_cache and sum(p.numel() for p in net.parameters()) < SMALL_HEAD_PARAMS
    try:
        with threads(1 if small else None):
            result = fit(net, train_set, val_set, phases, cfg, num_classes=prepared.splits.num_classes, run=run,
                         normalize=normalize, resume=resume, callbacks=callbacks)
    finally:
        if diag is not None:
            diag.finish(title=arch)
    drift_summary = drift.finish(result.history) if drift is not None else None
    model.to("cpu")
    # every epoch's seconds, those before a --resume included (the history comes back from the checkpoint),
    # plus the frozen features and the probe of this process
    train_seconds = sum(float(row["seconds"]) for row in result.history) + feature_seconds + probe_seconds
    trainable = {n for ph in phases for n in ph.trainable}
    summary = {
        "strategy": strategy.spec, "model": arch, "weights": prepared.weights.where if strategy.kind != "scratch" else "none",
        "epochs": epochs, "best_val_accuracy": result.best_val_accuracy, "final_val_accuracy": result.final_val_accuracy,
        "train_seconds": round(train_seconds, 3),
        "train_images_per_second": round(len(prepared.train_plain) * len(result.history) / max(1e-9, train_seconds), 1),
        "trainable_params": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "classes": prepared.splits.classes, "data": prepared.splits.source,
        "val_is_test": prepared.splits.val_is_test, "train_images": len(prepared.train_plain), "val_images": len(prepared.val),
        "feature_cache": bool(use_cache), "feature_seconds": round(feature_seconds, 3),
        "probe_seconds": round(probe_seconds, 3), "augment": augmenting,
        "head_init": probe_info if probe_info is not None else "random", "lr": lr,
        "backbone_lr": None if strategy.kind in ("transfer", "scratch") else backbone_lr if backbone_lr is not None else lr / 10,
        "bn": bn, "label_smoothing": cfg.label_smoothing,
        "stopped_early": result.stopped_early, "per_class_accuracy": result.per_class_accuracy, "confusion": result.confusion,
        "seconds": round(time.perf_counter() - t0, 3), "device": str(resolve_device(cfg.device)),
    }
    if drift_summary is not None:
        summary["drift"] = drift_summary
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


def _probe_head(prepared: Prepared, run: Run, model: nn.Module, groups, cfg: TrainConfig, mode: str, *,
                resume: bool) -> dict[str, Any] | None:
    """Start the new head at the linear probe solved on the frozen features of the training images (LP-FT).

    The features entering the head are computed once (shared with a transfer run's feature cache); the probe
    is solved on them (``transfer.probe``: prior and regularisation chosen by cross-validation on the
    training split) and copied into the head. A resumed run takes its head from the checkpoint instead.
    """
    from warmstart.transfer.probe import fit_probe

    if resume and run.checkpoint_path.exists() and (run.dir / PROBE_FILE).is_file():
        import json

        return json.loads((run.dir / PROBE_FILE).read_text())
    head_name = groups[-1].modules[0]
    head = model.get_submodule(head_name)
    if not isinstance(head, nn.Linear):
        log(f"linear probe skipped: the head {head_name} is a {type(head).__name__}, not a Linear layer")
        return None
    try:
        trunk, _ = split_at(model, groups, len(groups) - 1)
    except UserError as e:
        log(f"linear probe skipped ({e}); the head starts at random")
        return None
    f0 = time.perf_counter()
    feats = _features(prepared, trunk, prepared.train_plain, "train", groups[-2].name, cfg, mode, run)
    f1 = time.perf_counter()
    x, y = feats.tensors()
    x = x.flatten(1)
    prior = None
    sd = prepared.weights.load_state_dict()
    if f"{head_name}.weight" in sd and f"{head_name}.bias" in sd:
        prior = (sd[f"{head_name}.weight"], sd[f"{head_name}.bias"])
    probe = fit_probe(x, y, prepared.splits.num_classes, prior=prior, seed=cfg.seed)
    with torch.no_grad():
        head.weight.copy_(probe.weight.reshape(head.weight.shape))
        if head.bias is not None:
            head.bias.copy_(probe.bias)
    log(f"{probe.describe(prepared.weights.categories)}; on {tuple(x.shape)} features of the training images "
        f"({f1 - f0:.1f} s to compute)")
    info = probe.to_dict()
    if run.main:
        run.write_json(PROBE_FILE, info)
    return info


def _plots(run: Run, result: FitResult, classes: list[str]) -> None:
    from warmstart.report.plots import confusion_matrix, learning_curves

    learning_curves({run.dir.name: result.history}, run.dir / "learning_curves.png")
    confusion_matrix(result.confusion, classes, run.dir / "confusion.png", title="validation, final epoch")


def default_augment(strategy: Strategy, augment: str, head_init: str = "probe") -> bool:
    """Whether an arm trains on augmented images: ``augment`` = on | off | auto (:func:`augment_by_default`).

    ``compare`` applies the same rule to each of its arms.
    """
    return augment == "on" or (augment == "auto" and augment_by_default(strategy, head_init))


def train(data: str | Path, *, model: str = "mobilenet_v3_small", weights: str = "imagenet", strategy: str = "transfer",
          epochs: int = 5, init: str | None = None, lr: float | None = None, backbone_lr: float | None = None,
          lr_decay: float = 1.0, bn: str = "frozen", augment: str = "auto", feature_cache: str = "auto",
          head_init: str = "probe", classes: Sequence[str] | None = None, out: str | Path | None = None, resume: bool = False,
          data_root=None, val_fraction: float = 0.2, subset: int | None = None, skip_bad_images: bool = False,
          restarts: int = 1, restart_epochs: int = 1,
          cfg: TrainConfig | None = None, options: dict[str, Any] | None = None, diagnostics: bool = False) -> dict[str, Any]:
    """Train ``model`` on DATA with ``strategy``; write a run directory; return its summary (summary.json).

    ``restarts`` > 1 (scratch only): the best of K random inits after ``restart_epochs`` each, trained on
    (see :mod:`warmstart.experiments.restarts`); the trials' run directories are ``OUT/restarts/seed-N``.
    ``diagnostics``: per-layer signal statistics at the start and after every epoch of the final run (see
    :func:`run_arm`; with restarts the start is the chosen trial's model).
    """
    from warmstart.errors import unknown
    from warmstart.experiments.restarts import best_of_k, check_restarts

    cfg = cfg or TrainConfig()
    # under torchrun: join the process group first, so that only rank 0 logs and writes the run directory
    init_from_env(resolve_device(cfg.device).type)
    strat = parse_strategy(strategy)
    check_restarts(restarts, restart_epochs)
    if restarts > 1 and strat.kind != "scratch":
        raise UserError(f"--restarts {restarts} needs --strategy scratch: strategy {strat.spec} starts from the pretrained "
                        "weights, one start only; drop --restarts or train from scratch")
    if init and strat.kind != "scratch":
        raise UserError(f"--init {init} initialises a model trained from scratch, but --strategy {strat.spec} starts from "
                        "pretrained weights (its new head gets torchvision's own init); drop --init or use --strategy scratch")
    if init:
        from warmstart.init.data_init import check_init

        check_init(init)  # a bad spec fails before anything is written
    for what, value, choices in (("augment mode", augment, ("auto", "on", "off")), ("feature cache mode", feature_cache, FEATURE_CACHE),
                                 ("head init", head_init, HEAD_INITS)):
        if value not in choices:
            raise unknown(what, value, choices)
    aug = default_augment(strat, augment, head_init)
    if aug and strat.kind not in ("scratch", "finetune-all") and feature_cache in ("memory", "disk"):
        log("augmentation is on, so the feature cache is off: every epoch sees new crops and must run the frozen layers again")
    # scratch needs only the preprocessing of "imagenet" weights, not their tensors (nothing to download)
    prepared = prepare(data, arch=model, weights="none" if strat.kind == "scratch" and weights == "imagenet" else weights,
                       augment=aug, data_root=data_root, val_fraction=val_fraction, subset=subset,
                       seed=cfg.seed, skip_bad_images=skip_bad_images, classes=classes)
    # everything that can still be wrong (weights that do not fit, the init spec, K of finetune-last, the device)
    # fails here, before the run directory exists; a pickle that would run code is refused on the way
    net = build_model(model, prepared, strat, init=init, seed=cfg.seed, batch_size=cfg.batch_size)
    plan(net, strat, epochs=epochs, cfg=cfg, lr=lr, backbone_lr=backbone_lr, lr_decay=lr_decay, bn=bn)
    resolve_device(cfg.device)
    out = Path(out) if out else default_out("train")
    run = Run(out, "train", {"options": options or {}, "preprocess": prepared.weights.preprocess.to_dict()},
              resume=resume, tensorboard=cfg.tensorboard).start()
    arm = dict(arch=model, strategy=strat, cfg=cfg, lr=lr, backbone_lr=backbone_lr, lr_decay=lr_decay, bn=bn, init=init,
               augment=aug, feature_cache=feature_cache, head_init=head_init, resume=resume)
    best = None
    if restarts > 1:
        def trial(m: nn.Module, s: int) -> float:
            sub = run.sub(f"restarts/seed-{s}", {"seed": s, "epochs": restart_epochs})
            try:
                return run_arm(prepared, sub, epochs=restart_epochs, model=m, **arm)[1].final_val_accuracy
            finally:
                sub.close()

        best = best_of_k(restarts, cfg.seed,
                         lambda s: build_model(model, prepared, strat, init=init, seed=s, batch_size=cfg.batch_size), trial)
    _, _, summary = run_arm(prepared, run, epochs=epochs, model=best.model if best else net, diagnostics=diagnostics, **arm)
    if best is not None:
        summary["restarts"] = {**best.summary(), "restart_epochs": restart_epochs}
        run.write_summary(summary)
    run.close()
    log(f"best val accuracy {summary['best_val_accuracy']:.4f} (epoch {summary['best_epoch']}), final {summary['final_val_accuracy']:.4f}; "
        f"{summary['train_seconds']:.1f} s; run directory {run.dir}")
    return summary


def sections(run_dir: str | Path) -> list:
    """The report section of a train run, rebuilt from its run directory alone (``warmstart report``)."""
    from warmstart.experiments.runs import run_sections

    return run_sections(run_dir)
