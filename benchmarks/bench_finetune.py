"""(b) finetune-all: training images/s of `warmstart train --strategy finetune-all` against the tutorial's loop.

Part 1, side by side in the same run, same data view, weights, epochs, batch size and seed:

* warmstart: ``warmstart train --strategy finetune-all`` with its defaults (decoded-image cache: random
  crops + flips cut from images decoded once);
* baseline (benchmarks/tutorial_baseline.py finetune): ``ImageFolder`` + ``RandomResizedCrop`` decoding every
  JPEG every epoch, ``model.train()``, SGD.

Training images/s is the median over epochs 2.. of each epoch's training phase (evaluation excluded; the first
epoch is warm-up); the whole-process wall time is reported too. Goal: warmstart / baseline >= 1.5x.

Part 2, the knobs, each in its own process (so thread counts and compiled code do not leak between them)
through the engine's own loop (``engine.fit``) on a fixed subset of the training images: the defaults,
channels_last, bf16 autocast, both, DataLoader workers, one intra-op thread, ``torch.compile``, and no
decoded cache (every JPEG decoded every epoch). Each row is images/s relative to the defaults.

    python benchmarks/bench_finetune.py [--epochs 3] [--knob-images 128] [--knobs all|none|a,b] [--smoke]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL = 1.5
KNOBS = {
    "defaults": {},
    "channels_last": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "channels_last+bf16": {"channels_last": True, "amp": "bf16"},
    "workers=2": {"workers": 2},
    "threads=1": {},
    "compile": {},
    "no-decoded-cache": {},
}


def knob_worker(args) -> None:
    """One knob, in this process: prints one JSON line with the per-epoch training images/s."""
    import torch
    from torch.utils.data import Subset

    from warmstart.data import ImageDataset, Normalizer
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.loop import fit
    from warmstart.experiments.train import DEFAULT_LR, build_model, prepare
    from warmstart.transfer.groups import layer_groups
    from warmstart.transfer.strategies import parse_strategy

    knob = args.knob
    if knob == "threads=1":
        torch.set_num_threads(1)
    prepared = prepare(args.view, arch="mobilenet_v3_small", weights=str(args.weights), augment=True, seed=args.seed)
    train = prepared.train_aug
    if knob == "no-decoded-cache":
        train = ImageDataset(prepared.splits.train, prepared.weights.preprocess, train=True, cache=False).with_augmentation(scale=(0.35, 1.0))
    g = torch.Generator().manual_seed(args.seed)
    train = Subset(train, torch.randperm(len(train), generator=g)[: args.knob_images].tolist())
    val = Subset(prepared.val, range(min(16, len(prepared.val))))  # evaluation is not what is measured
    strategy = parse_strategy("finetune-all")
    model = build_model("mobilenet_v3_small", prepared, strategy, init=None, seed=args.seed)
    cfg = TrainConfig(batch_size=args.batch_size, seed=args.seed, device="cpu", quiet=True, **KNOBS[knob])
    phases = strategy.phases(layer_groups(model), epochs=args.knob_epochs, lr=DEFAULT_LR[cfg.optimizer], pretrained=True)
    if knob == "compile":
        model.compile()  # in place: parameter names (and so the phases) stay as they are
    result = fit(model, train, val, phases, cfg, num_classes=prepared.splits.num_classes, normalize=Normalizer.of(prepared.weights.preprocess))
    print(json.dumps({"knob": knob, "threads": torch.get_num_threads(),
                      "images_per_second": [h["images_per_second"] for h in result.history],
                      "seconds": [h["seconds"] for h in result.history]}))


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knobs", default="all", help="all, none, or a comma-separated list of: " + ", ".join(KNOBS))
    p.add_argument("--knob-images", type=int, default=128, help="training images per knob epoch")
    p.add_argument("--knob-epochs", type=int, default=2, help="epochs per knob (the first is warm-up)")
    p.add_argument("--knob", default=None, help=argparse_hidden())
    p.add_argument("--view", type=Path, default=None, help=argparse_hidden())
    args = p.parse_args()
    if args.knob:
        return knob_worker(args)
    c.check_inputs(args)
    if args.smoke:
        args.epochs, args.knob_images, args.knob_epochs, args.batch_size = 1, 8, 1, 4
    knobs = list(KNOBS) if args.knobs == "all" else [] if args.knobs == "none" else args.knobs.split(",")
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown:
        sys.exit(f"error: unknown knob {unknown[0]!r}; choose from {', '.join(KNOBS)}")
    if args.smoke:
        knobs = [k for k in knobs if k in ("defaults", "channels_last")]  # compile alone takes minutes

    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", 4 if args.smoke else None)
        common = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--seed", args.seed]
        out = wd / "warmstart"
        ws = c.warmstart(["train", view, "--weights", args.weights, "--strategy", "finetune-all", "--out", out, "--quiet", *common])
        ws["run"] = c.read_run(out)
        base = c.baseline(["finetune", "--data", view, "--weights", args.weights, *common])
        knob_rows = []
        for k in knobs:
            r = c.run_process([__file__, "--knob", k, "--view", view, "--weights", args.weights, "--seed", args.seed,
                               "--batch-size", args.batch_size, "--knob-images", args.knob_images, "--knob-epochs", args.knob_epochs])
            d = json.loads(r["stdout"].strip().splitlines()[-1])
            knob_rows.append({**d, "steady_images_per_second": c.steady(d["images_per_second"]), "load": r["load_after"],
                              "process_seconds": r["seconds"]})

    ws_rate = c.steady([float(e["images_per_second"]) for e in ws["run"]["epochs"]])
    b_rate = c.steady([h["train_images_per_second"] for h in base["result"]["history"]])
    summary = ws["run"]["summary"]
    result = {
        "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "images": c.count_images(view),
        "train_images_per_second": {"warmstart": ws_rate, "baseline": b_rate}, "ratio": round(ws_rate / b_rate, 2),
        "wall_seconds": {"warmstart": ws["seconds"], "baseline": base["seconds"]},
        "final_val_accuracy": {"warmstart": summary["final_val_accuracy"], "baseline": base["result"]["final_val_accuracy"]},
        "warmstart_epochs": ws["run"]["epochs"], "baseline_history": base["result"]["history"],
        "load": {"warmstart": [ws["load_before"], ws["load_after"]], "baseline": [base["load_before"], base["load_after"]]},
        "goal": GOAL, "meets": ws_rate / b_rate >= GOAL, "knobs": knob_rows,
    }
    rows = [{"measure": "training images/s (median, epochs 2..)", "warmstart": ws_rate, "baseline": b_rate,
             "ratio": f"{ws_rate / b_rate:.2f}x", "goal": f">= {GOAL}x"},
            {"measure": f"wall time, {args.epochs} epochs, whole process (s)", "warmstart": ws["seconds"], "baseline": base["seconds"],
             "ratio": f"{base['seconds'] / ws['seconds']:.2f}x", "goal": ""},
            {"measure": "final val accuracy", "warmstart": summary["final_val_accuracy"], "baseline": base["result"]["final_val_accuracy"],
             "ratio": "", "goal": ""}]
    print(c.table(rows, ["measure", "warmstart", "baseline", "ratio", "goal"]))
    if knob_rows:
        ref = next((r["steady_images_per_second"] for r in knob_rows if r["knob"] == "defaults"), None)
        print()
        print(c.table([{"knob": r["knob"], "images/s": r["steady_images_per_second"],
                        "vs defaults": f"{r['steady_images_per_second'] / ref:.2f}x" if ref else "", "load": r["load"]} for r in knob_rows],
                      ["knob", "images/s", "vs defaults", "load"]))
    print(f"load average: {result['load']}")
    print(f"results: {c.write_results('finetune', args, result)}")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
