"""`warmstart export`: a finished run's model as ONNX, checked against PyTorch before it is kept.

The ONNX graph is the torchvision model itself: input ``input``, float32 ``N x 3 x crop x crop``, already
normalised ``(x / 255 - mean) / std``; output ``logits`` (``N x classes``); the batch dimension is dynamic.
How to prepare an image (resize, crop, interpolation, mean, std) and the class names travel in the file's
metadata (``metadata_props``: ``warmstart.preprocess``, ``warmstart.categories``, ``warmstart.arch``).

The file is written under a temporary name beside the target, run with onnxruntime on real images (by
default a few validation images of the run's own data, a batch of several so the dynamic batch is
exercised) and compared with PyTorch; only when the outputs agree is it renamed into place.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from warmstart.data import Normalizer
from warmstart.engine.console import log, warn
from warmstart.errors import UserError
from warmstart.experiments.predict import image_paths, load_images, load_model, model_file
from warmstart.options import OPTIONS
from warmstart.sizes import human_size

ONNX_EXTRA = "pip install 'warmstart[onnx]'"
#: outputs may differ by this much, relative to the largest logit (float32 kernels differ in summation order)
RTOL = 1e-4
CHECK_IMAGES_PER_CLASS = 2


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(f"exporting to ONNX needs the onnx and onnxruntime packages ({e.name} is missing): {ONNX_EXTRA}") from None
    return onnx, onnxruntime


def export(run: str | Path, *, onnx: str | Path, opset: int = OPTIONS["opset"].default,
           images: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Export the model of ``run`` (a run directory or weights file) to the ONNX file ``onnx``; return a report.

    ``images``: files or folders to check onnxruntime against PyTorch on; default: up to
    ``CHECK_IMAGES_PER_CLASS`` validation images per class of the run's data.
    """
    onnx_mod, ort = _require_onnx()
    target = Path(onnx).expanduser()
    if target.suffix.lower() != ".onnx":
        raise UserError(f"--onnx {target}: the file name should end in .onnx")
    if target.is_dir():
        raise UserError(f"--onnx {target} is a folder; give a file name such as {target / 'model.onnx'}")
    OPTIONS["opset"].check(opset)  # the declared range, 13..21: "--opset must be a whole number in [13, 21], got ..."
    from warmstart.engine import io

    model, weights = load_model(run, "cpu")
    io.check_writable(target.parent)
    paths, where = _check_paths(run, images)
    if paths:
        x = Normalizer.of(weights.preprocess)(load_images(paths, weights))
    else:
        warn(f"no images to check the export on ({where}); checking on random inputs instead; pass --image to use real ones")
        crop = weights.preprocess.crop
        x = torch.randn(4, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with io.atomic_path(target, "ONNX model") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            # dynamo=False: the torch.export-based exporter needs onnxscript, which warmstart[onnx] does not bring
            torch.onnx.export(model, (x[:1],), str(tmp), dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)
        proto = onnx_mod.load(str(tmp))
        meta = {"warmstart.arch": weights.arch or "", "warmstart.preprocess": json.dumps(weights.preprocess.to_dict()),
                "warmstart.categories": json.dumps(weights.categories or []),
                "warmstart.input": "float32 N x 3 x H x W, RGB, (x / 255 - mean) / std",
                "warmstart.source": str(model_file(run))}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx_mod.checker.check_model(proto)
        onnx_mod.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
        with torch.inference_mode():
            want = model(x)
        diff = (got - want).abs().max().item()
        pdiff = (got.softmax(1) - want.softmax(1)).abs().max().item()
        limit = RTOL * max(1.0, want.abs().max().item())
        if not diff <= limit:  # also catches NaN
            raise UserError(f"the ONNX export of {model_file(run)} disagrees with PyTorch: max |logit difference| {diff:.3g} "
                            f"> {limit:.3g} on {len(x)} inputs; nothing was written to {target}")
    seconds = time.perf_counter() - t0
    report = {"onnx": str(target), "bytes": target.stat().st_size, "opset": opset, "input": ["batch", 3, x.shape[2], x.shape[3]],
              "classes": weights.categories, "check_inputs": len(x), "check_images": [str(p) for p in paths],
              "max_abs_logit_diff": diff, "max_abs_probability_diff": pdiff, "same_top1": bool((got.argmax(1) == want.argmax(1)).all()),
              "seconds": round(seconds, 3)}
    log(f"exported {model_file(run)} -> {target} ({human_size(report['bytes'])}, opset {opset}); onnxruntime vs PyTorch on "
        f"{len(x)} {'images' if paths else 'random inputs'}: max |logit difference| {diff:.2e}")
    return report


def _check_paths(run: str | Path, images: Sequence[str | Path] | None) -> tuple[list[Path], str]:
    """Images to check the export on: the given ones, else a few validation images of the run's data."""
    if images:
        return image_paths(images), "given"
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        return [], f"{run} is a weights file, not a run directory"
    from warmstart.data import load_data
    from warmstart.engine.run import read_config

    opts = read_config(run_dir).get("options", {})
    data = opts.get("data")
    if not data:
        return [], f"{run_dir}/config.json names no data"
    try:
        splits = load_data(data, data_root=opts.get("data_root"), val_fraction=opts.get("val_fraction") or 0.2,
                           subset=opts.get("subset"), seed=opts.get("seed") or 0, download=False)
    except UserError as e:
        return [], f"the run's data is not readable here: {e}"
    src = splits.val
    picked: list[Path] = []
    for c in range(len(splits.classes)):
        idx = [i for i, y in enumerate(src.labels) if y == c][:CHECK_IMAGES_PER_CLASS]
        picked += [Path(src.describe(i)) for i in idx]
    picked = [p for p in picked if p.is_file()]
    return picked, "" if picked else "the run's data has no image files"
