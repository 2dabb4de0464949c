#!/usr/bin/env bash
# One prepared GPU session (< 5 minutes): benchmarks/gpu_check.sh (fine-tune images/s per AMP / memory-format
# setting, transfer with the feature cache on the GPU), then the CUDA paths of the lecture commands.
#   bash benchmarks/gpu_session.sh .bench/hymenoptera_data .bench/mobilenet_v3_small-imagenet.pth
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
EPOCHS=${EPOCHS:-3} timeout 170 bash benchmarks/gpu_check.sh "$@" || echo "gpu_check.sh ended with $?"
extra() {  # name, then a command
  local name=$1; shift
  local t0=$(date +%s)
  if timeout 45 "$@" > "$OUT/$name.log" 2>&1; then st=ok; else st="failed ($?)"; fi
  printf "%-28s %-12s %4d s\n" "$name" "$st" "$(( $(date +%s) - t0 ))" | tee -a "$OUT/extras.txt"
  tail -3 "$OUT/$name.log"
}
S=$(mktemp -d)
extra symmetry-cuda python3 -m warmstart symmetry digits --device cuda --subset 30 --constant-linear --out "$S/sym"
[ -f "$S/sym/summary.json" ] && cp "$S/sym/summary.json" "$OUT/symmetry_cuda.json"
extra depth-cuda python3 -m warmstart depth --quick --device cuda --out "$S/depth" -q
extra timm-scratch python3 -m warmstart train digits --model timm:resnet18 --weights none --strategy scratch --epochs 1 --subset 20 --device cuda --out "$S/timm" -q
extra compare-cuda python3 -m warmstart compare "$1" --weights "$2" --strategies scratch,transfer,finetune-all --device cuda --amp bf16 --channels-last --out "$S/cmp" -q
[ -f "$S/cmp/summary.json" ] && cp "$S/cmp/summary.json" "$OUT/compare_cuda.json"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/extras.txt"
