"""(a) transfer: `warmstart train --strategy transfer` against the tutorial's fixed-feature-extractor loop.

Both are whole processes timed from start to exit (Python start-up and imports included), on the same data
view, weights, epochs (25, the tutorial's), batch size and seed, in the same run:

* warmstart: decodes every image once, runs the frozen backbone once (feature cache), trains the head 25
  epochs on the cached features;
* baseline (benchmarks/tutorial_baseline.py transfer): decodes and augments every image and recomputes the
  frozen backbone every epoch, ``model.train()`` on the frozen part;
* floor (tutorial_baseline.py inference): one plain inference pass over train + val, the least any method
  that looks at every image once can take;
* warmstart's own floor (floors.py inference): interpreter start-up + imports + decoding every image once +
  warmstart's fastest single inference pass over train + val (BatchNorm folded, channels_last), a whole process;
* warmstart's second run: the same command again with the same decoded-image cache folder (another strategy,
  candidate or resume would find it the same way): nothing is decoded.

Every warmstart first run gets a fresh, empty decoded-image cache folder (WARMSTART_CACHE_DIR), so it decodes
like a user's first run. Goals: baseline / warmstart wall time >= 15x (the ceiling is about 25x: one backbone
pass instead of 25); warmstart's final val accuracy at most 1 point below the baseline's; warmstart / floor
<= 1.3x, and warmstart / its own floor <= 1.2x.

    python benchmarks/bench_transfer.py [--data DIR] [--weights PTH] [--epochs 25] [--repeats 1] [--smoke]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOALS = {"speedup": 15.0, "accuracy_drop_pp": 1.0, "over_floor": 1.3, "over_own_floor": 1.2}


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="measure each side this many times (interleaved); medians reported")
    args = p.parse_args()
    c.check_inputs(args)
    epochs, per_class = (1, 4) if args.smoke else (args.epochs, None)
    runs: dict[str, list] = {"warmstart": [], "warmstart_second": [], "baseline": [], "floor": [], "own_floor": []}
    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", per_class)
        images = c.count_images(view)
        common = ["--epochs", epochs, "--batch-size", args.batch_size, "--seed", args.seed]
        for i in range(args.repeats):
            env = c.threads_env(args)
            runs["floor"].append(c.baseline(["inference", "--data", view, "--weights", args.weights, "--batch-size", args.batch_size], **env))
            own = c.run_process([c.BENCH / "floors.py", "inference", "--data", view, "--weights", args.weights], **env)
            own["result"] = json.loads(own["stdout"].strip().splitlines()[-1])
            runs["own_floor"].append(own)
            cache = {"WARMSTART_CACHE_DIR": str(wd / f"cache-{i}")}  # empty: a first run decodes
            for key, out in (("warmstart", wd / f"warmstart-{i}"), ("warmstart_second", wd / f"warmstart-{i}-again")):
                r = c.warmstart(["train", view, "--weights", args.weights, "--strategy", "transfer", "--out", out, "--quiet", *common,
                                 *c.warmstart_args(args)], **env, **cache)
                r["run"] = c.read_run(out)
                runs[key].append(r)
            runs["baseline"].append(c.baseline(["transfer", "--data", view, "--weights", args.weights, *common], **env))

    ws, base, floor, own, again = (c.median([r["seconds"] for r in runs[k]])
                                   for k in ("warmstart", "baseline", "floor", "own_floor", "warmstart_second"))
    ws_sum = runs["warmstart"][-1]["run"]["summary"]
    b_res = runs["baseline"][-1]["result"]
    ws_acc, b_acc = ws_sum["final_val_accuracy"], b_res["final_val_accuracy"]
    result = {
        "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed, "repeats": args.repeats, "images": images,
        "wall_seconds": {"warmstart": ws, "warmstart_second_run": again, "baseline": base, "floor_inference_pass": floor,
                         "own_floor": own},
        "speedup": round(base / ws, 2), "speedup_second_run": round(base / again, 2), "warmstart_over_floor": round(ws / floor, 3),
        "warmstart_over_own_floor": round(ws / own, 3), "own_floor_inside": runs["own_floor"][-1]["result"],
        "cpu_seconds": {k: {"user": c.median([r["user_seconds"] for r in runs[k]]), "system": c.median([r["system_seconds"] for r in runs[k]])}
                        for k in runs},
        "peak_rss_mb": {k: c.median([r["peak_rss_mb"] for r in runs[k]]) for k in runs},
        "final_val_accuracy": {"warmstart": ws_acc, "baseline": b_acc},
        "best_val_accuracy": {"warmstart": ws_sum["best_val_accuracy"], "baseline": b_res["best_val_accuracy"]},
        "accuracy_drop_pp": round(100 * (b_acc - ws_acc), 2),
        "warmstart_inside": {k: ws_sum[k] for k in ("feature_seconds", "train_seconds", "probe_seconds", "seconds") if k in ws_sum},
        "goals": GOALS,
        "runs": {k: [{kk: vv for kk, vv in r.items() if kk not in ("stdout", "run", "result")} for r in v] for k, v in runs.items()},
        "baseline_history": b_res["history"],
    }
    result["meets"] = {"speedup": result["speedup"] >= GOALS["speedup"], "accuracy": result["accuracy_drop_pp"] <= GOALS["accuracy_drop_pp"],
                       "over_floor": result["warmstart_over_floor"] <= GOALS["over_floor"],
                       "over_own_floor": result["warmstart_over_own_floor"] <= GOALS["over_own_floor"]}
    rows = [
        {"measure": "wall time, whole process (s)", "warmstart": ws, "baseline": base, "ratio": f"{base / ws:.1f}x faster",
         "goal": f">= {GOALS['speedup']:.0f}x"},
        {"measure": "final val accuracy", "warmstart": ws_acc, "baseline": b_acc,
         "ratio": f"{result['accuracy_drop_pp']:+.1f} pp (baseline - warmstart)", "goal": f"<= {GOALS['accuracy_drop_pp']:.0f} pp"},
        {"measure": "best val accuracy", "warmstart": ws_sum["best_val_accuracy"], "baseline": b_res["best_val_accuracy"], "ratio": "", "goal": ""},
        {"measure": "vs one inference pass (s)", "warmstart": ws, "baseline": floor, "ratio": f"{ws / floor:.2f}x the floor",
         "goal": f"<= {GOALS['over_floor']}x"},
        {"measure": "vs warmstart's own floor: start-up + decode + one folded channels_last pass (s)", "warmstart": ws,
         "baseline": own, "ratio": f"{ws / own:.2f}x its own floor", "goal": f"<= {GOALS['over_own_floor']}x"},
        {"measure": "second run, decoded-image cache on disk (s)", "warmstart": again, "baseline": base,
         "ratio": f"{base / again:.1f}x faster", "goal": ""},
    ]
    print(c.table(rows, ["measure", "warmstart", "baseline", "ratio", "goal"]))
    print(f"load average before/after: {runs['baseline'][0]['load_before']} / {runs['baseline'][-1]['load_after']}")
    print(f"results: {c.write_results('transfer', args, result)}")


if __name__ == "__main__":
    main()
