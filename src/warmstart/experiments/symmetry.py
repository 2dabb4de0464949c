"""`warmstart symmetry`: the lecture's first exercise -- a constant start never breaks symmetry.

The network is :func:`~warmstart.models.custom_3_layer` (conv1 32 -> conv2 64 -> conv3 64 -> fc1 64 -> fc2).
Every arm trains the same way on the same images in the same order (one engine ``fit`` each, into its
own run directory ``OUT/<arm>/``); only the starting weights differ:

``constant``
    :data:`~warmstart.models.LECTURE_CONSTANT`: every conv layer holds one 3x3 kernel in every (filter,
    input channel) slot, every conv bias is 1; fc1 and fc2 keep PyTorch's default (random) init.
``random``
    :data:`~warmstart.models.LECTURE_RANDOM` (He-normal convs, zero conv biases) or ``--init SPEC``.
``constant-linear`` (with ``--constant-linear``; a third arm, so the other two stay as they are)
    :data:`~warmstart.models.LECTURE_CONSTANT_LINEAR`: the constant start extended to fc1.

What it shows: filters that start identical get identical gradients for as long as everything
downstream treats them alike. In ``constant``, conv1 and conv2 stay at 1 distinct filter; conv3 ends
with 64 distinct filters because the random fc1 behind it weighs its channels differently -- yet conv2
still feeds it 64 identical channels, so each conv3 filter holds one 3x3 kernel on all of them and the
layer has rank <= 9. In ``constant-linear`` conv3 stays at 1 too: symmetry breaks exactly where an
asymmetric layer sits downstream. ``random`` has 32/64/64 distinct, full-rank filters.

Images are resized to 32x32 and scaled with mean = std = 0.5; no augmentation, no dropout. DATA is
anything :func:`~warmstart.data.load_data` accepts; without it, the unpacked CIFAR-10 JPEG folder
(``$WARMSTART_DATA/cifar10``, ``./.data/cifar10`` or ``DATA_ROOT/cifar10``) or else the torchvision
``cifar10`` data set under ``--data-root``.

The run directory: ``summary.json`` (``arms.<arm>.val_accuracy`` and ``arms.<arm>.layers.<layer>`` =
filters, distinct, max_cosine, rank, plus the counts at the start and an explanation; ``seconds``;
``restarts`` with ``--restarts K``), ``conv1_filters.png`` (conv1's 32 filters at the start and after
training, for both arms), ``learning_curves.png``, and per arm ``metrics.csv``, ``checkpoint.pt``,
``best.pt``, ``summary.json``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from warmstart.data import ImageDataset, Normalizer, Preprocess, describe_splits
from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.layout import CONV1_FILTERS, LEARNING_CURVES
from warmstart.engine.loop import fit
from warmstart.engine.plan import single_phase
from warmstart.engine.run import Run, RunSpec
from warmstart.errors import UserError
from warmstart.init.restarts import BestOfK, best_of_k, check_restarts
from warmstart.init import apply_init, explain_layer, parse_init_spec, symmetry_report
from warmstart.models import LECTURE_CONSTANT, LECTURE_CONSTANT_LINEAR, LECTURE_RANDOM, custom_3_layer

#: The network, in order: each layer's output feeds the next.
LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")
PREPROCESS = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
DEFAULT_SUBSET = 250   # images per class and split: 2,500 train / 2,500 val images of CIFAR-10
QUICK_SUBSET = 30
DEFAULT_LR = 0.01
FILTERS_PNG, CURVES_PNG = CONV1_FILTERS, LEARNING_CURVES


# ---------------------------------------------------------------------------------------------- inputs

def _default_places(data_root: str | Path | None = None) -> list[str]:
    places = [str(Path(os.environ["WARMSTART_DATA"]) / "cifar10")] if os.environ.get("WARMSTART_DATA") else []
    places.append(str(Path(".data") / "cifar10"))
    if data_root is not None:
        places.append(str(Path(data_root).expanduser() / "cifar10"))
    return places


def default_data(data_root: str | Path | None = None) -> str:
    """The unpacked CIFAR-10 JPEG folder (with train/) if one is found, else the torchvision data set name ``cifar10``."""
    return next((p for p in _default_places(data_root) if (Path(p) / "train").is_dir()), "cifar10")


class _DefaultData(DataSpec):
    """The DataSpec symmetry chose itself (no DATA given): its load error says where CIFAR-10 was looked for."""


def default_spec(data: str | Path | None = None, *, data_root: str | Path | None = None, subset: int | None = None,
                 **spec: Any) -> DataSpec:
    """symmetry's DataSpec: DATA, else :func:`default_data`; ``subset`` defaults to :data:`DEFAULT_SUBSET`."""
    root = str(data_root) if data_root is not None else None
    kind = DataSpec if data is not None else _DefaultData
    return kind(str(data) if data is not None else default_data(root), data_root=root,
                subset=subset if subset is not None else DEFAULT_SUBSET, **spec)


def arm_specs(init: str | None = None, constant_linear: bool = False) -> dict[str, str]:
    """{arm: init spec}; ``init`` replaces the random arm's spec (validated by parsing)."""
    random_spec = init if init is not None else LECTURE_RANDOM
    parse_init_spec(random_spec)
    arms = {"constant": LECTURE_CONSTANT, "random": random_spec}
    if constant_linear:
        arms["constant-linear"] = LECTURE_CONSTANT_LINEAR
    return arms


def arm_model(spec: str, num_classes: int, seed: int) -> nn.Module:
    """custom_3_layer initialised by ``spec``; layers the spec leaves alone get PyTorch's default init from ``seed``,
    so every arm built with one seed starts with the same fc1 and fc2. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = custom_3_layer(num_classes)
    apply_init(model, spec, generator=seed)
    return model


# ---------------------------------------------------------------------------------------------- explanations

def _slices(weight: Tensor, channels: int) -> Tensor:
    """(out, channels, k): each output's weights on each input channel (fc1 reads conv3's channels c*25..c*25+24)."""
    return weight.detach().double().reshape(weight.shape[0], channels, -1)


def _alike(t: Tensor, dim: int, tol: float = 1e-6) -> bool:
    """Are all slices of ``t`` along ``dim`` equal (within ``tol`` of its largest entry)?"""
    first = t.narrow(dim, 0, 1)
    return bool((t - first).abs().max() <= tol * float(t.abs().max()))


def explain_arm(model: nn.Module, start: nn.Module, layers: dict[str, dict], start_layers: dict[str, dict]) -> dict[str, str]:
    """A sentence per layer saying why it has the count it has, from the measurements and the network's order.

    A layer whose filters started identical stays so while the next layer gives all its input channels the
    same weights; a layer fed identical channels holds one weight slice on all of them, which caps its rank.
    """
    mods = dict(model.named_modules())
    start_mods = dict(start.named_modules())
    out = {}
    for i, name in enumerate(LAYERS):
        row, first = layers[name], start_layers[name]
        n, d = row["filters"], row["distinct"]
        unit = "filter" if len(row["shape"]) > 2 else "unit"
        nxt = LAYERS[i + 1] if i + 1 < len(LAYERS) else None
        prev = LAYERS[i - 1] if i > 0 else None
        # fed identical channels: the layer below has one distinct filter, and this layer holds one slice on all of them
        fed = None
        if prev is not None and d > 1 and layers[prev]["distinct"] == 1 and layers[prev]["filters"] > 1:
            channels = layers[prev]["filters"]
            sl = _slices(mods[name].weight, channels)
            if _alike(sl, 1):
                k = sl.shape[2]
                side = math.isqrt(k)
                what = f"{side}x{side} kernel" if unit == "filter" and side * side == k else f"{k} weights"
                fed = (f"{prev} still outputs {channels} identical channels, so each {unit} holds the same {what} on all "
                       f"{channels} of them and the layer has rank {row['rank']} (at most {k})")
        sentence = None
        if first["distinct"] == 1 and n > 1 and nxt is not None:
            alike = _alike(_slices(start_mods[nxt].weight, n), 1)
            if d == 1 and alike:
                sentence = (f"{name}: {n} {unit}s but only 1 distinct: they started identical and {nxt} gives all {n} of its "
                            f"input channels the same weights, so every {unit} got the same gradient at every step and "
                            f"they never separated")
            elif d > 1 and not alike:
                sentence = (f"{name}: started as 1 distinct {unit}, ended with {d} of {n}: the random {nxt} behind it "
                            f"weighs its {n} channels differently, so each {unit} got its own gradient")
                sentence += f"; yet {fed}" if fed else ""
        if sentence is None and fed:
            sentence = f"{name}: {d} of {n} {unit}s distinct, but {fed}"
        out[name] = sentence or explain_layer(name, row, start=first)
    return out


# ---------------------------------------------------------------------------------------------- the experiment

def symmetry(data: DataSpec | None = None, *, init: str | None = None, constant_linear: bool = False,
             restarts: int = 1, restart_epochs: int = 1, cfg: TrainConfig | None = None,
             run: RunSpec | None = None) -> dict[str, Any]:
    """Train custom_3_layer from each arm's start; write the run directory; return summary.json's content.

    ``data`` (a :class:`~warmstart.data.spec.DataSpec`) defaults to :func:`default_spec`: the unpacked CIFAR-10,
    else the cifar10 data set, :data:`DEFAULT_SUBSET` images per class and split.
    ``restarts`` > 1 makes the random arm the best of K seeds (:mod:`warmstart.init.restarts`).
    ``cfg`` holds the optimizer, learning rate, batch size, seed, device...: by default plain SGD (momentum
    0.9), lr 0.01, constant schedule, batch 32, 1 epoch where its ``lr`` and ``epochs`` are None.
    ``run`` (a :class:`~warmstart.engine.run.RunSpec`): where to write and what config.json records.
    """
    t0 = time.perf_counter()
    cfg = (cfg or TrainConfig(optimizer="sgd", schedule="constant")).with_defaults(lr=DEFAULT_LR)
    cfg.check_one_rate("symmetry")
    epochs = cfg.epochs if cfg.epochs is not None else 1
    check_restarts(restarts, restart_epochs)
    specs = arm_specs(init, constant_linear)
    for spec in specs.values():  # every rule must fit the network (names, shapes) before anything is read or written
        arm_model(spec, 10, cfg.seed)
    data = data if data is not None else default_spec()
    splits, train_set, val_set = _datasets(data, seed=cfg.seed)
    n = splits.num_classes
    normalize = Normalizer.of(PREPROCESS)
    run_spec = run or RunSpec()
    record = {**data.to_dict(), "init": init, "constant_linear": constant_linear, "restarts": restarts,
              "restart_epochs": restart_epochs, **cfg.to_dict(), "epochs": epochs}  # a library call's options
    resume = run_spec.resume
    out = run_spec.open("symmetry", {"arms": specs, "preprocess": PREPROCESS.to_dict()}, tensorboard=cfg.tensorboard,
                        options=record)

    def train(model: nn.Module, arm_run: Run, n_epochs: int):
        return fit(model, train_set, val_set, single_phase(model, n_epochs, cfg.lr), cfg, num_classes=n, run=arm_run,
                   normalize=normalize, resume=resume)

    with out:
        arms, histories, conv1, best = _train_arms(out, specs, train, n, cfg.seed, restarts, restart_epochs, epochs)
        _pictures(out, conv1, histories)
        summary = {"arms": arms, "seconds": round(time.perf_counter() - t0, 3), "epochs": epochs, "lr": cfg.lr,
                   "optimizer": cfg.optimizer, **_data_keys(splits, train_set, val_set),
                   "figures": {"conv1_filters": FILTERS_PNG, "learning_curves": CURVES_PNG}}
        if best is not None:
            summary["restarts"] = {**best.summary(), "arm": "random", "restart_epochs": restart_epochs}
        out.write_summary(summary)
    log(f"{summary['seconds']:.1f} s; run directory {out.dir}")
    return summary


def _train_arms(run: Run, specs: dict[str, str], train, n: int, seed: int, restarts: int, restart_epochs: int,
                epochs: int) -> tuple[dict[str, Any], dict[str, list], dict[str, Tensor], BestOfK | None]:
    """Every arm in its sub-directory: records, histories, conv1's filters at the start and trained, restarts' outcome."""
    arms: dict[str, dict[str, Any]] = {}
    histories, conv1 = {}, {}
    best: BestOfK | None = None
    for arm, spec in specs.items():
        log(f"arm {arm}: {spec}")
        with run.sub(arm, {"arm": arm, "init": spec}) as arm_run:
            k = restarts if arm == "random" else 1
            arms[arm], histories[arm], start, model, chosen = _train_arm(arm, spec, arm_run, train, n, seed, k, restart_epochs,
                                                                          epochs)
        best = chosen or best
        if arm in ("constant", "random"):
            conv1[f"{arm}: start"], conv1[f"{arm}: trained"] = start.conv1.weight.detach(), model.conv1.weight.detach()
    return arms, histories, conv1, best


def _data_keys(splits, train_set, val_set) -> dict[str, Any]:
    return {"data": splits.source, "classes": splits.classes, "train_images": len(train_set), "val_images": len(val_set),
            "val_is_test": splits.val_is_test}


def _datasets(data: DataSpec, *, seed: int):
    """DATA's splits, and the training and validation images at the lecture's 32 x 32."""
    splits = _load(data, seed)
    log(describe_splits(splits) + (" (validation = the data set's test split)" if splits.val_is_test else ""))
    return (splits, ImageDataset(splits.train, PREPROCESS, train=True, skip_bad_images=data.skip_bad_images),
            ImageDataset(splits.val, PREPROCESS, skip_bad_images=data.skip_bad_images))


def _train_arm(arm: str, spec: str, arm_run: Run, train, n: int, seed: int, restarts: int, restart_epochs: int,
               epochs: int) -> tuple[dict[str, Any], list, nn.Module, nn.Module, BestOfK | None]:
    """One arm: its start (the best of ``restarts`` seeds when > 1), trained ``epochs``; its record, history,
    starting and trained model, and the restarts' outcome."""
    best = None
    if restarts > 1:
        def trial(m: nn.Module, s: int) -> float:
            with arm_run.sub(f"restarts/seed-{s}", {"seed": s, "init": spec, "epochs": restart_epochs}) as sub:
                return train(m, sub, restart_epochs).final_val_accuracy

        best = best_of_k(restarts, seed, lambda s: arm_model(spec, n, s), trial)
        model, seed = best.model, best.chosen.seed
    else:
        model = arm_model(spec, n, seed)
    start = arm_model(spec, n, seed)  # the arm's starting weights (the trials trained theirs)
    result = train(model, arm_run, epochs)
    model.to("cpu")
    record = {"val_accuracy": result.final_val_accuracy, "best_val_accuracy": result.best_val_accuracy, "init": spec,
              "seed": seed, "layers": _layers(model, start), "train_seconds": result.train_seconds, "run_dir": arm}
    arm_run.write_summary(record)
    return record, result.history, start, model, best


def _pictures(run: Run, conv1: dict[str, Any], histories: dict[str, list]) -> None:
    """conv1's filters at the start and after training, and the learning curves, per arm."""
    from warmstart.report.plots import filter_grid, learning_curves

    filter_grid(conv1, run.dir / FILTERS_PNG, max_filters=32,
                title="conv1's filters at the start and after training (each filter scaled on its own)")
    learning_curves(histories, run.dir / CURVES_PNG, title="custom_3_layer: constant vs random start")


def _load(data: DataSpec, seed: int):
    """DATA's splits; for the default DATA (:func:`default_spec`), where the CIFAR-10 it looked for is."""
    try:
        return data.load(seed)
    except UserError as e:
        if not isinstance(data, _DefaultData) or data.data != "cifar10":
            raise
        raise UserError(f"no DATA given and no unpacked CIFAR-10 folder found ({', '.join(_default_places(data.data_root))}); "
                        f"tried the cifar10 data set instead: {e}") from None


def _layers(model: nn.Module, start: nn.Module) -> dict[str, dict[str, Any]]:
    """Per layer of the trained arm: filters, distinct, max cosine, rank, zeros, the start's, and why."""
    start_report, report = symmetry_report(start).to_dict(), symmetry_report(model).to_dict()
    reasons = explain_arm(model, start, report, start_report)
    return {name: {"filters": r["filters"], "distinct": r["distinct"], "max_cosine": _finite(r["max_cosine"]),
                   "rank": r["rank"], "zero_filters": r["zero_filters"], "shape": r["shape"],
                   "start": {"distinct": start_report[name]["distinct"], "rank": start_report[name]["rank"]},
                   "explanation": reasons[name]}
            for name, r in report.items()}


def _finite(x: float) -> float | None:
    """JSON has no NaN: a single-filter layer has no max cosine."""
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------- output

def format_table(summary: dict[str, Any], layers: tuple[str, ...] = ("conv1", "conv2", "conv3", "fc1")) -> str:
    """The arms side by side: val accuracy and, per layer, distinct/filters and rank."""
    head = ["arm", "val_acc"] + [f"{name} distinct (rank)" for name in layers]
    rows = [head]
    for arm, a in summary["arms"].items():
        rows.append([arm, f"{a['val_accuracy']:.3f}"] +
                    [f"{a['layers'][n]['distinct']}/{a['layers'][n]['filters']} ({a['layers'][n]['rank']})" for n in layers])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def report_text(summary: dict[str, Any]) -> str:
    """What the command prints: the table, why each non-random arm's filters stayed alike, the restarts, the time."""
    lines = [format_table(summary)]
    for arm, a in summary["arms"].items():
        if arm != "random":
            lines += [f"{arm}: {a['layers'][n]['explanation']}" for n in ("conv1", "conv2", "conv3")]
    if "restarts" in summary:
        r = summary["restarts"]
        lines.append(f"random = best of {r['k']}: seed {r['chosen_seed']}; val accuracy min {r['val_accuracy']['min']:.3f} "
                     f"median {r['val_accuracy']['median']:.3f} max {r['val_accuracy']['max']:.3f}")
    return "\n".join([*lines, f"{summary['seconds']:.1f} s"])


def sections(run_dir: str | Path) -> list:
    """The report section of a symmetry run, rebuilt from its run directory alone."""
    from warmstart.engine.run import read_config, read_summary
    from warmstart.report.html import Figure, Section, Table

    run_dir = Path(run_dir)
    s, config = read_summary(run_dir), read_config(run_dir)
    cols = ["arm", "val accuracy"] + [f"{n} distinct / filters (rank)" for n in LAYERS]
    rows = [[arm, f"{a['val_accuracy']:.3f}"] + [f"{a['layers'][n]['distinct']} / {a['layers'][n]['filters']} ({a['layers'][n]['rank']})"
                                        for n in LAYERS if n in a["layers"]]
            for arm, a in s["arms"].items()]
    paragraphs = [
        f"custom_3_layer trained {s['epochs']} epoch(s) with {s['optimizer']} (lr {s['lr']}) on {s['train_images']} images, "
        f"validated on {s['val_images']} ({s['data']}). Every arm sees the same images in the same order; only the start "
        "differs: " + "; ".join(f"{arm} = {spec}" for arm, spec in config.get("arms", {}).items()) + ".",
    ]
    for arm, a in s["arms"].items():
        paragraphs.append(f"{arm}: " + " ".join(f"{a['layers'][n]['explanation']}." for n in LAYERS if n in a["layers"]))
    if "restarts" in s:
        r = s["restarts"]
        v = r["val_accuracy"]
        paragraphs.append(f"The random arm is the best of {r['k']} seeds after {r['restart_epochs']} epoch(s) each "
                          f"(val accuracy min {v['min']:.3f}, median {v['median']:.3f}, max {v['max']:.3f}); seed "
                          f"{r['chosen_seed']} was kept and trained on (chosen on validation: its accuracy is optimistic).")
    reading = ("Reading: filters that start identical get identical gradients for as long as every layer downstream "
               "treats them alike, so they stay one filter however long you train; a single asymmetric layer "
               "downstream (a random fc1) is enough to separate them, but only as far as the identical channels "
               "below allow (rank <= 9 for conv3).")
    stuck = [n for n, r in s["arms"].get("random", {}).get("layers", {}).items() if r["distinct"] < r["filters"]]
    reading += (f" The random arm's start left duplicates in {', '.join(stuck)}." if stuck
                else " The random start has every filter distinct: its symmetry was broken from the first step.")
    paragraphs.append(reading)
    figures = [Figure(run_dir / s["figures"]["conv1_filters"], "conv1's filters at the start and after training, per arm"),
               Figure(run_dir / s["figures"]["learning_curves"], "learning curves per arm")]
    command = " ".join(config.get("argv") or []) or "warmstart symmetry"
    return [Section("Symmetry: a constant start never breaks it", paragraphs=paragraphs,
                    tables=[Table(cols, rows, caption="distinct filters after training, of all filters; rank of the layer's weight")],
                    figures=figures, command=command, anchor="symmetry")]
