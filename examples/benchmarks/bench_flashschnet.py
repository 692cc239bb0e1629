"""Benchmark of the FlashSchNet kernels: reference vs fused fp32 vs fused W16A16, bare force call and OpenMM.

Workload (issue 3): the 269-bead 1ENH-like CG structures in examples/data (folded: ~155 neighbor pairs per bead at
15 A; unfolded: ~55), bead types from residue + bead name, model F = F' = 128, T = 4, R = 64, cutoff 15 A, random
weights (seed 0, identical for every variant), B = 1, 16, 64, 128 replicas in one System.

Variants: ``reference_autograd`` (plain PyTorch reference with autograd, use_ops=False: the issue-2 baseline),
``reference`` (the reference through the custom op, recompute backward: what the OpenMM force ran before the
kernels), ``flash_fp32`` and ``flash_w16a16`` (fused Triton kernels). Measured:

- bare force call (energy + forces through the OpenMM-boundary module), median of CUDA-event timings, eager and
  captured in a CUDA graph, and peak GPU memory; timestep*mol/s = replicas / time;
- end to end: an OpenMM Simulation on the CUDA platform (LangevinMiddleIntegrator, 4 fs) with the TorchForce
  (setOutputsForces) with and without useCUDAGraphs. Random weights give forces that would unfold the structure,
  so the model's energy is scaled down (last readout layer x 0.01) and a weak harmonic restraint to the start
  positions (CustomExternalForce) keeps the pair count of the workload; the mean pairs per bead at the end is logged;
- accuracy: forces of each variant relative to ``reference`` (||dF|| / ||F_ref||, i.e. RMSE / RMS);
- ceilings: device-to-device copy bandwidth and an fp16 matrix product, for the roofline in docs/kernels-notes.md.

Usage: ``python examples/benchmarks/bench_flashschnet.py [--quick] [--no-openmm]``; writes
examples/benchmarks/results/flashschnet_kernels.json (``--out``) and, with ``--plot JSON``, only the PNG.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
RESULTS = os.path.join(HERE, "results")
VARIANTS = {"reference_autograd": ("reference", "fp32", False), "reference": ("reference", "fp32", True),
            "flash_fp32": ("flash", "fp32", True), "flash_w16a16": ("flash", "w16a16", True)}
# (BLOCK_E, warps, tiles per program, BLOCK_C) tried by --tune, per kernel and precision.
# (BLOCK_C = 128 = F' is the unchunked second layer.) 16-column chunks with 8 warps are left out: one such fp32
# backward configuration hit an illegal memory access on the H200 (Triton 3.6), which poisons the CUDA context.
TUNE_CANDIDATES = {("fwd", "w16a16"): [(64, 4, 1, 32), (64, 4, 1, 64), (64, 4, 1, 128), (128, 8, 1, 32),
                                       (64, 8, 1, 32)],
                   ("bwd", "w16a16"): [(32, 4, 1, 32), (64, 4, 1, 32), (64, 8, 1, 32), (32, 4, 1, 128),
                                       (128, 8, 1, 32)],
                   ("fwd", "fp32"): [(64, 4, 1, 32), (128, 8, 1, 128)],
                   ("bwd", "fp32"): [(32, 4, 1, 32), (64, 8, 1, 128)]}
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



def restrained_system(model, types, masses, positions, replicas, capacity, graphs):
    """System of B replicas with the FlashSchNet TorchForce and a weak harmonic restraint (500 kJ/mol/nm^2) to the
    start positions (nm), which keeps a random-weight model from changing the workload's pair count."""
    from openmmflash.plugin.torchforce import createFlashSchNetForce
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    system = openmm.System()
    for _ in range(replicas):
        for m in masses:
            system.addParticle(m)
    system.addForce(createFlashSchNetForce(model, beadTypes=types * replicas, replicas=replicas,
                                           numParticles=system.getNumParticles(), periodic=False,
                                           neighborCapacity=capacity, useCUDAGraphs=graphs))
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

    backend, precision, _ = VARIANTS[variant]
    config = FlashSchNetConfig(numBeadTypes=num_types, hiddenChannels=128, numFilters=128, numRbf=64,
                               numInteractions=4, cutoff=15.0, readoutHidden=[128], backend=backend,
                               precision=precision)
    model = FlashSchNet(config)
    model.reset_parameters(seed=0)
    with torch.no_grad():
        model.readout[-1].weight.mul_(0.01)  # gentle forces, so MD keeps the structure (see module docstring)
    return model.to(device)


def make_module(model, types, replicas, capacity, variant):
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    module = createFlashSchNetModule(model, beadTypes=types * replicas, replicas=replicas,
                                     neighborCapacity=capacity).to(model.mu.device)
    module.model.use_ops = VARIANTS[variant][2]
    return module


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


def bare(workloads, replicas_list, variants, tiles_note, quick):
    """Bare force-call timings, memory and accuracy; returns a list of result rows."""
    rows = []
    for name in workloads:
        pos0, types, _, table = load_workload(name)
        for replicas in replicas_list:
            pos = torch.tensor(np.tile(pos0, (replicas, 1)) / 10.0, dtype=torch.float32, device="cuda")
            pos = pos + 1e-4 * torch.randn_like(pos)
            forces_ref = None
            for variant in variants:
                row = {"workload": name, "replicas": replicas, "variant": variant}
                try:
                    model = make_model(len(table), variant, "cuda")
                    pairs = count_pairs(pos * 10.0, replicas)
                    capacity = int(pairs * CAPACITY_FACTOR) + 64
                    module = make_module(model, types, replicas, capacity, variant)
                    row["pairs"] = pairs
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    energy, forces = module(pos, None)
                    torch.cuda.synchronize()
                    row["peak_memory_MB"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
                    row["ms"] = median_ms(lambda: module(pos, None), budget_s=0.3 if quick else 1.5)
                    row["timestep_mol_per_s"] = replicas * 1000.0 / row["ms"]
                    if variant == "reference":
                        forces_ref = forces.detach().clone()
                    if forces_ref is not None:
                        row["force_rel_error"] = float((forces - forces_ref).norm() / forces_ref.norm())
                    if variant != "reference_autograd":
                        replay, _ = graphed(module, pos)
                        row["graph_ms"] = median_ms(replay, budget_s=0.3 if quick else 1.5)
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


def filter_args(model, precision):
    """The trailing arguments of cfconv_flash_forward/backward for the model's first interaction block."""
    block = model.blocks[0]
    return (model.mu, block.filter1.weight.detach(), block.filter1.bias.detach(), block.filter2.weight.detach(),
            model.gamma, model.cutoff, True, precision)


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
    for precision in ("fp32", "w16a16"):
        args = filter_args(model, precision)
        fwd = median_ms(lambda: kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args))
        bwd = median_ms(lambda: kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2], *args))
        out[precision] = {"fwd_ms": fwd, "bwd_ms": bwd, "fwd_TFLOPs": flop_fwd / fwd / 1e9,
                          "bwd_TFLOPs": 2 * flop_fwd / bwd / 1e9}
    out["kernel_info"] = dict(kernels.KERNEL_INFO)
    # Ablation in the same run: TMA weight tiles forced on/off, fp16 gathers on/off (defaults restored after).
    ablation = []
    for precision, tma, gather16 in (("w16a16", False, True), ("w16a16", False, False), ("w16a16", True, True),
                                     ("fp32", False, False), ("fp32", True, False)):
        args = filter_args(model, precision)
        saved = (kernels.USE_TMA, kernels.GATHER16)
        kernels.USE_TMA, kernels.GATHER16 = tma, gather16
        try:
            row = {"precision": precision, "tma": tma, "gather16": gather16 and precision == "w16a16",
                   "fwd_ms": median_ms(lambda: kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args)),
                   "bwd_ms": median_ms(lambda: kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2],
                                                                             *args))}
        except Exception as err:
            row = {"precision": precision, "tma": tma, "error": f"{type(err).__name__}: {str(err)[:200]}"}
        finally:
            kernels.USE_TMA, kernels.GATHER16 = saved
        ablation.append(row)
        print(json.dumps(row), flush=True)
    out["ablation"] = ablation
    return out


def tune_robust(replicas, candidates):
    """``tune`` in a subprocess, restarted past any candidate that crashes the CUDA context; sets kernels.TILES."""
    import subprocess

    from openmmflash.plugin.kernels import cfconv as kernels

    todo = [[k, p, list(t)] for (k, p), tiles in candidates.items() for t in tiles]
    log = []
    while todo:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--tune-worker", str(replicas)],
                              capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, BENCH_CANDIDATES=json.dumps(todo)))
        got = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("TUNE ")]
        log += got
        todo = todo[len(got):]
        if todo and proc.returncode != 0 and (not got or "error" not in got[-1]):  # died silently at todo[0]
            bad = todo.pop(0)
            log.append({"kernel": bad[0], "precision": bad[1], "tile": bad[2], "ms": float("inf"),
                        "error": f"worker exited with {proc.returncode}: {proc.stderr[-300:]}"})
    for entry in log:
        print(json.dumps(entry), flush=True)
    for (kind, precision) in candidates:
        runs = [e for e in log if e["kernel"] == kind and e["precision"] == precision and e["ms"] < float("inf")]
        if runs:
            kernels.TILES[(kind, precision)] = tuple(min(runs, key=lambda e: e["ms"])["tile"])
    return {"replicas": replicas, "log": log, "chosen": {f"{k}/{p}": list(v) for (k, p), v in kernels.TILES.items()}}


def tune(replicas, candidates):
    """Pick (BLOCK_E, warps) per kernel and precision on the folded workload; sets kernels.TILES."""
    from openmmflash.plugin.kernels import cfconv as kernels

    pos, model, src, dst, dist, _ = folded_pairs(replicas)
    n = pos.shape[0]
    x, g = torch.randn(n, 128, device="cuda"), torch.randn(n, 128, device="cuda")
    csr = kernels.build_csr(src, dst, n)
    log = []
    for (kind, precision), tiles in candidates.items():
        args = filter_args(model, precision)
        if kind == "fwd":
            def call():
                return kernels.cfconv_flash_forward(x, dist, src, dst, csr[0], *args)
        else:
            def call():
                return kernels.cfconv_flash_backward(g, x, dist, src, dst, csr[1], csr[2], *args)
        best = None
        for tile in tiles:
            kernels.TILES[(kind, precision)] = tuple(tile)
            try:
                ms = median_ms(call, budget_s=0.3)
                info = dict(kernels.KERNEL_INFO.get(f"{kind}/{precision}", {}))
            except Exception as err:
                ms, info = float("inf"), {"error": f"{type(err).__name__}: {str(err)[:200]}"}
            log.append({"kernel": kind, "precision": precision, "tile": list(tile), "ms": ms, **info})
            print("TUNE " + json.dumps(log[-1]), flush=True)
            if "error" in info:
                os._exit(3)  # the CUDA context may be unusable: the parent restarts past this candidate
            if best is None or ms < best[0]:
                best = (ms, tuple(tile))
        kernels.TILES[(kind, precision)] = best[1]
    return {"replicas": replicas, "log": log, "chosen": {f"{k}/{p}": list(v) for (k, p), v in kernels.TILES.items()}}


def openmm_runs(replicas_list, variants, quick):
    """End-to-end OpenMM runs, one subprocess per (variant, graphs), so a crash costs only its own rows."""
    import subprocess

    rows = []
    for variant in variants:
        for graphs in (False, True):
            from openmmflash.plugin.kernels import cfconv as kernels

            cmd = [sys.executable, os.path.abspath(__file__), "--openmm-worker", variant, str(int(graphs)),
                   ",".join(str(b) for b in replicas_list)] + (["--quick"] if quick else [])
            tiles = json.dumps([[k, p, list(v)] for (k, p), v in kernels.TILES.items()])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  env=dict(os.environ, BENCH_TILES=tiles))
            got = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
            for row in got:
                print(json.dumps(row), flush=True)
            done = {row["replicas"] for row in got}
            for replicas in replicas_list:
                if replicas not in done:
                    row = {"workload": "folded", "replicas": replicas, "variant": variant, "useCUDAGraphs": graphs,
                           "error": f"worker exited with {proc.returncode}: {proc.stderr[-1500:]}"}
                    print(json.dumps(row), flush=True)
                    got.append(row)
            rows += got
    return rows


def openmm_worker(variant, graphs, replicas_list, quick):
    """End-to-end OpenMM timings (CUDA platform, Langevin 4 fs) of one variant; prints 'ROW {json}' lines."""
    from openmmflash.stack import import_openmm

    from openmmflash.plugin.kernels import cfconv as kernels

    for kind, precision, tile in json.loads(os.environ.get("BENCH_TILES", "[]")):
        kernels.TILES[(kind, precision)] = tuple(tile)
    openmm = import_openmm()
    unit = openmm.unit
    pos0, types, masses, table = load_workload("folded")
    for replicas in replicas_list:
        positions = np.tile(pos0, (replicas, 1)) / 10.0
        row = {"workload": "folded", "replicas": replicas, "variant": variant, "useCUDAGraphs": graphs}
        try:
            model = make_model(len(table), variant, "cpu")
            pairs = count_pairs(torch.tensor(positions * 10.0, dtype=torch.float32), replicas)
            capacity = int(pairs * CAPACITY_FACTOR) + 64
            system = restrained_system(model, types, masses, positions, replicas, capacity, graphs)
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond,
                                                         0.004 * unit.picoseconds)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(PLATFORM),
                                     {"Precision": "mixed"} if PLATFORM == "CUDA" else {})
            context.setPositions(positions)
            context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
            integrator.step(15)
            context.getState(getEnergy=True)
            steps = 20 if quick else 50
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
    lines = ["bare force call (energy + forces), timestep*mol/s; eager | CUDA graph; peak MB; force rel. error",
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
    lines.append("OpenMM CUDA platform, LangevinMiddle 4 fs, TorchForce; timestep*mol/s")
    for r in results.get("openmm", []):
        tail = r.get("error", "")[:70] or (f"{r['ms_per_step']:9.3f} ms/step {r['timestep_mol_per_s']:9.0f} mol/s "
                                           f"pairs {r['pairs_start']}->{r['pairs_end']}")
        lines.append(f"folded {r['replicas']:>4} {r['variant']:19} graphs={str(r['useCUDAGraphs']):5} {tail}")
    for key in ("ratios_vs_reference", "ratios_vs_reference_autograd", "openmm_ratios_vs_reference"):
        for line in results.get(key, []):
            lines.append(f"{key}: {line}")
    return "\n".join(lines)


def ratios(rows, baseline, key_time="timestep_mol_per_s"):
    out = []
    index = {(r["workload"], r["replicas"], r["variant"]): r for r in rows if "error" not in r}
    for (work, reps, var), r in sorted(index.items()):
        base = index.get((work, reps, baseline))
        if base is None or var == baseline or not var.startswith("flash"):
            continue
        item = {"workload": work, "replicas": reps, "variant": var,
                "throughput_x": r[key_time] / base[key_time],
                "memory_reduction": 1.0 - r["peak_memory_MB"] / base["peak_memory_MB"]}
        if "graph_timestep_mol_per_s" in r and "graph_timestep_mol_per_s" in base:
            item["graph_throughput_x"] = r["graph_timestep_mol_per_s"] / base["graph_timestep_mol_per_s"]
        out.append(item)
    return out


def openmm_ratios(rows):
    """Throughput of each flash variant over the reference with the same replicas and graph setting."""
    index = {(r["replicas"], r["variant"], r["useCUDAGraphs"]): r for r in rows if "error" not in r}
    out = []
    for (reps, var, graphs), r in sorted(index.items()):
        base = index.get((reps, "reference", graphs)) or index.get((reps, "reference", False))
        if var.startswith("flash") and base is not None:
            out.append({"replicas": reps, "variant": var, "useCUDAGraphs": graphs,
                        "throughput_x": r["timestep_mol_per_s"] / base["timestep_mol_per_s"],
                        "baseline_useCUDAGraphs": base["useCUDAGraphs"]})
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for r_var in ("reference_autograd", "reference", "flash_fp32", "flash_w16a16"):
        for work, style in (("folded", "-o"), ("unfolded", "--s")):
            pts = [r for r in results.get("bare", []) if r["variant"] == r_var and r["workload"] == work
                   and "error" not in r]
            if pts:
                axes[0].plot([r["replicas"] for r in pts], [r["timestep_mol_per_s"] for r in pts], style,
                             label=f"{r_var} ({work})")
                axes[1].plot([r["replicas"] for r in pts], [r["peak_memory_MB"] for r in pts], style,
                             label=f"{r_var} ({work})")
        for graphs, style in ((False, "--^"), (True, "-o")):
            pts = [r for r in results.get("openmm", []) if r["variant"] == r_var and r["useCUDAGraphs"] == graphs
                   and "error" not in r]
            if pts:
                axes[2].plot([r["replicas"] for r in pts], [r["timestep_mol_per_s"] for r in pts], style,
                             label=f"{r_var}{' +graphs' if graphs else ''}")
    axes[2].axhline(17000, color="gray", lw=0.8, ls=":", label="target 17,000 (B=128)")
    titles = ("bare force call", "peak GPU memory of a force call", "OpenMM end to end (folded)")
    ylabels = ("timestep*mol/s", "MB", "timestep*mol/s")
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("replicas B")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=6)
    fig.suptitle(f"FlashSchNet kernels, {results.get('gpu', '?')} (F=128, T=4, R=64, cutoff 15 A)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    parser.add_argument("--no-openmm", action="store_true", help="skip the OpenMM end-to-end runs")
    parser.add_argument("--tune", action="store_true", help="pick tile sizes first (B = 64, folded)")
    parser.add_argument("--replicas", default="1,16,64,128")
    parser.add_argument("--openmm-replicas", default="1,16,64,128")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=os.path.join(RESULTS, "flashschnet_kernels.json"))
    parser.add_argument("--plot", metavar="JSON", help="only draw the PNG of an existing JSON")
    parser.add_argument("--openmm-worker", nargs=3, metavar=("VARIANT", "GRAPHS", "REPLICAS"), help=argparse.SUPPRESS)
    parser.add_argument("--tune-worker", type=int, metavar="REPLICAS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tune_worker:
        wanted = {}
        for kind, precision, tile in json.loads(os.environ["BENCH_CANDIDATES"]):
            wanted.setdefault((kind, precision), []).append(tuple(tile))
        tune(args.tune_worker, wanted)
        return
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

    replicas = [int(v) for v in args.replicas.split(",")]
    variants = args.variants.split(",")
    results = {"gpu": torch.cuda.get_device_name(), "versions": {
        "python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda}, "settings": {
        "F": 128, "T": 4, "R": 64, "cutoff_A": 15.0, "readoutHidden": [128], "replicas": replicas,
        "variants": variants, "fp32_dot": kernels.FP32_DOT, "tma_weights": (sorted("/".join(k) for k in kernels.TMA_KERNELS)
                                              if kernels.USE_TMA is None else kernels.USE_TMA),
        "w16a16_fp16_gathers": kernels.GATHER16, "md": "LangevinMiddleIntegrator 300 K, 1/ps, 4 fs, "
        "CUDA platform mixed precision, TorchForce setOutputsForces, restraint k=500 kJ/mol/nm^2, readout x0.01"}}
    results["ceilings"] = ceilings()
    print(json.dumps(results["ceilings"]), flush=True)
    if args.tune:
        results["tuning"] = tune_robust(64, TUNE_CANDIDATES)
    results["tiles"] = {f"{k}/{p}": list(v) for (k, p), v in kernels.TILES.items()}

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)

    # Most important first (folded: the targets), so a run cut short still has them.
    results["bare"] = bare(["folded"], replicas, variants, None, args.quick)
    save()
    if not args.no_openmm:
        omm_variants = [v for v in variants if v != "reference_autograd"]
        results["openmm"] = openmm_runs([int(v) for v in args.openmm_replicas.split(",")], omm_variants, args.quick)
        save()
    results["bare"] += bare(["unfolded"], replicas, variants, None, args.quick)
    results["ratios_vs_reference"] = ratios(results["bare"], "reference")
    results["ratios_vs_reference_autograd"] = ratios(results["bare"], "reference_autograd")
    results["openmm_ratios_vs_reference"] = openmm_ratios(results.get("openmm", []))
    save()
    try:
        results["kernels_B128"] = kernel_breakdown(max(replicas), args.quick)
    except Exception as err:
        results["kernels_B128"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    print(json.dumps(results["kernels_B128"]), flush=True)
    save()
    print(table(results))


if __name__ == "__main__":
    main()
