"""The recipe of `warmstart train` (and ``ws.train``, and every arm of ``compare``), in the library.

    DataSpec ─ load ─> splits ─ ImageDataset (decoded once, preprocessing from the weights) ─┐
    TrainSpec.weights ─ resolve_weights ─> Weights ─ create_model ─> model ─ layer_groups ─┐
    head input features (trunk run once) ─ fit_probe ─> the new head starts at the linear probe
    TrainSpec.strategy.phases (learning rates from the recipe) ─> plan
    plan + frozen prefix + no augmentation ─> FeatureCache (trunk run once) ─> engine.fit(head)
    otherwise                                                               ─> engine.fit(model)

**The defaults** (every part can be overridden). For every strategy that starts from pretrained weights,
the new head starts where a linear probe on the frozen features ends (``transfer.probe``: logistic
regression solved to the optimum, pulled towards the best-matching rows of the pretrained classifier when
cross-validation on the training split says that helps). The epochs then train at a tenth of the usual head
learning rate (AdamW 1e-4; the blocks that fine-tune get a tenth of that, 1e-5) with label smoothing 0.1
(:func:`default_label_smoothing`), pretrained BatchNorm statistics frozen, on centre crops. This is LP-FT
(Kumar et al., ICLR 2022): starting fine-tuning from a random head lets its large early gradients distort the
pretrained features. Measured on hymenoptera (README; 153 validation images, one image = 0.65 points), best /
final: the probe lifts transfer from 0.908 (final) to 0.948/0.948 (0.948/0.941 with label smoothing) and
fine-tuning all layers from 0.915/0.908 to 0.941/0.935, and label smoothing to 0.961/0.954; random crops and a
10x larger learning rate never helped from a probe head (0-1.3 points lower). Training from scratch (or
``head_init="random"``) keeps AdamW 1e-3, no label smoothing, and random crops + flips.

The run directory ends with ``model.safetensors`` + ``model.json`` (the weights' metadata, updated for the
new head): a finished run is itself a valid ``--weights PATH`` for the next run, for ``predict`` and ``export``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from warmstart.data import ImageDataset, Normalizer, describe_splits
from warmstart.data.dataset import AUGMENT_SCALE
from warmstart.data.loading import DataSplits, stratified_split
from warmstart.data.spec import DataSpec
from warmstart.engine import layout
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.distributed import cores_per_rank, threads
from warmstart.engine.loop import FitResult, amp_dtype, evaluate, fast_cpu_channels_last, fit, resolve_device
from warmstart.engine.run import Run
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.drift import DriftTracker
from warmstart.transfer.features import MIN_EVAL_BATCH, FeatureCache, cache_key, split_at
from warmstart.transfer.spec import TrainSpec
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.prior import anchors_of, apply_reg, penalty
from warmstart.transfer.strategies import backbone_rate
from warmstart.transfer.weights import Weights, load_tensors, resolve_weights, save_weights

#: default learning rate of a head that starts at random, per optimizer; a head that starts at its linear probe
#: gets a tenth of it (PROBE_LR_FACTOR), and fine-tuned blocks a tenth of the head's (Strategy.phases)
DEFAULT_LR = {"adamw": 1e-3, "sgd": 1e-2}
PROBE_LR_FACTOR = 0.1
#: label smoothing of the epochs after a linear-probe head (timm's default for fine-tuning); 0 from a random head
PROBE_LABEL_SMOOTHING = 0.1
DEFAULT_EPOCHS = 5
#: heads on cached features smaller than this train on one thread
SMALL_HEAD_PARAMS = 1_000_000
#: --feature-cache auto keeps features in memory up to this many bytes (float32), e.g. 262,144 images of
#: MobileNetV3-Small's 1024 features; above it they go to disk as a float16 memory map (2 bytes per value)
FEATURE_MEMORY_LIMIT = 1 << 30


def eval_batch_size(cfg: TrainConfig) -> int:
    """The batch size of a pass without gradients over frozen layers: ``cfg.batch_size``, at least MIN_EVAL_BATCH."""
    return max(MIN_EVAL_BATCH, cfg.batch_size)


@dataclass
class Prepared:
    """Everything a training arm needs, built once and shareable between arms (``compare``)."""

    splits: DataSplits
    weights: Weights
    train_plain: ImageDataset        # centre crops: evaluation transform, what a feature cache stores
    train_aug: ImageDataset | None   # random crops + flips (the same decoded cache)
    val: ImageDataset
    features: dict[str, Any]         # shared feature caches, keyed by cache_key
    heldout: ImageDataset | None = None  # --interpolate: training images kept out of training (with_holdout)


def prepare(data: DataSpec, *, arch: str, weights: str, augment: bool, seed: int = 0) -> Prepared:
    """Resolve weights and data, decode the images once. Validates everything before anything is written."""
    w = resolve_weights(weights, arch)
    splits = data.load(seed=seed)
    log(describe_splits(splits) + (" (validation = the data set's test split)" if splits.val_is_test else ""))
    pre = w.preprocess
    decoders = cores_per_rank()  # decoding scales with cores (PIL releases the GIL)
    plain = ImageDataset(splits.train, pre, train=True, skip_bad_images=data.skip_bad_images, workers=decoders)
    aug = plain.with_augmentation(scale=AUGMENT_SCALE) if augment else None
    val = ImageDataset(splits.val, pre, skip_bad_images=data.skip_bad_images, workers=decoders)
    return Prepared(splits, w, plain, aug, val, {})


def with_holdout(prepared: Prepared, seed: int, fraction: float | None = None) -> Prepared:
    """``prepared`` with ``fraction`` (default ``wise.HOLDOUT``) of every class of its training split held out
    (stratified, fixed by ``seed``): the run fits (probe included) on the rest, and ``heldout`` is what
    ``--interpolate`` chooses its point on. The validation images are the same."""
    from warmstart.transfer.wise import HOLDOUT

    fraction = HOLDOUT if fraction is None else fraction
    sp = prepared.splits
    fit_idx, held_idx = stratified_split(sp.train.labels, fraction, seed, sp.classes,
                                         where=f"{sp.source}: --interpolate's held-out part of the training split")
    splits = dataclasses.replace(sp, train=sp.train.select(fit_idx), fingerprint=f"{sp.fingerprint}:fit-{fraction:g}-{seed}")
    pre, skip, workers = prepared.weights.preprocess, prepared.train_plain.skip_bad_images, cores_per_rank()
    plain = ImageDataset(splits.train, pre, train=True, skip_bad_images=skip, workers=workers)
    held = ImageDataset(sp.train.select(held_idx), pre, skip_bad_images=skip, workers=workers)
    log(f"--interpolate: {len(held)} training images held out ({fraction:.0%} of every class, seed {seed}) to choose "
        f"the mixing coefficient; {len(plain)} train")
    aug = plain.with_augmentation(scale=AUGMENT_SCALE) if prepared.train_aug is not None else None
    return Prepared(splits, prepared.weights, plain, aug, prepared.val, prepared.features, heldout=held)


def prepare_for(data: DataSpec, spec: TrainSpec, cfg: TrainConfig) -> Prepared:
    """:func:`prepare` for one TrainSpec (augmented images only when it augments)."""
    return prepare(data, arch=spec.model, weights=spec.weights_to_load, augment=spec.augments, seed=cfg.seed)


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


def build_model(prepared: Prepared, spec: TrainSpec, *, seed: int, batch_size: int) -> nn.Module:
    """The model of one arm: pretrained with a new head, or (scratch) randomly initialised by ``spec.init``.

    ``init`` ``lsuv`` is measured on one training batch (``batch_size`` images drawn with ``seed``).
    """
    torch.manual_seed(seed)
    n = prepared.splits.num_classes
    if spec.strategy.from_scratch:
        blank = prepared.weights if not prepared.weights.pretrained else resolve_weights("none", spec.model)
        model = create_model(spec.model, n, blank)
        if spec.init is not None:
            from warmstart.init.data_init import init_model, is_lsuv, sample_batch

            batch = sample_batch(prepared.train_plain, batch_size, seed=seed,
                                 normalize=Normalizer.of(prepared.weights.preprocess))[0] if is_lsuv(spec.init) else None
            init_model(model, spec.init, batch=batch, generator=seed)
        return model
    if not prepared.weights.pretrained:
        raise UserError(f"strategy {spec.strategy.spec} reuses pretrained layers but --weights is none; "
                        "pass --weights imagenet or a weights file, or use --strategy scratch")
    return create_model(spec.model, n, prepared.weights)


def plan(model: nn.Module, spec: TrainSpec, cfg: TrainConfig, *, probed: bool = False) -> list:
    """The phases ``spec.strategy`` trains ``model`` in (validates K, learning rates and the BN policy).

    ``cfg.lr`` defaults to the recipe's (:func:`default_lr`: lower when the head starts at its linear probe).
    """
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.optimizer, probed=probed)
    phases = spec.strategy.phases(layer_groups(model), epochs=cfg.epochs or DEFAULT_EPOCHS, lr=lr, backbone_lr=cfg.backbone_lr,
                                  lr_decay=cfg.lr_decay, bn=spec.bn, pretrained=bool(getattr(model, "warmstart_pretrained", False)))
    return apply_reg(phases, spec.reg)


def run_arm(prepared: Prepared, run: Run, spec: TrainSpec, cfg: TrainConfig, *, resume: bool = False,
            model: nn.Module | None = None, callbacks: Sequence = (), diagnostics: bool = False
            ) -> tuple[nn.Module, FitResult, dict[str, Any]]:
    """Train one (model, strategy) arm into ``run``; returns the model, the fit result and the summary.

    ``diagnostics`` records per-layer signal statistics of the trained network at init and after every epoch
    (signal.json/csv in the run directory, TensorBoard histograms with ``cfg.tensorboard``). The run's figures
    are drawn by the caller from the directory: :func:`~warmstart.report.run_figures.run_figures`.
    ``spec.augments`` trains on random crops + flips (``prepared`` must have been made with augmentation); it
    turns the feature cache off, since every epoch then needs the frozen layers again.
    """
    t0 = time.perf_counter()
    cfg = cfg.with_defaults(epochs=DEFAULT_EPOCHS)
    if spec.interpolate and prepared.heldout is None:
        prepared = with_holdout(prepared, cfg.seed)
    model = model if model is not None else build_model(prepared, spec, seed=cfg.seed, batch_size=cfg.batch_size)
    groups = layer_groups(model)
    probe_info, probe_seconds = _start_head(prepared, run, model, groups, spec, cfg, resume=resume)
    probed = probe_info is not None
    save_start(run, model, prepared, spec)  # where it began, for `warmstart path` (once: a resumed run keeps it)
    phases = plan(model, spec, cfg, probed=probed)
    lr = phases[-1].groups[-1].lr  # the head's, as the recipe resolved it (the head group is last)
    cfg = cfg.with_defaults(label_smoothing=default_label_smoothing(probed=probed))
    # the run's start, copied once for all that read it: L2-SP's anchors, --interpolate's a = 0 and the drift
    drift_wanted = run.main and DriftTracker.measures(model, spec.strategy)
    start = snapshot(model) if spec.reg is not None or spec.interpolate or drift_wanted else None
    anchors = anchors_of(start, groups) if spec.reg is not None else None
    inputs = _inputs(prepared, run, model, groups, spec, cfg)
    diag = _diagnostics(prepared.train_plain if not inputs.cached else inputs.train, inputs.net, run, cfg, inputs.normalize,
                        resume) if diagnostics and run.main else None
    drift = _drift(prepared, run, model, groups, spec, phases, cfg, start=start, resume=resume) if drift_wanted else None
    callbacks = [*callbacks, *(c for c in (diag, drift) if c is not None)]
    result = _train(prepared, run, inputs, phases, cfg, resume=resume, callbacks=callbacks, anchors=anchors, diag=diag)
    result, measured = _measure_end(prepared, spec, cfg, model, groups, result, drift=drift, anchors=anchors, start=start)
    model.to("cpu")
    summary = {**_summary(prepared, spec, cfg, model, result, phases, lr=lr, probe_info=probe_info, use_cache=inputs.cached,
                          seconds=(time.perf_counter() - t0, inputs.seconds, probe_seconds)), **measured}
    if run.main:
        _write_outputs(run, prepared, spec, model, result, summary)
    return model, result, summary


@dataclass
class _Inputs:
    """What ``fit`` trains and on what: the whole model on images, or (feature cache) the trainable tail of the
    model on the outputs of its frozen layers, computed once in ``seconds``."""

    net: nn.Module
    train: Any
    val: Any
    normalize: nn.Module | None
    cached: bool = False
    seconds: float = 0.0


def _start_head(prepared: Prepared, run: Run, model: nn.Module, groups, spec: TrainSpec, cfg: TrainConfig, *,
                resume: bool) -> tuple[dict[str, Any] | None, float]:
    """The new head at its linear probe (:func:`_probe_head`) when the recipe asks for it: ``head_init`` probe on
    pretrained layers. Returns the probe's record (None: the head stays at random) and the seconds it took."""
    if spec.head_init != "probe" or spec.strategy.from_scratch or not getattr(model, "warmstart_pretrained", False):
        return None, 0.0
    p0 = time.perf_counter()
    info = _probe_head(prepared, run, model, groups, cfg, spec.feature_cache, resume=resume)
    return info, time.perf_counter() - p0


def _inputs(prepared: Prepared, run: Run, model: nn.Module, groups, spec: TrainSpec, cfg: TrainConfig) -> _Inputs:
    """The feature cache when the strategy keeps a prefix frozen and the images are not augmented: the frozen
    groups run once over the training and validation images and ``fit`` trains the rest on their outputs."""
    strategy = spec.strategy
    frozen = strategy.frozen_prefix(groups, epochs=cfg.epochs) if not strategy.from_scratch else []
    if spec.augments and prepared.train_aug is None:
        raise ValueError("run_arm: this TrainSpec augments, so prepare(..., augment=True) is needed")
    if spec.feature_cache in ("memory", "disk") and not frozen:
        log(f"feature cache off: strategy {strategy.spec} trains every layer, nothing stays frozen to cache")
    if spec.feature_cache == "off" or not frozen or spec.augments:
        return _Inputs(model, prepared.train_aug if spec.augments else prepared.train_plain, prepared.val,
                       Normalizer.of(prepared.weights.preprocess))
    f0 = time.perf_counter()
    trunk, net = split_at(model, groups, len(frozen))
    train, val = (frozen_features(prepared, trunk, ds, which, frozen[-1].name, cfg, spec.feature_cache, run)
                  for ds, which in ((prepared.train_plain, "train"), (prepared.val, "val")))
    seconds = time.perf_counter() - f0
    log(f"feature cache: {len(frozen)} frozen groups run once ({seconds:.1f} s); the head trains on "
        f"{tuple(train.feature_shape)} features")
    return _Inputs(net, train, val, None, cached=True, seconds=seconds)


def _drift(prepared: Prepared, run: Run, model: nn.Module, groups, spec: TrainSpec, phases, cfg: TrainConfig, *,
           start: dict[str, torch.Tensor] | None, resume: bool) -> DriftTracker | None:
    """How far the start travels: drift/<group> columns in metrics.csv, summary["drift"] (finetune-*, gradual).
    A resumed run whose probe head was not kept has no start of its head to measure from."""
    return DriftTracker.for_run(model, groups, spec.strategy, phases, images=prepared.val, start=start,
                                normalize=Normalizer.of(prepared.weights.preprocess), batch_size=eval_batch_size(cfg),
                                resumed=resume and run.checkpoint_path.exists() and not (run.dir / layout.PROBE_HEAD).is_file(),
                                device=resolve_device(cfg.device))


def _train(prepared: Prepared, run: Run, inputs: _Inputs, phases, cfg: TrainConfig, *, resume: bool, callbacks: Sequence,
           anchors: dict[str, torch.Tensor] | None, diag) -> FitResult:
    """``engine.fit`` on ``inputs``; the signal diagnostics saved once it ends (also when it fails: the command's
    :func:`~warmstart.report.run_figures.run_figures` draws them)."""
    # a small head on cached features is many tiny ops: extra intra-op threads only spin (measured on a busy
    # 2-core machine: hymenoptera's 5 transfer epochs took 2.4 s with 2 threads, 0.1 s with one)
    small = inputs.cached and sum(p.numel() for p in inputs.net.parameters()) < SMALL_HEAD_PARAMS
    try:
        with threads(1 if small else None):
            return fit(inputs.net, inputs.train, inputs.val, phases, cfg, num_classes=prepared.splits.num_classes, run=run,
                       normalize=inputs.normalize, resume=resume, callbacks=callbacks, anchors=anchors)
    finally:
        if diag is not None:
            diag.finish()


def _measure_end(prepared: Prepared, spec: TrainSpec, cfg: TrainConfig, model: nn.Module, groups, result: FitResult, *,
                 drift: DriftTracker | None, anchors: dict[str, torch.Tensor] | None,
                 start: dict[str, torch.Tensor] | None) -> tuple[FitResult, dict[str, Any]]:
    """summary.json's measures of the trained model: ``drift``, L2-SP's ``reg`` and then (it moves the model to the
    chosen point, and the result to its evaluation) ``--interpolate``'s choice."""
    out: dict[str, Any] = {}
    if drift is not None:
        out["drift"] = drift.finish(result.history)
        out["drift_seconds"] = round(drift.seconds, 3)  # not in train_seconds: measuring, not training
    if spec.reg is not None:
        params = {n: p.detach() for n, p in model.named_parameters()}
        out["reg"] = penalty(params, anchors, {g.name: g.params for g in groups}, spec.reg)
    if spec.interpolate:
        result, out["interpolate"] = _interpolate(prepared, spec, cfg, model, start, result)
        out["heldout_images"] = len(prepared.heldout)
    return result, out


def _write_outputs(run: Run, prepared: Prepared, spec: TrainSpec, model: nn.Module, result: FitResult,
                   summary: dict[str, Any]) -> None:
    """The run directory's results: model.safetensors + model.json (itself a valid ``--weights``) and summary.json
    (its figures are the command's: :func:`~warmstart.report.run_figures.run_figures`)."""
    meta = dict(prepared.weights.meta)
    meta.update(arch=spec.model, num_classes=prepared.splits.num_classes, categories=prepared.splits.classes,
                source=f"warmstart train ({spec.strategy.spec}) in {run.dir}")
    save_weights(run.dir / layout.MODEL, model.state_dict(), meta)
    run.write_summary(summary)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The run's start: ``model``'s state dict copied once, detached, on the CPU, taken when the new head is at its
    linear probe and before anything trains. The one copy that L2-SP's anchors (:func:`~warmstart.transfer.prior.anchors_of`),
    ``--interpolate``'s a = 0 and the :class:`~warmstart.transfer.drift.DriftTracker` all read."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_start(run: Run, model: nn.Module, prepared: Prepared, spec: TrainSpec) -> None:
    """``start.safetensors`` + ``start.json``: the model as training begins (the pretrained layers with the probe's
    head, or the random init), itself a valid ``--weights``. Written once; a resumed run keeps the first."""
    if run.main and not (run.dir / layout.START).is_file():
        meta = {**prepared.weights.meta, "arch": spec.model, "num_classes": prepared.splits.num_classes,
                "categories": prepared.splits.classes, "source": f"the start of warmstart train ({spec.strategy.spec}) in {run.dir}"}
        save_weights(run.dir / layout.START, model.state_dict(), meta)


def _summary(prepared: Prepared, spec: TrainSpec, cfg: TrainConfig, model: nn.Module, result: FitResult, phases, *, lr: float,
             probe_info: dict[str, Any] | None, use_cache: bool, seconds: tuple[float, float, float]) -> dict[str, Any]:
    """summary.json of one arm (keys documented in the README and kept stable)."""
    total, feature_seconds, probe_seconds = seconds
    strategy = spec.strategy
    # every epoch's training steps, those before a --resume included (the history comes back from the checkpoint);
    # train_seconds adds the frozen features and the probe of this process, the throughput is the steps' own
    step_seconds = sum(float(row["seconds"]) for row in result.history)
    train_seconds = step_seconds + feature_seconds + probe_seconds
    trainable = {n for ph in phases for n in ph.trainable}
    return {
        "strategy": strategy.spec, "model": spec.model, "weights": "none" if strategy.from_scratch else prepared.weights.where,
        "epochs": cfg.epochs, "best_val_accuracy": result.best_val_accuracy, "final_val_accuracy": result.final_val_accuracy,
        "train_seconds": round(train_seconds, 3),
        "train_images_per_second": round(len(prepared.train_plain) * len(result.history) / max(1e-9, step_seconds), 1),
        "step_seconds": round(step_seconds, 3),
        "val_seconds": round(sum(float(row.get("val_seconds") or 0.0) for row in result.history), 3),
        "trainable_params": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "classes": prepared.splits.classes, "data": prepared.splits.source,
        "val_is_test": prepared.splits.val_is_test, "train_images": len(prepared.train_plain), "val_images": len(prepared.val),
        "feature_cache": bool(use_cache), "feature_seconds": round(feature_seconds, 3),
        "probe_seconds": round(probe_seconds, 3), "augment": spec.augments,
        "head_init": probe_info if probe_info is not None else "random", "lr": lr,
        "backbone_lr": backbone_rate(lr, cfg.backbone_lr) if strategy.fine_tunes else None,
        "bn": spec.bn, "label_smoothing": cfg.label_smoothing,
        "stopped_early": result.stopped_early, "per_class_accuracy": result.per_class_accuracy, "confusion": result.confusion,
        "seconds": round(total, 3), "device": str(resolve_device(cfg.device)),
    }


def _interpolate(prepared: Prepared, spec: TrainSpec, cfg: TrainConfig, model: nn.Module, start: dict[str, torch.Tensor],
                 result: FitResult) -> tuple[FitResult, dict[str, Any]]:
    """``--interpolate`` (:mod:`warmstart.transfer.wise`): choose the point between ``start`` and the trained ``model``
    on the held-out training images, leave ``model`` there, and evaluate it once on the validation images: the
    returned FitResult's final accuracy, confusion and predictions are the chosen model's."""
    from warmstart.transfer.wise import bn_refresher, changed_batchnorms, choose

    device = resolve_device(cfg.device)
    model.to(device)  # with a feature cache only the trained tail went there
    normalize = Normalizer.of(prepared.weights.preprocess).to(device)
    n = prepared.splits.num_classes
    start = {k: v.to(device) for k, v in start.items()}
    end = {k: v.detach().clone() for k, v in model.state_dict().items()}
    refresh = None
    if spec.bn == "train":
        refresh = bn_refresher(prepared.train_plain, normalize, batch_size=eval_batch_size(cfg),
                               changed=changed_batchnorms(model, start, end))

    def score(m: nn.Module) -> dict[str, Any]:  # the held-out training images only
        return evaluate(m, prepared.heldout, n, cfg=cfg, device=device, normalize=normalize)

    picked = choose(model, start, end, score, heldout_images=len(prepared.heldout), recompute_bn=refresh)
    val = evaluate(model, prepared.val, n, cfg=cfg, device=device, normalize=normalize)
    log(f"--interpolate: a = {picked.alpha:g} chosen on {len(prepared.heldout)} held-out training images (accuracy "
        f"{max(picked.heldout_accuracy):.3f}); val accuracy {val['accuracy']:.4f} there, {result.final_val_accuracy:.4f} "
        f"at the end of training (a = 1)")
    info = {**picked.to_dict(), "end_val_accuracy": result.final_val_accuracy, "val_accuracy": val["accuracy"]}
    return dataclasses.replace(result, final_val_accuracy=val["accuracy"], confusion=val["confusion"],
                               per_class_accuracy=val["per_class_accuracy"], val_predictions=val["predictions"]), info


def _diagnostics(dataset, net: nn.Module, run: Run, cfg: TrainConfig, normalize, resume: bool):
    from warmstart.init.data_init import sample_batch
    from warmstart.init.diagnostics import SignalDiagnostics

    batch = sample_batch(dataset, cfg.batch_size, seed=cfg.seed, normalize=normalize)
    diag = SignalDiagnostics(batch, run.dir, tensorboard=run.tensorboard() if cfg.tensorboard else None)
    if not (resume and diag.restore(len(run.rows))):
        diag.start(net)
    return diag


def frozen_features(prepared: Prepared, trunk, dataset, which: str, layer: str, cfg: TrainConfig, mode: str,
                    run: Run | None) -> FeatureCache:
    """The output of the frozen ``trunk`` (ending at group ``layer``) over ``dataset``, computed once per
    (weights, preprocessing, split, layer) and shared through ``prepared.features``.

    ``mode``: memory | disk | auto (in memory up to FEATURE_MEMORY_LIMIT, else a float16 memory map in the run
    directory; ``run`` may be None only with ``memory``). Used by the feature cache, the probe head and ``rank``.
    """
    w = prepared.weights
    key = cache_key(w.fingerprint, w.preprocess, f"{prepared.splits.fingerprint}:{which}", layer)
    if key in prepared.features:
        return prepared.features[key]
    # auto: in memory (float32) up to FEATURE_MEMORY_LIMIT, else memory-mapped float16 on disk in the run directory
    path = run.dir / layout.FEATURES / f"{which}-{key}.npy" if mode in ("disk", "auto") else None
    device = resolve_device(cfg.device)
    cache = FeatureCache.build(trunk, dataset, normalize=Normalizer.of(w.preprocess), batch_size=eval_batch_size(cfg),
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

    head_name = groups[-1].modules[0]
    head = model.get_submodule(head_name)
    if resume and run.checkpoint_path.exists() and (run.dir / layout.PROBE).is_file():
        # the checkpoint holds the trained head; the probe's head is put back as the start (drift measures from it)
        if (run.dir / layout.PROBE_HEAD).is_file():
            head.load_state_dict(load_tensors(run.dir / layout.PROBE_HEAD))
        return json.loads((run.dir / layout.PROBE).read_text())
    if not isinstance(head, nn.Linear):
        log(f"linear probe skipped: the head {head_name} is a {type(head).__name__}, not a Linear layer")
        return None
    try:
        trunk, _ = split_at(model, groups, len(groups) - 1)
    except UserError as e:
        log(f"linear probe skipped ({e}); the head starts at random")
        return None
    f0 = time.perf_counter()
    feats = frozen_features(prepared, trunk, prepared.train_plain, "train", groups[-2].name, cfg, mode, run)
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
        run.write_json(layout.PROBE, info)
        from safetensors.torch import save as save_tensors

        from warmstart.engine.io import write_bytes

        write_bytes(run.dir / layout.PROBE_HEAD, save_tensors({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}),
                    "probe head")
    return info


def check(prepared: Prepared, spec: TrainSpec, cfg: TrainConfig) -> nn.Module:
    """Everything that can still be wrong once data and weights are read (weights that do not fit, the init
    spec on this model, K of finetune-last, the learning rates, the device): raised here, before a run
    directory exists. Returns the built model (the arm's start)."""
    net = build_model(prepared, spec, seed=cfg.seed, batch_size=cfg.batch_size)
    plan(net, spec, cfg)
    resolve_device(cfg.device)
    return net

