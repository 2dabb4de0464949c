"""The parts of ``warmstart compare`` below the command: one arm trained into its directory, the records of all
arms aggregated over seeds, the paired test read from their predictions, the figures gathered from their files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.engine.io import atomic_path
from warmstart.engine.layout import ARM, CONV1, PREDICTIONS  # ARM written last: the arm is complete
from warmstart.engine.loop import resolve_device
from warmstart.engine.run import CONFIG, Run, read_summary
from warmstart.experiments.runs import read_history
from warmstart.report.reading import one_image_pp
from warmstart.report.run_figures import run_figures
from warmstart.report.stats import disagreements, mcnemar_p, mean_std
from warmstart.transfer.recipe import Prepared, build_model, plan, run_arm
from warmstart.transfer.spec import Arm, TrainSpec
from warmstart.transfer.strategies import Strategy



def arm_name(strategy: Arm | Strategy | str, seed: int) -> str:
    """The arm's folder: 'finetune-last:2', seed 1 -> 'finetune-last-2-seed1' (no ':' or ',' in file names); with several
    starts 'mobilenet_v2-imagenet/transfer', seed 0 -> 'mobilenet_v2-imagenet/transfer-seed0' (a folder per start)."""
    spec = str(strategy)  # an Arm's (or a Strategy's) str is its spec
    return f"{spec.replace(':', '-').replace(',', '-')}-seed{seed}"


def warm_up(prepared: Prepared, arch: str, cfg: TrainConfig) -> None:
    """On a GPU, one untimed forward/backward pass before the first arm: otherwise the first arm's time would
    include the device's start-up (context, kernel loading, library handles), a second or more on CUDA."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        return
    from warmstart.data import Normalizer
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.weights import resolve_weights

    net = create_model(arch, prepared.splits.num_classes, resolve_weights("none", arch)).to(device)
    n = min(len(prepared.train_plain), max(2, cfg.batch_size))
    x = Normalizer.of(prepared.weights.preprocess).to(device)(torch.stack([prepared.train_plain[i][0] for i in range(n)]).to(device))
    net(x).float().logsumexp(1).mean().backward()
    net.eval()
    with torch.inference_mode():
        net(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_plans(prepared: Prepared, specs: Sequence[TrainSpec], cfg: TrainConfig) -> None:
    """Build every arm's plan on a throwaway model, so a bad K or LR fails before anything is written."""
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.weights import resolve_weights

    arch = specs[0].model
    net = create_model(arch, prepared.splits.num_classes, resolve_weights("none", arch))
    for spec in specs:
        plan(net, spec, cfg)


def run_one(prepared: Prepared, run: Run, spec: TrainSpec, cfg: TrainConfig, *, resume: bool, setup: dict[str, Any],
            key: str | None = None, start: str | None = None) -> dict[str, Any]:
    """Train one arm (``spec`` with ``cfg``: its seed, epochs and learning rates) into OUT/<key>-seed<S>/ (or,
    resuming, reuse it when complete); return its record.

    ``key``: the arm's name, its strategy unless the compare has several starts (``<start>/<strategy>``:
    the arm's folder is then OUT/<start>/<strategy>-seed<S>); ``start``: that start's name.
    """
    strat, seed = spec.strategy, cfg.seed
    key = key or strat.spec
    name = arm_name(key, seed)
    done = run.dir / name / ARM
    if resume and done.is_file():
        log(f"{name}: complete, reused")
        return json.loads(done.read_text())
    # resuming, an arm that never started gets a fresh directory (and config.json) of its own
    arm = {"strategy": strat.spec, "seed": seed} | ({"start": start} if start else {})
    sub = Run(run.dir / name, "compare", {**setup, "arm": arm},
              resume=resume and (run.dir / name / CONFIG).is_file(), tensorboard=cfg.tensorboard).start()
    net = build_model(prepared, spec, seed=seed, batch_size=cfg.batch_size)
    layer, before = conv1_weights(net)
    net, result, s = run_arm(prepared, sub, spec, cfg, resume=sub.resume, model=net)
    if sub.main:
        run_figures(sub.dir)
    _, after = conv1_weights(net)
    # the final evaluation's classes: for the paired test and the report's misclassified images
    sub.write_json(PREDICTIONS, {"labels": list(prepared.val.labels), "predictions": result.val_predictions,
                                 "classes": prepared.splits.classes})
    last = (read_history(sub.dir) or [{}])[-1]
    change = None
    if before is not None and after is not None:
        change = float((after - before).norm() / before.norm().clamp_min(1e-12))
        if sub.main:
            from safetensors.torch import save_file

            with atomic_path(sub.dir / CONV1, "conv1 filters") as tmp:
                save_file({"before": before.contiguous(), "after": after.contiguous()}, str(tmp))
    record = {"strategy": key, "seed": seed, "best_val_accuracy": s["best_val_accuracy"],
              "final_val_accuracy": s["final_val_accuracy"], "train_seconds": s["train_seconds"], "dir": name,
              "best_epoch": s["best_epoch"], "epochs_run": int(last.get("epoch", cfg.epochs)),
              "final_train_loss": last.get("train_loss"), "final_train_accuracy": last.get("train_accuracy"),
              "train_images_per_second": s["train_images_per_second"], "trainable_params": s["trainable_params"],
              "total_params": s["total_params"], "feature_seconds": s["feature_seconds"], "feature_cache": s["feature_cache"],
              "augment": s["augment"], "label_smoothing": s["label_smoothing"], "stopped_early": s["stopped_early"],
              "conv1": {"layer": layer, "change": change}, "confusion": s["confusion"]}
    if start:
        record["start"] = start
    if s.get("drift") is not None:
        record["drift"] = {k: s["drift"][k] for k in ("final", "cka", "trained") if k in s["drift"]}
    sub.write_json(ARM, record)
    sub.close()
    return record


def conv1_weights(model: torch.nn.Module) -> tuple[str | None, torch.Tensor | None]:
    from warmstart.transfer.groups import conv1_of

    try:
        name, conv = conv1_of(model)
    except ValueError:  # no Conv2d (an MLP): no filters to show
        return None, None
    return name, conv.weight.detach().float().cpu().clone()


def aggregate(records: Sequence[dict[str, Any]], *, strategies: Sequence[str], val_images: int) -> dict[str, Any]:
    """Per-run records -> the summary: ``runs``, ``strategies`` (mean ± std over seeds), ``ranking``, ``best``.

    Ranking: mean final val accuracy, then mean best val accuracy, then less training time.
    """
    per: dict[str, dict[str, Any]] = {}
    for spec in strategies:
        rs = [r for r in records if r["strategy"] == spec]
        if not rs:
            continue
        agg: dict[str, Any] = {"seeds": len(rs)}
        for key in ("final_val_accuracy", "best_val_accuracy", "train_seconds", "train_images_per_second", "best_epoch"):
            m, sd = mean_std([r[key] for r in rs])
            agg[key] = {"mean": m, "std": sd}
        agg["best_epochs"] = [r["best_epoch"] for r in rs]
        for key in ("final_train_loss", "final_train_accuracy"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            agg[key] = mean_std(vals)[0] if vals else None
        agg["trainable_params"] = rs[0]["trainable_params"]
        agg["total_params"] = rs[0]["total_params"]
        agg["feature_seconds"] = max(r.get("feature_seconds", 0.0) for r in rs)
        changes = [r["conv1"]["change"] for r in rs if r.get("conv1", {}).get("change") is not None]
        agg["conv1_change"] = mean_std(changes)[0] if changes else None
        ckas = [r["drift"]["cka"] for r in rs if (r.get("drift") or {}).get("cka") is not None]
        if ckas:  # fine-tuning arms: how far the start travelled (transfer.drift), mean over seeds
            agg["cka"] = mean_std(ckas)[0]
            finals = [r["drift"]["final"] for r in rs]
            agg["drift"] = {g: mean_std([f[g] for f in finals if g in f])[0] for g in finals[0]}
        per[spec] = agg
    ranking = sorted(per, key=lambda k: (-per[k]["final_val_accuracy"]["mean"], -per[k]["best_val_accuracy"]["mean"],
                                         per[k]["train_seconds"]["mean"]))
    runs = [{k: r[k] for k in ("strategy", "seed", "best_val_accuracy", "final_val_accuracy", "train_seconds", "best_epoch",
                               "train_images_per_second", "trainable_params", "feature_seconds", "dir")}
            | ({"start": r["start"]} if r.get("start") is not None else {}) for r in records]
    return {"runs": runs, "best": ranking[0], "ranking": ranking, "strategies": per, "val_images": val_images,
            "one_image_pp": one_image_pp(val_images)}


def paired(run_dir: Path, summary: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The best strategy against each other one on the same validation images, seed by seed.

    For each seed both ran: ``best_only`` images the best gets right and the other wrong, ``other_only`` the
    reverse, and the exact McNemar p-value of that split. Needs the arms' predictions.json; empty without them.
    """
    out = {}
    for k in summary["ranking"][1:]:
        rows = paired_seeds(run_dir, summary, summary["best"], k)
        if rows:
            out[k] = rows
    return out


def paired_seeds(run_dir: Path, summary: dict[str, Any], best: str, other: str) -> list[dict[str, Any]]:
    """Arm ``best`` against arm ``other``, seed by seed, on the same validation images (see :func:`paired`)."""
    runs = {(r["strategy"], r["seed"]): r for r in summary["runs"]}
    rows = []
    for (spec, seed), r in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if spec != best or (other, seed) not in runs:
            continue
        a, o = read_predictions(run_dir / r["dir"]), read_predictions(run_dir / runs[other, seed]["dir"])
        if a is None or o is None or a["labels"] != o["labels"]:
            continue
        b, c = disagreements(a["labels"], a["predictions"], o["predictions"])
        rows.append({"seed": seed, "best_only": b, "other_only": c, "p": mcnemar_p(b, c)})
    return rows


def read_predictions(arm_dir: Path) -> dict[str, Any] | None:
    """An arm's predictions.json (``labels``, ``predictions``, ``classes``), or None for runs made without one."""
    f = Path(arm_dir) / PREDICTIONS
    return json.loads(f.read_text()) if f.is_file() else None


def figures(run_dir: Path, summary: dict[str, Any], prepared: Prepared) -> None:
    """Gather what the figures need from the arms' directories and draw them (:mod:`warmstart.report.compare_figures`)."""
    from safetensors.torch import load_file

    from warmstart.report.compare_figures import typical_run, write_figures

    typical = typical_run(summary)
    filters = {}
    for spec in summary["strategies"]:
        first = next(r for r in summary["runs"] if r["strategy"] == spec)
        f = run_dir / first["dir"] / CONV1
        if f.is_file():
            t = load_file(str(f))
            filters[f"{spec}: start"], filters[f"{spec}: trained"] = t["before"], t["after"]
    drift = {}  # fine-tuning arms, first seed: how far the start travelled
    for spec in summary["strategies"]:
        first = next(r for r in summary["runs"] if r["strategy"] == spec)
        d = read_summary(run_dir / first["dir"]).get("drift")
        if d and d.get("per_epoch"):
            drift[spec] = d
    write_figures(run_dir, summary, histories={r["dir"]: read_history(run_dir / r["dir"]) for r in summary["runs"]},
                  typical=typical, confusion=read_summary(run_dir / typical["dir"])["confusion"],
                  predictions=read_predictions(run_dir / typical["dir"]),  # None: made by a version that did not save them
                  val=prepared.val, classes=prepared.splits.classes, filters=filters, drift=drift)
