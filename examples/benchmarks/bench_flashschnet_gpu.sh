#!/bin/bash
# One GPU-machine batch for the FlashSchNet kernels: install the OpenMM wheels carried in $WHL (default .whl), run
# the kernel tests on CUDA ($TESTS), then examples/benchmarks/bench_flashschnet.py with the given arguments. Logs and
# the JSON go to $OUT; then the NVE drift run (bench_flashschnet_nve.py, exact fp32 vs tables, merged into the JSON
# as "nve") unless SKIP_NVE is set. Usage (device tool, carry [".whl"]):
#   bash examples/benchmarks/bench_flashschnet_gpu.sh [bench args]
set -o pipefail
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/gpu_env.sh" || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used --format=csv | tee $OUT/gpu.txt
TESTS=${TESTS:-tests/test_kernels_table.py tests/test_kernels_pairdist.py tests/test_kernels_cfconv.py tests/test_kernels_csr.py tests/test_kernels_model.py}
[ -n "$SKIP_TESTS" ] || OPENMMFLASH_TEST_CUDA=1 timeout ${TEST_TIMEOUT:-150} python -m pytest $TESTS -q -p no:warnings \
    -rs --durations=5 2>&1 | tee $OUT/tests.log | tail -25
timeout ${BENCH_TIMEOUT:-420} python examples/benchmarks/bench_flashschnet.py --out $OUT/flashschnet_kernels.json "$@" \
    2>&1 | tee $OUT/bench.log | grep -v '^{"'
[ -n "$SKIP_NVE" ] || timeout ${NVE_TIMEOUT:-200} python examples/benchmarks/bench_flashschnet_nve.py \
    --out $OUT/flashschnet_nve.json --merge $OUT/flashschnet_kernels.json ${NVE_ARGS} 2>&1 | tee $OUT/nve.log | tail -6
