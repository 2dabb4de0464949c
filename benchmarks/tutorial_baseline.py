"""The naive baseline: PyTorch's transfer-learning tutorial, written the way the tutorial writes it.

https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html: an ``ImageFolder`` per split whose
``DataLoader`` decodes every JPEG again every epoch through torchvision transforms (``RandomResizedCrop`` +
``RandomHorizontalFlip`` for train, ``Resize`` + ``CenterCrop`` for val); ``model.train()`` on the whole model
in the train phase, also on its frozen part ("ConvNet as fixed feature extractor": every epoch recomputes the
frozen backbone, and its BatchNorm layers keep updating their running statistics); SGD with momentum 0.9 and
``StepLR(step_size=7, gamma=0.1)``; the best validation accuracy is kept.

Differences from the tutorial, so that both sides of a benchmark get the same inputs: the model is
MobileNetV3-Small loaded from a state_dict file, normalised with that file's own mean/std and sizes (its
.json); batch size and seed are parameters (the tutorial's batch of 4 at lr 0.001 becomes lr 0.001 * batch / 4,
the linear scaling rule); ``num_workers`` is the tutorial's 4, capped at the number of cores.

Modes: ``transfer`` (new head only), ``finetune`` (everything trains), ``inference`` (one eval pass over
train + val: the floor of any method that must look at every image once). Prints one JSON line of results.
Uses only torch and torchvision.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch
import torchvision
from torch import nn, optim
from torch.optim import lr_scheduler
from torchvision import datasets, transforms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["transfer", "finetune", "inference"])
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True, help="a state_dict .pth with its .json, or none (random start)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default: 0.001 * batch_size / 4 (the tutorial's 0.001 at batch 4)")
    p.add_argument("--workers", type=int, default=min(4, len(os.sched_getaffinity(0))))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    if args.weights == "none":  # a random start (the work per step is the same)
        meta = {"input_size": 224, "resize": 256, "mean": [0.5] * 3, "std": [0.5] * 3}
    else:
        with open(os.path.splitext(args.weights)[0] + ".json") as f:
            meta = json.load(f)
    crop, resize, mean, std = meta["input_size"], meta["resize"], meta["mean"], meta["std"]
    data_transforms = {
        "train": transforms.Compose([transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(mean, std)]),
        "val": transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(),
                                   transforms.Normalize(mean, std)]),
    }
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    model = torchvision.models.mobilenet_v3_small()
    if args.weights != "none":
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))

    if args.mode == "inference":
        image_datasets = [datasets.ImageFolder(os.path.join(args.data, x), data_transforms["val"]) for x in ("train", "val")]
        loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(image_datasets), batch_size=max(64, args.batch_size),
                                             shuffle=False, num_workers=args.workers)
        model = model.to(device).eval()
        n, t0 = 0, time.perf_counter()
        with torch.inference_mode():
            for inputs, _ in loader:
                model(inputs.to(device))
                n += len(inputs)
        seconds = time.perf_counter() - t0
        print(json.dumps({"mode": "inference", "images": n, "seconds": round(seconds, 3),
                          "images_per_second": round(n / seconds, 1), "total_seconds": round(time.perf_counter() - t_start, 3)}))
        return

    image_datasets = {x: datasets.ImageFolder(os.path.join(args.data, x), data_transforms[x]) for x in ("train", "val")}
    dataloaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=args.batch_size, shuffle=True,
                                                  num_workers=args.workers) for x in ("train", "val")}
    dataset_sizes = {x: len(image_datasets[x]) for x in ("train", "val")}
    class_names = image_datasets["train"].classes

    if args.mode == "transfer":  # "ConvNet as fixed feature extractor"
        for param in model.parameters():
            param.requires_grad = False
    num_ftrs = model.classifier[3].in_features
    model.classifier[3] = nn.Linear(num_ftrs, len(class_names))  # a new head: requires_grad=True
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    params = model.classifier[3].parameters() if args.mode == "transfer" else model.parameters()
    lr = args.lr if args.lr is not None else 0.001 * args.batch_size / 4
    optimizer = optim.SGD(params, lr=lr, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    history = []
    best_model_wts, best_acc = copy.deepcopy(model.state_dict()), 0.0
    for epoch in range(args.epochs):
        row = {"epoch": epoch + 1}
        for phase in ("train", "val"):
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss, running_corrects, t0 = 0.0, 0, time.perf_counter()
            for inputs, labels in dataloaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data).item()
            if phase == "train":
                scheduler.step()
            seconds = time.perf_counter() - t0
            acc = running_corrects / dataset_sizes[phase]
            row.update({f"{phase}_loss": running_loss / dataset_sizes[phase], f"{phase}_accuracy": acc,
                        f"{phase}_seconds": round(seconds, 3),
                        f"{phase}_images_per_second": round(dataset_sizes[phase] / seconds, 1)})
            if phase == "val" and acc > best_acc:
                best_acc, best_model_wts = acc, copy.deepcopy(model.state_dict())
        history.append(row)
    model.load_state_dict(best_model_wts)
    print(json.dumps({"mode": args.mode, "epochs": args.epochs, "batch_size": args.batch_size, "lr": lr, "workers": args.workers,
                      "train_images": dataset_sizes["train"], "val_images": dataset_sizes["val"],
                      "best_val_accuracy": best_acc, "final_val_accuracy": history[-1]["val_accuracy"],
                      "total_seconds": round(time.perf_counter() - t_start, 3), "history": history}))


if __name__ == "__main__":
    main()
