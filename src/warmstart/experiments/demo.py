"""`warmstart demo`: every experiment of the lecture, briefly, offline, in one HTML report.

Runs on scikit-learn's bundled handwritten digits, so it needs nothing but the install itself:

1. symmetry — custom_3_layer from a constant start (all filters alike), with fc1 constant too, and from He:
   the constant filters never separate, except where a random layer downstream tells them apart;
2. depth — a 30-layer plain ReLU net per init scheme: Xavier and PyTorch's default stay at chance, He,
   orthogonal and LSUV train (He et al. 2015, fig. 3);
3. transfer — a "pretrained" model trained on digits 0-4 is reused on digits 5-9 with few images:
   scratch vs transfer (frozen layers, new head) vs finetune-all (the lecture's "train on dogs, adapt to cats").

Each part is an ordinary run directory under OUT (rerun or rebuild any of them with its own command);
OUT/report.html stitches their report sections together.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from warmstart.engine.config import TrainConfig
from warmstart.engine.console import log
from warmstart.data.spec import DataSpec
from warmstart.engine.run import Run, RunSpec, default_out
from warmstart.report.html import Section, Table, write_report

INTRO = ("Where a network starts decides whether it learns. This report runs each experiment of the lecture for a "
         "minute or less on scikit-learn's bundled handwritten digits (8x8 pixels, 10 classes, no download): "
         "why filters must not start alike, why the scale of a random start matters with depth, and what reusing "
         "trained layers buys when the new task has few examples. Every section says the command that made it; "
         "run those on your own data, with more epochs, for real numbers.")


def demo(out: str | Path | None = None, *, quick: bool = False, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """Run the three experiments briefly on digits; write OUT/report.html; return summary.json's content (with
    ``report``, the report's path)."""
    from warmstart.experiments import depth as depth_mod
    from warmstart.experiments import symmetry as symmetry_mod
    from warmstart.experiments.compare_demo import demo_compare
    from warmstart.experiments.compare import sections as compare_sections

    t0 = time.perf_counter()
    out = Path(out) if out else default_out("demo")
    run = Run(out, "demo", {"options": {"quick": quick, "seed": seed, "device": device}}).start()
    timings: dict[str, float] = {}

    log("demo 1/3: symmetry — constant vs random starts of the lecture's 3-layer CNN")
    t = time.perf_counter()
    sym_epochs = 1 if quick else 3
    sym = symmetry_mod.symmetry(DataSpec("digits", subset=symmetry_mod.QUICK_SUBSET), constant_linear=True,
                                cfg=TrainConfig(optimizer="sgd", lr=symmetry_mod.DEFAULT_LR, schedule="constant", seed=seed,
                                                device=device, epochs=sym_epochs),
                                run=RunSpec(str(out / "symmetry"), argv=[
                                    "warmstart", "symmetry", "digits", "--subset", str(symmetry_mod.QUICK_SUBSET), "--epochs",
                                    str(sym_epochs), "--constant-linear", "--seed", str(seed), "--out", str(out / "symmetry")]))
    timings["symmetry"] = time.perf_counter() - t

    log("demo 2/3: depth — a 30-layer plain net per init scheme, plain SGD")
    t = time.perf_counter()
    dep = depth_mod.depth(DataSpec("digits"), quick=True, cfg=depth_mod.default_config(seed=seed, device=device),
                          run=RunSpec(str(out / "depth"), argv=["warmstart", "depth", "digits", "--quick", "--seed", str(seed),
                                                                "--out", str(out / "depth")]))
    timings["depth"] = time.perf_counter() - t

    log("demo 3/3: transfer — trained on digits 0-4, reused on digits 5-9")
    t = time.perf_counter()
    # two commands (train the source, then compare): each run records its own options, no command line
    cmp = demo_compare(out / "transfer", seed=seed, quick=quick, device=device)
    timings["transfer"] = time.perf_counter() - t

    seconds = time.perf_counter() - t0
    overview = Section("Overview", [INTRO], tables=[Table(
        ["part", "what it shows", "seconds", "run directory"],
        [["symmetry", "identical filters stay identical", round(timings["symmetry"], 1), "symmetry/"],
         ["depth", "the init's scale decides if a deep net trains", round(timings["depth"], 1), "depth/"],
         ["transfer", "reused layers vs training from scratch", round(timings["transfer"], 1), "transfer/"]],
        caption=f"total {seconds:.0f} s")], command=f"warmstart demo --out {out}" + (" --quick" if quick else ""))
    sections = [overview, *symmetry_mod.sections(out / "symmetry"), *depth_mod.sections(out / "depth"),
                *compare_sections(out / "transfer")]
    report = write_report(out, "warmstart demo: where a network starts", sections,
                          subtitle=f"digits (scikit-learn, bundled) · seed {seed} · {seconds:.0f} s")
    summary = {"seconds": round(seconds, 1), "parts": {k: round(v, 1) for k, v in timings.items()},
               "symmetry": _pick(sym, "arms"), "depth": _pick(dep, "arms"),
               "transfer": {"best": cmp.get("best"), "runs": cmp.get("runs")}, "report": str(report)}
    run.write_summary(summary)
    log(f"demo finished in {seconds:.0f} s")
    return summary


def _pick(summary: dict[str, Any], key: str) -> Any:
    return summary.get(key)
