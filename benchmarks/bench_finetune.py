"""(b) finetune-all: training images/s of `warmstart train --strategy finetune-all` against the tutorial's loop.

Part 1, side by side in the same run, same data view, weights, epochs, batch size and seed:

* warmstart: ``warmstart train --strategy finetune-all`` with its defaults (decoded-image cache: random
  crops + flips cut from images decoded once);
* baseline (benchmarks/tutorial_baseline.py finetune): ``ImageFolder`` + ``RandomResizedCrop`` decoding every
  JPEG every epoch, ``model.train()``, SGD.

* floor (floors.py train-step): the bare training step, forward + backward + AdamW step of the same network on
  batches already in memory (channels_last), same batch size and threads, nothing else: what the hardware allows.

Training images/s is the median over epochs 2.. of each epoch's training phase (evaluation excluded; the first
epoch is warm-up); the whole-process wall time is reported too. Goal: warmstart / baseline >= 1.5x, or, where
the floor itself is under 1.5x the baseline, warmstart >= 0.9 of the floor.

Threads: the floor's training step and inference forward pass with 1 and with 2 intra-op threads (interleaved,
``--thread-sweep``), the measurement the engine's default thread count is to be chosen from; with the load.

Part 2, the knobs, through the engine's own loop (``engine.fit``) on a fixed subset of the training images,
all in one process and interleaved (every round runs one epoch of each knob), so that the machine's load
changing hits them alike: plain float32 contiguous training, channels_last, bf16 autocast, both, DataLoader
workers, as many intra-op threads as cores (against ``--threads``), ``torch.compile``, and no decoded cache (every JPEG decoded every epoch).
Each row is the median images/s over the rounds, relative to plain.

    python benchmarks/bench_finetune.py [--epochs 3] [--repeats 1] [--knob-images 64] [--knob-rounds 3]
                                        [--knobs all|none|a,b] [--smoke]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL = 1.5
FLOOR_GOAL = 0.9
#: every knob against plain float32 contiguous training (the engine before any of them)
PLAIN = {"channels_last": False, "amp": "none", "workers": 0}
KNOBS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "channels_last+bf16": {"channels_last": True, "amp": "bf16"},
    "workers=2": {"workers": 2},
    "threads=all": {},
    "compile": {},
    "no-decoded-cache": {},
}


def knob_worker(args, names: list[str]) -> dict:
    """Every knob in this one process, interleaved: round r runs one epoch of each knob (in rotating order) through
    ``engine.fit``, so that a change of the machine's load hits all knobs alike; round 0 is warm-up (compilation,
    oneDNN's primitive cache). Returns {knob: [images/s per measured round]}."""
    import torch
    from torch.utils.data import Subset

    from warmstart.data import ImageDataset, Normalizer
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.console import set_quiet
    from warmstart.engine.loop import fit
    from warmstart.data.spec import DataSpec
    from warmstart.transfer.recipe import DEFAULT_LR, build_model, prepare
    from warmstart.transfer.spec import TrainSpec
    from warmstart.transfer.groups import layer_groups
    from warmstart.transfer.strategies import parse_strategy

    set_quiet(True)
    c.set_threads(args)
    prepared = prepare(DataSpec(str(args.view)), arch="mobilenet_v3_small", weights=str(args.weights), augment=True, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(prepared.train_aug), generator=g)[: args.knob_images].tolist()
    lazy = ImageDataset(prepared.splits.train, prepared.weights.preprocess, train=True, cache=False).with_augmentation(scale=(0.35, 1.0))
    val = Subset(prepared.val, range(min(16, len(prepared.val))))  # evaluation is not what is measured
    strategy = parse_strategy("finetune-all")
    models = {k: build_model(prepared, TrainSpec(model="mobilenet_v3_small", strategy=strategy), seed=args.seed,
                             batch_size=args.batch_size) for k in names}
    if "compile" in models:
        models["compile"].compile()  # in place: parameter names (and so the phases) stay as they are
    threads = torch.get_num_threads()
    rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.knob_rounds + 1):
        for k in names[r % len(names):] + names[: r % len(names)]:
            torch.set_num_threads(len(os.sched_getaffinity(0)) if k == "threads=all" else threads)
            train = Subset(lazy if k == "no-decoded-cache" else prepared.train_aug, pick)
            cfg = TrainConfig(batch_size=args.batch_size, seed=args.seed + r, device="cpu", quiet=True, **{**PLAIN, **KNOBS[k]})
            phases = strategy.phases(layer_groups(models[k]), epochs=1, lr=DEFAULT_LR[cfg.optimizer], pretrained=True)
            result = fit(models[k], train, val, phases, cfg, num_classes=prepared.splits.num_classes,
                         normalize=Normalizer.of(prepared.weights.preprocess))
            if r > 0:
                rates[k].append(result.history[-1]["images_per_second"])
    torch.set_num_threads(threads)
    return rates


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--knobs", default="all", help="all, none, or a comma-separated list of: " + ", ".join(KNOBS))
    p.add_argument("--repeats", type=int, default=1, help="measure warmstart and the baseline this many times (interleaved); 0: knobs only")
    p.add_argument("--knob-images", type=int, default=64, help="training images per knob epoch")
    p.add_argument("--knob-rounds", type=int, default=3, help="measured rounds (one epoch of every knob each), after one warm-up round")
    p.add_argument("--thread-sweep", type=int, default=2, help="rounds of the 1- vs 2-thread floors (0: none)")
    args = p.parse_args()
    c.check_inputs(args)
    if args.smoke:
        args.epochs, args.knob_images, args.knob_rounds, args.batch_size, args.repeats = 1, 8, 1, 4, 1
        args.thread_sweep = min(args.thread_sweep, 1)
    knobs = list(KNOBS) if args.knobs == "all" else [] if args.knobs == "none" else args.knobs.split(",")
    unknown = [k for k in knobs if k not in KNOBS]
    if unknown:
        sys.exit(f"error: unknown knob {unknown[0]!r}; choose from {', '.join(KNOBS)}")
    if args.smoke:
        knobs = [k for k in knobs if k in ("plain", "channels_last")]  # compile alone takes minutes

    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", 4 if args.smoke else None)
        images = c.count_images(view)
        common = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--seed", args.seed]
        ws_runs, base_runs, floor_runs = [], [], []
        for i in range(args.repeats):
            fl = c.run_process([c.BENCH / "floors.py", "train-step", "--batch-size", args.batch_size, "--steps", 4 if args.smoke else 12,
                                *(["--threads", args.threads] if args.threads else [])], **c.threads_env(args))
            floor_runs.append(json.loads(fl["stdout"].strip().splitlines()[-1]) | {"load": [fl["load_before"], fl["load_after"]]})
            out = wd / f"warmstart-{i}"
            ws = c.warmstart(["train", view, "--weights", args.weights, "--strategy", "finetune-all", "--out", out, "--quiet", *common,
                              *c.warmstart_args(args)],
                             **c.threads_env(args))
            ws["run"] = c.read_run(out)
            ws_runs.append(ws)
            base_runs.append(c.baseline(["finetune", "--data", view, "--weights", args.weights, *common], **c.threads_env(args)))
        sweep = []
        for r in range(args.thread_sweep):
            for mode in ("train-step", "forward"):
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    fl = c.run_process([c.BENCH / "floors.py", mode, "--threads", n, "--steps", 4 if args.smoke else 10],
                                       OMP_NUM_THREADS=str(n))
                    sweep.append(json.loads(fl["stdout"].strip().splitlines()[-1]))
        knob_rows = []
        if knobs:
            args.view = view
            load = c.loadavg()
            rates = knob_worker(args, knobs)
            knob_rows = [{"knob": k, "images_per_second": v, "steady_images_per_second": c.median(v)} for k, v in rates.items()]
            knob_load = [load, c.loadavg()]

    if not ws_runs:  # --repeats 0: the knobs alone
        print(knob_table(knob_rows, args, knob_load))
        print(f"results: {c.write_results('finetune-knobs', args, {'knobs': knob_rows, 'knob_setup': {'images': args.knob_images, 'rounds': args.knob_rounds, 'load': knob_load}})}")
        return
    ws_rate = c.median([c.steady([float(e["images_per_second"]) for e in w["run"]["epochs"]]) for w in ws_runs])
    floor_rate = c.median([f["images_per_second"] for f in floor_runs])
    threads_table = {f"{mode} threads={n}": c.median([x["images_per_second"] for x in sweep if x["mode"] == mode and x["threads"] == n])
                     for mode in ("train-step", "forward") for n in (1, 2)} if sweep else {}
    b_rate = c.median([c.steady([h["train_images_per_second"] for h in b["result"]["history"]]) for b in base_runs])
    ws, base = ws_runs[-1], base_runs[-1]
    ws["seconds"], base["seconds"] = c.median([w["seconds"] for w in ws_runs]), c.median([b["seconds"] for b in base_runs])
    summary = ws["run"]["summary"]
    result = {
        "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "images": images,
        "train_images_per_second": {"warmstart": ws_rate, "baseline": b_rate, "floor_bare_step": floor_rate},
        "ratio": round(ws_rate / b_rate, 2), "of_floor": round(ws_rate / floor_rate, 3), "floor_over_baseline": round(floor_rate / b_rate, 2),
        "floor_runs": floor_runs, "thread_sweep": sweep, "thread_sweep_median": threads_table,
        "cpu_seconds": {"warmstart": {"user": ws_runs[-1]["user_seconds"], "system": ws_runs[-1]["system_seconds"]},
                        "baseline": {"user": base_runs[-1]["user_seconds"], "system": base_runs[-1]["system_seconds"]}},
        "peak_rss_mb": {"warmstart": ws_runs[-1]["peak_rss_mb"], "baseline": base_runs[-1]["peak_rss_mb"]},
        "wall_seconds": {"warmstart": ws["seconds"], "baseline": base["seconds"]},
        "final_val_accuracy": {"warmstart": summary["final_val_accuracy"], "baseline": base["result"]["final_val_accuracy"]},
        "warmstart_epochs": ws["run"]["epochs"], "baseline_history": base["result"]["history"],
        "repeats": args.repeats,
        "load": {"warmstart": [[w["load_before"], w["load_after"]] for w in ws_runs],
                 "baseline": [[b["load_before"], b["load_after"]] for b in base_runs]},
        "goal": {"ratio": GOAL, "of_floor_when_floor_below_goal": FLOOR_GOAL},
        "meets": ws_rate / b_rate >= GOAL or (floor_rate / b_rate < GOAL and ws_rate / floor_rate >= FLOOR_GOAL), "knobs": knob_rows,
        "knob_setup": {"images": args.knob_images, "rounds": args.knob_rounds, "load": knob_load if knob_rows else None},
    }
    rows = [{"measure": "training images/s (median, epochs 2..)", "warmstart": ws_rate, "baseline": b_rate,
             "ratio": f"{ws_rate / b_rate:.2f}x", "goal": f">= {GOAL}x"},
            {"measure": "bare training step (floor), images/s", "warmstart": ws_rate, "baseline": floor_rate,
             "ratio": f"{ws_rate / floor_rate:.2f} of the floor (floor = {floor_rate / b_rate:.2f}x the baseline)",
             "goal": f">= {FLOOR_GOAL} if the floor < {GOAL}x"},
            {"measure": f"wall time, {args.epochs} epochs, whole process (s)", "warmstart": ws["seconds"], "baseline": base["seconds"],
             "ratio": f"{base['seconds'] / ws['seconds']:.2f}x", "goal": ""},
            {"measure": "final val accuracy", "warmstart": summary["final_val_accuracy"], "baseline": base["result"]["final_val_accuracy"],
             "ratio": "", "goal": ""}]
    print(c.table(rows, ["measure", "warmstart", "baseline", "ratio", "goal"]))
    if threads_table:
        print()
        print(c.table([{"floor": k, "images/s (median)": v} for k, v in threads_table.items()], ["floor", "images/s (median)"]))
    if knob_rows:
        print()
        print(knob_table(knob_rows, args, knob_load))
    print(f"load average: {result['load']}")
    print(f"results: {c.write_results('finetune', args, result)}")


def knob_table(knob_rows: list[dict], args, load) -> str:
    ref = next((r["steady_images_per_second"] for r in knob_rows if r["knob"] == "plain"), None)
    return c.table([{"knob": r["knob"], "images/s (median)": r["steady_images_per_second"],
                     "vs plain": f"{r['steady_images_per_second'] / ref:.2f}x" if ref else "",
                     "per round": " ".join(f"{x:.1f}" for x in r["images_per_second"])} for r in knob_rows],
                   ["knob", "images/s (median)", "vs plain", "per round"]) + \
        f"\nknobs: {args.knob_images} images per epoch, {args.knob_rounds} rounds; load average {load}"


if __name__ == "__main__":
    main()
