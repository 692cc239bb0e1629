# Sourced by the GPU batch scripts (bench_flashschnet_gpu.sh, gpu_checks.sh, gpu_reruns.sh) on the device machine:
# installs the wheels carried in $WHL (default .whl) into /tmp/site and this checkout into /tmp/siteflash, puts both
# on PYTHONPATH, checks that the kernels import, and adds the libnvrtc.so.12 shim that OpenMM's CUDA 13 plugin looks
# for. Returns 1 (the caller exits) when an install or the import fails. The wheels (Python 3.12, x86_64):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_34_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     openmm==8.5.2 openmm-cuda-13==8.5.2 openmmtorch==1.5 openmm-torch-cuda-13==1.5 zstandard
# (without zstandard the CompactMD test modules fail to import).
WHL=${WHL:-.whl}
python -m pip install -q --no-index --no-deps --target /tmp/site $WHL/*.whl || return 1
python -m pip install -q --no-deps --no-build-isolation --target /tmp/siteflash . 2>&1 | grep -v WARNING
export PYTHONPATH=/tmp/siteflash:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python -c "import openmmflash.plugin.kernels.cfconv" || return 1
mkdir -p /tmp/shim && ln -sf /usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13 /tmp/shim/libnvrtc.so.12
export LD_LIBRARY_PATH=/tmp/shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
