#!/bin/bash
# Re-run, on one GPU, the benchmarks whose results files were written before full provenance was recorded, with
# the commands docs/benchmarks.md gives (the shipped models, default options). Each part fits one 10-minute job;
# results files (JSON + PNG) go to $OUT, to be copied into examples/benchmarks/results/ and the docs tables updated.
#   bash examples/benchmarks/gpu_reruns.sh 1   # TorchForce boundary and graphs check, CG replica scaling,
#                                              # FlashSchNet variants, FlashMD water speed (shipped models)
#   bash examples/benchmarks/gpu_reruns.sh 2   # FlashMD water NpT density and NVE (shipped model), GAQ speed
#   bash examples/benchmarks/gpu_reruns.sh 3   # one chunk of the 1 ns NVT of the shipped water model (two chunks
#                                              # finish it): its work folder $WORK (default .gaqlong_npt, git-ignored
#                                              # via .git/info/exclude) travels in carry and comes back as a tarball
#   bash examples/benchmarks/gpu_reruns.sh 4   # the first water model at friction 1/ps (bench_flashmd_water.py),
#                                              # whose Langevin run is the g(r) reference of part 3
# OpenMM travels as wheels in $WHL (default .whl; gpu_env.sh, sourced below, says which); set BENCH_COMMIT to the
# commit of the copied tree where it has no .git.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_reruns}; mkdir -p $OUT
source "$(dirname "$0")/gpu_env.sh" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv | tee $OUT/gpu.txt
B=examples/benchmarks
run() { local t=$1; shift; echo "=== $*"; timeout $t "$@" 2>&1 | tail -20; }
case "$1" in
1)
  run 90 python $B/check_torchforce_graphs.py --output $OUT/torchforce_graphs_check.json
  run 120 python $B/bench_torchforce_boundary.py --output $OUT/torchforce_boundary.json
  run 120 python examples/cg_replica_scaling.py --models chignolin --replicas 1 16 64 128 256 \
      --output $OUT/cg_replica_scaling.json
  run 90 python $B/bench_flashschnet_variants.py --out $OUT/flashschnet_variants.json
  run 120 python $B/bench_flashmd_water_speed.py --platform CUDA --device cuda \
      --models water-tip3pfb-8fs-npt water-tip3pfb-8fs-gaq-w4a8 --tag _gpu --outdir $OUT ;;
2)
  run 330 python $B/bench_flashmd_water.py --model water-tip3pfb-8fs-npt --platform CUDA --device cuda \
      --friction 10 --npt-time 200 --mode-rescale --tag _modes_gpu --outdir $OUT
  run 150 python $B/bench_gaq.py --speed-only --variants fp32 frame-w4a8 --qat-steps 0 --device cuda \
      --cuda-graph --tag _speed_search --outdir $OUT ;;
3)
  WORK=${WORK:-.gaqlong_npt}
  run 540 python $B/bench_gaq_long.py --work $WORK --variants fp32 --fp32-model water-tip3pfb-8fs-npt --mode-rescale \
      --friction 10 --ns 1.0 --max-wall 480 --jobs 1 --platform CUDA
  tar czf $OUT/gaqlong_npt.tgz $WORK
  run 60 python $B/bench_gaq_long.py --work $WORK --finalize --report-name flashmd_water_long_npt_model \
      --outdir $OUT ;;
4)
  run 560 python $B/bench_flashmd_water.py --platform CUDA --device cuda --time 150 --nve-time 2000 \
      --npt-time 2000 --max-wall 150 15 20 20 --tag _gpu --outdir $OUT ;;
*) echo "usage: $0 1|2|3|4" >&2; exit 2 ;;
esac
