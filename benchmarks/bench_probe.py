"""CPU seconds of the linear probe (``transfer.probe.fit_probe``): the exhaustive original against the current one.

Features are extracted once (MobileNetV3-Small, ImageNet weights, the input of its 1024 -> 1000 head) for
hymenoptera's training split and a 10-class CIFAR-10 subset, then each probe is timed on them side by side in
one process, in CPU seconds (user + sys, ``time.process_time``), so a loaded machine changes the numbers less.
The original implementation is kept here only, as the reference the faster one must agree with.

    PYTHONPATH=src python benchmarks/bench_probe.py [--per-class 20] [--repeat 1] [--features-cache DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import default_data, default_weights  # noqa: E402


# ------------------------------------------------------------------------------- the original probe (reference)
def old_solve(x, y, l2, w0, b0, start=None, max_iter=100):
    w = (start[0] if start is not None else w0).clone().requires_grad_(True)
    b = (start[1] if start is not None else b0).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + l2 / 2 * (w - w0).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def old_fit_probe(x, y, num_classes, *, prior=None, l2s: Sequence[float] = (1.0, 0.1, 0.01, 0.001), folds=5, seed=0,
                  max_select_rows=4096) -> dict[str, Any]:
    """The probe as it was: every (prior, l2) candidate solved to L-BFGS's tight tolerances on every fold."""
    from warmstart.engine.distributed import threads
    from warmstart.transfer.probe import _sample, label_mapping, stratified_folds

    small = x.shape[0] * x.shape[1] * num_classes < 50_000_000
    with threads(1 if small else None):
        x = x.detach().float().cpu()
        y = y.detach().long().cpu()
        d = x.shape[1]
        if prior is not None and (prior[0].shape[1] != d or prior[0].shape[0] < num_classes):
            prior = None
        prior = (prior[0].detach().float().cpu(), prior[1].detach().float().cpu()) if prior is not None else None

        def starts(xs, ys):
            zero = (torch.zeros(num_classes, d), torch.zeros(num_classes), None)
            if prior is None:
                return {"none": zero}
            rows = label_mapping(xs @ prior[0].T + prior[1], ys, num_classes)
            return {"none": zero, "pretrained": (prior[0][rows].clone(), prior[1][rows].clone(), rows)}

        counts = torch.bincount(y, minlength=num_classes)
        k = int(min(folds, counts[counts > 0].min().item()))
        l2s = sorted({float(v) for v in l2s}, reverse=True)
        cv = []
        sel = _sample(y, max_select_rows, seed) if len(y) > max_select_rows else torch.arange(len(y))
        xs, ys = x[sel], y[sel]
        scores: dict = {}
        for held in stratified_folds(ys, k, seed):
            fit_rows = torch.ones(len(ys), dtype=torch.bool)
            fit_rows[held] = False
            for name, (w0, b0, _) in starts(xs[fit_rows], ys[fit_rows]).items():
                w = None
                for l2 in l2s:
                    w = old_solve(xs[fit_rows], ys[fit_rows], l2, w0, b0, start=w)
                    out = xs[held] @ w[0].T + w[1]
                    scores.setdefault((name, l2), []).append(
                        (F.cross_entropy(out, ys[held]).item(), (out.argmax(1) == ys[held]).float().mean().item()))
        for (name, l2), r in scores.items():
            cv.append({"prior": name, "l2": l2, "loss": round(sum(a for a, _ in r) / len(r), 5),
                       "accuracy": round(sum(b for _, b in r) / len(r), 5), "fold_accuracy": [round(b, 5) for _, b in r]})
        best = min(cv, key=lambda row: (round(row["loss"], 4), -row["l2"], row["prior"] != "none"))
        name, l2 = best["prior"], best["l2"]
        w0, b0, rows = starts(x, y)[name]
        w, b = old_solve(x, y, l2, w0, b0, max_iter=200)
        return {"weight": w, "bias": b, "l2": l2, "prior": name, "mapped_classes": rows, "cv": cv}


# ------------------------------------------------------------------------------------------------ features
def features(data: Path, weights: Path, per_class: int, size: int, cache: Path | None):
    """(hymenoptera (x, y), cifar10 (x, y), prior): 1024-d inputs of the ImageNet head, and that head."""
    from _transfer_data import image_files, load_uint8

    from warmstart.data.transforms import Normalizer
    from warmstart.transfer.backbones import create_model
    from warmstart.transfer.weights import resolve_weights

    if cache is not None and (cache / f"probe-features-{per_class}-{size}.pt").is_file():
        return torch.load(cache / f"probe-features-{per_class}-{size}.pt", weights_only=True)
    w = resolve_weights(str(weights), "mobilenet_v3_small")
    m = create_model("mobilenet_v3_small", None, w).eval()
    norm = Normalizer((0.5,) * 3, (0.5,) * 3)

    def embed(folder: Path, n: int | None):
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        xs, ys = [], []
        for label, c in enumerate(classes):
            files = image_files(folder / c, n or 10**9)
            xs += [load_uint8(p, round(size * 8 / 7), size) for p in files]
            ys += [label] * len(files)
        out = []
        with torch.inference_mode():
            for i in range(0, len(xs), 64):
                b = norm(torch.stack(xs[i:i + 64]))
                out.append(m.classifier[:3](m.avgpool(m.features(b)).flatten(1)))
        return torch.cat(out).clone(), torch.tensor(ys)

    with torch.no_grad():
        result = {"hymenoptera": embed(data / "hymenoptera_data" / "train", None),
                  "cifar10": embed(data / "cifar10" / "train", per_class),
                  "prior": (m.classifier[3].weight.detach().clone(), m.classifier[3].bias.detach().clone())}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        torch.save(result, cache / f"probe-features-{per_class}-{size}.pt")
    return result


def cpu_seconds(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def main() -> None:
    from warmstart.transfer.probe import fit_probe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data().parent)
    ap.add_argument("--weights", type=Path, default=default_weights())
    ap.add_argument("--per-class", type=int, default=20, help="CIFAR-10 training images per class (default 20: 200)")
    ap.add_argument("--size", type=int, default=224, help="input size of the feature extractor")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-old", action="store_true", help="time the current probe only")
    ap.add_argument("--features-cache", type=Path, default=None)
    a = ap.parse_args()
    feats = features(a.data, a.weights, a.per_class, a.size, a.features_cache)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    for name in ("hymenoptera", "cifar10"):
        x, y = feats[name]
        k = int(y.max()) + 1
        new_s, new = cpu_seconds(lambda: fit_probe(x, y, k, prior=feats["prior"]), a.repeat)
        line = f"{name:12s} {tuple(x.shape)} {k} classes: new {new_s:6.2f} CPU s (l2 {new.l2:g}, prior {new.prior})"
        if not a.skip_old:
            old_s, old = cpu_seconds(lambda: old_fit_probe(x, y, k, prior=feats["prior"]), a.repeat)
            same = (old["l2"], old["prior"]) == (new.l2, new.prior)
            dw = (old["weight"] - new.weight).abs().max().item() / old["weight"].abs().max().item()
            dloss = max(abs(o["loss"] - n["loss"]) for o, n in zip(old["cv"], new.cv)) if new.cv else float("nan")
            line += (f"; old {old_s:6.2f} CPU s (l2 {old['l2']:g}, prior {old['prior']}); x{old_s / new_s:.1f}; "
                     f"same choice {same}, max |dW|/max|W| {dw:.1e}, max |d cv loss| {dloss:.1e}")
        print(line, flush=True)
        print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
