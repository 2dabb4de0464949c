"""(e) scale: CIFAR-10 at 224 px (all 60,000 images): transfer and one epoch of finetune-all, first and second run.

Past the memory: 60,000 images decoded at the weights' resize (256) take 11.8 GB, more than an in-memory cache
may hold, so this is where the decoded-image disk cache and a lean feature pass show. Whole processes, timed from
start to exit, each with its wall time, user and system CPU time, peak RSS and minor page faults (os.wait4),
side by side in the same run, on one data view (train/ = CIFAR-10's train, val/ = its test split):

* warmstart transfer (``--epochs``), first run: a fresh, empty decoded-image cache folder, every image decoded;
* warmstart transfer, second run: the same folder: nothing decoded;
* warmstart finetune-all, one epoch, first run (fresh cache folder) and second run (its cache);
* warmstart's own floor (floors.py inference): start-up + decoding every image once + one folded,
  channels_last inference pass over train + val. Goal: the transfer run <= 1.2x of it;
* baseline (tutorial_baseline.py): transfer with the same epochs, and finetune for one epoch.

    python benchmarks/bench_scale.py --data .data/cifar10 [--subset N] [--epochs 5] [--skip-baseline]

``--subset N`` keeps N images per class and split (N=20: 200 + 200 images, minutes); without it all 60,000.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOAL_OVER_FLOOR = 1.2
KEEP = ("seconds", "user_seconds", "system_seconds", "peak_rss_mb", "minor_faults", "load_before", "load_after")


def default_cifar() -> Path:
    import os

    for root in (os.environ.get("WARMSTART_DATA"), c.REPO / ".data"):
        if root and (Path(root) / "cifar10" / "train").is_dir():
            return Path(root) / "cifar10"
    return c.REPO / ".data" / "cifar10"


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.set_defaults(data=default_cifar())
    p.add_argument("--subset", type=int, default=None, help="images per class and split (default: all)")
    p.add_argument("--epochs", type=int, default=5, help="transfer epochs (both sides)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-baseline", action="store_true", help="warmstart and its floor only (the baseline takes hours on all 60,000)")
    p.add_argument("--transfer-only", action="store_true", help="no finetune-all runs (with --skip-baseline: the floor and the two transfer runs)")
    args = p.parse_args()
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        sys.exit(f"error: {args.data} has no train/ and test/ folders; pass --data DIR (the unpacked CIFAR-10 folder)")
    if not args.weights.is_file():
        sys.exit(f"error: no weights {args.weights}; pass --weights PATH.pth")
    if args.smoke:
        args.subset, args.epochs = 2, 1
    env = c.threads_env(args)
    rows: dict[str, dict] = {}
    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", args.subset, splits={"train": "train", "val": "test"})
        images = c.count_images(view)
        common = ["--batch-size", args.batch_size, "--seed", args.seed, *c.warmstart_args(args)]

        def ws(name: str, cache: str, strategy: str, epochs: int) -> None:
            out = wd / name
            r = c.warmstart(["train", view, "--weights", args.weights, "--strategy", strategy, "--epochs", epochs, "--out", out,
                             "--quiet", *common], WARMSTART_CACHE_DIR=str(wd / cache), **env)
            summary = c.read_run(out)["summary"]
            rows[name] = {k: r[k] for k in KEEP} | {
                "final_val_accuracy": summary["final_val_accuracy"], "train_images_per_second": summary.get("train_images_per_second"),
                "inside": {k: summary.get(k) for k in ("feature_seconds", "probe_seconds", "train_seconds", "seconds")}}
            print(f"{name}: {r['seconds']:.1f} s", flush=True)

        floor = c.run_process([c.BENCH / "floors.py", "inference", "--data", view, "--weights", args.weights], **env)
        rows["own_floor"] = {k: floor[k] for k in KEEP} | {"inside": json.loads(floor["stdout"].strip().splitlines()[-1])}
        print(f"own floor: {floor['seconds']:.1f} s", flush=True)
        ws("transfer_first", "cache-transfer", "transfer", args.epochs)
        ws("transfer_second", "cache-transfer", "transfer", args.epochs)
        if not args.transfer_only:
            ws("finetune_first", "cache-finetune", "finetune-all", 1)
            ws("finetune_second", "cache-finetune", "finetune-all", 1)
        if not args.skip_baseline:
            for name, mode, epochs in (("baseline_transfer", "transfer", args.epochs), ("baseline_finetune", "finetune", 1))[
                    :1 if args.transfer_only else 2]:
                b = c.baseline([mode, "--data", view, "--weights", args.weights, "--epochs", epochs, "--batch-size", args.batch_size,
                                "--seed", args.seed], **env)
                rows[name] = {k: b[k] for k in KEEP} | {"final_val_accuracy": b["result"]["final_val_accuracy"],
                                                        "train_images_per_second": b["result"]["history"][-1]["train_images_per_second"]}
                print(f"{name}: {b['seconds']:.1f} s", flush=True)
        cache_bytes = sum(f.stat().st_size for f in wd.glob("cache-*/*.npy"))

    t, f = rows["transfer_first"]["seconds"], rows["own_floor"]["seconds"]
    result = {"images": images, "subset_per_class": args.subset, "transfer_epochs": args.epochs, "batch_size": args.batch_size,
              "rows": rows, "transfer_over_own_floor": round(t / f, 3), "goal_over_own_floor": GOAL_OVER_FLOOR,
              "meets_over_own_floor": t / f <= GOAL_OVER_FLOOR, "disk_cache_bytes": cache_bytes}
    if "baseline_transfer" in rows:
        result["transfer_speedup"] = round(rows["baseline_transfer"]["seconds"] / t, 2)
        if "baseline_finetune" in rows:
            result["finetune_epoch_speedup"] = round(rows["baseline_finetune"]["seconds"] / rows["finetune_first"]["seconds"], 2)
    print(c.table([{"run": k, "wall s": r["seconds"], "user s": r["user_seconds"], "sys s": r["system_seconds"],
                    "peak RSS MB": r["peak_rss_mb"], "minor faults": r["minor_faults"], "val acc": r.get("final_val_accuracy", "")}
                   for k, r in rows.items()], ["run", "wall s", "user s", "sys s", "peak RSS MB", "minor faults", "val acc"]))
    print(f"transfer (first run) / own floor: {t / f:.2f}x (goal <= {GOAL_OVER_FLOOR}x); decoded-image caches: {cache_bytes / 2**20:.0f} MiB")
    print(f"results: {c.write_results('scale', args, result)}")


if __name__ == "__main__":
    main()
