#!/bin/bash
# The GPU run behind the shipped chignolin-cg models and their reports (one GPU; OpenMM CUDA platform):
# data from B replicas (time-limited), two models trained side by side (20 and 40 fs), then validation and speed.
# Usage: bash examples/benchmarks/bench_flashmd_cg_gpu.sh OUTDIR [DATA_SECONDS] [TRAIN_MINUTES]
set -e
OUT=${1:-/tmp/flashmd_cg}; DATA_S=${2:-110}; TRAIN_MIN=${3:-3.3}
mkdir -p $OUT
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt || true
python examples/flashmd_train_cg.py data --replicas 256 --max-seconds $DATA_S --decorrelation 0.25 \
    --out-dir $OUT/data 2>&1 | grep -v "it/s\]\|cycle/s\]" | tail -5
for S in 20 40; do
  python examples/flashmd_train_cg.py train $OUT/data/chignolin_${S}fs.npz --out $OUT/chignolin-cg-${S}fs.pt \
      --max-minutes $TRAIN_MIN --quiet > $OUT/train_${S}fs.log 2>&1 &
done
wait
tail -n 22 $OUT/train_20fs.log $OUT/train_40fs.log
