"""`warmstart rank DATA --candidates WEIGHTS_DIR`, timed as a whole process (start to exit, imports included).

The issue's budget: the four shared starts on hymenoptera in <= 30 s on 2 cores. Prints the seconds and the
child's CPU time (user + system: what the command costs, less sensitive to other work on a shared machine than
the wall clock), the load average before and after, and writes JSON (default benchmarks/results/rank.json).

    python benchmarks/bench_rank.py [--data DIR] [--weights-dir DIR] [--repeat N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, default_data, env, loadavg, machine  # noqa: E402

BUDGET_S = 30.0


def default_weights_dir() -> Path:
    return Path(os.environ.get("WARMSTART_SHARED", REPO.parent / "shared")) / "weights"


def once(args: argparse.Namespace, out: Path) -> dict:
    import subprocess

    cmd = [sys.executable, "-m", "warmstart", "rank", str(args.data), "--candidates", str(args.weights_dir),
           "--out", str(out), "--quiet", *(["--subset", "8"] if args.smoke else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = loadavg()
    t0 = time.perf_counter()
    extra = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    done = subprocess.run(cmd, env=env(**extra), capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"error: warmstart rank exited with {done.returncode}")
    summary = json.loads((out / "summary.json").read_text())
    return {"seconds": round(seconds, 3),
            "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
            "load_before": load, "load_after": loadavg(), "inside_seconds": summary["seconds"],
            "per_candidate": {c["name"]: c["seconds"] for c in summary["candidates"]},
            "decode_seconds": summary["decode_seconds"], "decoded_datasets": summary["decoded_datasets"],
            "ranking": [c["name"] for c in summary["candidates"]], "table": done.stdout}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data(), help="hymenoptera_data (train/ and val/)")
    p.add_argument("--weights-dir", type=Path, default=default_weights_dir(), help="folder of weights files (the candidates)")
    p.add_argument("--repeat", type=int, default=1, help="runs (each a fresh process)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of the command (OMP_NUM_THREADS) [default: torch's own]; with 1 on a busy "
                        "machine, the CPU seconds approximate the wall time on one idle core")
    p.add_argument("--smoke", action="store_true", help="8 images per class: checks the script runs")
    p.add_argument("--json", type=Path, default=None, help="where to write [default: benchmarks/results/rank.json]")
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            r = once(args, Path(tmp) / f"run{i}")
            runs.append(r)
            print(f"run {i + 1}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, load {r['load_before']} -> "
                  f"{r['load_after']}; per candidate {r['per_candidate']}", flush=True)
    best = min(r["seconds"] for r in runs)
    doc = {"benchmark": "rank", "smoke": args.smoke, "machine": machine(), "budget_seconds": BUDGET_S,
           "threads": args.threads, "best_seconds": best, "within_budget": best <= BUDGET_S, "runs": runs,
           "data": args.data.name, "candidates": runs[0]["ranking"]}
    path = args.json or RESULTS / ("rank-smoke.json" if args.smoke else "rank.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(runs[-1]["table"])
    print(f"{best:.1f} s (budget {BUDGET_S:.0f} s); {path}")


if __name__ == "__main__":
    main()
