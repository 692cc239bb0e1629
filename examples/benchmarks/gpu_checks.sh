#!/bin/bash
# One GPU-machine batch for the whole package: every CUDA-marked test of the suite with compiled Triton kernels, the
# demo timed on CUDA (bench_demo.py, both integrators) and FlashMD replicas on CUDA (bench_flashmd_replicas.py).
# OpenMM 8.5.2 (CUDA 13), openmm-torch 1.5, zstandard, mdtraj and pdbfixer travel as wheels in .whl; logs and result
# files go to $OUT. Usage (device tool, carry [".whl"]): bash examples/benchmarks/gpu_checks.sh
# gpu_env.sh (sourced below) gives the pip download command for the wheels.
set -o pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENMMFLASH_TEST_CUDA=1
source "$(dirname "$0")/gpu_env.sh" || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv | tee $OUT/gpu.txt
python -c "import torch, triton, openmm; print('torch', torch.__version__, 'triton', triton.__version__, 'openmm', openmm.__version__)" | tee -a $OUT/gpu.txt
[ -n "$SKIP_TESTS" ] || timeout ${TEST_TIMEOUT:-300} python -m pytest -m cuda -q -p no:cacheprovider \
    --continue-on-collection-errors -rs --durations=10 2>&1 | tee $OUT/cuda_tests.log | tail -45
[ -n "$SKIP_DEMO" ] || { timeout ${DEMO_TIMEOUT:-150} python examples/benchmarks/bench_demo.py --platform CUDA 2>&1 \
    | tee $OUT/demo.log | tail -12; cp examples/benchmarks/results/demo.json $OUT/demo.json; }
[ -n "$SKIP_REPLICAS" ] || timeout ${REPLICAS_TIMEOUT:-120} python examples/benchmarks/bench_flashmd_replicas.py \
    --platform CUDA --seconds ${REPLICA_SECONDS:-20} --results $OUT --figures $OUT 2>&1 | tee $OUT/replicas.log | tail -12
