"""fastai's fine-tuning recipe on the same weights and data: ``vision_learner`` + ``fine_tune``.

The shared state_dict is loaded into torchvision's ``mobilenet_v3_small``; fastai cuts it the fastai way
(the body up to the last child with a pooling layer: ``features``) and adds its own head (concat pooling,
BatchNorm, dropout, two linear layers). Data: ``ImageDataLoaders.from_folder`` with fastai's presizing
(``Resize`` to the weights' resize size per item, ``aug_transforms(size=crop)`` on the batch) and the weights'
own mean/std. Prints one JSON line. Run it with a Python that has fastai (``pip install fastai``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

t_start = time.perf_counter()

import torch  # noqa: E402
import torchvision  # noqa: E402
from fastai.vision.all import (ImageDataLoaders, Normalize, Resize, accuracy, aug_transforms, set_seed,  # noqa: E402
                               vision_learner)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--freeze-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="fastai's default")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    set_seed(args.seed, reproducible=True)
    meta = json.loads(Path(args.weights).with_suffix(".json").read_text())

    def mobilenet_v3_small(pretrained: bool = True, **kwargs) -> torch.nn.Module:
        model = torchvision.models.mobilenet_v3_small()
        if pretrained:
            model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        return model

    dls = ImageDataLoaders.from_folder(
        args.data, train="train", valid="val", bs=args.batch_size, seed=args.seed, item_tfms=Resize(meta["resize"]),
        batch_tfms=[*aug_transforms(size=meta["input_size"], min_scale=0.75), Normalize.from_stats(meta["mean"], meta["std"])])
    learn = vision_learner(dls, mobilenet_v3_small, normalize=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(args.epochs, freeze_epochs=args.freeze_epochs)
        final = float(learn.validate()[1])
    print()
    print(json.dumps({"final_val_accuracy": final, "epochs": args.epochs, "freeze_epochs": args.freeze_epochs,
                      "batch_size": args.batch_size, "train_images": len(dls.train_ds), "val_images": len(dls.valid_ds),
                      "num_workers": dls.train.num_workers,
                      "total_seconds": round(time.perf_counter() - t_start, 3)}))


if __name__ == "__main__":
    main()
