"""The run directory's layout: every file name a command writes or reads, in one place.

    <out>/config.json         everything needed to rerun it (the command line, the options, the parsed specs)
    <out>/metrics.csv         one row per epoch
    <out>/summary.json        final figures (keys documented in the README and kept stable)
    <out>/checkpoint.pt       the last completed epoch (model, optimizer, schedule, history) for --resume
    <out>/best.pt             the model weights at the best validation accuracy
    <out>/model.safetensors   the trained model; with model.json a valid --weights for the next run
    <out>/model.json          its metadata (architecture, classes, preprocessing)
    <out>/probe.json          the linear probe the new head started from
    <out>/start.safetensors   the model as training began (pretrained + probe head, or the random init), + start.json
    <out>/predictions.json    each validation image's predicted class (compare arms)
    <out>/arm.json            written last in a compare arm: the arm is complete
    <out>/conv1.safetensors   a compare arm's first-layer filters before and after training
    <out>/signal.json|csv     per-layer signal statistics (diagnostics), with signal_*.png
    <out>/report.html|md      the report (compare, symmetry, depth, demo, report)
    <out>/*.png               figures: learning curves, confusion, conv1 filters, drift, rank's scores, ...
    <out>/path.png|csv        `warmstart path`: loss along a line in weight space (a compare run's in <out>/paths/)
    <out>/verify/, restarts/  sub-runs (rank --verify, train --restarts); compare: one folder per arm
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
PROBE_HEAD = "probe_head.safetensors"  # the head as the probe left it: where a resumed run's head started
START = "start.safetensors"  # the whole model as training began (with start.json): `warmstart path` starts there
PREDICTIONS = "predictions.json"
ARM = "arm.json"
CONV1 = "conv1.safetensors"
SIGNAL_JSON, SIGNAL_CSV = "signal.json", "signal.csv"
LEARNING_CURVES = "learning_curves.png"
CONFUSION = "confusion.png"
CONV1_FILTERS = "conv1_filters.png"
ACCURACY_VS_TIME = "accuracy_vs_time.png"
MISCLASSIFIED = "misclassified.png"
DRIFT_PNG = "drift.png"
RANK_SCORES_PNG = "scores.png"
#: the figures of a compare report, by the summary key that names them
COMPARE_FIGURES = {"learning_curves": LEARNING_CURVES, "tradeoff": ACCURACY_VS_TIME, "confusion": CONFUSION,
                   "misclassified": MISCLASSIFIED, "filters": CONV1_FILTERS, "drift": DRIFT_PNG}
SIGNAL_LAYERS_PNG, SIGNAL_HIST_INIT_PNG, SIGNAL_HIST_FINAL_PNG = (
    "signal_layers.png", "signal_histograms_init.png", "signal_histograms_final.png")
DEPTH_LOSS_PNG, DEPTH_LAYER_STD_PNG = "loss_curves.png", "layer_std_init.png"
REPORT_HTML, REPORT_MD = "report.html", "report.md"
PATH_PNG, PATH_CSV = "path.png", "path.csv"  # `warmstart path`: the figure and the points
PATHS = "paths"  # `warmstart path COMPARE`: the compare run's linear paths
FEATURES = "features"
EVENTS = "events"
VERIFY = "verify"
RESTARTS = "restarts"
#: the files that hold a run's model weights, most useful first (``inspect`` of a run directory)
WEIGHT_FILES = (MODEL, CHECKPOINT, BEST)
