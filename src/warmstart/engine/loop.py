"""The one training loop every command uses.

``fit`` runs a plan (a list of phases) over a train and a validation dataset. Each epoch is seeded from
``(seed, epoch)`` alone — shuffling, augmentation and dropout — so ``--resume`` from the checkpoint of the
last finished epoch replays the rest of the run exactly. Each phase gets a fresh optimizer, schedule and DDP
wrap. Under torchrun, every rank trains on its shard (DistributedSampler), metrics are summed across ranks
and rank 0 alone writes.
"""

from __future__ import annotations

import math
import platform
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from warmstart.engine import checkpoint as ckpt
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log, progress, quiet
from warmstart.engine.distributed import World, all_gather_objects, all_reduce_sum, init_from_env, keep_freed_memory
from warmstart.engine.metrics import accuracy, confusion, per_class_accuracy
from warmstart.engine.optim import AnchorPull, build_optimizer, build_scheduler
from warmstart.engine.plan import Phase
from warmstart.errors import TrainingDiverged, UserError

Callback = Callable[[nn.Module, dict[str, Any]], None]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_val_accuracy: float
    best_epoch: int
    final_val_accuracy: float
    confusion: list[list[int]]
    per_class_accuracy: list[float]
    train_seconds: float
    train_images_per_second: float
    stopped_early: bool = False
    val_predictions: list[int] = field(default_factory=list)  # the final model's class per validation sample


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % 2**63


def set_phase(model: nn.Module, phase: Phase) -> int:
    """Freeze everything the phase does not train; return the number of trainable parameters."""
    trainable = set(phase.trainable)
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
        n += p.numel() if name in trainable else 0
    if n == 0:
        raise UserError(f"phase '{phase.name}' trains no parameters; check the strategy and the model's layer groups")
    return n


def freeze_bn(model: nn.Module, module_names: Iterable[str], *, strict: bool = True) -> None:
    """Put the named modules (and everything inside them) in eval mode; call it after ``model.train()``.

    A BatchNorm in eval mode normalises with, and no longer updates, its running statistics; its affine
    weight and bias still train if they require grad. Names follow ``model.named_modules()``. With
    ``strict=False`` names that ``model`` lacks are skipped (a Phase's ``eval_modules`` applied to the
    head of ``features.split_at``, which holds only part of the model).
    """
    for name in module_names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            if strict:
                raise
            continue
        module.eval()


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype ``--amp`` means on ``device`` (None: full float32); auto = bf16 on CUDA, none elsewhere."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return None if amp == "none" else torch.bfloat16 if amp == "bf16" else torch.float16


def fast_cpu_channels_last(device: torch.device) -> bool:
    """Whether convolutions on ``device`` run faster in channels-last layout: x86 CPUs with oneDNN (measured in
    benchmarks/RESULTS.md for MobileNetV3-Small: 1.35x training, 1.4x-1.8x inference)."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """``cfg.channels_last``, with None (auto) meaning :func:`fast_cpu_channels_last` of ``device``."""
    return cfg.channels_last if cfg.channels_last is not None else fast_cpu_channels_last(device)


def _autocast(device: torch.device, amp: str):
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return nullcontext(), None
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 and device.type == "cuda" else None
    return torch.autocast(device_type=device.type, dtype=dtype), scaler


def eval_loader(dataset: Dataset, cfg: TrainConfig, device: torch.device, world: World = World(), *,
                persistent: bool = False) -> DataLoader:
    """The DataLoader :func:`evaluate` reads: this rank's every size-th sample, in order.

    ``persistent`` keeps its worker processes between evaluations (``fit`` evaluates every epoch).
    """
    shard = Subset(dataset, range(world.rank, len(dataset), world.size)) if world.distributed else dataset
    return DataLoader(shard, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      pin_memory=device.type == "cuda", persistent_workers=persistent and cfg.workers > 0)


def evaluate(model: nn.Module, dataset: Dataset, num_classes: int, *, cfg: TrainConfig, device: torch.device,
             normalize: nn.Module | None = None, world: World = World(), loader: DataLoader | None = None) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy, confusion matrix and the predicted class of every sample (in dataset
    order, on every rank); each rank evaluates every size-th sample.

    ``loader``: an :func:`eval_loader` of ``dataset`` to reuse (its workers stay up between calls).
    """
    loader = loader if loader is not None else eval_loader(dataset, cfg, device, world)
    was_training = model.training
    model.eval()
    amp_ctx, _ = _autocast(device, cfg.amp)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    preds: list[torch.Tensor] = []
    with torch.inference_mode():
        for x, y in loader:
            x, y = _to(x, device, normalize, use_channels_last(cfg, device)), y.to(device, non_blocking=True)
            with amp_ctx:
                out = model(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            pred = out.argmax(1)
            cm += confusion(pred, y, num_classes)
            preds.append(pred)  # stays on the device: one copy to the CPU at the end, not one sync per batch
    all_reduce_sum(cm)
    all_reduce_sum(loss_sum)
    model.train(was_training)
    n = max(1, int(cm.sum()))
    cm = cm.cpu()
    mine = torch.cat(preds).cpu().tolist() if preds else []
    predictions = mine
    if world.distributed:  # rank r holds samples r, r + size, ...: interleave them back into dataset order
        parts = all_gather_objects(mine)
        predictions = [0] * sum(map(len, parts))
        for r, part in enumerate(parts):
            predictions[r::world.size] = part
    return {"loss": float(loss_sum) / n, "accuracy": accuracy(cm), "per_class_accuracy": per_class_accuracy(cm),
            "confusion": cm.tolist(), "predictions": predictions}


def batch_augment(dataset: Dataset) -> nn.Module | None:
    """The batch augmentation a training set asks for (``ImageDataset.batch_augment``, through Subset wrappers)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "batch_augment", None)


def _to(x: torch.Tensor, device: torch.device, normalize: nn.Module | None, channels_last: bool,
        augment: nn.Module | None = None) -> torch.Tensor:
    x = x.to(device, non_blocking=True)  # uint8 images travel as uint8 (pinned on CUDA): 4x less than float32
    if augment is not None:  # random crops + flips of the whole batch, on its device
        x = augment(x)
    if normalize is not None:
        x = normalize(x)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, phases: Sequence[Phase], cfg: TrainConfig, *,
        num_classes: int, run=None, normalize: nn.Module | None = None, resume: bool = False,
        callbacks: Sequence[Callback] = (), anchors: Mapping[str, torch.Tensor] | None = None) -> FitResult:
    """Train ``model`` through ``phases`` (one fresh optimizer each); ``cfg.quiet`` silences the log and bars.

    ``anchors``: the start of the parameters of param groups with an ``anchor`` (weight decay toward the start,
    :class:`~warmstart.engine.optim.AnchorPull`), by name; given separately because a resumed run's model no
    longer is at its start.
    """
    with quiet(cfg.quiet):
        return _fit(model, train_set, val_set, phases, cfg, num_classes=num_classes, run=run, normalize=normalize,
                    resume=resume, callbacks=callbacks, anchors=anchors)


def _fit(model: nn.Module, train_set: Dataset, val_set: Dataset, phases: Sequence[Phase], cfg: TrainConfig, *,
         num_classes: int, run=None, normalize: nn.Module | None = None, resume: bool = False,
         callbacks: Sequence[Callback] = (), anchors: Mapping[str, torch.Tensor] | None = None) -> FitResult:
    device, world = _placement(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    channels_last, normalize = _place(model, normalize, cfg, device)
    pull = AnchorPull(model, anchors, coupled=cfg.optimizer == "sgd") if anchors else None
    total_epochs = sum(p.epochs for p in phases)
    at = _Progress.start(model, run if resume else None, total_epochs)  # the beginning, or after the last saved epoch
    epoch, seen, train_time, stopped_early, val = len(at.history), 0, 0.0, False, None
    augment = batch_augment(train_set)
    validate = partial(evaluate, model, val_set, num_classes, cfg=cfg, device=device, normalize=normalize, world=world,
                       loader=eval_loader(val_set, cfg, device, world, persistent=True))
    steps = _Steps(cfg, device, normalize, channels_last, augment, *_autocast(device, cfg.amp), pull)
    for pi in range(at.phase, len(phases)):
        phase = phases[pi]
        n_trainable = set_phase(model, phase)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if world.distributed else model
        sampler, loader = _train_loader(train_set, cfg, world, device)
        opt = build_optimizer(model, phase, cfg)
        sched = build_scheduler(opt, cfg, len(loader), phase.epochs)
        first = at.phase_epoch if pi == at.phase else 0
        if at.state is not None and pi == at.phase and first > 0:
            opt.load_state_dict(at.state["optimizer"])
            sched.load_state_dict(at.state["scheduler"])
        log(f"phase {pi + 1}/{len(phases)} '{phase.name}': {phase.epochs} epochs, {n_trainable:,} trainable parameters")

        for pe in range(first, phase.epochs):
            # ---- train one epoch ----
            sampler.set_epoch(epoch)
            torch.manual_seed(epoch_seed(cfg.seed, epoch))
            model.train()
            freeze_bn(model, phase.eval_modules, strict=False)  # the phase's frozen groups compute as at evaluation
            train = steps.epoch(net, model, loader, opt, sched, epoch, run)
            train_time += train.seconds
            seen += train.images

            # ---- evaluate, record, checkpoint ----
            v0 = time.perf_counter()
            val = validate()
            val_seconds = time.perf_counter() - v0
            _raise_if_val_diverged(val, epoch, sched, run)
            epoch += 1
            row = _epoch_row(epoch, phase, train, val, val_seconds, sched)
            log(f"epoch {epoch}/{total_epochs} [{phase.name}] train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
                f"val loss {val['loss']:.4f} acc {val['accuracy']:.3f} | {train.seconds:.1f} s, {row['images_per_second']:.0f} img/s")
            improved = at.record(row)
            for cb in callbacks:  # before the row is logged and checkpointed: a callback may add measurements to it
                cb(model, row)
            if run is not None:
                _save_epoch(run, model, opt, sched, at, improved, next_phase=(pi + 1, 0) if pe + 1 == phase.epochs else (pi, pe + 1))
            if cfg.early_stopping and at.bad_epochs >= cfg.early_stopping:
                log(f"early stopping: val loss has not improved for {at.bad_epochs} epochs")
                stopped_early = True
                break
        if stopped_early:
            break
    return _result(at, val if seen else validate(), train_time, seen, stopped_early)


def _place(model: nn.Module, normalize: nn.Module | None, cfg: TrainConfig,
           device: torch.device) -> tuple[bool, nn.Module | None]:
    """Move ``model`` (channels-last where that is faster, :func:`use_channels_last`) and ``normalize`` to ``device``;
    whether batches go channels-last, and ``normalize`` there."""
    if device.type == "cpu":
        keep_freed_memory()  # activations freed every step are reused, not faulted in afresh (fewer minor faults)
    model.to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return channels_last, normalize.to(device) if normalize is not None else None


class _EpochTrain(NamedTuple):
    """One epoch's training steps, summed over ranks: mean loss, accuracy, images and seconds."""

    loss: float
    accuracy: float
    images: int
    seconds: float


@dataclass
class _Steps:
    """How every training step of a run goes: the batch to ``device`` (augmented, normalised, channels-last), the
    forward and loss under autocast, backward and the optimizer step (gradient scaler, clipping, anchor pull)."""

    cfg: TrainConfig
    device: torch.device
    normalize: nn.Module | None
    channels_last: bool
    augment: nn.Module | None
    amp_ctx: Any
    scaler: Any
    pull: AnchorPull | None

    def epoch(self, net: nn.Module, model: nn.Module, loader: DataLoader, opt, sched, epoch: int, run) -> _EpochTrain:
        """One pass over ``loader``: a step per batch (``net`` is ``model``, or its DDP wrap), one sync at the end."""
        device = self.device
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        count = torch.zeros((), dtype=torch.long, device=device)
        # the first non-finite loss: checked at once on the CPU; on a GPU at the end of the epoch (before
        # anything of it is saved), since reading it every step would make the CPU wait for the GPU
        bad = torch.full((2,), -1.0, dtype=torch.float64, device=device)  # (step, loss)
        for step, (x, y) in enumerate(progress(loader, total=len(loader), desc=f"epoch {epoch + 1}")):
            x, y = _to(x, device, self.normalize, self.channels_last, self.augment), y.to(device, non_blocking=True)
            with self.amp_ctx:
                out = net(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=self.cfg.label_smoothing or 0.0)
            _note_nonfinite(bad, loss.detach(), step)
            if device.type == "cpu" or step + 1 == len(loader):
                _raise_if_diverged(bad, epoch, sched, run)
            opt.zero_grad(set_to_none=True)
            _backward_and_step(loss, model, opt, self.scaler, self.cfg.grad_clip, self.pull)
            sched.step()
            loss_sum += loss.detach().double() * y.numel()
            correct += (out.argmax(1) == y).sum()
            count += y.numel()
        for t in (loss_sum, correct, count):
            all_reduce_sum(t)
        seconds = time.perf_counter() - t0  # taken before int(count) waits for the device, as always
        images = int(count)
        return _EpochTrain(float(loss_sum) / max(1, images), int(correct) / max(1, images), images, seconds)


def _epoch_row(epoch: int, phase: Phase, train: _EpochTrain, val: dict[str, Any], val_seconds: float, sched) -> dict[str, Any]:
    """The epoch's row of metrics.csv (and of ``FitResult.history``)."""
    return {"epoch": epoch, "phase": phase.name, "train_loss": train.loss, "train_accuracy": train.accuracy,
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": sched.get_last_lr()[0],
            "seconds": round(train.seconds, 3), "images_per_second": round(train.images / max(train.seconds, 1e-9), 1),
            "val_seconds": round(val_seconds, 3)}


def _result(at: _Progress, final: dict[str, Any], train_time: float, seen: int, stopped_early: bool) -> FitResult:
    """The run's result: its history and best epoch, the final model's evaluation ``final``, the training throughput."""
    return FitResult(history=at.history, best_val_accuracy=max(at.best_acc, 0.0), best_epoch=at.best_epoch,
                     final_val_accuracy=final["accuracy"], confusion=final["confusion"],
                     per_class_accuracy=final["per_class_accuracy"], train_seconds=round(train_time, 3),
                     train_images_per_second=round(seen / train_time, 1) if train_time else 0.0, stopped_early=stopped_early,
                     val_predictions=final["predictions"])


def _placement(cfg: TrainConfig) -> tuple[torch.device, World]:
    """The device this process trains on and the torchrun world it belongs to (one GPU per rank: its LOCAL_RANK-th)."""
    device = resolve_device(cfg.device)
    world = init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank if world.distributed else
                              device.index if device.index is not None else torch.cuda.current_device())
        if not cfg.deterministic:
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    return device, world


def _train_loader(train_set: Dataset, cfg: TrainConfig, world: World, device: torch.device) -> tuple[DistributedSampler, DataLoader]:
    """This rank's shard of the training set, reshuffled every epoch from (seed, epoch); one loader per phase."""
    sampler = DistributedSampler(train_set, num_replicas=world.size, rank=world.rank, shuffle=True, seed=cfg.seed)
    per_rank_batch = max(1, cfg.batch_size // world.size)
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", drop_last=len(sampler) % per_rank_batch == 1,
                        persistent_workers=cfg.workers > 0)
    return sampler, loader


def _backward_and_step(loss: torch.Tensor, model: nn.Module, opt, scaler, grad_clip: float, pull: AnchorPull | None = None) -> None:
    """Backward, optional gradient clipping, the pull toward the anchors (if any), optimizer step (through the fp16
    grad scaler when there is one)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    if pull is not None:
        pull.apply(opt)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


@dataclass
class _Progress:
    """Where training stands: the history, the best epoch so far, early stopping's count, and the phase and epoch
    to continue from; restored from the checkpoint on ``--resume``, saved with every epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0
    best_loss: float = math.inf
    bad_epochs: int = 0
    phase: int = 0
    phase_epoch: int = 0
    state: dict[str, Any] | None = None  # the checkpoint (optimizer and schedule of the phase in progress)

    @classmethod
    def start(cls, model: nn.Module, run, total_epochs: int) -> _Progress:
        """From the beginning, or (``run`` given and checkpointed) just after the last epoch its checkpoint holds."""
        if run is None or not run.checkpoint_path.exists():
            return cls()
        state = ckpt.load(run.checkpoint_path)
        model.load_state_dict(state["model"])
        log(f"resuming {run.dir} after epoch {len(state['history'])} of {total_epochs}")
        return cls(history=state["history"], best_acc=state["best_val_accuracy"], best_epoch=state["best_epoch"],
                   best_loss=state["best_val_loss"], bad_epochs=state["bad_epochs"], phase=state["phase"],
                   phase_epoch=state["phase_epoch"], state=state)

    def record(self, row: dict[str, Any]) -> bool:
        """Append an epoch's row; True when its validation accuracy is the best so far."""
        self.history.append(row)
        improved = row["val_accuracy"] > self.best_acc
        if improved:
            self.best_acc, self.best_epoch = row["val_accuracy"], row["epoch"]
        if row["val_loss"] < self.best_loss:
            self.best_loss, self.bad_epochs = row["val_loss"], 0
        else:
            self.bad_epochs += 1
        return improved

    def checkpoint(self, next_phase: tuple[int, int]) -> dict[str, Any]:
        return {"phase": next_phase[0], "phase_epoch": next_phase[1], "history": self.history,
                "best_val_accuracy": self.best_acc, "best_epoch": self.best_epoch, "best_val_loss": self.best_loss,
                "bad_epochs": self.bad_epochs}


def _save_epoch(run, model: nn.Module, opt, sched, at: _Progress, improved: bool, next_phase: tuple[int, int]) -> None:
    """metrics.csv gets the epoch's row; rank 0 writes the checkpoint (and best.pt when it improved)."""
    try:
        if improved and run.main:
            ckpt.save({"model": model.state_dict()}, run.best_path)
        run.log_epoch(at.history[-1])
        if run.main:
            ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                       **at.checkpoint(next_phase)}, run.checkpoint_path)
    except UserError as e:  # e.g. a full disk: say where the run can continue from
        epoch = len(at.history)
        raise UserError(f"{e}; training stopped in epoch {epoch}{_resumable(run, epoch - 1)}") from None


def _resumable(run, saved_epoch: int) -> str:
    if run.checkpoint_path.exists() and saved_epoch > 0:
        return f"; once that is fixed, --resume {run.dir} continues after epoch {saved_epoch}"
    return f"; once that is fixed, --resume {run.dir} starts it again from epoch 1"


def _note_nonfinite(bad: torch.Tensor, loss: torch.Tensor, step: int) -> None:
    """Record ``(step, loss)`` in ``bad`` if ``loss`` is the first non-finite one; on the device, no sync."""
    first = ~torch.isfinite(loss) & (bad[0] < 0)
    bad[1] = torch.where(first, loss.to(bad.dtype), bad[1])
    bad[0] = torch.where(first, float(step), bad[0])  # a Python scalar: no host-to-device copy


def _raise_if_diverged(bad: torch.Tensor, epoch: int, sched, run) -> None:
    step, value = bad.tolist()
    if step >= 0:
        raise TrainingDiverged(
            f"loss became {value} at epoch {epoch + 1}, step {int(step) + 1} (lr {sched.get_last_lr()[0]:.3g}); "
            f"training stopped{_kept(run)}; lower --lr or add --grad-clip")


def _raise_if_val_diverged(val: dict[str, Any], epoch: int, sched, run) -> None:
    if not math.isfinite(val["loss"]):  # the last step blew the weights up: this epoch is no good checkpoint
        raise TrainingDiverged(
            f"validation loss became {val['loss']} after epoch {epoch + 1} (lr {sched.get_last_lr()[0]:.3g}); "
            f"training stopped{_kept(run)}; lower --lr or add --grad-clip")


def _kept(run) -> str:
    if run is not None and run.checkpoint_path.exists():
        return f", the last good checkpoint is kept at {run.checkpoint_path}"
    return " (no epoch had finished, so there is no checkpoint)"
