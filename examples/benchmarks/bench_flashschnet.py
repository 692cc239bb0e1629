"""Benchmark of the FlashSchNet kernels: reference vs exact fp32 vs exact W16A16 vs tabulated filters.

Workload: the 269-bead 1ENH-like CG structure in examples/data (folded: ~155 neighbor pairs per bead at 15 A), bead
types from residue + bead name, model F = F' = 128, T = 4, R = 64, cutoff 15 A, random weights (seed 0, identical
for every variant), B = 1 ... 512 replicas in one System.

Variants: ``reference`` (plain PyTorch CFConv through the custom op, recompute backward), ``flash_fp32`` and
``flash_w16a16`` (fused Triton filter-MLP kernels, filterMode "exact"), ``table`` and ``table_fp16`` (filters from
cubic Hermite tables, fp32 / fp16 storage, row-owned table kernels; filterMode "table"); ``reference_autograd`` on
request. Measured:

- bare force call (energy + forces through the OpenMM-boundary module), median of CUDA-event timings, eager and
  captured in a CUDA graph, and peak GPU memory; timestep*mol/s = replicas / time;
- force error of every variant against the exact model in float64 (||dF|| / ||F||, i.e. RMSE / RMS), B <= 128;
- end to end: an OpenMM Simulation on the CUDA platform (LangevinMiddleIntegrator, 4 fs) with the TorchForce
  (setOutputsForces, useCUDAGraphs), >= 200 timed steps per row; a TorchForce returning zeros gives the per-step
  floor of the boundary at B = 1. Random weights give forces that would unfold the structure, so the model's
  energy is scaled down (last readout layer x 0.01) and a weak harmonic restraint to the start positions keeps the
  pair count of the workload (logged at the end of each run);
- ``--tune``: tiles of the table kernels; ``--profile``: CUDA time per kernel of one force call at B = 128.

Writes examples/benchmarks/results/flashschnet_kernels.json (``--out``, with a ``headline`` object and provenance)
and its PNG; ``--plot JSON`` only redraws the PNG. Usage: ``python examples/benchmarks/bench_flashschnet.py``.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchprovenance import provenance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
RESULTS = os.path.join(HERE, "results")
# variant -> (CFConv backend, flash filter precision, use the custom ops, filter: "exact" or the table storage, table
# kernels' scheme "rows" | "pairs", row-owned pair distances); None: the model's default (what ships).
VARIANTS = {"reference_autograd": ("reference", "fp32", False, "exact", None, None),
            "reference": ("reference", "fp32", True, "exact", None, None),
            "flash_fp32": ("flash", "fp32", True, "exact", None, None),
            "flash_w16a16": ("flash", "w16a16", True, "exact", None, None),
            "table": ("flash", "fp32", True, "fp32", None, None),
            "table_rows": ("flash", "fp32", True, "fp32", "rows", False),
            "table_pairs": ("flash", "fp32", True, "fp32", "pairs", False),
            "table_rows_rowdist": ("flash", "fp32", True, "fp32", "rows", True),
            "table_pairs_rowdist": ("flash", "fp32", True, "fp32", "pairs", True),
            "table_fp16": ("flash", "fp32", True, "fp16", None, None)}
DEFAULT_VARIANTS = "reference,flash_fp32,flash_w16a16,table,table_fp16"
# Largest B per variant in the end-to-end runs (>= 200 timed steps each: the slow variants stop earlier).
OPENMM_REPLICAS = {"reference": [1], "flash_w16a16": [1, 128], "zero_model": [1],
                   "table_rows": [1, 128], "table_pairs": [1, 128], "table_rows_rowdist": [1, 128],
                   "table_pairs_rowdist": [1, 128], "table_fp16": [1, 128],
                   "flash_fp32": [int(b) for b in os.environ.get("BENCH_FP32_REPLICAS", "1,128").split(",")]}
TABLE_TUNE = {"fwd": [(4, 2), (4, 4), (8, 2), (8, 4), (16, 4)], "bwd": [(4, 2), (4, 4), (8, 2), (8, 4), (16, 4)]}
TUNE_SCHEMES = os.environ.get("BENCH_TUNE_SCHEMES", "pairs").split(",")  # "rows" too: the row scheme's tiles


def filter_options(variant):
    """(filterMode, FilterTableOptions or None) of a variant."""
    from openmmflash.schnet.filtertable import FilterTableOptions

    storage = VARIANTS[variant][3]
    return ("exact", None) if storage == "exact" else ("table", FilterTableOptions(storage=storage))


CAPACITY_FACTOR = 1.1  # padded neighbor-list capacity / pairs at the start (bare call and MD alike)
PLATFORM = os.environ.get("BENCH_PLATFORM", "CUDA")  # another platform only for a CPU smoke test
MASSES = {"N": 14.0, "CA": 12.0, "CB": 12.0, "C": 12.0, "O": 16.0}


def load_workload(name):
    """(positions [n, 3] Angstrom, bead types [n], masses [n] amu, type table) of examples/data/cg_1enh_like_<name>."""
    rows = []
    with open(os.path.join(DATA, f"cg_1enh_like_{name}.pdb")) as handle:
        for line in handle:
            if line.startswith(("ATOM", "HETATM")):
                rows.append((line[17:20].strip(), line[12:16].strip(),
                             [float(line[30:38]), float(line[38:46]), float(line[46:54])]))
    table = sorted({(res, bead) for res, bead, _ in rows})
    index = {key: k for k, key in enumerate(table)}
    types = [index[(res, bead)] for res, bead, _ in rows]
    masses = [MASSES.get(bead, 12.0) for _, bead, _ in rows]
    return np.array([xyz for _, _, xyz in rows]), types, masses, table


def count_pairs(positions_angstrom, replicas):
    from openmmflash.neighbors import build_neighbor_list

    return int(build_neighbor_list(positions_angstrom, replicas, 15.0, None, 0)[3])



def restrained_system(model, types, masses, positions, replicas, capacity, graphs, variant="flash_fp32"):
    """System of B replicas with the FlashSchNet TorchForce and a weak harmonic restraint (500 kJ/mol/nm^2) to the
    start positions (nm), which keeps a random-weight model from changing the workload's pair count."""
    from openmmflash.plugin.torchforce import createFlashSchNetForce

    system = restrained_particles(masses, positions, replicas)
    mode, options = filter_options(variant)
    system.addForce(createFlashSchNetForce(model, beadTypes=types * replicas, replicas=replicas,
                                           numParticles=system.getNumParticles(), periodic=False,
                                           neighborCapacity=capacity, useCUDAGraphs=graphs, filterMode=mode,
                                           filterTable=options))
    return system


def restrained_particles(masses, positions, replicas):
    """A System of B replicas of the particles (masses amu) held near ``positions`` (nm) by a harmonic restraint,
    k = 500 kJ/mol/nm^2; the force under test is added to it."""
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    system = openmm.System()
    for _ in range(replicas):
        for m in masses:
            system.addParticle(m)
    restraint = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    restraint.addGlobalParameter("k", 500.0)
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    for k, xyz in enumerate(positions):
        restraint.addParticle(k, list(xyz))
    system.addForce(restraint)
    return system

def make_model(num_types, variant, device):
    from openmmflash.schnet.config import FlashSchNetConfig
    from openmmflash.schnet.model import FlashSchNet

    backend, filter_precision = VARIANTS[variant][:2]
    config = FlashSchNetConfig(numBeadTypes=num_types, hiddenChannels=128, numFilters=128, numRbf=64,
                               numInteractions=4, cutoff=15.0, readoutHidden=[128], backend=backend,
                               filterPrecision=filter_precision)
    model = FlashSchNet(config)
    model.reset_parameters(seed=0)
    with torch.no_grad():
        model.readout[-1].weight.mul_(0.01)  # gentle forces, so MD keeps the structure (see module docstring)
    return model.to(device)


def make_module(model, types, replicas, capacity, variant, precision="single"):
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    mode, options = filter_options(variant)
    module = createFlashSchNetModule(model, beadTypes=types * replicas, replicas=replicas, precision=precision,
                                     neighborCapacity=capacity, filterMode=mode, filterTable=options,
                                     outputBuffers=True).to(model.mu.device)
    if not VARIANTS[variant][2]:
        module.model = module.model.plainCopy()  # plain torch autograd, no ops
    module._table_versions = module._weight_versions()  # moved, not changed: keep the tables built above
    scheme, rowdist = VARIANTS[variant][4:6]
    if scheme is not None:
        module.model.table_scheme = scheme
    if rowdist is not None:
        module.model.row_distances = rowdist
    return module


def variant_environ(variant):
    """Environment variables that select a variant's table scheme and pair-distance path: the OpenMM workers build
    their force with createFlashSchNetForce, whose FlashSchNetOps reads them (make_module sets the same choice
    as attributes)."""
    scheme, rowdist = VARIANTS.get(variant, (None,) * 6)[4:6]
    env = {}
    if scheme is not None:
        env["OPENMMFLASH_TABLE_SCHEME"] = scheme
    if rowdist is not None:
        env["OPENMMFLASH_ROW_DISTANCES"] = "1" if rowdist else "0"
    return env


def median_ms(fn, min_reps=5, max_reps=50, budget_s=1.0):
    """Median time of fn() in ms with CUDA events (after one warm-up call)."""
    fn()
    torch.cuda.synchronize()
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def graphed(module, pos):
    """A callable replaying module(pos) captured in a CUDA graph, and its static outputs."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            module(pos, None)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = module(pos, None)
    return graph.replay, out


def ceilings():
    """Measured copy bandwidth (GB/s, read + write) and fp16 matmul rate (TFLOP/s)."""
    a = torch.empty(2 ** 28, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    copy_ms = median_ms(lambda: b.copy_(a), min_reps=10)
    n = 8192
    x = torch.randn(n, n, device="cuda", dtype=torch.float16)
    y = torch.randn(n, n, device="cuda", dtype=torch.float16)
    mm_ms = median_ms(lambda: x @ y, min_reps=10)
    del a, b, x, y
    return {"copy_GBps": 2 * 4 * 2 ** 28 / copy_ms / 1e6, "fp16_matmul_TFLOPs": 2 * n ** 3 / mm_ms / 1e9}


def exact_forces64(table_len, types, replicas, capacity, pos):
    """Forces (kJ/mol/nm) of the exact model in float64 (reference CFConv, filterMode exact) at pos [N, 3] nm."""
    model = make_model(table_len, "reference", "cuda")
    module = make_module(model, types, replicas, capacity, "reference", precision="double")
    forces = module(pos.double(), None)[1].detach().clone()
    del module, model
    torch.cuda.empty_cache()
    return forces


def bare(workloads, replicas_list, variants, quick, error_max_replicas=128):
    """Bare force-call timings (eager and CUDA graph), peak memory and force error against the float64 exact
    model (B <= error_max_replicas); returns a list of result rows."""
    rows = []
    for name in workloads:
        pos0, types, _, table = load_workload(name)
        for replicas in replicas_list:
            pos = torch.tensor(np.tile(pos0, (replicas, 1)) / 10.0, dtype=torch.float32, device="cuda")
            pos = pos + 1e-4 * torch.randn_like(pos)
            pairs = count_pairs(pos * 10.0, replicas)
            capacity = int(pairs * CAPACITY_FACTOR) + 64
            forces_ref = None
            if replicas <= error_max_replicas:
                try:
                    forces_ref = exact_forces64(len(table), types, replicas, capacity, pos)
                except Exception as err:
                    print(f"float64 reference at B={replicas} failed: {type(err).__name__}: {str(err)[:200]}")
                    torch.cuda.empty_cache()
            for variant in variants:
                if variant.startswith("reference") and replicas > 128:
                    continue  # 23.5 GB at B = 128 (reference op); larger B does not fit every GPU
                row = {"workload": name, "replicas": replicas, "variant": variant, "pairs": pairs}
                try:
                    model = make_model(len(table), variant, "cuda")
                    module = make_module(model, types, replicas, capacity, variant)
                    if module.filter_table_info:
                        row["filter_table"] = dict(module.filter_table_info)
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    energy, forces = module(pos, None)
                    torch.cuda.synchronize()
                    row["peak_memory_MB"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
                    if forces_ref is not None:
                        diff = forces.double() - forces_ref
                        row["force_rel_error"] = float(diff.norm() / forces_ref.norm())
                    row["ms"] = median_ms(lambda: module(pos, None), budget_s=0.3 if quick else 0.5)
                    row["timestep_mol_per_s"] = replicas * 1000.0 / row["ms"]
                    if variant != "reference_autograd":
                        replay, _ = graphed(module, pos)
                        row["graph_ms"] = median_ms(replay, min_reps=10, budget_s=0.3 if quick else 0.5)
                        row["graph_timestep_mol_per_s"] = replicas * 1000.0 / row["graph_ms"]
                    del module, model
                except torch.cuda.OutOfMemoryError as err:
                    row["error"] = f"out of memory: {str(err)[:120]}"
                except Exception as err:  # keep the run going; the JSON says what failed
                    row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def tune_table(replicas, candidates):
    """Pick (BLOCK_E, warps) of the table kernels on the folded workload at B = replicas; sets TABLE_TILES."""
    from openmmflash.plugin.kernels import cfconv_table as tk
    from openmmflash.schnet.filtertable import buildFilterTable

    pos, model, src, dst, dist, _ = folded_pairs(replicas)
    n = pos.shape[0]
    x, g = torch.randn(n, 128, device="cuda"), torch.randn(n, 128, device="cuda")
    rowptr = tk.build_rowptr(dst, n)
    halfptr = tk.build_halfptr(src, dst, n)
    log = {}
    for storage in ("fp32", "fp16"):
        from openmmflash.schnet.filtertable import FilterTableOptions

        ft = buildFilterTable(model, FilterTableOptions(storage=storage))
        tab = ft.table[0].cuda()
        for scheme, tiles_of, half in (("rows", tk.TABLE_TILES, None), ("pairs", tk.PAIR_TILES, halfptr)):
            if scheme not in TUNE_SCHEMES:
                continue
            for kind, tiles in candidates.items():
                runs = log.setdefault(f"{scheme}/{kind}/{storage}", [])
                for tile in tiles:
                    tiles_of[(kind, storage)] = tuple(tile)
                    try:
                        if kind == "fwd":
                            ms = median_ms(lambda: tk.cfconv_table_forward(x, dist, src, rowptr, tab, ft.spacing,
                                                                           15.0, half))
                        else:
                            ms = median_ms(lambda: tk.cfconv_table_backward(g, x, dist, src, rowptr, tab,
                                                                            ft.spacing, 15.0, half))
                    except Exception as err:  # a tile that does not compile is skipped, and said so
                        runs.append({"tile": list(tile), "error": f"{type(err).__name__}: {str(err)[:200]}"})
                        continue
                    runs.append({"tile": list(tile), "ms": ms})
                tiles_of[(kind, storage)] = tuple(min((e for e in runs if "ms" in e), key=lambda e: e["ms"])["tile"])
    out = {"replicas": replicas, "nodes": ft.nodes, "log": log,
           "chosen": {"/".join(k): list(v) for k, v in tk.TABLE_TILES.items()},
           "chosen_pairs": {"/".join(k): list(v) for k, v in tk.PAIR_TILES.items()},
           "rowptr_ms": median_ms(lambda: tk.build_rowptr(dst, n)),
           "halfptr_ms": median_ms(lambda: tk.build_halfptr(src, dst, n))}
    print(json.dumps(out), flush=True)
    return out


def profile_step(replicas, variant="table"):
    """CUDA time per kernel name of one bare force call (torch.profiler), top 25, on the folded workload."""
    from torch.profiler import ProfilerActivity, profile

    pos0, types, _, table = load_workload("folded")
    pos = torch.tensor(np.tile(pos0, (replicas, 1)) / 10.0, dtype=torch.float32, device="cuda")
    pairs = count_pairs(pos * 10.0, replicas)
    module = make_module(make_model(len(table), variant, "cuda"), types, replicas, int(pairs * CAPACITY_FACTOR) + 64,
                         variant)
    for _ in range(3):
        module(pos, None)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            module(pos, None)
        torch.cuda.synchronize()
    events = prof.key_averages()
    rows = sorted(({"name": e.key[:90], "cuda_ms_per_call": e.device_time_total / 5e3, "count": e.count // 5}
                   for e in events if e.device_time_total > 0), key=lambda r: -r["cuda_ms_per_call"])
    out = {"replicas": replicas, "variant": variant, "total_cuda_ms": sum(r["cuda_ms_per_call"] for r in rows),
           "top": rows[:25]}
    print(json.dumps(out), flush=True)
    return out


def folded_pairs(replicas, device="cuda"):
    """The folded workload at B = replicas for the kernel studies: (positions [B n, 3] A, flash fp32 model, src, dst,
    dist [P] A, pairs) with the exact neighbor list."""
    from openmmflash.schnet.reference import pair_distances

    pos0, _, _, table = load_workload("folded")
    pos = torch.tensor(np.tile(pos0, (replicas, 1)), dtype=torch.float32, device=device)
    model = make_model(len(table), "flash_fp32", device)
    src, dst, shifts, num = model.neighbor_pairs(pos, replicas, None, 0)
    dist, _ = pair_distances(pos, src, dst, shifts, model.cutoff)
    return pos, model, src, dst, dist, int(num)


def filter_args(model, filter_precision):
    """The trailing arguments of cfconv_flash_forward/backward for the model's first interaction block."""
    block = model.blocks[0]
    return (model.mu, block.filter1.weight.detach(), block.filter1.bias.detach(), block.filter2.weight.detach(),
            model.gamma, model.cutoff, True, filter_precision)


def kernel_breakdown(replicas, quick):
    """Per-launch times of the CSR build and the fused kernels on the folded workload at B = replicas."""
    from openmmflash.plugin.kernels import cfconv as kernels

    pos, model, src, dst, dist, pairs = folded_pairs(replicas)
    n = pos.shape[0]
    x = torch.randn(n, 128, device="cuda")
    g = torch.randn(n, 128, device="cuda")
    out = {"replicas": replicas, "pairs": pairs}
    from openmmflash.neighbors import build_neighbor_list

    capacity = int(pairs * CAPACITY_FACTOR) + 64
    out["neighbor_list_ms"] = median_ms(lambda: build_neighbor_list(pos, replicas, model.cutoff, None, capacity))
    csr = kernels.build_csr(src, dst, n)
    out["csr_ms"] = median_ms(lambda: kernels.build_csr(src, dst, n))
    flop_fwd = 2 * (64 * 128 + 128 * 128) * pairs
    for filter_precision in ("fp32", "w16a16"):
        args = filter_args(model, filter_precision)
        fwd = median_ms(lambda: kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args))
        bwd = median_ms(lambda: kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2], *args))
        out[filter_precision] = {"fwd_ms": fwd, "bwd_ms": bwd, "fwd_TFLOPs": flop_fwd / fwd / 1e9,
                                 "bwd_TFLOPs": 2 * flop_fwd / bwd / 1e9}
    out["kernel_info"] = dict(kernels.KERNEL_INFO)
    # Ablation in the same run: TMA weight tiles forced on/off, fp16 gathers on/off (defaults restored after).
    ablation = []
    for filter_precision, tma, gather16 in (("w16a16", False, True), ("w16a16", False, False),
                                            ("w16a16", True, True), ("fp32", False, False), ("fp32", True, False)):
        args = filter_args(model, filter_precision)
        saved = (kernels.USE_TMA, kernels.GATHER16)
        kernels.USE_TMA, kernels.GATHER16 = tma, gather16
        try:
            row = {"filterPrecision": filter_precision, "tma": tma,
                   "gather16": gather16 and filter_precision == "w16a16",
                   "fwd_ms": median_ms(lambda: kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args)),
                   "bwd_ms": median_ms(lambda: kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2],
                                                                             *args))}
        except Exception as err:
            row = {"filterPrecision": filter_precision, "tma": tma,
                   "error": f"{type(err).__name__}: {str(err)[:200]}"}
        finally:
            kernels.USE_TMA, kernels.GATHER16 = saved
        ablation.append(row)
        print(json.dumps(row), flush=True)
    out["ablation"] = ablation
    return out


def openmm_runs(replicas_list, variants, quick):
    """End-to-end OpenMM runs with CUDA graphs, one subprocess per variant (a crash costs only its own rows); the
    slow variants run only at the B in OPENMM_REPLICAS. "zero_model" is the TorchForce floor (a model returning
    zeros)."""
    import subprocess

    from openmmflash.plugin.kernels import cfconv as kernels
    from openmmflash.plugin.kernels import cfconv_table as tk

    rows = []
    for variant in variants:
        reps = [b for b in replicas_list if b in OPENMM_REPLICAS.get(variant, replicas_list)]
        cmd = [sys.executable, os.path.abspath(__file__), "--openmm-worker", variant, "1",
               ",".join(str(b) for b in reps)] + (["--quick"] if quick else [])
        tiles = json.dumps([[k, p, list(v)] for (k, p), v in kernels.TILES.items()])
        table_tiles = json.dumps([[k, p, list(v)] for (k, p), v in tk.TABLE_TILES.items()])
        pair_tiles = json.dumps([[k, p, list(v)] for (k, p), v in tk.PAIR_TILES.items()])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, BENCH_TILES=tiles, BENCH_TABLE_TILES=table_tiles,
                                       BENCH_PAIR_TILES=pair_tiles, **variant_environ(variant)))
        got = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        for row in got:
            print(json.dumps(row), flush=True)
        done = {row["replicas"] for row in got}
        for replicas in reps:
            if replicas not in done:
                row = {"workload": "folded", "replicas": replicas, "variant": variant, "useCUDAGraphs": True,
                       "error": f"worker exited with {proc.returncode}: {proc.stderr[-1500:]}"}
                print(json.dumps(row), flush=True)
                got.append(row)
        rows += got
    return rows


class ZeroModel(torch.nn.Module):
    """A TorchForce model returning zero energy and forces: the per-step cost of the TorchForce boundary."""

    def forward(self, positions):
        return positions.sum() * 0.0, torch.zeros_like(positions)


def zero_system(masses, positions, replicas, graphs):
    import openmmtorch

    system = restrained_particles(masses, positions, replicas)
    force = openmmtorch.TorchForce(torch.jit.script(ZeroModel()), {"useCUDAGraphs": "true" if graphs else "false"})
    force.setOutputsForces(True)
    system.addForce(force)
    return system


def openmm_worker(variant, graphs, replicas_list, quick):
    """End-to-end OpenMM timings (CUDA platform, Langevin 4 fs) of one variant; prints 'ROW {json}' lines."""
    from openmmflash.stack import import_openmm

    from openmmflash.plugin.kernels import cfconv as kernels
    from openmmflash.plugin.kernels import cfconv_table as tk

    wanted = variant_environ(variant)
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        sys.exit(f"the {variant} worker needs {wanted} in its environment (openmm_runs sets it)")
    for kind, filter_precision, tile in json.loads(os.environ.get("BENCH_TILES", "[]")):
        kernels.TILES[(kind, filter_precision)] = tuple(tile)
    for kind, storage, tile in json.loads(os.environ.get("BENCH_TABLE_TILES", "[]")):
        tk.TABLE_TILES[(kind, storage)] = tuple(tile)
    for kind, storage, tile in json.loads(os.environ.get("BENCH_PAIR_TILES", "[]")):
        tk.PAIR_TILES[(kind, storage)] = tuple(tile)
    openmm = import_openmm()
    unit = openmm.unit
    pos0, types, masses, table = load_workload("folded")
    for replicas in replicas_list:
        positions = np.tile(pos0, (replicas, 1)) / 10.0
        row = {"workload": "folded", "replicas": replicas, "variant": variant, "useCUDAGraphs": graphs}
        try:
            pairs = count_pairs(torch.tensor(positions * 10.0, dtype=torch.float32), replicas)
            capacity = int(pairs * CAPACITY_FACTOR) + 64
            if variant == "zero_model":
                system = zero_system(masses, positions, replicas, graphs)
            else:
                model = make_model(len(table), variant, "cpu")
                system = restrained_system(model, types, masses, positions, replicas, capacity, graphs, variant)
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond,
                                                         0.004 * unit.picoseconds)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(PLATFORM),
                                     {"Precision": "mixed"} if PLATFORM == "CUDA" else {})
            context.setPositions(positions)
            context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
            integrator.step(20)  # past the TorchForce's CUDA-graph warm-up and capture
            context.getState(getEnergy=True)
            steps = 20 if quick else 200
            start = time.perf_counter()
            integrator.step(steps)
            context.getState(getEnergy=True)
            elapsed = time.perf_counter() - start
            if elapsed < 1.0 and not quick:
                more = int(steps * min(10.0, 2.0 / max(elapsed, 1e-3)))
                start = time.perf_counter()
                integrator.step(more)
                context.getState(getEnergy=True)
                elapsed, steps = time.perf_counter() - start, more
            state = context.getState(getPositions=True, getEnergy=True)
            end = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=torch.float32)
            row.update({"steps": steps, "ms_per_step": 1000.0 * elapsed / steps,
                        "timestep_mol_per_s": replicas * steps / elapsed, "pairs_start": pairs,
                        "pairs_end": count_pairs(end, replicas), "capacity": capacity,
                        "potential_kJmol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)})
            del context, integrator, system
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {str(err)[:2000]}"
        print("ROW " + json.dumps(row), flush=True)


def table(results):
    lines = ["bare force call (energy + forces), timestep*mol/s; eager | CUDA graph; peak MB; force error vs float64",
             f"{'workload':9} {'B':>4} {'variant':19} {'ms':>9} {'mol/s':>9} {'graph ms':>9} {'graph mol/s':>11} "
             f"{'peak MB':>9} {'dF/F':>9}"]
    for r in results.get("bare", []):
        if "error" in r:
            lines.append(f"{r['workload']:9} {r['replicas']:>4} {r['variant']:19} {r['error'][:60]}")
            continue
        lines.append(f"{r['workload']:9} {r['replicas']:>4} {r['variant']:19} {r['ms']:9.3f} "
                     f"{r['timestep_mol_per_s']:9.0f} {r.get('graph_ms', float('nan')):9.3f} "
                     f"{r.get('graph_timestep_mol_per_s', float('nan')):11.0f} {r['peak_memory_MB']:9.1f} "
                     f"{r.get('force_rel_error', float('nan')):9.2e}")
    lines.append("OpenMM CUDA platform, LangevinMiddle 4 fs, TorchForce with CUDA graphs; timestep*mol/s")
    for r in results.get("openmm", []):
        tail = r.get("error", "")[:70] or (f"{r['ms_per_step']:9.3f} ms/step {r['timestep_mol_per_s']:9.0f} mol/s "
                                           f"({r['steps']} steps) pairs {r['pairs_start']}->{r['pairs_end']}")
        lines.append(f"folded {r['replicas']:>4} {r['variant']:19} {tail}")
    for key in ("ratios_vs_reference", "openmm_ratios_vs_reference"):
        for line in results.get(key, []):
            lines.append(f"{key}: {line}")
    for key in ("headline", "floor_B1"):
        if key in results:
            lines.append(f"{key}: {json.dumps(results[key])}")
    return "\n".join(lines)


def ratios(rows, baseline, key_time="timestep_mol_per_s"):
    out = []
    index = {(r["workload"], r["replicas"], r["variant"]): r for r in rows if "error" not in r}
    for (work, reps, var), r in sorted(index.items()):
        base = index.get((work, reps, baseline))
        if base is None or var == baseline or var.startswith("reference"):
            continue
        item = {"workload": work, "replicas": reps, "variant": var,
                "throughput_x": r[key_time] / base[key_time],
                "memory_reduction": 1.0 - r["peak_memory_MB"] / base["peak_memory_MB"]}
        if "graph_timestep_mol_per_s" in r and "graph_timestep_mol_per_s" in base:
            item["graph_throughput_x"] = r["graph_timestep_mol_per_s"] / base["graph_timestep_mol_per_s"]
        out.append(item)
    return out


def openmm_ratios(rows):
    """End-to-end throughput of each variant over the reference with the same replicas."""
    index = {(r["replicas"], r["variant"]): r for r in rows if "error" not in r}
    out = []
    for (reps, var), r in sorted(index.items()):
        base = index.get((reps, "reference"))
        if var not in ("reference", "zero_model") and base is not None:
            out.append({"replicas": reps, "variant": var,
                        "throughput_x": r["timestep_mol_per_s"] / base["timestep_mol_per_s"]})
    return out


def headline(results, replicas=128):
    """The headline object: end-to-end throughput at B = replicas, speed-up over the reference (end to end where
    it ran at this B, else the bare CUDA-graph call of both) and force error vs float64 exact."""
    omm = {r["variant"]: r for r in results.get("openmm", []) if r["replicas"] == replicas and "error" not in r}
    bare_rows = {r["variant"]: r for r in results.get("bare", []) if r["replicas"] == replicas
                 and r["workload"] == "folded" and "error" not in r}
    # Variants not run end to end at this B: the bare force call in a CUDA graph (named in throughputBasis).
    bare_only = {v: r["graph_timestep_mol_per_s"] for v, r in bare_rows.items()
                 if v not in omm and "graph_timestep_mol_per_s" in r}
    out = {"gpu": results.get("gpu"), "replicas": replicas,
           "timestepMolPerS": dict({v: r["timestep_mol_per_s"] for v, r in omm.items() if v != "zero_model"},
                                   **bare_only),
           "throughputBasis": {v: "bare force call, CUDA graph" for v in bare_only},
           "speedupVsReference": {}, "forceRelError": {v: r["force_rel_error"] for v, r in bare_rows.items()
                                                       if "force_rel_error" in r}}
    ref = omm.get("reference")
    for v, r in omm.items():
        if v in ("reference", "zero_model"):
            continue
        if ref is not None:
            out["speedupVsReference"][v] = r["timestep_mol_per_s"] / ref["timestep_mol_per_s"]
        elif "reference" in bare_rows and v in bare_rows and "graph_ms" in bare_rows[v]:
            out["speedupVsReference"][v] = bare_rows["reference"]["graph_ms"] / bare_rows[v]["graph_ms"]
    if ref is None:
        out["speedupBasis"] = "bare force call with CUDA graphs (reference not run end to end at this B)"
    else:
        out["speedupBasis"] = "end to end in OpenMM with CUDA graphs"
    return out


def floor_b1(results):
    """B = 1 step time of each variant over the zero-model TorchForce floor (same run)."""
    rows = {r["variant"]: r for r in results.get("openmm", []) if r["replicas"] == 1 and "error" not in r}
    zero = rows.get("zero_model")
    if zero is None:
        return {}
    return {"zero_model_ms_per_step": zero["ms_per_step"],
            "ratio": {v: r["ms_per_step"] / zero["ms_per_step"] for v, r in rows.items() if v != "zero_model"}}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    color = {v: f"C{i}" for i, v in enumerate(VARIANTS)}  # one colour per variant in every panel
    for r_var in VARIANTS:
        pts = [r for r in results.get("bare", []) if r["variant"] == r_var and r["workload"] == "folded"
               and "error" not in r and "graph_timestep_mol_per_s" in r]
        if pts:
            axes[0].plot([r["replicas"] for r in pts], [r["graph_timestep_mol_per_s"] for r in pts], "-o", label=r_var,
                         color=color[r_var])
            axes[1].plot([r["replicas"] for r in pts], [r["peak_memory_MB"] for r in pts], "-o", label=r_var,
                         color=color[r_var])
        pts = [r for r in results.get("openmm", []) if r["variant"] == r_var and "error" not in r]
        if pts:
            axes[2].plot([r["replicas"] for r in pts], [r["timestep_mol_per_s"] for r in pts], "-o", label=r_var,
                         color=color[r_var])
    axes[2].axhline(14000, color="gray", lw=0.8, ls=":", label="14,000 (B = 128, H100 target)")
    titles = ("bare force call, CUDA graph", "peak GPU memory of a force call", "OpenMM end to end, CUDA graphs")
    ylabels = ("timestep*mol/s", "MB", "timestep*mol/s")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("replicas B")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle(f"FlashSchNet kernels, {results.get('gpu', '?')} (folded 1ENH-like, F=128, T=4, R=64, 15 A)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    parser.add_argument("--no-openmm", action="store_true", help="skip the OpenMM end-to-end runs")
    parser.add_argument("--tune", action="store_true", help="pick the table kernels' tiles first (B = 128)")
    parser.add_argument("--profile", action="store_true", help="CUDA time per kernel of the table step (B = 128)")
    parser.add_argument("--breakdown", action="store_true", help="per-launch times of the exact kernels (B max)")
    parser.add_argument("--replicas", default="1,16,64,128,256,512")
    parser.add_argument("--openmm-replicas", default="1,16,64,128,256,512")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--out", default=os.path.join(RESULTS, "flashschnet_kernels.json"))
    parser.add_argument("--plot", metavar="JSON", help="only draw the PNG of an existing JSON")
    parser.add_argument("--openmm-worker", nargs=3, metavar=("VARIANT", "GRAPHS", "REPLICAS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.openmm_worker:
        variant, graphs, reps = args.openmm_worker
        openmm_worker(variant, bool(int(graphs)), [int(v) for v in reps.split(",")], args.quick)
        return
    if args.plot:
        with open(args.plot) as handle:
            results = json.load(handle)
        plot(results, os.path.splitext(args.plot)[0] + ".png")
        print(table(results))
        return
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (absolute times only from a GPU)")
    import triton

    from openmmflash.plugin.kernels import cfconv as kernels
    from openmmflash.plugin.kernels import cfconv_table as tk

    replicas = [int(v) for v in args.replicas.split(",")]
    variants = args.variants.split(",")
    results = {"gpu": torch.cuda.get_device_name(), "versions": {
        "python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda}, "provenance": provenance(), "settings": {
        "F": 128, "T": 4, "R": 64, "cutoff_A": 15.0, "readoutHidden": [128], "replicas": replicas,
        "variants": variants, "fp32_dot": kernels.FP32_DOT, "w16a16_fp16_gathers": kernels.GATHER16,
        "table_fp16_gathers": "with fp16 tables (table_fp16)", "openmm_replicas": OPENMM_REPLICAS,
        "md": "LangevinMiddleIntegrator 300 K, 1/ps, 4 fs, CUDA platform mixed precision, TorchForce "
              "setOutputsForces + useCUDAGraphs, restraint k=500 kJ/mol/nm^2, readout x0.01, >= 200 timed steps",
        "force_error": "||F - F_exact64|| / ||F_exact64|| against the exact model in float64 (reference CFConv)"}}
    results["versions"].update({k: results["provenance"].get(k) for k in ("openmm", "driver")})
    print(json.dumps(results["provenance"]), flush=True)

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)
        try:
            plot(results, os.path.splitext(args.out)[0] + ".png")
        except Exception as err:  # a figure problem must not lose the numbers
            print(f"plot failed: {err}", flush=True)

    if args.tune:
        results["table_tuning"] = tune_table(128, TABLE_TUNE)
        save()
    results["table_tiles"] = {"/".join(k): list(v) for k, v in tk.TABLE_TILES.items()}
    results["pair_tiles"] = {"/".join(k): list(v) for k, v in tk.PAIR_TILES.items()}
    results["tiles"] = {f"{k}/{p}": list(v) for (k, p), v in kernels.TILES.items()}
    if args.profile:
        for variant in [v for v in variants if v.startswith("table")][:3]:
            try:
                results.setdefault("profile_B128", []).append(profile_step(128, variant))
            except Exception as err:
                results.setdefault("profile_B128", []).append({"variant": variant, "error": str(err)[:300]})
        save()
    results["bare"] = bare(["folded"], replicas, variants, args.quick)
    results["ratios_vs_reference"] = ratios(results["bare"], "reference")
    save()
    if not args.no_openmm:
        # Most important first (the floor and the tables), saved after every variant: a run cut short keeps them.
        omm_variants = ["zero_model"] + sorted((v for v in variants if v != "reference_autograd"),
                                               key=lambda v: (not v.startswith("table"), v))
        results["openmm"] = []
        for variant in omm_variants:
            results["openmm"] += openmm_runs([int(v) for v in args.openmm_replicas.split(",")], [variant],
                                             args.quick)
            results["openmm_ratios_vs_reference"] = openmm_ratios(results["openmm"])
            results["headline"] = headline(results)
            results["floor_B1"] = floor_b1(results)
            save()
    if args.breakdown:
        try:
            results["kernels_B128"] = kernel_breakdown(128, args.quick)
        except Exception as err:
            results["kernels_B128"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        save()
    print(table(results))


if __name__ == "__main__":
    main()
