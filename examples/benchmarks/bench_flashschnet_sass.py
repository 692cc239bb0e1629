"""Resource report of the flash CFConv kernels compiled for Hopper (sm_90) on any machine, no GPU needed.

Compiles ``_cfconv_fwd_kernel`` / ``_cfconv_bwd_kernel`` (plugin/kernels/cfconv.py) at the benchmark shape
(F' = 128, R = 64) with Triton's own ptxas, then counts in the SASS (Triton's bundled cuobjdump): registers,
local-memory stack per thread, and instructions that matter here (HGMMA = Hopper wgmma, HMMA = older mma.sync,
LDL/STL = local-memory traffic, RED = atomic reductions). Used for docs/kernels-notes.md.

Usage: ``python examples/benchmarks/bench_flashschnet_sass.py [KIND PRECISION BLOCK_E WARPS BLOCK_C ...]``,
e.g. ``fwd w16a16 64 4 128``; without arguments the tuned tiles of ``cfconv.TILES``. Note: this machine's Triton
may differ from the GPU's (3.5.1 here, 3.6.0 on the H200 allocated far fewer spills: docs/kernels-notes.md, v4), so
compare with the registers/spills the benchmark records on the GPU. OPENMMFLASH_CFCONV_TMA=0/1 and
OPENMMFLASH_CFCONV_GATHER16=0/1 select the weight-load and gather variants (see cfconv.py).
"""

import os
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from openmmflash.plugin.kernels import cfconv as kernels  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
FWD_TYPES = {"X": "*fp32", "DIST": "*fp32", "SRC": "*i64", "DST": "*i64", "ROWPTR": "*i64", "MU": "*fp32",
             "B1": "*fp32", "S1": "*fp32", "S2": "*fp32", "OUT": "*fp32", "XSCALE": "*fp32"}
BWD_TYPES = {"X": "*fp32", "G": "*fp32", "DIST": "*fp32", "SRC": "*i64", "DST": "*i64", "PERM": "*i64",
             "ROWPTR_S": "*i64", "MU": "*fp32", "B1": "*fp32", "S1": "*fp32", "S2": "*fp32", "GRAD_X": "*fp32",
             "GRAD_DIST": "*fp32", "XSCALE": "*fp32", "GSCALE": "*fp32"}
SCALARS = {"N": "i32", "F": "i32", "R": "i32", "gamma": "fp32", "cutoff": "fp32", "tiles_per_program": "i32"}
COUNTED = ("HGMMA", "HMMA", "LDL", "STL", "RED", "MUFU.EX2")


def compile_kernel(kind, precision, block_e, warps, block_c):
    fn = kernels._cfconv_fwd_kernel if kind == "fwd" else kernels._cfconv_bwd_kernel
    weights = "*fp16" if precision == "w16a16" else "*fp32"
    x16 = precision == "w16a16" and kernels.GATHER16
    types = dict(FWD_TYPES if kind == "fwd" else BWD_TYPES, W1=weights, W2=weights, **SCALARS)
    if x16:
        types.update(X="*fp16", G="*fp16")
    consts = dict(RBF_CUTOFF=True, W16=precision == "w16a16", DOT_PRECISION=kernels.FP32_DOT, TMA=(kind, precision) in kernels.TMA_KERNELS if kernels.USE_TMA is None else kernels.USE_TMA,
                  X16=x16, BLOCK_E=block_e,
                  BLOCK_R=64, BLOCK_F=128, BLOCK_C=block_c, BLOCK_D=16)
    names = list(fn.arg_names)
    signature = {name: ("constexpr" if name in consts else types[name]) for name in names}
    source = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def report(kind, precision, block_e, warps, block_c):
    compiled = compile_kernel(kind, precision, block_e, warps, block_c)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(compiled.asm["cubin"])
        handle.flush()
        usage = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", handle.name],
                               capture_output=True, text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", handle.name], capture_output=True,
                              text=True).stdout
    fields = dict(item.split(":") for line in usage.splitlines() if "REG:" in line for item in line.split()
                  if ":" in item and item.split(":")[1].isdigit())
    counts = {op: sum(1 for line in sass.splitlines() if f" {op}" in line) for op in COUNTED}
    print(f"{kind} {precision:7} BLOCK_E={block_e:<4} warps={warps} BLOCK_C={block_c:<4} "
          f"registers={fields.get('REG')} stack={fields.get('STACK')} B shared={compiled.metadata.shared} B "
          + " ".join(f"{op}={n}" for op, n in counts.items()), flush=True)


def main():
    args = sys.argv[1:]
    if args:
        for k in range(0, len(args), 5):
            kind, precision, block_e, warps, block_c = args[k:k + 5]
            report(kind, precision, int(block_e), int(warps), int(block_c))
        return
    for (kind, precision), (block_e, warps, _, block_c) in kernels.TILES.items():
        report(kind, precision, block_e, warps, block_c)


if __name__ == "__main__":
    main()
