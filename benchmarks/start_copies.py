"""How many bytes of a fine-tuning run's start are held in memory, by whom (issue 20: one copy of the start).

A finetune-all run with ``--reg l2sp --interpolate`` reads its start in three places (L2-SP's anchors and the
optimizer's pull toward them, ``--interpolate``'s t = 0, the drift tracker). This builds MobileNetV3-Small with a
2-class head on the CPU, takes the run's one snapshot (``recipe.snapshot``) as ``run_arm`` does, hands it to the
three readers, and counts the distinct tensor storages they hold beside the model's own parameters. No training.

Run: python benchmarks/start_copies.py [--channels-last]
"""

from __future__ import annotations

import argparse

import torch

import warmstart as ws
from warmstart.engine.optim import AnchorPull
from warmstart.transfer.drift import DriftTracker
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.prior import anchors_of
from warmstart.transfer.recipe import snapshot


def held(tensors) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    model = ws.get_model("mobilenet_v3_small", 2)
    groups = layer_groups(model)
    start = snapshot(model)                                             # the run's one copy, taken before fit starts
    if args.channels_last:  # as engine.fit places the model (default on x86 CPUs), after the snapshot
        model = model.to(memory_format=torch.channels_last)
    own = held(model.state_dict().values())
    anchors = anchors_of(start, groups)                                 # L2-SP's w0: the snapshot's tensors
    pull = AnchorPull(model, anchors, coupled=False)                    # the optimizer's pull toward them
    drift = DriftTracker(model, groups, start=start)                    # how far the start travels
    readers = {"snapshot (also --interpolate's t = 0)": start.values(), "L2-SP anchors": anchors.values(),
               "AnchorPull": pull.start.values(), "DriftTracker": [t for ts in drift.start.values() for t in ts]}
    total: dict[int, int] = {}
    for name, tensors in readers.items():
        mine = {k: v for k, v in held(tensors).items() if k not in own}
        new = {k: v for k, v in mine.items() if k not in total}
        total.update(new)
        print(f"{name:38} holds {sum(mine.values()) / 1e6:6.2f} MB, of which not held before: {sum(new.values()) / 1e6:6.2f} MB")
    print(f"the start, held beside the model: {sum(total.values()) / 1e6:.2f} MB "
          f"(the model's own state: {sum(own.values()) / 1e6:.2f} MB; channels_last={args.channels_last})")


if __name__ == "__main__":
    main()
