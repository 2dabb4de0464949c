"""(f) memory churn of the feature pass and start-up imports, before/after, side by side in the same run.

Feature pass: ``FeatureCache.build`` of MobileNetV3-Small's frozen layers (BatchNorm folded, channels_last) over
``--images`` CIFAR-10 training images at 224 px, each variant in its own process (the allocator setting is
per process), interleaved over ``--repeats``: user and system CPU time, minor page faults and peak RSS of the
pass (resource.getrusage around it), with

* before: batches of 64 and glibc's default allocator behaviour (the code before issue 15);
* after: warmstart's defaults (batches capped so every activation stays under the mmap threshold, freed memory
  kept: ``engine.distributed.keep_freed_memory``).

Start-up: ``import torchvision`` as torchvision does it (torch._dynamo included) against ``import warmstart.data``
(torchvision without torch._dynamo), fresh interpreters, interleaved.

    python benchmarks/bench_memory.py [--images 640] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

PASS = textwrap.dedent("""
    import json, resource, sys, time
    variant, data, weights, n, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    import torch
    if threads:
        torch.set_num_threads(threads)
    import warmstart.transfer.features as features
    if variant == "before":
        features.ACTIVATION_LIMIT = 1 << 60
        features.keep_freed_memory = lambda: False
    from warmstart.data import ImageDataset, Normalizer, load_data
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.groups import layer_groups
    from warmstart.transfer.weights import resolve_weights
    w = resolve_weights(weights, "mobilenet_v3_small")
    ds = ImageDataset(load_data(data, subset=max(1, n // 10)).train, w.preprocess, cache_dir=False)
    model = create_model("mobilenet_v3_small", 10, w)
    g = layer_groups(model)
    trunk, _ = features.split_at(model, g, len(g) - 1)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    features.FeatureCache.build(trunk, ds, normalize=Normalizer.of(w.preprocess), batch_size=64, channels_last=True, fold_bn=True)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"variant": variant, "images": len(ds), "wall_seconds": round(time.perf_counter() - t0, 3),
                      "user_seconds": round(r1.ru_utime - r0.ru_utime, 3), "system_seconds": round(r1.ru_stime - r0.ru_stime, 3),
                      "minor_faults": r1.ru_minflt - r0.ru_minflt, "minor_faults_per_image": round((r1.ru_minflt - r0.ru_minflt) / len(ds), 1),
                      "peak_rss_mb": round(r1.ru_maxrss / 1024, 1), "threads": torch.get_num_threads()}))
""")


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    from bench_scale import default_cifar

    p.set_defaults(data=default_cifar())
    p.add_argument("--images", type=int, default=640, help="CIFAR-10 training images for the feature pass")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if args.smoke:
        args.images, args.repeats = 40, 1
    rows: dict[str, list] = {"before": [], "after": [], "import torchvision": [], "import warmstart.data": []}
    load = c.loadavg()
    for r in range(args.repeats):
        for variant in (("before", "after") if r % 2 == 0 else ("after", "before")):
            out = c.run_process(["-c", PASS, variant, args.data, args.weights, args.images, args.threads or 0])
            rows[variant].append(json.loads(out["stdout"].strip().splitlines()[-1]))
        for name, code in (("import torchvision", "import torchvision"), ("import warmstart.data", "import warmstart.data")):
            rows[name].append(c.run_process(["-c", code])["seconds"])
    med = {k: {m: c.median([x[m] for x in v]) for m in ("wall_seconds", "user_seconds", "system_seconds", "minor_faults_per_image", "peak_rss_mb")}
           for k, v in rows.items() if k in ("before", "after")}
    imports = {k: c.median(v) for k, v in rows.items() if k.startswith("import")}
    result = {"images": args.images, "repeats": args.repeats, "feature_pass": med, "imports_seconds": imports, "runs": rows,
              "load": [load, c.loadavg()]}
    print(c.table([{"feature pass": k, **v} for k, v in med.items()],
                  ["feature pass", "wall_seconds", "user_seconds", "system_seconds", "minor_faults_per_image", "peak_rss_mb"]))
    print(c.table([{"start-up": k, "seconds (median)": v} for k, v in imports.items()], ["start-up", "seconds (median)"]))
    print(f"load average before/after: {result['load']}")
    print(f"results: {c.write_results('memory', args, result)}")


if __name__ == "__main__":
    main()
