"""Speed of FlashMDLangevinIntegrator on flexible water: eager learned step vs the CUDA-graph step, against
LangevinMiddleIntegrator at 0.5 fs on the same System, in one process on one GPU.

For each model (fp32 and the GAQ W4A8 one) and each step mode (``useCUDAGraph=False``: the eager neighbor-list
step; ``None``: the padded step replayed as one CUDA graph, paddedstep.py) it measures ms per stride, simulated
ns/day and the per-phase profile of a stride (FlashMDIntegrator.enableProfiling), plus the learned step alone
(the step callable on one state, no OpenMM), and checks that the graph step gives the eager step's answer on
the equilibrated state. Prints a table and writes examples/benchmarks/results/flashmd_water_speed<tag>.json.

    python examples/benchmarks/bench_flashmd_water_speed.py --platform CUDA --device cuda --tag _gpu
    python examples/benchmarks/bench_flashmd_water_speed.py --platform CPU --strides 10 --langevin-steps 200 \
        --models water-tip3pfb-8fs --tag _cpu_smoke          # a quick CPU check (no graph there)
"""

import argparse
import json
import os
import platform as pyplatform
import time

import numpy as np
import torch

import openmm as mm
from openmm import app, unit

from openmmflash.integrators.training.data import flexibleWaterBox
from openmmflash.integrators.engine.paddedstep import PaddedReplicaStep
from openmmflash.integrators.engine.stepper import FlashMDStepper
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator

from bench_flashmd_water import equilibrated_state  # noqa: E402  (same folder)
from benchprovenance import provenance  # noqa: E402  (same folder)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PHASES = ("readState", "thermostat", "network", "energy", "rescale", "writeAndStep", "fallback")


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_langevin(top, system, start, plat, T, friction, dt, steps):
    """ms per step and ns/day of LangevinMiddleIntegrator (after a warm-up of steps // 10); friction in 1/ps."""
    sim = app.Simulation(top, system, mm.LangevinMiddleIntegrator(T, friction / unit.picosecond, dt), plat)
    sim.context.setState(start)
    sim.step(max(10, steps // 10))
    sim.context.getState(getEnergy=True)
    t0 = time.perf_counter()
    sim.step(steps)
    sim.context.getState(getEnergy=True)  # waits for the device
    wall = time.perf_counter() - t0
    return {"steps": steps, "wall_s": wall, "ms_per_step": 1e3 * wall / steps,
            "ns_per_day": steps * dt / 1000 / wall * 86400}


def time_flashmd(top, system, start, plat, T, friction, model, device, graph, strides, warmup):
    """ms per stride, ns/day and the per-phase profile of FlashMDLangevinIntegrator (friction in 1/ps; the
    model's own integrator defaults, e.g. modeRescale, apply)."""
    integ = FlashMDLangevinIntegrator(T, friction / unit.picosecond, None, model=model, device=device, randomSeed=17,
                                      useCUDAGraph=graph)
    sim = app.Simulation(top, system, integ, plat)
    sim.context.setState(start)
    t0 = time.perf_counter()
    sim.step(warmup)  # includes the capture
    first = time.perf_counter() - t0
    integ.enableProfiling()
    fb0, ln0 = integ.getNumFallbacks(), integ.getNumLearnedSteps()
    t0 = time.perf_counter()
    sim.step(strides)
    sim.context.getState(getEnergy=True)
    wall = time.perf_counter() - t0
    stride = integ.getStepSize().value_in_unit(unit.picosecond)
    padded = integ._padded
    return {"strides": strides, "wall_s": wall, "ms_per_stride": 1e3 * wall / strides,
            "ns_per_day": strides * stride / 1000 / wall * 86400, "warmup_s": first, "warmupStrides": warmup,
            "profile_ms_per_stride": {k: 1e3 * integ.timings.get(k, 0.0) / strides for k in PHASES},
            "fallbacks": integ.getNumFallbacks() - fb0, "learned": integ.getNumLearnedSteps() - ln0,
            "cudaGraph": bool(padded is not None and padded.graph is not None),
            "captureFailed": bool(padded is not None and padded.captureFailed),
            "capacity": None if padded is None else padded.capacity,
            "pairs": None if padded is None else getattr(padded, "numPairs", None),
            "overflows": None if padded is None else padded.numOverflows}


def time_step_only(model, masses, types, q, p, box, device, reps):
    """The learned step alone on one state: eager stepper vs the padded graph step (ms per call, host arrays in and
    out), and the largest difference between their results."""
    stepper = FlashMDStepper(model, masses, types, device=device)
    qt, pt, bt = torch.as_tensor(q[None]), torch.as_tensor(p[None]), torch.as_tensor(box)
    out = {}
    q_ref, p_ref = stepper.step(qt, pt, bt)
    for _ in range(3):
        stepper.step(qt, pt, bt)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a, b = stepper.step(qt, pt, bt)
        a.cpu(), b.cpu()
    out["eager_ms"] = 1e3 * (time.perf_counter() - t0) / reps
    padded = PaddedReplicaStep(stepper, 1, periodic=True, useCUDAGraph=True)
    q1, p1 = padded(q[None], p[None], box)
    for _ in range(3):
        padded(q[None], p[None], box)
    t0 = time.perf_counter()
    for _ in range(reps):
        padded(q[None], p[None], box)
    out["graph_ms"] = 1e3 * (time.perf_counter() - t0) / reps
    out["graph_used"] = padded.graph is not None
    out["speedup"] = out["eager_ms"] / out["graph_ms"]
    out["max_abs_diff_q_nm"] = float(np.abs(q1 - q_ref.cpu().numpy()).max())
    out["max_abs_diff_p"] = float(np.abs(p1 - p_ref.cpu().numpy()).max())
    out["max_abs_dp_vs_input"] = float(np.abs(p_ref.cpu().numpy() - p[None]).max())
    out["pairs"], out["capacity"] = padded.numPairs, padded.capacity
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["water-tip3pfb-8fs", "water-tip3pfb-8fs-gaq-w4a8"])
    ap.add_argument("--platform", default="CUDA")
    ap.add_argument("--device", default=None, help="torch device of the network (default cuda if present)")
    ap.add_argument("--box", type=float, default=1.6, help="nm (1.6: 387 atoms, as bench_flashmd_water.py)")
    ap.add_argument("--strides", type=int, default=500, help="timed FlashMD strides per configuration")
    ap.add_argument("--warmup", type=int, default=20, help="FlashMD strides before timing (capture included)")
    ap.add_argument("--langevin-steps", type=int, default=20000, help="timed LangevinMiddle steps (0.5 fs)")
    ap.add_argument("--step-reps", type=int, default=200, help="calls of the bare learned step")
    ap.add_argument("--equilibration", type=float, default=2.0, help="ps of LangevinMiddle before everything")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=10.0,
                    help="1/ps, both integrators (10: the friction the shipped water models were validated at)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--outdir", default=RESULTS)
    args = ap.parse_args()
    from tqdm import tqdm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    top, system, pos = flexibleWaterBox(args.box, 0.7)
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    types = [a.element.atomic_number for a in top.atoms()]
    plat = mm.Platform.getPlatformByName(args.platform)
    T = args.temperature * unit.kelvin
    dt = 0.0005
    start = equilibrated_state(top, system, pos, plat, T, args.equilibration, dt)
    q0 = np.asarray(start.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    p0 = np.asarray(start.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)) * masses[:, None]
    box = np.asarray(start.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))

    results = {"benchmark": "bench_flashmd_water_speed", "numParticles": n, "box_nm": args.box,
               "temperature_K": args.temperature, "friction_per_ps": args.friction, "langevin_dt_fs": dt * 1000,
               "machine": {"platform": args.platform, "cpu": pyplatform.processor() or pyplatform.machine(),
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                           "python": pyplatform.python_version(), "torch": torch.__version__,
                           "openmm": mm.__version__, "device": device},
               "settings": vars(args), "models": {}}
    bar = tqdm(total=1 + 3 * len(args.models), desc="bench_flashmd_water_speed")
    results["langevinMiddle"] = time_langevin(top, system, start, plat, T, args.friction, dt, args.langevin_steps)
    bar.update(1)
    for name in args.models:
        row = {"stepOnly": time_step_only(name, masses, types, q0, p0, box, device, args.step_reps)}
        bar.update(1)
        for mode, graph in (("eager", False), ("graph", None)):
            row[mode] = time_flashmd(top, system, start, plat, T, args.friction, name, device, graph, args.strides,
                                     args.warmup)
            bar.update(1)
        row["graphSpeedup"] = row["eager"]["ms_per_stride"] / row["graph"]["ms_per_stride"]
        for mode in ("eager", "graph"):
            row[f"{mode}_vs_langevin_ns_per_day"] = row[mode]["ns_per_day"] / results["langevinMiddle"]["ns_per_day"]
        results["models"][name] = row
    bar.close()

    os.makedirs(args.outdir, exist_ok=True)
    path = os.path.join(args.outdir, f"flashmd_water_speed{args.tag}.json")
    results["provenance"] = provenance()
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    lm = results["langevinMiddle"]
    print(f"\n{n} atoms, {results['machine']['gpu'] or 'CPU'}; LangevinMiddle 0.5 fs: {lm['ms_per_step']:.3f} ms/step, "
          f"{lm['ns_per_day']:.1f} ns/day")
    print(f"{'model':30s} {'mode':6s} {'ms/stride':>9s} {'ns/day':>8s} {'vs LM':>6s} {'step ms':>8s}  "
          "profile ms/stride")
    for name, row in results["models"].items():
        for mode in ("eager", "graph"):
            r = row[mode]
            prof = " ".join(f"{k}={v:.2f}" for k, v in r["profile_ms_per_stride"].items() if v > 0)
            print(f"{name:30s} {mode:6s} {r['ms_per_stride']:9.3f} {r['ns_per_day']:8.1f} "
                  f"{row[mode + '_vs_langevin_ns_per_day']:6.2f} {row['stepOnly'][mode + '_ms']:8.3f}  {prof}")
        print(f"{'':30s} graph/eager speedup per stride {row['graphSpeedup']:.2f}x; bare step "
              f"{row['stepOnly']['speedup']:.2f}x; |q_graph - q_eager| {row['stepOnly']['max_abs_diff_q_nm']:.2g} nm")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
