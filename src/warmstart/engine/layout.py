"""The run directory's layout: every file name a command writes or reads, in one place.

    <out>/config.json         everything needed to rerun it (the command line, the options, the parsed specs)
    <out>/metrics.csv         one row per epoch
    <out>/summary.json        final figures (keys documented in the README and kept stable)
    <out>/checkpoint.pt       the last completed epoch (model, optimizer, schedule, history) for --resume
    <out>/best.pt             the model weights at the best validation accuracy
    <out>/model.safetensors   the trained model; with model.json a valid --weights for the next run
    <out>/model.json          its metadata (architecture, classes, preprocessing)
    <out>/probe.json          the linear probe the new head started from
    <out>/predictions.json    each validation image's predicted class (compare arms)
    <out>/arm.json            written last in a compare arm: the arm is complete
    <out>/signal.json|csv     per-layer signal statistics (diagnostics)
    <out>/features/           feature caches on disk
    <out>/events/             TensorBoard events with --tensorboard
"""

from __future__ import annotations

CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
MODEL = "model.safetensors"
MODEL_META = "model.json"
PROBE = "probe.json"
PREDICTIONS = "predictions.json"
ARM = "arm.json"
SIGNAL_JSON, SIGNAL_CSV = "signal.json", "signal.csv"
LEARNING_CURVES = "learning_curves.png"
CONFUSION = "confusion.png"
FEATURES = "features"
EVENTS = "events"
#: the files that hold a run's model weights, most useful first (``inspect`` of a run directory)
WEIGHT_FILES = (MODEL, CHECKPOINT, BEST)
