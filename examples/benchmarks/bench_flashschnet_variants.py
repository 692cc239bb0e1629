"""Ablation of the flash CFConv kernel variants at B = 128 on the folded workload (per-block kernel times, H200).

Variants: weight tiles through registers or TMA descriptors (OPENMMFLASH_CFCONV_TMA), fp32 or fp16 gathers of the
node features in the W16A16 kernels (OPENMMFLASH_CFCONV_GATHER16), and tile shapes (BLOCK_E, warps, tiles per
program, BLOCK_C). Each (TMA, GATHER16) group runs in its own process (a crash costs only its group); all groups
compile first in parallel (CPU), then time one after the other (GPU). Prints one JSON line per measurement and a
table; writes ``--out`` (default examples/benchmarks/results/flashschnet_variants.json).

Usage (GPU): ``python examples/benchmarks/bench_flashschnet_variants.py [--replicas 128]``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
GROUPS = [("0", "0"), ("1", "0"), ("1", "1")]  # (TMA, GATHER16)
TILES = {("fwd", "w16a16"): [(64, 4, 1, 128), (64, 4, 1, 32), (64, 8, 1, 32), (128, 8, 1, 32)],
         ("bwd", "w16a16"): [(32, 4, 1, 128), (64, 4, 1, 32), (64, 8, 1, 32), (128, 8, 1, 32)],
         ("fwd", "fp32"): [(128, 8, 1, 128), (64, 4, 1, 32), (128, 8, 1, 32)],
         ("bwd", "fp32"): [(64, 8, 1, 128), (64, 4, 1, 32), (128, 8, 1, 64)]}


def worker(replicas, time_it):
    from bench_flashschnet import filter_args, folded_pairs, median_ms
    from openmmflash.plugin.kernels import cfconv as kernels

    gather16 = kernels.GATHER16
    pos, model, src, dst, dist, pairs = folded_pairs(replicas)
    n = pos.shape[0]
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(n, 128, device="cuda", generator=gen)
    g = torch.randn(n, 128, device="cuda", generator=gen) * 1e-2
    csr = kernels.build_csr(src, dst, n)
    flop = 2 * (64 * 128 + 128 * 128) * pairs
    for (kind, precision), tiles in TILES.items():
        if gather16 and precision == "fp32":
            continue  # fp32 never gathers fp16
        args = filter_args(model, precision)

        def call():
            if kind == "fwd":
                return kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args)
            return kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2], *args)

        for tile in tiles:
            kernels.TILES[(kind, precision)] = tuple(tile)
            row = {"kernel": kind, "filterPrecision": precision, "tile": list(tile), "tma_env": kernels.USE_TMA,
                   "gather16": gather16 and precision == "w16a16"}
            try:
                call()
                torch.cuda.synchronize()
                if time_it:
                    row["ms"] = median_ms(call, min_reps=10, budget_s=0.4)
                    row["TFLOPs"] = (1 if kind == "fwd" else 2) * flop / row["ms"] / 1e9
                row.update(kernels.KERNEL_INFO.get(f"{kind}/{precision}", {}))
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            print("ROW " + json.dumps(row), flush=True)
            if "error" in row:
                os._exit(3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=128)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "flashschnet_variants.json"))
    parser.add_argument("--worker", choices=["compile", "time"])
    parser.add_argument("--wait-file", help="wait for this file before timing")
    args = parser.parse_args()
    if args.worker:
        worker(args.replicas, args.worker == "time")
        return
    cmd = [sys.executable, os.path.abspath(__file__), "--replicas", str(args.replicas), "--worker"]
    envs = [dict(os.environ, OPENMMFLASH_CFCONV_TMA=t, OPENMMFLASH_CFCONV_GATHER16=h) for t, h in GROUPS]
    procs = [subprocess.Popen(cmd + ["compile"], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for e in envs]
    for p in procs:
        p.communicate(timeout=600)
    if args.wait_file:  # e.g. the CUDA tests running beside the compile phase: time on a quiet GPU
        while not os.path.exists(args.wait_file):
            time.sleep(1)
    rows = []
    for (t, h), e in zip(GROUPS, envs):
        proc = subprocess.run(cmd + ["time"], env=e, capture_output=True, text=True, timeout=600)
        got = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if proc.returncode != 0:
            got.append({"group": [t, h], "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"})
        for row in got:
            print(json.dumps(row), flush=True)
        rows += got
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "replicas": args.replicas,
              "rows": rows}
    import triton

    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    result["triton"] = triton.__version__
    result["provenance"] = provenance()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"{'kernel':4} {'prec':7} {'tile':18} {'TMA':4} {'g16':4} {'ms':>8} {'TFLOP/s':>8} regs spills")
    for r in rows:
        if "ms" in r:
            print(f"{r['kernel']:4} {r['filterPrecision']:7} {str(r['tile']):18} {int(r.get('tma', 0)):4} "
                  f"{int(r['gather16']):4} {r['ms']:8.3f} {r['TFLOPs']:8.1f} {r.get('registers')} {r.get('spills')}")
        else:
            print("ERROR", r)


if __name__ == "__main__":
    main()
