"""Run mlcg's chignolin CA SchNet test model (imported, with its priors as native forces) in OpenMM for 1 ns.

    python examples/mlcg_chignolin.py                      # about 5 min on one CPU core

Imports ``tests/data/mlcg/schnet_cln_ca_specialized_model_and_config.pt`` (mlcg's own test checkpoint) with
``openmmflash.mlcg``, builds the System with ``MLPotential("flashschnet")``, sets mlcg's bead masses and runs
Langevin dynamics (LangevinMiddleIntegrator) on the CPU platform from the first stored configuration. Writes
``examples/benchmarks/results/mlcg_chignolin_1ns.json`` (ns/day, radius of gyration and end-to-end distance:
mean, standard deviation, block standard error; provenance) and a PNG of both observables.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch  # noqa: F401  (before openmm)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CHECKPOINT = os.path.join(HERE, "..", "tests", "data", "mlcg", "schnet_cln_ca_specialized_model_and_config.pt")
RESULTS = os.path.join(HERE, "benchmarks", "results")


def radiusOfGyration(x: np.ndarray) -> np.ndarray:
    """Rg (same unit as x) of frames x [T, n, 3], equal bead weights (all beads have mlcg's CA mass)."""
    centred = x - x.mean(axis=1, keepdims=True)
    return np.sqrt((centred ** 2).sum(-1).mean(-1))


def cpuName() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gitCommit() -> str:
    try:
        return subprocess.check_output(["git", "-C", HERE, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="mlcg simulation file")
    parser.add_argument("--time", type=float, default=1.0, help="simulated time in ns (default 1)")
    parser.add_argument("--timestep", type=float, default=4.0, help="fs (default 4)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    parser.add_argument("--report", type=float, default=1.0, help="ps between recorded frames (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=os.path.join(RESULTS, "mlcg_chignolin_1ns"),
                        help="results path without extension (.json and .png are written)")
    args = parser.parse_args()

    import openmm
    from openmm import app, unit
    from openmmml import MLPotential
    from tqdm import tqdm

    from openmmflash.blockstats import blockStandardError
    from openmmflash.mlcg.importer import beadMasses, importMlcg, writeCGPdb

    work = tempfile.mkdtemp(prefix="mlcg-chignolin-")
    model_path, pdb_path = os.path.join(work, "model.pt"), os.path.join(work, "cg.pdb")
    model = importMlcg(args.checkpoint)
    model.save(model_path)
    writeCGPdb(args.checkpoint, pdb_path)
    pdb = app.PDBFile(pdb_path)

    system = MLPotential("flashschnet", modelPath=model_path).createSystem(pdb.topology)
    for i, mass in enumerate(beadMasses(model, pdb.topology)):
        system.setParticleMass(i, mass)
    integrator = openmm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond,
                                                 args.timestep * unit.femtoseconds)
    integrator.setRandomNumberSeed(args.seed)
    cpu = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, cpu, {"Threads": str(args.threads)})
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)

    interval = max(1, int(round(args.report * 1000 / args.timestep)))
    chunks = int(round(args.time * 1e6 / args.timestep / interval))
    frames, temperatures = [], []
    dof = 3 * system.getNumParticles() - 3   # CMMotionRemover
    start = time.perf_counter()
    for _ in tqdm(range(chunks), desc="mlcg chignolin", unit="ps", mininterval=5):
        integrator.step(interval)
        state = context.getState(getPositions=True, getEnergy=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"NaN positions after {len(frames) + 1} frames")
        frames.append(np.array(x))
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin)))
    seconds = time.perf_counter() - start
    steps = chunks * interval
    ns_per_day = steps * args.timestep * 1e-6 / seconds * 86400

    x = np.stack(frames)
    rg = radiusOfGyration(x)
    e2e = np.linalg.norm(x[:, -1] - x[:, 0], axis=-1)
    ref = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))[None]
    skip = len(rg) // 10    # first 10 % as equilibration
    stats = lambda v: {"mean": float(v[skip:].mean()), "std": float(v[skip:].std()),  # noqa: E731
                       "blockStandardError": blockStandardError(v[skip:], blocks=10), "min": float(v[skip:].min()),
                       "max": float(v[skip:].max())}
    result = {
        "what": "mlcg chignolin CA SchNet test model (mlcg tests/continuity), imported with openmmflash.mlcg, run "
                "in OpenMM with its priors as native forces",
        "checkpoint": os.path.basename(args.checkpoint),
        "checkpointSha256": model.metadata["mlcg"]["sourceSha256"],
        "beads": int(system.getNumParticles()), "massesAmu": sorted(set(round(m, 6) for m in
                                                                        beadMasses(model, pdb.topology))),
        "integrator": "LangevinMiddleIntegrator", "platform": "CPU", "threads": args.threads,
        "timestepFs": args.timestep, "temperatureK": args.temperature, "frictionPerPs": args.friction,
        "simulatedNs": steps * args.timestep * 1e-6, "steps": steps, "wallSeconds": seconds,
        "nsPerDay": ns_per_day, "nanFree": True, "framesRecorded": len(frames), "equilibrationFramesSkipped": skip,
        "meanKineticTemperatureK": float(np.mean(temperatures[skip:])),
        "radiusOfGyrationAngstrom": stats(rg), "endToEndAngstrom": stats(e2e),
        "startStructure": {"radiusOfGyrationAngstrom": float(radiusOfGyration(ref)[0]),
                           "endToEndAngstrom": float(np.linalg.norm(ref[0, -1] - ref[0, 0]))},
        "provenance": {"torch": str(torch.__version__), "openmm": openmm.__version__, "python": sys.version.split()[0],
                       "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                       "commit": gitCommit(), "cpu": cpuName(), "gpu": None,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output + ".json", "w") as handle:
        json.dump(result, handle, indent=2)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (np.arange(len(rg)) + 1) * interval * args.timestep * 1e-3
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    axes[0].plot(t, rg, lw=0.7, label="radius of gyration")
    axes[0].plot(t, e2e, lw=0.7, label="end-to-end (CA1-CA10)")
    axes[0].set_xlabel("time (ps)")
    axes[0].set_ylabel("Angstrom")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"mlcg chignolin CA model in OpenMM, {args.timestep:g} fs Langevin, {ns_per_day:.0f} ns/day "
                      "(CPU)", fontsize=9)
    axes[1].hist(rg[skip:], bins=40, alpha=0.7, label="Rg", orientation="vertical")
    axes[1].hist(e2e[skip:], bins=40, alpha=0.7, label="end-to-end")
    axes[1].set_xlabel("Angstrom")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output + ".png", dpi=120)
    print(f"{result['simulatedNs']:.3f} ns in {seconds:.0f} s: {ns_per_day:.1f} ns/day; "
          f"Rg {result['radiusOfGyrationAngstrom']['mean']:.2f} +- {result['radiusOfGyrationAngstrom']['std']:.2f} A, "
          f"end-to-end {result['endToEndAngstrom']['mean']:.2f} +- {result['endToEndAngstrom']['std']:.2f} A; "
          f"wrote {args.output}.json/.png")


if __name__ == "__main__":
    main()
