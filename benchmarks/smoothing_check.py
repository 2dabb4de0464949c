"""Why the path's training loss differs from the training curves' (the notebook's section 5).

Trains finetune-all on hymenoptera (40 images per class and split, 2 epochs, seed 0, the default label smoothing
0.1 of a probe-started head), then evaluates the run's start (start.safetensors) and end (model.safetensors) on its
training images, centre crops in eval mode, with plain cross-entropy (what `warmstart path` reports) and with the
smoothed cross-entropy training minimised.

Run: python benchmarks/smoothing_check.py [--data .data/hymenoptera_data] [--weights ../shared/weights/mobilenet_v3_small-imagenet.pth]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import warmstart as ws
from warmstart.data import ImageDataset, Normalizer
from warmstart.engine import layout
from warmstart.transfer.inference import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=".data/hymenoptera_data")
    p.add_argument("--weights", default="../shared/weights/mobilenet_v3_small-imagenet.pth")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = ws.train(args.data, weights=args.weights, strategy="finetune-all", epochs=2, subset=40, seed=0,
                     out=Path(tmp) / "run", quiet=True)
        model, weights = load_model(r.run_dir, "cpu")
        images = ImageDataset(ws.load_data(args.data, subset=40, seed=0).train, weights.preprocess)
        x, y = zip(*(images[i] for i in range(len(images))))
        x, y = Normalizer.of(weights.preprocess)(torch.stack(x)), torch.tensor(y)
        smoothing = r.summary["label_smoothing"]
        for name, file in (("start", layout.START), ("end", layout.MODEL)):
            model.load_state_dict(load_file(str(r.run_dir / file)))
            model.eval()
            with torch.no_grad():
                logits = model(x)
            print(f"{name:5}: plain CE {F.cross_entropy(logits, y):.4f}, smoothed ({smoothing}) CE "
                  f"{F.cross_entropy(logits, y, label_smoothing=smoothing):.4f}, accuracy {(logits.argmax(1) == y).float().mean():.3f}, "
                  f"mean top probability {logits.softmax(1).max(1).values.mean():.3f} ({len(y)} training images)")


if __name__ == "__main__":
    main()
