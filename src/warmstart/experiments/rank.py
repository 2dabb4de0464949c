"""`warmstart rank`: which start? Pretrained candidates scored on your training images
(:mod:`warmstart.transfer.rank`), or init schemes scored at init (:mod:`warmstart.init.zero_cost`); with
``--verify STRATEGY`` each is trained and every score's rank correlation with the real result reported.

Init-scheme candidates (``he,xavier,default,orthogonal,lsuv``, any init spec) need ``--model``: any model of
``warmstart train`` (e.g. ``custom_3_layer``), or ``plain_mlp[:DEPTH]`` / ``plain_cnn[:DEPTH]``, the plain
ReLU net of ``warmstart depth`` (depth 30, width 128/32, the same data handling and batches).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from warmstart.data.spec import DataSpec
from warmstart.engine.console import log, warn
from warmstart.engine.run import RunSpec
from warmstart.engine.layout import CONFIG, RANK_SCORES_PNG, REPORT_HTML, VERIFY
from warmstart.errors import UserError
from warmstart.options import VERIFY_EPOCHS
from warmstart.report.run_figures import run_figures
from warmstart.transfer.candidates import check_candidates
from warmstart.transfer.rank import SCORES, correlations

PLAIN = ("plain_mlp", "plain_cnn")
INIT_PROBE_IMAGES = 256  # as warmstart depth's probe batch


def rank(data: DataSpec, candidates: str | Sequence[str], *, model: str | None = None, by: str | None = None,
         verify: str | None = None, epochs: int | None = None, cfg=None, run: RunSpec | None = None,
         verify_given: Sequence[str] = ()) -> dict[str, Any]:
    """Rank the candidate starts on ``data`` (a :class:`~warmstart.data.spec.DataSpec`); write the run directory
    ``run`` names (config.json, summary.json, report.html). Returns the summary, plus ``report`` (the report's
    path; not in summary.json). ``verify_given``: the training options named explicitly, which --verify of a plain
    net (the depth experiment's recipe) takes instead of its own."""
    tokens, inits = check_candidates(candidates, model=model)
    run = run or RunSpec()
    if run.out is not None and (Path(run.out) / CONFIG).exists():
        raise UserError(f"--out {run.out} already holds a run (config.json); choose another --out")
    if inits:
        return rank_inits(data, tokens, model=model, verify=verify, epochs=epochs or VERIFY_EPOCHS["inits"], cfg=cfg,
                          run=run, verify_given=verify_given)
    from warmstart.transfer.rank import rank_starts

    return rank_starts(data, tokens, model=model, by=by or "probe_cv", verify_strategy=verify,
                       epochs=epochs or VERIFY_EPOCHS["starts"], cfg=cfg, run=run, write=_write_report)


# --------------------------------------------------------------------------------------------- init schemes
def _plain(model: str) -> tuple[str, int] | None:
    name, _, depth = model.partition(":")
    if name not in PLAIN:
        return None
    if depth and not depth.isdigit() or (depth and int(depth) < 1):
        raise UserError(f"--model {model}: the depth after ':' must be a whole number >= 1, e.g. {name}:30")
    return name.split("_")[1], int(depth) if depth else 30


def rank_inits(data: DataSpec, tokens: list[str], *, model: str | None, verify: str | None, epochs: int, cfg=None,
               run: RunSpec | None = None, verify_given: Sequence[str] = ()) -> dict[str, Any]:
    """Score each init scheme at init on one training batch (zero-cost signal spread); ``verify="scratch"`` trains."""
    from warmstart.engine.config import TrainConfig
    from warmstart.experiments.depth import DEFAULT_WIDTH, build_net, load_depth_data
    from warmstart.init.data_init import sample_batch

    t0 = time.perf_counter()
    cfg = cfg or TrainConfig()
    specs, plain = _checked_inits(tokens, model, verify)
    if plain:
        kind, depth = plain
        d = load_depth_data(data, arch=kind, seed=cfg.seed)
        n, source = len(d.classes), d.source
        batch = sample_batch(d.train, INIT_PROBE_IMAGES, seed=cfg.seed, normalize=d.standardize)
        lsuv = sample_batch(d.train, cfg.batch_size, seed=cfg.seed + 1, normalize=d.standardize)[0]
        make = lambda: build_net(kind, depth, DEFAULT_WIDTH[kind], d, "relu")  # noqa: E731
    else:
        prepared = _scratch_prepared(data, model, cfg, val=verify is not None)
        from warmstart.data import Normalizer
        from warmstart.transfer.backbones import create_model
        from warmstart.transfer.weights import resolve_weights

        n, source = prepared.splits.num_classes, prepared.splits.source
        norm = Normalizer.of(prepared.weights.preprocess)
        batch = sample_batch(prepared.train_plain, INIT_PROBE_IMAGES, seed=cfg.seed, normalize=norm)
        lsuv = sample_batch(prepared.train_plain, cfg.batch_size, seed=cfg.seed, normalize=norm)[0]  # as train's
        make = lambda: create_model(model, n, resolve_weights("none", model))  # noqa: E731
    from warmstart.engine.distributed import threads

    with threads(1 if plain and plain[0] == "mlp" else None):  # tiny layers: extra threads only spin (as in depth)
        rows = [_score_init(t, specs[t], make, lsuv, batch, model, cfg.seed) for t in tokens]
    ranked = sorted(rows, key=lambda r: (r["scores"]["signal_spread"] is None, r["scores"]["signal_spread"] or 0.0))
    record = {**data.to_dict(), "candidates": tokens, "model": model, "verify": verify, "epochs": epochs, **cfg.to_dict()}
    run = (run or RunSpec()).open("rank", {"inits": specs, "train": cfg.to_dict()}, tensorboard=cfg.tensorboard,
                                  options=record)
    summary: dict[str, Any] = {"kind": "inits", "model": model, "data": source, "classes": n, "by": "signal_spread",
                               "lower_is_better": True, "probe_images": len(batch[0])}
    if verify:
        real = _verify_inits(run, data, tokens, specs, model, plain, epochs, cfg, verify_given,
                             prepared=None if plain else prepared)
        for r in rows:
            r["verify"] = real[r["name"]]
        summary["verify"] = {"strategy": "scratch", "epochs": epochs, "correlations": _init_correlations(rows)}
    summary.update({"candidates": ranked, "ranking": [r["weights"] for r in ranked], "best": ranked[0]["weights"],
                    "verdict": _init_verdict(ranked), "seconds": round(time.perf_counter() - t0, 3)})
    run.write_summary(summary)
    _write_report(run, summary)
    run.close()
    return {**summary, "report": str(run.dir / REPORT_HTML)}  # returned, not in summary.json


def _checked_inits(tokens: list[str], model: str | None, verify: str | None) -> tuple[dict[str, str], tuple[str, int] | None]:
    """{candidate: init spec} and the plain net (kind, depth) or None (a train model), every input checked:
    a --model given, --verify scratch, no candidate twice, known schemes."""
    from warmstart.experiments.depth import arm_spec

    if not model:
        check_candidates(tokens, model=model)  # says what --model to give
    if verify is not None and verify != "scratch":
        raise UserError(f"--verify {verify}: init schemes are starts for training from scratch; use --verify scratch")
    if len(set(tokens)) < len(tokens):
        dup = next(t for t in tokens if tokens.count(t) > 1)
        raise UserError(f"--candidates: {dup} is given twice; every candidate must be a different init scheme")
    specs = {t: arm_spec(t, "relu") for t in tokens}  # unknown schemes fail here
    plain = _plain(model)
    if plain is None:
        from warmstart.transfer.weights import check_arch

        check_arch(model)
    return specs, plain


def _score_init(t: str, spec: str, make, lsuv, batch, model: str, seed: int) -> dict[str, Any]:
    """Build the net, initialise it by ``spec`` (seeded), and measure its signal spread on ``batch``."""
    import torch

    from warmstart.init.data_init import init_model
    from warmstart.init.zero_cost import signal_spread

    s0 = time.perf_counter()
    torch.manual_seed(seed)
    net = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init_model(net, spec, batch=lsuv, generator=seed)
    for w in caught:
        warn(f"{t}: {w.message}")
    sp = signal_spread(net, *batch)
    log(f"{t} ({spec}): act std last/first {sp['act_std_ratio']:.3g}, grad std first/last {sp['grad_std_ratio']:.3g}, "
        f"signal spread {sp['signal_spread']:.2f}")
    return {"weights": t, "name": t, "arch": model, "init": spec,
            "scores": {k: _finite(sp[k]) for k in ("signal_spread", "act_spread", "grad_spread")},
            "act_std_ratio": _finite(sp["act_std_ratio"]), "grad_std_ratio": _finite(sp["grad_std_ratio"]),
            "hidden_layers": sp["layers"], "seconds": round(time.perf_counter() - s0, 3)}


def _scratch_prepared(data: DataSpec, model, cfg, *, val: bool):
    from warmstart.data import ImageDataset
    from warmstart.data.dataset import AUGMENT_SCALE
    from warmstart.transfer.recipe import Prepared
    from warmstart.transfer.weights import resolve_weights

    w = resolve_weights("none", model)
    splits = data.load(cfg.seed)
    train = ImageDataset(splits.train, w.preprocess, train=True, skip_bad_images=data.skip_bad_images)
    v = ImageDataset(splits.val, w.preprocess, skip_bad_images=data.skip_bad_images) if val else None
    return Prepared(splits, w, train, train.with_augmentation(scale=AUGMENT_SCALE), v, {})  # type: ignore[arg-type]


def _verify_inits(run, data: DataSpec, tokens, specs, model, plain, epochs, cfg, given=(), *, prepared) -> dict[str, dict]:
    if plain:
        from warmstart.experiments.depth import default_config, depth

        # the depth experiment's recipe (SGD, lr 0.01, ...), but every training option named explicitly wins
        own = {k: getattr(cfg, k) for k in given if k != "epochs"}
        dcfg = default_config(**{"seed": cfg.seed, "device": cfg.device, "quiet": cfg.quiet, "tensorboard": cfg.tensorboard,
                                 **own})
        s = depth(data, arch=plain[0], depth=plain[1], arms=tokens, epochs=epochs, cfg=dcfg, run=RunSpec(str(run.dir / VERIFY)))
        return {t: {"strategy": "scratch", "final_val_accuracy": s["arms"][t]["val_accuracy"],
                    "final_train_loss": s["arms"][t]["final_train_loss"], "run": f"{VERIFY}/{t}", "recipe": "warmstart depth (SGD)"}
                for t in tokens}
    from dataclasses import replace

    from warmstart.transfer.recipe import run_arm
    from warmstart.transfer.spec import TrainSpec

    out = {}
    arm_cfg = replace(cfg, epochs=epochs, lr_decay=1.0)
    for t in tokens:
        with run.sub(f"{VERIFY}/{t}", {"init": specs[t], "epochs": epochs}) as sub:
            _, _, s = run_arm(prepared, sub, TrainSpec(model=model, strategy="scratch", init=specs[t], augment="on"), arm_cfg)
            if sub.main:
                run_figures(sub.dir)
        out[t] = {"strategy": "scratch", "final_val_accuracy": s["final_val_accuracy"],
                  "best_val_accuracy": s["best_val_accuracy"], "run": f"{VERIFY}/{t}"}
    return out


def _init_correlations(rows) -> dict[str, Any]:
    """Rank correlation of each zero-cost score (negated: lower is better) with the real accuracy."""
    from warmstart.transfer.rank import Candidate

    fake = []
    for r in rows:
        c = Candidate(r["weights"], r["name"], None, r["arch"])  # type: ignore[arg-type]
        c.scores = {k: (None if v is None else -v) for k, v in r["scores"].items()}
        c.details["verify"] = r["verify"]
        fake.append(c)
    return correlations(fake)


def _init_verdict(ranked) -> str:
    """What the zero-cost ranking says, relative to the best scheme (what every scheme shares is the architecture's)."""
    best = ranked[0]["scores"]["signal_spread"]
    if best is None:
        return "no scheme could be measured: the signal vanished or overflowed for every one"
    spread = {r["name"]: r["scores"]["signal_spread"] for r in ranked}
    good = [n for n, v in spread.items() if v is not None and v <= best + 1.0]
    bad = [n for n, v in spread.items() if v is None or v > best + 3.0]
    text = f"{ranked[0]['name']} keeps the signal best (spread {best:.2f})"
    if len(good) > 1:
        text += f"; within a factor e of it: {', '.join(good)}"
    if bad:
        text += f"; more than e^3 ~ 20x worse than it: {', '.join(bad)}"
    if best > 1.0:
        text += (f"; even the best changes the signal's scale by e^{best:.1f} ~ {math.exp(best):.0f}x from the first layer "
                 "to the last; every scheme has that much, so it is likely the architecture's (pooling, layer sizes), not the init's")
    return text


def _finite(v) -> float | None:
    return round(float(v), 6) if v is not None and math.isfinite(float(v)) else None


# --------------------------------------------------------------------------------------------- output
def format_table(summary: dict[str, Any]) -> str:
    """The ranked table the command prints."""
    inits = summary.get("kind") == "inits"
    keys = ["signal_spread", "act_spread", "grad_spread"] if inits else list(SCORES)
    ver = "verify" in summary
    head = ["#", "candidate", *keys, *(["val acc"] if ver else []), "seconds"]
    lines = [head]
    for i, c in enumerate(summary["candidates"], 1):
        v = (c.get("verify") or {}).get("final_val_accuracy")
        lines.append([str(i), c.get("name", c["weights"]), *("-" if c["scores"].get(k) is None else f"{c['scores'][k]:.4f}" for k in keys),
                      *([("-" if v is None else f"{v:.4f}")] if ver else []), f"{c['seconds']:.1f}"])
    widths = [max(len(r[j]) for r in lines) for j in range(len(head))]
    text = ["  ".join(cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in enumerate(zip(r, widths))) for r in lines]
    if ver:
        corr = summary["verify"]["correlations"]
        text.append("rank correlation with the real validation accuracy (" + summary["verify"]["strategy"] + "): " + "; ".join(
            f"{k} tau {_c(v['kendall_tau'])} rho {_c(v['spearman'])}" for k, v in corr.items()))
    text.append(("lower is better; " if inits else "") + summary["verdict"])
    return "\n".join(text)


def _c(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _write_report(run, summary: dict[str, Any]) -> None:
    from warmstart.report.html import write_report

    if summary.get("kind") == "starts" and "verify" in summary:  # the verify runs' figures, drawn from their directories
        for c in summary["candidates"]:
            run_figures(run.dir / c["verify"]["run"])
    chart(summary, run.dir / RANK_SCORES_PNG)
    write_report(run.dir, "warmstart rank", sections(run.dir, summary))


def chart(summary: dict[str, Any], path: Path) -> Path:
    """One bar panel per score (and the real accuracy with --verify), candidates in ranked order."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from warmstart.engine.io import atomic_path

    inits = summary.get("kind") == "inits"
    keys = ["signal_spread", "act_spread", "grad_spread"] if inits else list(SCORES)
    names = [c.get("name", c["weights"]) for c in summary["candidates"]]
    panels = [(k, [c["scores"].get(k) for c in summary["candidates"]]) for k in keys]
    if "verify" in summary:
        panels.append((f"val accuracy ({summary['verify']['strategy']})",
                       [(c.get("verify") or {}).get("final_val_accuracy") for c in summary["candidates"]]))
    fig = Figure(figsize=(3.2 * len(panels), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    for ax, (k, vals) in zip(axes, panels):
        err = [c.get("probe_spread") or 0.0 for c in summary["candidates"]] if k == "probe_cv" else None
        ax.bar(range(len(names)), [math.nan if v is None else v for v in vals], color=[f"C{i % 10}" for i in range(len(names))],
               yerr=err, capsize=3)
        known = [v for v in vals if v is not None]
        if known and (k in ("probe_cv", "knn_loo") or k.startswith("val accuracy")):  # accuracies: zoom on the differences
            ax.set_ylim(max(0.0, min(known) - 0.1), 1.0)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
        ax.set_title(k + (" (lower is better)" if inits and k in keys else ""), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    with atomic_path(path, "figure") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def sections(run_dir: str | Path, summary: dict[str, Any] | None = None) -> list:
    """The report section of a rank run, rebuilt from its run directory alone (``warmstart report``)."""
    from warmstart.engine.run import read_config, read_summary
    from warmstart.report.html import Figure, Section, Table

    run_dir = Path(run_dir)
    summary = summary or read_summary(run_dir)
    argv = read_config(run_dir).get("argv") or []
    inits = summary.get("kind") == "inits"
    keys = ["signal_spread", "act_spread", "grad_spread"] if inits else list(SCORES)
    ver = "verify" in summary
    cols = ["rank", "candidate", "arch", *keys, *(["val accuracy"] if ver else []), "seconds"]
    rows = [[i, c.get("name", c["weights"]), c["arch"], *(c["scores"].get(k) for k in keys),
             *([(c.get("verify") or {}).get("final_val_accuracy")] if ver else []), round(c["seconds"], 2)]
            for i, c in enumerate(summary["candidates"], 1)]
    tables = [Table(cols, rows, caption=("Zero-cost signal spread at init (lower is better): |ln| of the std ratio of the "
                                         "last to the first hidden layer's output, plus the same for the gradients."
                                         if inits else "probe_cv: the recipe's linear probe, cross-validated on the training "
                                         "split; knn_loo: cosine kNN leave-one-out; logme: LogME evidence per sample; leep: "
                                         "LEEP over the source classes (null without a source classifier)."),
                    highlight=[0] if summary.get("clear_winner", True) else [])]
    if ver:
        corr = summary["verify"]["correlations"]
        tables.append(Table(["score", "Kendall tau", "Spearman rho", "candidates"],
                            [[k, v["kendall_tau"], v["spearman"], v["n"]] for k, v in corr.items()],
                            caption="Rank correlation of each score with the real validation accuracy after "
                                    f"--verify {summary['verify']['strategy']} ({summary['verify']['epochs']} epochs)."))
    return [Section(title=f"Rank: which start? ({'init schemes of ' + str(summary.get('model')) if inits else 'pretrained starts'})",
                    reading=[summary["verdict"]], tables=tables,
                    figures=[Figure(run_dir / RANK_SCORES_PNG, "Scores per candidate, in ranked order" + (
                        "" if inits else "; probe_cv with the standard error of its fold accuracies") + ".", wide=True)],
                    paragraphs=[f"Data: {summary.get('data')}."], command=" ".join(argv) if argv else "warmstart rank",
                    anchor="rank")]
