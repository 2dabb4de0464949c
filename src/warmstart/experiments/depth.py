"""`warmstart depth`: why the initial weight scale matters -- the same deep plain net, one arm per init scheme.

A plain net (:mod:`warmstart.models.plain`: ``--depth`` weight layers of ``--width`` units or channels, one
nonlinearity after each, no BatchNorm, no residuals) multiplies the variance of its signal at every ReLU
layer by ``fan_in * Var(w) / 2``: x1 for He, x1/2 for Xavier (Glorot), x1/6 for PyTorch's default init. At
depth 30 that is ``0.5^30 ~ 1e-9`` for Xavier: activations and gradients vanish and plain SGD cannot move
the early layers, so the loss stays at chance, ``ln(classes)``. He keeps the scale, LSUV measures it on a
batch -- they train (He et al. 2015, fig. 3; Glorot & Bengio 2010, fig. 6-7).

Every arm gets the same data, batch order, seed and budget: SGD with momentum 0.9, constant learning rate
0.01, batch 32 (as He et al.). An adaptive optimizer (Adam, AdamW) divides each weight's step by the size of
its gradients and so hides vanishing gradients: the command warns when one is chosen.

Data: DATA (default ``digits``, scikit-learn's bundled 8x8 handwritten digits, 10 classes) through the data
layer, images at ``image_size`` (default: 8 for digits, 32 otherwise). Grey images (three equal channels)
are fed as one channel. Inputs are standardised with the training split's statistics: **per feature** for
the MLP (each pixel of each channel to mean 0, std 1; constant pixels, such as the digits' blank corners,
become 0) and per channel for the CNN.

Measurements: the per-layer statistics (:class:`~warmstart.init.diagnostics.SignalDiagnostics`) are
taken on one probe batch of up to 256 training images, the same for every arm, at init and after every epoch;
LSUV scales its layers on another batch, one training batch (``--batch-size`` images, drawn with seed + 1).
The predicted variance assumes a plain net; in the CNN the zero-padded border pixels see fewer inputs, so
its measured std runs somewhat below the prediction, the more so the smaller the image. Small nets on the
CPU run on one thread (their tiny matrix products only lose time synchronising more).

The run directory::

    config.json  summary.json  loss_curves.png  layer_std_init.png
    <arm>/config.json metrics.csv summary.json signal.json signal.csv signal_*.png [events/]

``summary.json``: ``{"depth", "classes", "arms": {arm: {"final_train_loss", "val_accuracy", "act_std_ratio",
"grad_std_ratio", ...}}, "seconds", ...}``. ``act_std_ratio``: std of the last hidden layer's output / the
first's, at init, on a probe batch of training images; ``grad_std_ratio``: std of dLoss/d(output) at the
first hidden layer / at the last. Non-finite values (an exploding arm) are written as ``null``; an arm whose
loss became NaN or infinite is marked ``"diverged": true`` with ``final_train_loss`` ``null``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from warmstart.data import ImageDataset, Preprocess, describe_splits
from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log, warn
from warmstart.engine.distributed import threads as threads_ctx
from warmstart.engine.layout import DEPTH_LAYER_STD_PNG, DEPTH_LOSS_PNG
from warmstart.engine.loop import fit, resolve_device
from warmstart.engine.plan import single_phase
from warmstart.engine.run import Run, RunSpec, read_config, read_summary
from warmstart.errors import TrainingDiverged, UserError, did_you_mean, unknown
from warmstart.init.diagnostics import SignalDiagnostics
from warmstart.init.data_init import LSUV, check_init, init_model, sample_batch
from warmstart.init.lsuv import LSUVWarning
from warmstart.init.schemes import SCHEMES
from warmstart.init.spec import split_outside_parens
from warmstart.models.plain import ACTIVATIONS, PlainNet, plain_cnn, plain_mlp

ARCHS = ("mlp", "cnn")
NAMED_ARMS = ("xavier", "he", "default", "orthogonal", "lsuv")
DEFAULT_ARMS = ",".join(NAMED_ARMS)
DEFAULT_DEPTH, DEFAULT_EPOCHS = 30, 30
DEFAULT_LR = 0.01
DEFAULT_WIDTH = {"mlp": 128, "cnn": 32}
QUICK_EPOCHS = 10
NATIVE_SIZE = {"digits": 8}
DEFAULT_IMAGE_SIZE = 32
PROBE_IMAGES = 256
CHANCE_MARGIN = 0.05
"""An arm whose final train loss is within this of ln(classes) (or above) "stayed at chance"."""
SMALL_LAYER_MACS = 5e7
"""On the CPU, nets whose layers take fewer multiply-adds per step than this run on one thread."""
LOSS_PNG, LAYERS_PNG = DEPTH_LOSS_PNG, DEPTH_LAYER_STD_PNG
SGD_NOTE = ("plain SGD as in He et al. 2015; an adaptive optimizer (Adam, AdamW) divides each weight's step by the "
            "size of its gradients and so hides the vanishing gradients this experiment shows")


def default_config(**override: Any) -> TrainConfig:
    """The training recipe of every arm: SGD, momentum 0.9, lr 0.01, batch 32, constant schedule (He et al.)."""
    return TrainConfig(**{"optimizer": "sgd", "lr": DEFAULT_LR, "momentum": 0.9, "batch_size": 32, "schedule": "constant",
                          **override})


# ------------------------------------------------------------------------------------------ arms
def split_arms(text: str | Sequence[str]) -> list[str]:
    """``"he,normal(0.01),lsuv"`` -> ``["he", "normal(0.01)", "lsuv"]`` (commas inside parentheses kept)."""
    parts = [str(a) for a in text] if not isinstance(text, str) else split_outside_parens(text, what="--arms")
    arms = [p.strip() for p in parts]
    if not arms or any(not a for a in arms):
        raise UserError(f'--arms "{text if isinstance(text, str) else ",".join(parts)}": empty arm (a stray comma?); '
                        f"give init schemes separated by commas, e.g. {DEFAULT_ARMS}")
    seen = set()
    for a in arms:
        if a in seen:
            raise UserError(f'--arms: "{a}" is given twice; every arm must be a different init scheme')
        seen.add(a)
    return arms


def arm_spec(arm: str, activation: str = "relu") -> str:
    """The init spec of an arm: ``orthogonal`` gets the gain of ``activation`` (sqrt 2 for ReLU), ``lsuv``
    stays LSUV, and any scheme of an init spec (``lecun``, ``he_uniform``, ``normal(0.01)``...) is itself."""
    key = arm.strip()
    if key.lower() == LSUV:
        return LSUV
    if key == "orthogonal":
        return f"orthogonal({nn.init.calculate_gain(activation):.6g})"
    name = key.split("(")[0].split("=")[0].strip()
    if "=" not in key and name not in SCHEMES:
        known = sorted(set(NAMED_ARMS) | set(SCHEMES))
        raise UserError(f'unknown arm "{arm}"{did_you_mean(name, known)}; an arm is an init scheme: '
                        f"{', '.join(NAMED_ARMS)}, or any scheme of an init spec (lecun, he_uniform, normal(0.01), ...)")
    check_init(key)
    return key


# ------------------------------------------------------------------------------------------ data
class Standardize(nn.Module):
    """Image batch -> float, the first ``channels`` channels, ``(x - mean) / std`` with training statistics.

    ``mean``/``std`` have shape (C, H, W) (per feature, the MLP) or (C, 1, 1) (per channel, the CNN). A
    feature with zero spread keeps std 1 (it becomes 0). uint8 and float batches are both accepted.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.channels = int(mean.shape[0])
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", torch.where(std > 1e-6, std, torch.ones_like(std)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, : self.channels].float() - self.mean) / self.std

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, *, per_feature: bool, chunk: int = 4096) -> "Standardize":
        """Statistics of ``dataset`` (uint8 C x H x W images); grey images (equal channels) keep one channel."""
        n, total, total_sq, grey = 0, None, None, True
        for start in range(0, len(dataset), chunk):
            x = torch.stack([dataset[i][0] for i in range(start, min(start + chunk, len(dataset)))])
            grey = grey and bool((x[:, 1:] == x[:, :1]).all())
            xd = x.double()
            s, sq = xd.sum(0), xd.square().sum(0)
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
            n += len(x)
        assert total is not None and total_sq is not None
        if not per_feature:
            pixels = total[0].numel()
            total, total_sq = total.sum((1, 2), keepdim=True), total_sq.sum((1, 2), keepdim=True)
            n *= pixels
        mean = total / n
        std = (total_sq / n - mean.square()).clamp_min(0).sqrt()
        if grey:
            mean, std = mean[:1], std[:1]
        return cls(mean, std)


@dataclass
class DepthData:
    train: ImageDataset
    val: ImageDataset
    classes: list[str]
    source: str
    standardize: Standardize
    image_size: int

    @property
    def channels(self) -> int:
        return self.standardize.channels


def load_depth_data(data: DataSpec, *, arch: str, image_size: int | None = None, seed: int = 0) -> DepthData:
    """DATA -> decoded train/val images at ``image_size`` and the standardisation for ``arch``."""
    splits = data.load(seed)
    size = image_size or NATIVE_SIZE.get(splits.name, DEFAULT_IMAGE_SIZE)
    pre = Preprocess(resize=size, crop=size)
    train = ImageDataset(splits.train, pre, train=True, skip_bad_images=data.skip_bad_images)
    val = ImageDataset(splits.val, pre, skip_bad_images=data.skip_bad_images)
    std = Standardize.from_dataset(train, per_feature=arch == "mlp")
    log(describe_splits(splits) + f"; {size}x{size} pixels, {std.channels} channel{'s' if std.channels > 1 else ''}, "
        f"standardised per {'feature' if arch == 'mlp' else 'channel'}")
    return DepthData(train, val, list(splits.classes), splits.source, std, size)


# ------------------------------------------------------------------------------------------ models
def build_net(arch: str, depth: int, width: int, data: DepthData, activation: str) -> PlainNet:
    if arch == "mlp":
        return plain_mlp(depth, width, data.channels * data.image_size**2, len(data.classes), activation)
    return plain_cnn(depth, width, data.channels, len(data.classes), activation)


def predicted_nonlinearity(activation: str) -> str | None:
    """The variance law's nonlinearity: ReLU halves E[x^2]; tanh is ~linear near 0; sigmoid has no simple law."""
    return {"relu": "relu", "tanh": "linear"}.get(activation)



def layer_macs(arch: str, width: int, image_size: int, batch_size: int) -> float:
    """Multiply-adds of one hidden layer for one batch (forward)."""
    return float(batch_size) * width * width * (9 * image_size**2 if arch == "cnn" else 1)


# ------------------------------------------------------------------------------------------ experiment
def _check(arch: str, depth: int, width: int, activation: str, epochs: int, image_size: int | None) -> str:
    if arch not in ARCHS:
        raise unknown("architecture (--arch)", str(arch), ARCHS)
    for flag, value in (("depth", depth), ("width", width), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"--{flag} must be a whole number >= 1, got {value!r}"
                            + ("; the experiment is about deep nets: try --depth 30" if flag == "depth" else ""))
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"--image-size must be a whole number of pixels >= 1, got {image_size!r}")
    key = str(activation).strip().lower()
    if key not in ACTIVATIONS:
        raise unknown("activation", str(activation), ACTIVATIONS)
    return key


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def depth(data: DataSpec | None = None, *, arch: str = "mlp", depth: int = DEFAULT_DEPTH, width: int | None = None,
          activation: str = "relu", arms: str | Sequence[str] = DEFAULT_ARMS, epochs: int | None = None,
          image_size: int | None = None, quick: bool = False, seeds: int = 1, cfg: TrainConfig | None = None,
          run: RunSpec | None = None) -> dict[str, Any]:
    """Train the same plain ``depth``-layer net once per init scheme in ``arms``; write a run directory.

    ``seeds`` > 1 trains every arm from seeds ``cfg.seed``, ``cfg.seed + 1``, ... (another start and batch order,
    the same split and probe batch) into ``<arm>/seed-<s>/``; each arm's figures are then the mean, with
    ``<key>_range`` [min, max] and ``per_seed`` rows, and the reading says only what holds in every seed (another
    CPU gives one seed other losses, amplified by 30 layers: the range is the honest figure).
    ``width`` defaults to 128 units (MLP) or 32 channels (CNN: ~40x the MLP's work per image), ``epochs`` to 30
    (``quick``: 10). ``data`` (a :class:`~warmstart.data.spec.DataSpec`) defaults to digits, ``cfg`` to
    :func:`default_config` (SGD, lr 0.01, momentum 0.9, batch 32, constant); ``run`` (a
    :class:`~warmstart.engine.run.RunSpec`): where to write, what config.json records. Everything is validated
    before the run directory is created. Returns the summary (summary.json).
    """
    t0 = time.perf_counter()
    width = width if width is not None else DEFAULT_WIDTH.get(arch, 128)
    cfg = (cfg or default_config()).with_defaults(lr=DEFAULT_LR)
    cfg.check_one_rate("depth")
    epochs = epochs if epochs is not None else cfg.epochs if cfg.epochs is not None else (QUICK_EPOCHS if quick else DEFAULT_EPOCHS)
    activation = _check(arch, depth, width, activation, epochs, image_size)
    specs = _arm_specs(arms, activation, seeds)
    arm_names = list(specs)
    if cfg.optimizer != "sgd":
        warn(f"--optimizer {cfg.optimizer}: the paper's effect needs {SGD_NOTE}; use --optimizer sgd")
    device = resolve_device(cfg.device)
    data = data if data is not None else DataSpec("digits")
    data_ = load_depth_data(data, arch=arch, image_size=image_size, seed=cfg.seed)
    classes = len(data_.classes)
    small = layer_macs(arch, width, data_.image_size, cfg.batch_size) < SMALL_LAYER_MACS
    threads = 1 if device.type == "cpu" and small else None
    seed_values = seed_list(cfg.seed, seeds)
    record = {**data.to_dict(), "arch": arch, "depth": depth, "width": width, "activation": activation,
              "arms": ",".join(arm_names), "epochs": epochs, "image_size": image_size, "quick": quick, "seeds": seeds,
              **cfg.to_dict()}  # a library call's options
    out = (run or RunSpec()).open("depth", {
        "arms": specs, "data": data_.source, "image_size": data_.image_size, "channels": data_.channels,
        "seeds": seed_values, "standardize": "per feature" if arch == "mlp" else "per channel",
        "probe_images": min(PROBE_IMAGES, len(data_.train)), "threads": threads or torch.get_num_threads(),
        "train": cfg.to_dict()}, tensorboard=cfg.tensorboard, options=record)
    log(f"{depth}-layer plain {arch.upper()}, width {width}, {activation}; arms {', '.join(arm_names)}; "
        f"{epochs} epochs of {cfg.optimizer} lr {cfg.lr:g} batch {cfg.batch_size}"
        + (" (one CPU thread: small layers)" if threads == 1 else ""))
    with threads_ctx(threads):
        results, histories, inits = _train_arms(out, specs, data_, cfg, seeds, arch=arch, depth=depth, width=width,
                                                activation=activation, epochs=epochs)
    _plots(out, histories, inits, depth=depth, arch=arch, classes=classes)
    summary = {
        "depth": depth, "classes": classes, "arms": results, "seconds": round(time.perf_counter() - t0, 3),
        "arch": arch, "width": width, "activation": activation, "epochs": epochs, "chance_loss": math.log(classes),
        "optimizer": cfg.optimizer, "lr": cfg.lr, "batch_size": cfg.batch_size, "data": data_.source,
        "train_images": len(data_.train), "val_images": len(data_.val), "device": str(device),
        "seeds": seed_values, "cpu": cpu_name(),
    }
    summary["reading"] = reading(summary)
    out.write_summary(summary)
    out.close()
    log(f"run directory {out.dir} ({summary['seconds']:.1f} s)")
    return summary


def _arm_specs(arms: str | Sequence[str], activation: str, seeds: int) -> dict[str, str]:
    """{arm: init spec}, checked: known schemes, one folder per arm, and a whole number of seeds."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds must be a whole number >= 1, got {seeds!r}; e.g. --seeds 3")
    arm_names = split_arms(arms)
    specs = {arm: arm_spec(arm, activation) for arm in arm_names}
    folders = [_dirname(arm) for arm in arm_names]
    if len(set(folders)) < len(folders):
        clash = next(a for a, f in zip(arm_names, folders) if folders.count(f) > 1)
        raise UserError(f'--arms: "{clash}" and another arm would share the folder {_dirname(clash)}/; rename one')
    return specs


def _train_arms(run: Run, specs: dict[str, str], data: DepthData, cfg: TrainConfig, seeds: int, **net: Any):
    """Every arm from every seed, into ``<arm>/`` (``<arm>/seed-<s>/`` with several seeds): the per-arm record
    (averaged over seeds), the histories, and the first seed's statistics at init. Every arm sees the same probe
    batch; seed s initialises LSUV on its own batch (seed s + 1)."""
    probe = sample_batch(data.train, PROBE_IMAGES, seed=cfg.seed, normalize=data.standardize)
    lsuv = {s: sample_batch(data.train, cfg.batch_size, seed=s + 1, normalize=data.standardize) for s in seed_list(cfg.seed, seeds)}
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[list[dict[str, Any]]]] = {}
    inits: dict[str, Any] = {}
    for arm, spec in specs.items():
        rows, histories[arm] = [], []
        for s, batch in lsuv.items():
            folder = _dirname(arm) if seeds == 1 else f"{_dirname(arm)}/seed-{s}"
            row, history, init_stats = _run_arm(run, arm, spec, data, folder=folder, cfg=replace(cfg, seed=s), probe=probe,
                                                lsuv_batch=batch, **net)
            rows.append({"seed": s, **row})
            histories[arm].append(history)
            inits.setdefault(arm, init_stats)  # the figure of the start: the first seed's
        results[arm] = rows[0] if seeds == 1 else over_seeds(rows)
    return results, histories, inits


def seed_list(first: int, count: int) -> list[int]:
    """``--seed S --seeds N`` -> ``[S, S + 1, ..., S + N - 1]``."""
    return [int(first) + i for i in range(int(count))]


#: the per-arm figures summarised over seeds (mean, and ``<key>_range`` = [min, max])
SEED_KEYS = ("final_train_loss", "val_accuracy", "act_std_ratio", "grad_std_ratio", "best_val_accuracy", "final_val_loss")


def over_seeds(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One arm's rows (one per seed) -> the mean of each figure, its ``[min, max]`` range, and the rows.

    A figure missing in some seed (a diverged seed has no final loss) is ``null``: a mean over the seeds
    that trained would hide the divergence. ``diverged`` counts the seeds that diverged."""
    out: dict[str, Any] = {"init": rows[0]["init"]}
    for k in SEED_KEYS:
        values = [r.get(k) for r in rows]
        ok = all(v is not None for v in values)
        out[k] = sum(values) / len(values) if ok else None
        out[f"{k}_range"] = [min(values), max(values)] if ok else None
    out["diverged"] = any(r.get("diverged") for r in rows)
    out["diverged_seeds"] = sum(bool(r.get("diverged")) for r in rows)
    out["train_loss"] = rows[0].get("train_loss", [])  # the first seed's curve (per seed: per_seed)
    out["epochs_run"] = min(r.get("epochs_run", 0) for r in rows)
    out["seconds"] = round(sum(r.get("seconds", 0.0) for r in rows), 3)
    out["per_seed"] = list(rows)
    return out


def cpu_name() -> str:
    """The CPU's model name (the same seed gives other losses on another CPU: a result names its machine)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run_arm(run: Run, arm: str, spec: str, data: DepthData, *, folder: str, arch: str, depth: int, width: int, activation: str,
             epochs: int, cfg: TrainConfig, probe: tuple[torch.Tensor, torch.Tensor],
             lsuv_batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = build_net(arch, depth, width, data, activation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LSUVWarning)
        init = init_model(model, spec, batch=lsuv_batch[0], generator=cfg.seed)
    for w in caught:
        warn(f"{arm}: {w.message}")
    sub = run.sub(folder, {"arm": arm, "init": spec, "seed": cfg.seed})
    diag = SignalDiagnostics(probe, sub.dir, nonlinearity=predicted_nonlinearity(activation),
                             tensorboard=sub.tensorboard() if cfg.tensorboard else None)
    init_stats = diag.start(model)
    log(f"arm {arm} (init {spec}, seed {cfg.seed}): std of layer outputs, last/first hidden {init_stats.act_std_ratio:.3g}, "
        f"gradients first/last {init_stats.grad_std_ratio:.3g}")
    history: list[dict[str, Any]] = []

    def record(_model: nn.Module, row: dict[str, Any]) -> None:
        history.append(row)
        sub.log_epoch(row)

    diverged, result = False, None
    try:
        result = fit(model, data.train, data.val, single_phase(model, epochs, cfg.lr), cfg, num_classes=len(data.classes),
                     normalize=data.standardize, callbacks=[record, diag])
    except TrainingDiverged as e:
        diverged = True
        warn(f"arm {arm}: {e}")
    finally:
        if diag.finish():
            from warmstart.report.signal_plots import plot_signal

            plot_signal(diag.history, diag.out_dir, title=arm)
        sub.close()
    last = history[-1] if history else {}
    row = {
        "final_train_loss": None if diverged else _finite(last.get("train_loss")),
        "val_accuracy": None if diverged else _finite(result.final_val_accuracy if result else None),
        "act_std_ratio": _finite(init_stats.act_std_ratio), "grad_std_ratio": _finite(init_stats.grad_std_ratio),
        "init": spec, "diverged": diverged, "best_val_accuracy": _finite(result.best_val_accuracy) if result else None,
        "final_val_loss": None if diverged else _finite(last.get("val_loss")),
        "train_loss": [round(float(h["train_loss"]), 6) for h in history], "epochs_run": len(history),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if init.lsuv is not None:
        row["lsuv_iterations"] = sum(layer.iterations for layer in init.lsuv)
    sub.write_summary({"arm": arm, **row, "init_details": init.to_dict()})
    return row, history, init_stats


def _dirname(arm: str) -> str:
    """A folder name for an arm: ``normal(0.01)`` -> ``normal_0.01``."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in arm).strip("_.")
    return safe or "arm"


# ------------------------------------------------------------------------------------------ output
def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _losses(r: dict[str, Any]) -> list[float | None]:
    """One arm's final train loss per seed (``None``: that seed diverged)."""
    rows = r.get("per_seed") or [r]
    return [None if row.get("diverged") else row.get("final_train_loss") for row in rows]


def _span(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"


def reading(summary: dict[str, Any]) -> str:
    """One line: which arms trained and which stayed at chance (loss ~ ln classes) or diverged.

    With several seeds an arm is put in a class only when every seed puts it there ("in every seed"), and
    the trained arms' losses are ranges: nothing is said that one seed (or one CPU) contradicts."""
    chance = math.log(summary["classes"])
    n = len(summary.get("seeds") or [0])
    every = " in every seed" if n > 1 else ""
    trained, stuck, diverged, mixed = [], [], [], []
    for arm, r in summary["arms"].items():
        losses = _losses(r)
        kinds = ["diverged" if loss is None else "stuck" if loss >= chance - CHANCE_MARGIN else "trained" for loss in losses]
        if set(kinds) == {"diverged"}:
            diverged.append(arm)
        elif set(kinds) == {"stuck"}:
            stuck.append(arm)
        elif set(kinds) == {"trained"}:
            trained.append((sum(losses) / len(losses), arm, losses))  # type: ignore[arg-type]
        else:
            counts = {k: kinds.count(k) for k in ("trained", "stuck", "diverged") if k in kinds}
            words = {"trained": "trained", "stuck": "stayed at chance", "diverged": "diverged"}
            mixed.append(f"{arm} " + ", ".join(f"{words[k]} in {c} of {n} seeds" for k, c in counts.items()))
    parts = []
    if trained and n == 1:
        trained.sort()
        parts.append(f"{_names([a for _, a, _ in trained])} trained "
                     f"(final train loss {', '.join(f'{l[0]:.2f}' for _, _, l in trained)})")
    elif trained:  # no order: which arm is lower can change with the seed and the CPU; the ranges say it
        parts.append(f"{_names([a for _, a, _ in trained])} trained in every seed "
                     f"(final train loss {', '.join(f'{a} {_span(l)}' for _, a, l in trained)})")
    if stuck:
        parts.append(f"{_names(stuck)} stayed at chance{every} (loss ≈ ln {summary['classes']} = {chance:.3f})")
    if diverged:
        parts.append(f"{_names(diverged)} diverged{every} (the loss became NaN or infinite)")
    parts += mixed
    return "; ".join(parts) + "."


def table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The result table: columns and one row per arm (several seeds: ``mean [min, max]`` per figure)."""
    cols = ["arm", "init", "final train loss", "val accuracy", "act std ratio", "grad std ratio"]
    keys = ("final_train_loss", "val_accuracy", "act_std_ratio", "grad_std_ratio")
    several = len(summary.get("seeds") or [0]) > 1
    if several:
        cols[2:] = [f"{c} (mean [min, max])" if c in ("final train loss", "val accuracy") else c for c in cols[2:]]

    def value(r: dict[str, Any], k: str) -> Any:
        if r.get(k) is None:
            return "-"
        if several and k in ("final_train_loss", "val_accuracy") and r.get(f"{k}_range"):
            lo, hi = r[f"{k}_range"]
            return f"{r[k]:.3f} [{lo:.3f}, {hi:.3f}]"
        return r[k]

    rows = [[arm, r.get("init", arm), *(value(r, k) for k in keys)] for arm, r in summary["arms"].items()]
    return cols, rows


def format_table(summary: dict[str, Any]) -> str:
    """The table as aligned text (for the terminal)."""
    cols, rows = table(summary)

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:.3g}" if isinstance(v, float) and (abs(v) < 1e-2 or abs(v) >= 1e3) and v != 0 else \
            f"{v:.3f}" if isinstance(v, float) else str(v)

    cells = [cols] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in cells)


def report_text(summary: dict[str, Any]) -> str:
    """What the command prints: a header, the table, the reading, and the optimizer note."""
    head = (f"{summary['depth']}-layer plain {summary['arch'].upper()} (width {summary['width']}, {summary['activation']}), "
            f"{summary['epochs']} epochs of {summary['optimizer']} lr {summary['lr']:g}, {summary['classes']} classes "
            f"(chance loss ln {summary['classes']} = {summary['chance_loss']:.3f}); {summary['seconds']:.1f} s")
    note = SGD_NOTE[0].upper() + SGD_NOTE[1:] if summary["optimizer"] == "sgd" else \
        f"Trained with {summary['optimizer']}: it rescales small gradients, so this is not the paper's setting ({SGD_NOTE})"
    seeds = summary.get("seeds") or []
    if len(seeds) > 1:
        head += f"\n{len(seeds)} seeds ({', '.join(map(str, seeds))}) per arm on {summary.get('cpu', 'this CPU')}"
    return "\n".join([head, "", format_table(summary), "", "Reading: " + summary["reading"], note + "."])


def _plots(run: Run, histories: dict[str, list[list[dict[str, Any]]]], inits: dict[str, Any], *, depth: int, arch: str,
           classes: int) -> None:
    from warmstart.report.signal_plots import plot_layer_stats

    plot_losses(histories, run.dir / LOSS_PNG, classes=classes, title=f"{depth}-layer plain {arch.upper()}: training")
    plot_layer_stats(inits, run.dir / LAYERS_PNG, title=f"{depth}-layer plain {arch.upper()} at init: measured (solid), "
                                                        "predicted (dashed)")


def plot_losses(histories: dict[str, Sequence[Any]], path: Path, *, classes: int, title: str = "") -> Path:
    """Train loss per epoch per arm (log y, chance ln(classes) dashed) and validation accuracy (chance 1/classes).

    An arm's history is a list of epoch rows, or a list of such lists (one per seed: one line each, one colour)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from warmstart.engine.io import atomic_path

    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (arm, hists) in enumerate(histories.items()):
        per_seed = [hists] if not hists or isinstance(hists[0], dict) else list(hists)
        for j, hist in enumerate(per_seed):
            ep = [int(h["epoch"]) for h in hist]
            loss = [float(h["train_loss"]) if math.isfinite(float(h["train_loss"])) and float(h["train_loss"]) > 0 else math.nan
                    for h in hist]
            label = (arm if len(per_seed) == 1 else f"{arm} ({len(per_seed)} seeds)") if j == 0 else None
            style = {"ms": 2.5, "color": f"C{i % 10}", "label": label, "alpha": 1.0 if len(per_seed) == 1 else 0.7}
            ax_loss.plot(ep, loss, "-o", **style)
            ax_acc.plot(ep, [float(h["val_accuracy"]) for h in hist], "-o", **style)
    ax_loss.axhline(math.log(classes), ls="--", color="0.4", lw=1, label=f"chance: ln {classes}")
    ax_acc.axhline(1 / classes, ls="--", color="0.4", lw=1, label=f"chance: 1/{classes}")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="train loss", title="train loss (log scale)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    with atomic_path(path, "figure") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def sections(run_dir: str | Path) -> list:
    """The report section of a depth run, rebuilt from its run directory alone."""
    from warmstart.report.html import Figure, Section, Table

    run_dir = Path(run_dir)
    summary, config = read_summary(run_dir), read_config(run_dir)
    cols, rows = table(summary)
    chance = summary.get("chance_loss", math.log(summary["classes"]))
    setup = (f"The same {summary['depth']}-layer plain {summary.get('arch', 'mlp').upper()} (width {summary.get('width')}, "
             f"{summary.get('activation', 'relu')}, no BatchNorm, no residual connections) trained once per init scheme on "
             f"{summary.get('data', 'the data')}, with the same data, batch order, seed and budget: {summary.get('epochs')} epochs "
             f"of {summary.get('optimizer')} (lr {summary.get('lr')}, batch {summary.get('batch_size')})"
             + (f", from each of the seeds {', '.join(map(str, summary['seeds']))} (on {summary.get('cpu', 'one CPU')})"
                if len(summary.get("seeds") or []) > 1 else "") + ". Each ReLU layer "
             "multiplies the variance of the signal by fan_in·Var(w)/2: ×1 for He, ×1/2 for Xavier, ×1/6 for PyTorch's default; "
             f"over {summary['depth']} layers the difference decides whether anything reaches the first layers.")
    ratios = ("act std ratio: std of the last hidden layer's output / the first's, at init; grad std ratio: std of the "
              "gradient at the first hidden layer / at the last. Values far below 1 mean the signal vanishes.")
    argv = config.get("argv") or []
    return [Section(
        title=f"Depth: {summary['depth']} layers, one arm per init scheme",
        paragraphs=[setup, "Reading: " + summary.get("reading", reading(summary)),
                    (SGD_NOTE[0].upper() + SGD_NOTE[1:] + ".") if summary.get("optimizer") == "sgd" else
                    f"Trained with {summary.get('optimizer')}, which rescales small gradients: not the paper's setting."],
        tables=[Table(cols, rows, caption=f"Chance loss ln {summary['classes']} = {chance:.3f}. {ratios}")],
        figures=[Figure(run_dir / LOSS_PNG, "Train loss per epoch (log scale) and validation accuracy, per init scheme."),
                 Figure(run_dir / LAYERS_PNG, "At init, per layer: std of the layer output (solid: measured on a batch of "
                                              "training images, dashed: predicted) and of the gradient w.r.t. it.")],
        command=" ".join(argv) if argv else "warmstart depth",
        anchor="depth",
    )]

