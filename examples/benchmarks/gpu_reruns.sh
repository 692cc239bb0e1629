#!/bin/bash
# Re-run, on one GPU, benchmarks with the commands docs/benchmarks.md gives (the shipped models, default options).
# Names run in the order given; results files (JSON + PNG) go to $OUT, to be copied into
# examples/benchmarks/results/ and the docs tables updated.
#   bash examples/benchmarks/gpu_reruns.sh graphs boundary ...   # any of the names below
#   graphs     check_torchforce_graphs.py            (~1 min)    torchforce_graphs_check.json
#   boundary   bench_torchforce_boundary.py          (~2 min)    torchforce_boundary.json
#   replicas   cg_replica_scaling.py, chignolin      (~2 min)    cg_replica_scaling.json
#   variants   bench_flashschnet_variants.py         (~1.5 min)  flashschnet_variants.json
#   speed      bench_flashmd_water_speed.py, shipped water models (~2 min)  flashmd_water_speed_gpu.json
#   modes      bench_flashmd_water.py, NpT density and NVE of the shipped model (~5.5 min)  flashmd_water_modes_gpu.json
#   gaqspeed   bench_gaq.py --speed-only              (~2.5 min)  gaq_speed_search.json
#   long       one chunk of the 1 ns NVT of the shipped water model (~9 min; two chunks finish it): its work folder
#              $WORK (default .gaqlong_npt, git-ignored via .git/info/exclude) travels in carry and comes back as a
#              tarball                                             flashmd_water_long_npt_model.json
#   water      bench_flashmd_water.py, the first water model at friction 1/ps, whose Langevin run is the g(r)
#              reference of `long` (~9.5 min)                      flashmd_water_gpu.json
#   learned   bench_compactmd.py --learned-gpu: the learned codec on the 102-atom peptide trajectory that
#              bench_compactmd.py caches ($TRAJ, default .kw/cache/peptide_1000x50.npy, carried) (~0.5 min)
#                                                                  compactmd_learned_gpu.json
#   cgvalidate the shipped CG FlashMD models in closed loop against the saved Langevin reference, seven runs side by
#              side on the GPU (chignolin-cg-40fs-stiff seeds 1-5, chignolin-cg-40fs, chignolin-cg-20fs; friction
#              10/ps, 330 s each) (~6 min); one tarball of per-run reports, gathered with store_runs.py into
#              flashmd_cg_validation_gpu.json
#   cgspeed    the same models against LangevinMiddleIntegrator at 2 fs, one at a time (stiff at 10 and 50/ps,
#              40fs and 20fs at 10/ps; 30 s each) (~5 min); one tarball, gathered into flashmd_cg_speed_gpu.json
#   gaq        the quantized water models (bench_gaq.py, six variants, 300 QAT steps each, equivariance, prediction,
#              short MD, speed) on the water training pairs $WATER_DATA (default .kw/water/water_8fs.npz, carried;
#              made first where missing, with the recipe of examples/flashmd_train_water.py) (~6 min, ~10 more to make
#              the pairs); the quantized files come back as gaqmodels.tgz, for gaqlong   gaq.json
#   gaqlong    one chunk of the 1 ns NVT of the five quantized variants (bench_gaq_long.py --jobs 5; about five
#              chunks finish it): $GAQ_MODELS (default .gaqmodels, from gaqmodels.tgz) and the work folder $GAQ_WORK
#              (default .gaqlong) travel in carry; the work folder comes back as gaqlong.tgz   gaq_long.json
#   cgchignolin the bundled chignolin CG model, 128 replicas x 0.08 ns on the CUDA fast path, against its all-atom
#              reference data $CGREF/chignolin (default .cgref, carried) (~2 min)  cg_chignolin_validation_10.2ns.json
#              The validation takes only the data the model was trained on (native structure within 0.02 A); a
#              re-made reference is refused (docs/benchmarks.md, "Chignolin reference, five seeds").
#   1, 2, 3, 4 the batches of one 10-minute job each: graphs boundary replicas variants speed | modes gaqspeed |
#              long | water
# OpenMM travels as wheels in $WHL (default .whl; gpu_env.sh, sourced below, says which); set BENCH_COMMIT to the
# commit of the copied tree where it has no .git.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_reruns}; mkdir -p $OUT
[ $# -gt 0 ] || { sed -n 2,40p "$0" >&2; exit 2; }
for name in "$@"; do   # refuse a misspelt name before anything runs
  case "$name" in graphs|boundary|replicas|variants|speed|modes|gaqspeed|long|water|learned|cgvalidate|cgspeed|gaq|gaqlong|cgchignolin|1|2|3|4) ;;
  *) echo "unknown benchmark name: $name (see the list at the top of $0)" >&2; exit 2 ;; esac
done
source "$(dirname "$0")/gpu_env.sh" || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv | tee $OUT/gpu.txt
B=examples/benchmarks
run() { local t=$1; shift; echo "=== $*"; timeout $t "$@" 2>&1 | tail -20; }
item() {
  case "$1" in
  graphs) run 90 python $B/check_torchforce_graphs.py --output $OUT/torchforce_graphs_check.json ;;
  boundary) run 120 python $B/bench_torchforce_boundary.py --output $OUT/torchforce_boundary.json ;;
  replicas) run 120 python examples/cg_replica_scaling.py --models chignolin --replicas 1 16 64 128 256 \
      --output $OUT/cg_replica_scaling.json ;;
  variants) run 90 python $B/bench_flashschnet_variants.py --out $OUT/flashschnet_variants.json ;;
  speed) run 120 python $B/bench_flashmd_water_speed.py --platform CUDA --device cuda \
      --models water-tip3pfb-8fs-npt water-tip3pfb-8fs-gaq-w4a8 --tag _gpu --outdir $OUT ;;
  modes) run 330 python $B/bench_flashmd_water.py --model water-tip3pfb-8fs-npt --platform CUDA --device cuda \
      --friction 10 --npt-time 200 --mode-rescale --tag _modes_gpu --outdir $OUT ;;
  gaqspeed) run 150 python $B/bench_gaq.py --speed-only --variants fp32 frame-w4a8 --device cuda \
      --quantized-model frame-w4a8=water-tip3pfb-8fs-gaq-w4a8 --cuda-graph --tag _speed_search --outdir $OUT ;;
  long)
    WORK=${WORK:-.gaqlong_npt}
    run 540 python $B/bench_gaq_long.py --work $WORK --variants fp32 --fp32-model water-tip3pfb-8fs-npt \
        --mode-rescale --friction 10 --ns 1.0 --max-wall 480 --jobs 1 --platform CUDA
    tar czf $OUT/gaqlong_npt.tgz $WORK
    run 60 python $B/bench_gaq_long.py --work $WORK --finalize --report-name flashmd_water_long_npt_model \
        --outdir $OUT ;;
  water) run 560 python $B/bench_flashmd_water.py --platform CUDA --device cuda --time 150 --nve-time 2000 \
      --npt-time 2000 --max-wall 150 15 20 20 --tag _gpu --outdir $OUT ;;
  learned) run 120 python $B/bench_compactmd.py --learned-gpu ${TRAJ:-.kw/cache/peptide_1000x50.npy} \
      --out $OUT/compactmd_learned_gpu.json ;;
  cgvalidate)
    mkdir -p $OUT/cg
    for spec in stiff_seed1:chignolin-cg-40fs-stiff:1 stiff_seed2:chignolin-cg-40fs-stiff:2 \
        stiff_seed3:chignolin-cg-40fs-stiff:3 stiff_seed4:chignolin-cg-40fs-stiff:4 \
        stiff_seed5:chignolin-cg-40fs-stiff:5 cg40fs:chignolin-cg-40fs:2 cg20fs:chignolin-cg-20fs:1; do
      IFS=: read name model seed <<< "$spec"
      run 420 python $B/bench_flashmd_cg.py --validate --flashmd-replicas 1 --time 6000 --max-wall 330 \
          --friction 10 --energy torch --platform CUDA --validate-models $model \
          --reference examples/data/flashmd_cg_langevin_reference.npz --seed $seed --tag _gpu_$name \
          --results $OUT/cg > $OUT/cg/$name.log &
    done
    wait; tail -n 4 $OUT/cg/*.log
    tar czf $OUT/cgvalidate.tgz -C $OUT cg && rm -rf $OUT/cg ;;
  cgspeed)
    mkdir -p $OUT/cgs
    for spec in stiff_f10:chignolin-cg-40fs-stiff:10 stiff_f50:chignolin-cg-40fs-stiff:50 \
        cg40fs_f10:chignolin-cg-40fs:10 cg20fs_f10:chignolin-cg-20fs:10; do
      IFS=: read name model friction <<< "$spec"
      run 150 python $B/bench_flashmd_cg.py --speed --speed-replicas 1 --speed-seconds 30 --platform CUDA \
          --energy torch --friction $friction --speed-models $model --tag _gpu_$name --results $OUT/cgs
    done
    tar czf $OUT/cgspeed.tgz -C $OUT cgs && rm -rf $OUT/cgs ;;
  gaq)
    DATA=${WATER_DATA:-.kw/water/water_8fs.npz}
    [ -f "$DATA" ] || { mkdir -p "$(dirname "$DATA")"; run 900 python -m openmmflash flashmd-data --water-box 1.6 \
        --stride 8 --temperatures 270 300 330 360 --starts 8 --pairs 50 --seed 1 --platform CPU -o "$DATA"; }
    run 540 python $B/bench_gaq.py --data "$DATA" --device cuda --platform CUDA --max-wall-nve 12 --max-wall-nvt 25 \
        --budget-s 320 --save-models $OUT/gaqmodels --outdir $OUT
    tar czf $OUT/gaqmodels.tgz -C $OUT gaqmodels && rm -rf $OUT/gaqmodels ;;
  gaqlong)
    GAQ_WORK=${GAQ_WORK:-.gaqlong}
    run 560 python $B/bench_gaq_long.py --work $GAQ_WORK --models-dir ${GAQ_MODELS:-.gaqmodels} --ns 1.0 \
        --platform CUDA --max-wall 510 --jobs 5
    tar czf $OUT/gaqlong.tgz $GAQ_WORK
    run 60 python $B/bench_gaq_long.py --work $GAQ_WORK --finalize --outdir $OUT ;;
  cgchignolin) run 300 python examples/cg_gpu_validation.py --models chignolin --chignolin 128 0.08 --no-demo \
      --data-root ${CGREF:-.cgref} --output $OUT ;;
  1) for n in graphs boundary replicas variants speed; do item $n; done ;;
  2) for n in modes gaqspeed; do item $n; done ;;
  3) item long ;;
  4) item water ;;
  esac
}
for name in "$@"; do item "$name"; done   # one failing benchmark does not stop the others
