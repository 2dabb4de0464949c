#!/usr/bin/env bash
# GPU check (one CUDA GPU, < 4 minutes): fine-tuning images/s of `warmstart train` on the GPU with
# amp none / bf16 / fp16, with and without channels_last, and with DataLoader workers 0 vs 8; plus one
# transfer run (feature cache on the GPU). Writes $OUT/gpu_check.json (./gpu_check.json without $OUT)
# and $OUT/gpu_check.log.
#
#   benchmarks/gpu_check.sh [DATA] [WEIGHTS]
#
#   DATA     an image folder with train/ and val/ (e.g. hymenoptera_data), or a data set name;
#            default: digits (scikit-learn's bundled handwritten digits: real images, nothing to carry)
#   WEIGHTS  a torchvision state_dict .pth with its .json (mobilenet_v3_small-imagenet.pth);
#            default: none, then the runs use --strategy scratch (the same network and the same work per
#            step as finetune-all, from a random start)
#
# A last run times the naive baseline (benchmarks/tutorial_baseline.py finetune: ImageFolder decoding every
# image every epoch, 4 workers, float32) on the same images, for the finetune images/s ratio on a GPU.
# DATA=digits is first written out as an image folder (PNG), so that both sides read the same files.
#
# Only the repository's files travel to a device machine. To use the real weights (and hymenoptera), copy
# them into an ignored folder of the checkout and carry it:
#   echo /.bench/ >> .git/info/exclude; mkdir -p .bench
#   cp ../shared/weights/mobilenet_v3_small-imagenet.{pth,json} .bench/          # 10 MB
#   ../shared/tools/unpack-data .data && cp -r .data/hymenoptera_data .bench/     # optional, 47 MB
#   run(command="bash benchmarks/gpu_check.sh .bench/hymenoptera_data .bench/mobilenet_v3_small-imagenet.pth",
#       carry=[".bench"], timeout_s=300)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-digits}
WEIGHTS=${2:-none}
OUT=${OUT:-.}
PY=${PYTHON:-python3}
EPOCHS=${EPOCHS:-4}
BATCH=${BATCH:-128}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu SUBSET=2 EPOCHS=1 BATCH=8: a dry run of this script without a GPU
SUBSET=${SUBSET:-}
LOG="$OUT/gpu_check.log"
mkdir -p "$OUT"
: > "$LOG"

if ! $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"; then
  echo "gpu_check: torch and torchvision are not importable with $PY; install them (or set PYTHON=...) first" | tee -a "$LOG"
  exit 1
fi
if [ "$DEVICE" = cuda ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: PyTorch sees no CUDA GPU here; nothing to check" | tee -a "$LOG"
  exit 1
fi
if [ "$DATA" = digits ] && ! $PY -c "import sklearn" 2>/dev/null; then
  echo "gpu_check: DATA=digits needs scikit-learn; pass an image folder as DATA instead" | tee -a "$LOG"
  exit 1
fi
for mod in click tqdm matplotlib safetensors PIL numpy; do
  $PY -c "import $mod" 2>/dev/null || { echo "gpu_check: warmstart needs the Python package '$mod' here" | tee -a "$LOG"; exit 1; }
done
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
STRATEGY=finetune-all
[ "$WEIGHTS" = none ] && STRATEGY=scratch
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
if [ "$DATA" = digits ]; then  # one image folder for warmstart and the baseline alike
  $PY - "$SCRATCH/digits" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
d = load_digits()
idx = list(range(len(d.target)))
tr, va = train_test_split(idx, test_size=0.2, stratify=d.target, random_state=0)
for split, ids in (("train", tr), ("val", va)):
    for i in ids:
        folder = Path(sys.argv[1]) / split / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 255 / 16).astype("uint8")).convert("RGB").save(folder / f"{i:04d}.png")
EOF
  DATA="$SCRATCH/digits"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG" 2>&1 || true

# name | extra options
CONFIGS=(
  "fp32|--amp none --workers 8"
  "bf16|--amp bf16 --workers 8"
  "fp16|--amp fp16 --workers 8"
  "fp32+channels_last|--amp none --channels-last --workers 8"
  "bf16+channels_last|--amp bf16 --channels-last --workers 8"
  "bf16+channels_last,workers=0|--amp bf16 --channels-last --workers 0"
)
for entry in "${CONFIGS[@]}"; do
  name=${entry%%|*}; opts=${entry#*|}
  echo "== $name: $opts" | tee -a "$LOG"
  # shellcheck disable=SC2086
  if ! timeout 120 $PY -m warmstart train "$DATA" --weights "$WEIGHTS" --strategy $STRATEGY --epochs "$EPOCHS" \
      --batch-size "$BATCH" --device "$DEVICE" ${SUBSET:+--subset $SUBSET} --quiet --out "$SCRATCH/$name" $opts >> "$LOG" 2>&1; then
    echo "   failed or timed out (see $LOG)" | tee -a "$LOG"
  fi
done
echo "== baseline: the tutorial's loop, fp32, 4 workers" | tee -a "$LOG"
timeout 120 $PY benchmarks/tutorial_baseline.py finetune --data "$DATA" --weights "$WEIGHTS" --epochs "$EPOCHS" \
  --batch-size "$BATCH" --workers 4 > "$SCRATCH/baseline.json" 2>> "$LOG" || echo "   failed or timed out (see $LOG)" | tee -a "$LOG"
echo "== transfer (feature cache on the GPU)" | tee -a "$LOG"
if [ "$WEIGHTS" != none ]; then
  timeout 90 $PY -m warmstart train "$DATA" --weights "$WEIGHTS" --strategy transfer --epochs 25 --device "$DEVICE" --quiet \
    ${SUBSET:+--subset $SUBSET} \
    --out "$SCRATCH/transfer" >> "$LOG" 2>&1 || echo "   failed or timed out (see $LOG)" | tee -a "$LOG"
fi

$PY - "$SCRATCH" "$OUT/gpu_check.json" "$DATA" "$WEIGHTS" "$STRATEGY" "$BATCH" <<'EOF' | tee -a "$LOG"
import csv, json, statistics, sys
from pathlib import Path
import torch
scratch, out, data, weights, strategy, batch = sys.argv[1:]
rows = {}
order = ["fp32", "bf16", "fp16", "fp32+channels_last", "bf16+channels_last", "bf16+channels_last,workers=0", "transfer"]
for run in sorted(Path(scratch).iterdir(), key=lambda p: order.index(p.name) if p.name in order else len(order)):
    if not run.is_dir() or run.name == "digits":
        continue
    if not (run / "summary.json").is_file():
        rows[run.name] = {"failed": True}
        continue
    s = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        rates = [float(r["images_per_second"]) for r in csv.DictReader(f)]
    rows[run.name] = {"train_images_per_second": statistics.median(rates[1:] or rates), "per_epoch": rates,
                      "final_val_accuracy": s["final_val_accuracy"], "seconds": s["seconds"],
                      "feature_seconds": s.get("feature_seconds"), "device": s["device"]}
baseline = None
try:
    b = json.loads((Path(scratch) / "baseline.json").read_text().strip().splitlines()[-1])
    rates = [h["train_images_per_second"] for h in b["history"]]
    baseline = {"train_images_per_second": statistics.median(rates[1:] or rates), "per_epoch": rates,
                "final_val_accuracy": b["final_val_accuracy"], "seconds": b["total_seconds"]}
except (OSError, ValueError, KeyError, IndexError):
    pass
doc = {"baseline": baseline, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "torch": torch.__version__, "data": data, "weights": weights,
       "strategy": strategy, "batch_size": int(batch), "runs": rows}
Path(out).write_text(json.dumps(doc, indent=1) + "\n")
ref = rows.get("fp32", {}).get("train_images_per_second")
print(f"{'config':34s} {'img/s':>9s} {'vs fp32':>8s} {'val acc':>8s}")
for k, r in rows.items():
    if r.get("failed"):
        print(f"{k:34s} failed")
        continue
    if k == "transfer":
        print(f"{k:34s} {r['seconds']:.1f} s in all, {r['feature_seconds']:.1f} s of it the one pass of the frozen layers;"
              f" val acc {r['final_val_accuracy']:.3f}")
        continue
    rel = f"{r['train_images_per_second'] / ref:.2f}x" if ref else ""
    print(f"{k:34s} {r['train_images_per_second']:9.0f} {rel:>8s} {r['final_val_accuracy']:8.3f}")
if baseline and ref:
    print(f"{'baseline (tutorial loop, fp32)':34s} {baseline['train_images_per_second']:9.0f}"
          f" {baseline['train_images_per_second'] / ref:7.2f}x {baseline['final_val_accuracy']:8.3f}")
    best = max((r["train_images_per_second"], k) for k, r in rows.items() if not r.get("failed") and k != "transfer")
    print(f"finetune images/s, warmstart / baseline: fp32 {ref / baseline['train_images_per_second']:.2f}x,"
          f" best ({best[1]}) {best[0] / baseline['train_images_per_second']:.2f}x")
print(f"wrote {out}")
EOF
