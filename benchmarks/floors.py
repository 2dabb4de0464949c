"""Floors: the least the hardware needs for a job, measured with warmstart's own fastest pieces.

    python benchmarks/floors.py inference --data DIR --weights PTH [--batch-size 64]
        interpreter start-up + imports + decoding every image of train/ and val/ once (in memory, no disk
        cache) + one inference pass of the whole network with BatchNorm folded into the convolutions and
        channels_last batches (bf16 autocast on CUDA): what any method that looks at every image once must pay.
        Time this whole process from outside (bench_transfer.py, bench_scale.py do).
    python benchmarks/floors.py train-step [--batch-size 32] [--steps 12] [--threads N] [--image-size 224]
        the bare training step of finetune-all: forward + backward + AdamW step of MobileNetV3-Small on
        batches already in memory (normalised, channels_last; on CUDA bf16 autocast), no data loading; images/s
        over the steps after 2 warm-up steps.
    python benchmarks/floors.py forward [--batch-size 64] [--steps 8] [--threads N]
        the bare inference forward (BatchNorm folded, channels_last) on in-memory batches; images/s.

Each prints one JSON line. Uses warmstart (src/ on PYTHONPATH) for decoding and BatchNorm folding only.
"""

from __future__ import annotations

import argparse
import json
import os
import time

T_START = time.perf_counter()


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def inference(args) -> dict:
    from pathlib import Path

    from warmstart import _process

    _process.own()  # the same process treatment as the warmstart command (gc.freeze once imported, and at exit)
    from warmstart.data import ImageDataset, Normalizer, load_data  # first: torchvision without torch._dynamo

    import torch
    import torchvision
    from warmstart.engine.distributed import cores_per_rank
    from warmstart.transfer.features import fold_batchnorm
    from warmstart.transfer.weights import resolve_weights

    t_imports = time.perf_counter() - T_START
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    w = resolve_weights(str(args.weights), "mobilenet_v3_small")
    splits = load_data(args.data, subset=args.subset)
    t0 = time.perf_counter()
    sets = [ImageDataset(s, w.preprocess, cache_dir=False, cache=True, workers=cores_per_rank()) for s in (splits.train, splits.val)]
    t_decode = time.perf_counter() - t0
    model = torchvision.models.mobilenet_v3_small()
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    net = fold_batchnorm(model).to(device).to(memory_format=torch.channels_last)
    norm = Normalizer.of(w.preprocess).to(device)
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for ds in sets:
            for x, _ in torch.utils.data.DataLoader(ds, batch_size=args.batch_size, pin_memory=cuda):
                x = norm(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
                net(x)
                n += len(x)
    if cuda:
        torch.cuda.synchronize()
    t_forward = time.perf_counter() - t0
    _process.settled()
    return {"mode": "inference", "images": n, "imports_seconds": round(t_imports, 3), "decode_seconds": round(t_decode, 3),
            "forward_seconds": round(t_forward, 3), "forward_images_per_second": round(n / t_forward, 1),
            "threads": torch.get_num_threads(), "device": str(device), "data": Path(args.data).name,
            "total_seconds": round(time.perf_counter() - T_START, 3)}


def _batches(args, device, classes: int = 2):
    import torch

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g)
          .to(device).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    ys = [torch.randint(0, classes, (args.batch_size,), generator=g).to(device) for _ in range(2)]
    return xs, ys


def train_step(args) -> dict:
    import torch
    import torchvision

    from warmstart.engine.distributed import keep_freed_memory

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        keep_freed_memory()  # what engine.fit does on a CPU
    model = torchvision.models.mobilenet_v3_small(num_classes=2).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xs, ys = _batches(args, device)
    times = []
    for step in range(args.steps + 2):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(xs[step % 2]).float(), ys[step % 2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    return {"mode": "train-step", "batch_size": args.batch_size, "image_size": args.image_size, "steps": args.steps,
            "images_per_second": round(args.batch_size / med, 1), "threads": torch.get_num_threads(), "device": str(device),
            "load": [round(x, 2) for x in os.getloadavg()]}


def forward(args) -> dict:
    import torch
    import torchvision

    from warmstart.transfer.features import fold_batchnorm

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = fold_batchnorm(torchvision.models.mobilenet_v3_small()).to(device).to(memory_format=torch.channels_last)
    xs, _ = _batches(args, device)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            net(xs[step % 2])
            if cuda:
                torch.cuda.synchronize()
            if step >= 2:
                times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    return {"mode": "forward", "batch_size": args.batch_size, "images_per_second": round(args.batch_size / med, 1),
            "threads": torch.get_num_threads(), "device": str(device), "load": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["inference", "train-step", "forward"])
    p.add_argument("--data", default=None)
    p.add_argument("--weights", default=None)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    _threads(args.threads)
    from warmstart.engine.distributed import keep_freed_memory

    keep_freed_memory()  # as warmstart's loop and feature pass do: freed activations reused, not faulted in afresh
    if args.mode == "inference":
        args.batch_size = args.batch_size or 64
        out = inference(args)
    elif args.mode == "train-step":
        args.batch_size = args.batch_size or 32
        out = train_step(args)
    else:
        args.batch_size = args.batch_size or 64
        out = forward(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
