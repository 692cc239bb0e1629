#!/bin/bash
# The GPU runs behind the chignolin-cg models and their reports (one GPU, OpenMM CUDA platform).
#   bash examples/benchmarks/bench_flashmd_cg_gpu.sh train OUTDIR [DATA_SECONDS] [TRAIN_MINUTES] [STRIDES_FS...]
#       data from 256 replicas (time-limited), then one model per stride trained side by side on the same GPU
#       (the shipped models: DATA_SECONDS 90, TRAIN_MINUTES 3.0, strides 20 40; batch: env BATCH, default 64;
#       env SPECIES=bead: FlashSchNet bead types as species, files chignolin_<S>fs_bead.npz / chignolin-cg-<S>fs-bead.pt;
#       env EQUIL: Langevin ps before recording, default 2 (from native; 100-200 covers the CG model's own ensemble))
#   bash examples/benchmarks/bench_flashmd_cg_gpu.sh finetune OUTDIR MODEL STRIDE_FS [DATA_SECONDS] [MINUTES]
#       fresh data (DATA_SECONDS, default 70; env SPECIES as above), then MODEL fine-tuned with the energy term
#       (weight 0.1, lr 2e-4, batch 16) into OUTDIR/<model>-energy.pt; the shipped chignolin-cg-40fs is
#       SPECIES=bead train OUT 100 5.0 20 40 (seed 3), then finetune OUT OUT/chignolin-cg-40fs-bead.pt 40 70 3.5
#   bash examples/benchmarks/bench_flashmd_cg_gpu.sh dagger OUTDIR MODEL STRIDE_FS [RUN_SECONDS] [DATA_SECONDS] [MINUTES]
#       DAgger-style round: MODEL runs (FlashMD, 1 replica, RUN_SECONDS, default 90) next to LangevinMiddle (32
#       replicas) with their frames saved; 256 replicas then start from the frames FlashMD visited (positions and
#       velocities: the first cycle's pairs from exactly those states) and, as many again, from the Langevin
#       ensemble, and record pairs with the true dynamics (DATA_SECONDS each, default 50; short
#       equilibration and decorrelation, so the pairs stay near those states); MODEL is fine-tuned on both with the
#       energy term (MINUTES, default 3) into OUTDIR/<model>-dagger.pt. env SPECIES as above (bead for
#       chignolin-cg-40fs)
#   bash examples/benchmarks/bench_flashmd_cg_gpu.sh bench OUTDIR MODEL...
#       validation (Langevin 32 replicas vs FlashMD 1 replica per model, 25 s wall each) and speed (1 and 32
#       replicas) into OUTDIR, tag _gpu
# On a machine kept warm between calls, reinstall the package with `pip install --upgrade --target ...`, or an old
# copy (without new model files) is imported.
set -e
MODE=$1; OUT=${2:-/tmp/flashmd_cg}
mkdir -p $OUT
SPECIES=${SPECIES:-element}; SUF=""; [ "$SPECIES" = bead ] && SUF="_bead"
if [ "$MODE" = train ]; then
  DATA_S=${3:-90}; TRAIN_MIN=${4:-3.0}; STRIDES="${*:5}"; [ -z "$STRIDES" ] && STRIDES="20 40"
  python examples/flashmd_train_cg.py data --replicas 256 --max-seconds $DATA_S --decorrelation 0.25 \
      --equilibration ${EQUIL:-2.0} --strides $STRIDES --species $SPECIES --seed 3 --out-dir $OUT/data 2>&1 | grep -v "cycle/s\]" | tail -n 5
  for S in $STRIDES; do
    python examples/flashmd_train_cg.py train $OUT/data/chignolin_${S}fs${SUF}.npz \
        --out $OUT/chignolin-cg-${S}fs${SUF//_/-}.pt \
        --max-minutes $TRAIN_MIN --batch-size ${BATCH:-64} --quiet > $OUT/train_${S}fs.log 2>&1 &
  done
  wait
  for S in $STRIDES; do tail -n 22 $OUT/train_${S}fs.log; done
elif [ "$MODE" = finetune ]; then
  MODEL=$3; S=$4; DATA_S=${5:-70}; MIN=${6:-3.5}
  python examples/flashmd_train_cg.py data --replicas 256 --max-seconds $DATA_S --decorrelation 0.25 \
      --equilibration ${EQUIL:-2.0} --strides $S --species $SPECIES --seed ${SEED2:-3} --out-dir $OUT/data2 2>&1 | grep -v "cycle/s\]" | tail -n 5
  python examples/flashmd_train_cg.py train $OUT/data2/chignolin_${S}fs${SUF}.npz --init $MODEL \
      --out $OUT/$(basename $MODEL .pt)-energy.pt --energy-weight 0.1 --lr 2e-4 --batch-size 16 --iterations 20000 \
      --max-minutes $MIN --quiet 2>&1 | tail -n 30
elif [ "$MODE" = dagger ]; then
  MODEL=$3; S=$4; RUN_S=${5:-90}; DATA_S=${6:-50}; MIN=${7:-3}
  NAME=$(basename $MODEL .pt)
  python examples/benchmarks/bench_flashmd_cg.py --validate --validate-models $MODEL --model $MODEL --replicas 32 \
      --flashmd-replicas 1 --time 2000 --max-wall $RUN_S --frames-out $OUT/frames --tag _dagger_before \
      --results $OUT 2>&1 | grep -v "frame/s\]\|rejected" | tail -n 12
  for SRC in $NAME langevin; do
    python examples/flashmd_train_cg.py data --replicas 256 --max-seconds $DATA_S --decorrelation 0.1 \
        --equilibration 0.02 --strides $S --species $SPECIES --seed ${SEED2:-7} --starts $OUT/frames/frames_$SRC.npz \
        --out-dir $OUT/dagger_$SRC 2>&1 | grep -v "cycle/s\]" | tail -n 2
  done
  python examples/flashmd_train_cg.py train $OUT/dagger_$NAME/chignolin_${S}fs${SUF}.npz \
      $OUT/dagger_langevin/chignolin_${S}fs${SUF}.npz --init $MODEL --out $OUT/$NAME-dagger.pt --energy-weight 0.1 \
      --lr 2e-4 --batch-size 16 --iterations 20000 --max-minutes $MIN --quiet 2>&1 | tail -n 30
elif [ "$MODE" = bench ]; then
  shift 2
  python examples/benchmarks/bench_flashmd_cg.py --validate --speed --validate-models "$@" --speed-models "$@" \
      --model $1 --replicas 32 --flashmd-replicas 1 --time 200 --max-wall 25 --speed-replicas 1 32 \
      --speed-seconds 5 --tag _gpu --results $OUT 2>&1 | grep -v "frame/s\]\|rejected"
else
  echo "usage: $0 train|finetune|dagger|bench OUTDIR ..." >&2; exit 2
fi
