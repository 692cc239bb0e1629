"""FlashMD with B replicas in one System: the whole-System guard against the per-replica guard, both against
LangevinMiddleIntegrator, on the bundled CG protein (chignolin, FlashSchNet TorchForce + priors).

For each replica count B the same System (B copies, as flashmdcg.buildCGSystem builds it) runs under

- ``LangevinMiddleIntegrator`` at 2 fs (the CG model's stable step), 300 K, friction 1/ps (the baseline);
- ``FlashMDLangevinIntegrator`` with the whole-System guard (energy of the rescale all in PyTorch,
  flashmdcg.flashSchNetEnergyEvaluator(priors="torch")): one rejected replica sends all B to the fallback substeps;
- the same integrator with the per-replica guard (``setReplicaEnergy(flashmdcg.flashSchNetReplicaEnergy(...))``):
  each replica is accepted or rejected alone and only rejected replicas run the fallback substeps.

The three run interleaved, one chunk of simulated time each in turn, from the same equilibrated start, so that load
from other processes on a shared machine hits them alike; only ratios of throughput (simulated time per wall second)
are reported. Fallback fractions are per replica (strides a replica advanced by substeps / strides).

    python examples/benchmarks/bench_flashmd_replicas.py                     # CPU, B = 1, 8, 32
    python examples/benchmarks/bench_flashmd_replicas.py --platform CUDA     # on a GPU (host strides)
    python examples/benchmarks/bench_flashmd_replicas.py --platform CUDA --device-resident on --tag _gpu_resident

Writes results/flashmd_replicas<tag>.json and docs/figures/flashmd_replicas<tag>.png (the results folder keeps at
most 41 files, docs/benchmarks.md).
"""

import argparse
import json
import os
import time

import numpy as np
import torch

import openmm as mm
from openmm import unit

from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.workflows.flashmdcg import (buildCGSystem, cgFallbackSubsteps, flashSchNetEnergyEvaluator,
                                               flashSchNetReplicaEnergy, useCGBeadTypes)

HERE = os.path.dirname(os.path.abspath(__file__))

MODES = ("langevin", "wholeSystem", "perReplica")


def runProvenance(args) -> dict:
    """benchprovenance's object (docs/benchmarks.md) plus the CPU model, thread setting and OpenMM platform."""
    from benchprovenance import cpuModel, provenance  # examples/benchmarks/benchprovenance.py
    out = provenance()
    out.update({"cpuModel": cpuModel(), "cpuCount": os.cpu_count(), "ompNumThreads": os.environ.get("OMP_NUM_THREADS"),
                "openmmPlatform": args.platform})
    return out


def makeContext(system, integrator, platform):
    props = {"Precision": "mixed"} if platform == "CUDA" else {}
    return mm.Context(system, integrator, mm.Platform.getPlatformByName(platform), props)


def flashmd(args, B, system, net, topology, perReplica):
    model = loadModel(args.model)
    device = args.device or ("cuda" if args.platform == "CUDA" else "cpu")
    integ = FlashMDLangevinIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond, None,
                                      model=model, replicas=B, randomSeed=args.seed, device=device,
                                      fallbackSubsteps=cgFallbackSubsteps(model), speciesRescale=False,
                                      deviceResident={"off": False, "on": True, "auto": None}[args.device_resident])
    useCGBeadTypes(integ, net, topology)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, topology, B, device=device, priors="torch",
                                                         pairs="list"))
    if perReplica:
        integ.setReplicaEnergy(flashSchNetReplicaEnergy(system, net, topology, B, device=device))
    return integ


def measure(args, B):
    topology, system, positions, _, _, net = buildCGSystem(B, platformName=args.platform, removeCMMotion=True)
    model = loadModel(args.model)
    stride_fs = model.stride * 1000.0
    lang = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond,
                                       2.0 * unit.femtosecond)
    lang.setRandomNumberSeed(args.seed)
    ctx = {"langevin": makeContext(system, lang, args.platform)}
    ctx["langevin"].setPositions(positions * unit.nanometer)
    mm.LocalEnergyMinimizer.minimize(ctx["langevin"], 10.0, 50)
    ctx["langevin"].setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)
    lang.step(args.warmup)
    state = ctx["langevin"].getState(getPositions=True, getVelocities=True)
    integ = {"langevin": lang}
    for mode in MODES[1:]:
        integ[mode] = flashmd(args, B, system, net, topology, mode == "perReplica")
        ctx[mode] = makeContext(system, integ[mode], args.platform)
        ctx[mode].setPositions(state.getPositions())
        ctx[mode].setVelocities(state.getVelocities())
        integ[mode].step(2)  # first-call work (checks, graphs) outside the timing
    strides = max(1, int(round(args.chunk_fs / stride_fs)))
    steps = {"langevin": int(round(strides * stride_fs / 2.0)), "wholeSystem": strides, "perReplica": strides}
    dt_fs = {"langevin": 2.0, "wholeSystem": stride_fs, "perReplica": stride_fs}
    fb0 = {m: integ[m].getReplicaFallbackCounts().copy() for m in MODES[1:]}
    nf0 = {m: integ[m].getNumFallbacks() for m in MODES[1:]}
    n0 = {m: nf0[m] + integ[m].getNumLearnedSteps() for m in MODES[1:]}
    wall = dict.fromkeys(MODES, 0.0)
    sim_fs = dict.fromkeys(MODES, 0.0)
    rounds = []
    t_start = time.perf_counter()
    from tqdm import tqdm
    bar = tqdm(desc=f"B={B}", unit="round", leave=False)
    while len(rounds) < args.min_rounds or time.perf_counter() - t_start < args.seconds:
        per = {}
        for m in MODES:
            t0 = time.perf_counter()
            integ[m].step(steps[m])
            ctx[m].getState(getPositions=True)  # the work is done (GPU) before the clock stops
            per[m] = time.perf_counter() - t0
            wall[m] += per[m]
            sim_fs[m] += steps[m] * dt_fs[m]
        rounds.append({m: steps[m] * dt_fs[m] / per[m] for m in MODES})  # fs per wall second
        bar.update(1)
        if len(rounds) >= args.max_rounds:
            break
    bar.close()
    rate = {m: sim_fs[m] / wall[m] for m in MODES}
    row = {"replicas": B, "beads": system.getNumParticles(), "strideFs": stride_fs, "rounds": len(rounds),
           "chunkFs": strides * stride_fs, "simulatedFsPerMode": sim_fs["langevin"],
           "ratioVsLangevin": {m: rate[m] / rate["langevin"] for m in MODES[1:]},
           "ratioPerReplicaOverWholeSystem": rate["perReplica"] / rate["wholeSystem"],
           "roundRatiosVsLangevin": {m: [r[m] / r["langevin"] for r in rounds] for m in MODES[1:]}}
    for m in MODES[1:]:
        n = integ[m].getNumFallbacks() + integ[m].getNumLearnedSteps() - n0[m]
        frac = (integ[m].getReplicaFallbackCounts() - fb0[m]) / max(n, 1)
        row[m] = {"strides": n, "fallbackFractionPerReplica": frac.tolist(),
                  "meanFallbackFraction": float(frac.mean()),
                  "stridesWithAFallback": integ[m].getNumFallbacks() - nf0[m],
                  "rejectionsByKind": integ[m].getRejectionCounts(),
                  "deviceResident": integ[m].isDeviceResident()}
    print(f"B={B:3d}  FlashMD {stride_fs:g} fs / Langevin 2 fs throughput: whole-System guard "
          f"{row['ratioVsLangevin']['wholeSystem']:.2f}x (fallback fraction "
          f"{row['wholeSystem']['meanFallbackFraction']:.2f}), per-replica guard "
          f"{row['ratioVsLangevin']['perReplica']:.2f}x (mean fallback fraction "
          f"{row['perReplica']['meanFallbackFraction']:.2f}); per-replica / whole-System "
          f"{row['ratioPerReplicaOverWholeSystem']:.2f}  [{len(rounds)} rounds]")
    return row


def plot(rep, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = rep["rows"]
    Bs = [r["replicas"] for r in rows]
    x = np.arange(len(Bs))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for k, (m, label) in enumerate([("wholeSystem", "whole-System guard"), ("perReplica", "per-replica guard")]):
        vals = [r["ratioVsLangevin"][m] for r in rows]
        a.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=label)
        for xi, v in zip(x, vals):
            a.text(xi + (k - 0.5) * 0.38, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        fr = [r[m]["fallbackFractionPerReplica"] for r in rows]
        b.boxplot(fr, positions=x + (k - 0.5) * 0.38, widths=0.3, patch_artist=True,
                  boxprops={"facecolor": f"C{k}", "alpha": 0.6}, manage_ticks=False)
        b.plot([], [], color=f"C{k}", lw=6, alpha=0.6, label=label)
    a.axhline(1.0, color="k", lw=0.8, ls="--")
    a.set_xticks(x, [str(B) for B in Bs])
    a.set_xlabel("replicas in one System")
    a.set_ylabel("throughput / LangevinMiddle 2 fs")
    a.set_title(f"{rep['model']} on {rep['provenance']['openmmPlatform']}")
    a.legend(fontsize=8)
    b.set_xticks(x, [str(B) for B in Bs])
    b.set_xlabel("replicas in one System")
    b.set_ylabel("fallback fraction per replica")
    b.set_ylim(0, 1.05)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-20fs")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--platform", default="CPU", help="OpenMM platform (CPU, CUDA)")
    ap.add_argument("--device", default=None, help="torch device of the network (default cuda for CUDA, else cpu)")
    ap.add_argument("--device-resident", choices=["off", "on", "auto"], default="off",
                    help="FlashMD strides device-resident (needs a CUDA device for speed; 'on' on a CPU runs them "
                         "eagerly): off (host strides for both guards, the like-for-like comparison), on, or auto "
                         "(resident for the whole-System guard on CUDA, host strides for the per-replica guard)")
    ap.add_argument("--chunk-fs", type=float, default=200.0, help="simulated fs per integrator and round")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall time per replica count (all modes)")
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--max-rounds", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100, help="Langevin steps before the common start")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--figures", default=os.path.join(HERE, "..", "..", "docs", "figures"), help="folder of the PNG")
    args = ap.parse_args(argv)
    os.makedirs(args.results, exist_ok=True)
    rep = {"provenance": runProvenance(args), "model": args.model, "deviceResident": args.device_resident,
           "temperature_K": args.temperature,
           "friction_per_ps": args.friction,
           "note": "throughput = simulated time per wall second of the whole System (all replicas); the three "
                   "integrators run interleaved chunks on the same machine, so only ratios are meaningful. FlashMD "
                   "time includes the energy evaluations of the rescale, the guard and all fallback substeps. "
                   "Whole-System guard: one rejected replica sends every replica to the fallback; per-replica guard: "
                   "only rejected replicas run the substeps (their own forces, PyTorch).",
           "rows": []}
    for B in args.replicas:
        rep["rows"].append(measure(args, B))
        with open(os.path.join(args.results, f"flashmd_replicas{args.tag}.json"), "w") as f:
            json.dump(rep, f, indent=1)
    os.makedirs(args.figures, exist_ok=True)
    plot(rep, os.path.join(args.figures, f"flashmd_replicas{args.tag}.png"))
    print("B    FlashMD/Langevin (whole-System)  FlashMD/Langevin (per-replica)  per-replica/whole  fallback frac "
          "(whole, per-replica mean)")
    for r in rep["rows"]:
        ratio = r["ratioVsLangevin"]
        print(f"{r['replicas']:<4d} {ratio['wholeSystem']:>31.2f} {ratio['perReplica']:>31.2f}"
              f" {r['ratioPerReplicaOverWholeSystem']:>18.2f}  {r['wholeSystem']['meanFallbackFraction']:.2f}, "
              f"{r['perReplica']['meanFallbackFraction']:.2f}")


if __name__ == "__main__":
    main()
