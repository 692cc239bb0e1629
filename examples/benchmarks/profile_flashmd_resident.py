"""Where the time of a device-resident FlashMD stride goes, on the bundled CG chignolin (one GPU).

For each variant of the PyTorch energy (``--pairs list dense``: flashmdcg.flashSchNetEnergyEvaluator) it builds
``FlashMDLangevinIntegrator`` with the resident strides (integrators/residentloop.py), runs a few strides, then

- times replays of the two CUDA graphs (learned stride; fallback = the rejected stride's velocity-Verlet substeps)
  and of one energy + forces evaluation, with CUDA events;
- counts the GPU kernels of one learned stride, one fallback and one energy + forces evaluation (torch.profiler over
  the same compiled functions, run outside the graphs) and lists the most expensive kernels.

Writes results/flashmd_resident_profile<tag>.json and prints a table.

    python examples/benchmarks/profile_flashmd_resident.py --pairs list dense --tag _gpu
"""

import argparse
import json
import os
import sys
import time

import torch  # noqa: F401  (before openmm)

import openmm as mm
from openmm import unit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_flashmd_cg as bench  # noqa: E402
from benchprovenance import provenance  # noqa: E402

from openmmflash.workflows.flashmdcg import buildCGSystem  # noqa: E402


def timeCall(fn, repeats: int) -> float:
    """Mean ms of ``fn()`` on the GPU over ``repeats`` calls (CUDA events, after two warm-up calls)."""
    for _ in range(2):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def kernels(fn, top: int = 8) -> dict:
    """GPU kernels of one ``fn()`` call: count, summed device ms and the ``top`` most expensive by name."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type.name == "CUDA"]  # kernels and copies on the GPU
    by_name = {}
    for e in events:
        by_name.setdefault(e.name, [0, 0.0])
        by_name[e.name][0] += 1
        by_name[e.name][1] += e.time_range.elapsed_us() / 1000.0
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
    return {"kernels": len(events), "deviceMs": sum(t for _, t in by_name.values()),
            "top": [{"name": k[:90], "count": c, "ms": round(t, 4)} for k, (c, t) in ranked]}


def profileVariant(args, pairs, system, full, positions, net, state, repeats: int):
    integ = bench.flashmdIntegrator(args, 1, 1, system, net, full, args.model, positions, None, True, pairs)
    ctx = bench.makeContext(system, integ, "CUDA")
    ctx.setPositions(state.getPositions())
    ctx.setVelocities(state.getVelocities())
    t0 = time.perf_counter()
    integ.step(5)  # loads the state, checks the energy, compiles and captures
    setup_s = time.perf_counter() - t0
    loop = integ._resident
    if loop is None or loop.graphs is None:
        raise RuntimeError(f"pairs={pairs}: the strides did not run device-resident with CUDA graphs")
    learned, fallback = loop.graphs
    q = loop.q.clone()
    row = {"pairs": pairs, "compiled": loop.compiled, "setupSeconds": setup_s,
           "learnedGraphMs": timeCall(learned.replay, repeats),
           "fallbackGraphMs": timeCall(fallback.replay, max(10, repeats // 10)),
           "forcesEagerMs": timeCall(lambda: loop.forces(q), max(10, repeats // 4))}
    row["fallbackSubstepMs"] = row["fallbackGraphMs"] / loop.substeps
    row["kernelsLearned"] = kernels(loop._learned)
    row["kernelsFallback"] = kernels(loop._fallback)
    row["kernelsForces"] = kernels(lambda: loop.forces(q))
    del ctx, integ
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-40fs")
    ap.add_argument("--pairs", nargs="+", choices=["list", "dense"], default=["list", "dense"])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--friction", type=float, default=10.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_flashmd_resident.py needs a CUDA GPU (the resident strides' graphs are CUDA graphs)")
    # the benchmark's integrator settings: PyTorch energy (priors too), resident compiled strides
    bench_args = argparse.Namespace(
        model=args.model, device_resident="auto", temperature=300.0, friction=args.friction, device="cuda",
        fallback_substeps=None, max_rescale=1.25, species_rescale=False, energy="torch", pairs=args.pairs)
    full, system, positions, _, _, net = buildCGSystem(1, platformName="CUDA")
    lang = mm.LangevinMiddleIntegrator(300 * unit.kelvin, args.friction / unit.picosecond, 2 * unit.femtosecond)
    ctx = bench.makeContext(system, lang, "CUDA")
    bench.start(ctx, positions, 300.0, 1)
    lang.step(500)
    state = ctx.getState(getPositions=True, getVelocities=True)
    del ctx, lang
    rows = [profileVariant(bench_args, p, system, full, positions, net, state, args.repeats) for p in args.pairs]
    print(f"{'pairs':6s} {'learned ms':>10s} {'fallback ms':>11s} {'substep ms':>10s} {'forces ms':>9s} "
          f"{'kernels L/F/f':>16s}")
    for r in rows:
        counts = f"{r['kernelsLearned']['kernels']}/{r['kernelsFallback']['kernels']}/{r['kernelsForces']['kernels']}"
        print(f"{r['pairs']:6s} {r['learnedGraphMs']:10.3f} {r['fallbackGraphMs']:11.3f} {r['fallbackSubstepMs']:10.3f}"
              f" {r['forcesEagerMs']:9.3f} {counts:>16s}")
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "openmm": mm.__version__,
            "command": " ".join(sys.argv), "model": args.model, "beads": system.getNumParticles(),
            "friction_per_ps": args.friction}
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, f"flashmd_resident_profile{args.tag}.json"), "w") as f:
        json.dump({"info": info, "rows": rows, "provenance": provenance()}, f, indent=1)


if __name__ == "__main__":
    main()
