"""(c) inference: images/s of warmstart's evaluation path against one bare forward pass (the floor).

In one process, on the same images (train + val of the data view), the same model and batch size:

* floor: ``model(x)`` in eval mode under ``torch.inference_mode`` on batches already decoded, cropped and
  normalised in memory, in the memory layout warmstart uses on this device: nothing but the network (the
  same pass in the contiguous layout is reported beside it);
* warmstart, cached: ``engine.loop.evaluate`` over the decoded-image cache (crop, uint8 -> device,
  normalise on the batch, forward, confusion matrix): what every epoch's validation costs;
* warmstart, from files: decoding the JPEGs into the cache (``ImageDataset``) plus that evaluation;
* baseline: the tutorial's val ``DataLoader`` (``ImageFolder``, ``Resize`` + ``CenterCrop`` + ``ToTensor`` +
  ``Normalize``, decoding every JPEG) plus the forward pass.

Each is timed ``--repeats`` times, interleaved; the medians are reported, with each as a fraction of the floor.

    python benchmarks/bench_inference.py [--batch-size 64] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers [default: min(4, cores)]")
    args = p.parse_args()
    c.check_inputs(args)
    if args.smoke:
        args.repeats = 1

    import os

    import torch
    from torch.utils.data import ConcatDataset, DataLoader
    from torchvision import datasets, transforms

    from warmstart.data import ImageDataset, Normalizer
    from warmstart.engine.config import TrainConfig
    from warmstart.engine.loop import evaluate, use_channels_last
    from warmstart.data.spec import DataSpec
    from warmstart.transfer.recipe import prepare
    from warmstart.transfer.backbones import create_model

    c.set_threads(args)
    workers = args.workers if args.workers is not None else min(4, len(os.sched_getaffinity(0)))
    timings: dict[str, list[float]] = {"floor": [], "floor_contiguous": [], "warmstart_cached": [], "warmstart_from_files": [],
                                       "baseline": []}
    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", 4 if args.smoke else None)
        prepared = prepare(DataSpec(str(view)), arch="mobilenet_v3_small", weights=str(args.weights), augment=False)
        pre = prepared.weights.preprocess
        model = create_model("mobilenet_v3_small", prepared.splits.num_classes, prepared.weights).eval()
        norm = Normalizer.of(pre)
        both = ConcatDataset([prepared.train_plain, prepared.val])
        n = len(both)
        images = torch.stack([both[i][0] for i in range(n)])
        batches = [norm(images[i : i + args.batch_size]) for i in range(0, n, args.batch_size)]
        # the floor runs the network in the memory layout warmstart uses here (channels_last on x86 CPUs)
        cl = use_channels_last(TrainConfig(), torch.device("cpu"))
        batches_cl = [b.contiguous(memory_format=torch.channels_last) for b in batches] if cl else batches
        cfg = TrainConfig(batch_size=args.batch_size // 2, eval_batch_size=args.batch_size, device="cpu", quiet=True)
        tv = transforms.Compose([transforms.Resize(pre.resize), transforms.CenterCrop(pre.crop), transforms.ToTensor(),
                                 transforms.Normalize(pre.mean, pre.std)])
        folders = ConcatDataset([datasets.ImageFolder(view / s, tv) for s in ("train", "val")])
        assert len(folders) == n, (len(folders), n)

        def floor() -> None:
            with torch.inference_mode():
                for x in batches_cl:
                    model(x)

        def floor_contiguous() -> None:
            with torch.inference_mode():
                for x in batches:
                    model(x)

        def cached() -> None:
            evaluate(model, both, prepared.splits.num_classes, cfg=cfg, device=torch.device("cpu"), normalize=norm)

        def from_files() -> None:
            fresh = ConcatDataset([ImageDataset(prepared.splits.train, pre), ImageDataset(prepared.splits.val, pre)])
            evaluate(model, fresh, prepared.splits.num_classes, cfg=cfg, device=torch.device("cpu"), normalize=norm)

        def baseline() -> None:
            with torch.inference_mode():
                for x, _ in DataLoader(folders, batch_size=args.batch_size, shuffle=False, num_workers=workers):
                    model(x)

        fns = {"floor": floor, "floor_contiguous": floor_contiguous, "warmstart_cached": cached,
               "warmstart_from_files": from_files, "baseline": baseline}
        floor()  # warm-up: allocator, oneDNN primitives
        load_before = c.loadavg()
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - t0)
        load_after = c.loadavg()

    rates = {k: round(n / c.median(v), 1) for k, v in timings.items()}
    result = {"images": n, "batch_size": args.batch_size, "floor_layout": "channels_last" if cl else "contiguous", "repeats": args.repeats, "baseline_workers": workers,
              "images_per_second": rates, "fraction_of_floor": {k: round(v / rates["floor"], 3) for k, v in rates.items()},
              "seconds": timings, "load": [load_before, load_after]}
    labels = {"floor": f"floor: forward pass only ({'channels_last' if cl else 'contiguous'})",
              "floor_contiguous": "forward pass only, contiguous (the tutorial's layout)", "warmstart_cached": "warmstart evaluate, decoded cache",
              "warmstart_from_files": "warmstart decode once + evaluate", "baseline": "tutorial DataLoader + forward"}
    print(c.table([{"path": labels[k], "images/s": rates[k], "of floor": f"{rates[k] / rates['floor']:.0%}"} for k in rates],
                  ["path", "images/s", "of floor"]))
    print(f"load average before/after: {load_before} / {load_after}")
    print(f"results: {c.write_results('inference', args, result)}")


if __name__ == "__main__":
    main()
