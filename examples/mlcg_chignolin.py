"""Run mlcg's chignolin CA SchNet test model (imported, with its priors as native forces) in OpenMM for 1 ns.

    python examples/mlcg_chignolin.py                      # about 20 min on one busy CPU core

Imports ``tests/data/mlcg/schnet_cln_ca_specialized_model_and_config.pt`` (mlcg's own test checkpoint) with
``openmmflash.mlcg``, first checks the import against mlcg's own energies and forces (16 frames of
``tests/data/mlcg/reference_cln_ca.npz``: relative errors |dE|/|E| and ||dF||/||F|| per frame, maximum over the
frames, for the SchNet term alone (model; TorchForce on the Reference and CPU platforms) and for the total through
``MLPotential("flashschnet")``, in float64 and float32, float32 against mlcg's float32 run), then builds the System
with ``MLPotential``, sets mlcg's bead masses and runs Langevin dynamics (LangevinMiddleIntegrator) on the CPU
platform from the first stored configuration. Writes ``examples/benchmarks/results/mlcg_chignolin_1ns.json``
(accuracy table; ns/day, radius of gyration and end-to-end distance: mean, standard deviation, block standard
error; provenance) and ``docs/figures/mlcg_chignolin_1ns.png``.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch  # noqa: F401  (before openmm)

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data", "mlcg")
DEFAULT_CHECKPOINT = os.path.join(DATA, "schnet_cln_ca_specialized_model_and_config.pt")
RESULTS = os.path.join(HERE, "benchmarks", "results")
FIGURES = os.path.join(HERE, "..", "docs", "figures")
sys.path.insert(0, os.path.join(HERE, "benchmarks"))
from benchprovenance import provenance  # noqa: E402


def radiusOfGyration(x: np.ndarray) -> np.ndarray:
    """Rg (same unit as x) of frames x [T, n, 3], equal bead weights (all beads have mlcg's CA mass)."""
    centred = x - x.mean(axis=1, keepdims=True)
    return np.sqrt((centred ** 2).sum(-1).mean(-1))


def relativeErrors(energies, forces, ref_e, ref_f):
    """(max |dE|/|E|, max ||dF||/||F||) over frames."""
    e = float(np.max(np.abs(np.asarray(energies) - ref_e) / np.abs(ref_e)))
    f = float(max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(np.asarray(forces), ref_f)))
    return e, f


def openmmEnergiesForces(system, positions, platformName):
    """Energies (kcal/mol) and forces (kcal/mol/A) of a System at positions [T, n, 3] in Angstrom."""
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platformName))
    energies, forces = [], []
    for pos in positions:
        context.setPositions(pos * 0.1)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / 4.184)
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / 41.84)
    return energies, forces


def accuracyTable(checkpoint, reference, modelPath, topology):
    """Rows (target, path, precision, max rel. dE, max rel. dF) against mlcg's reference arrays."""
    import openmm
    from openmmml import MLPotential

    from openmmflash.mlcg.importer import importMlcg
    from openmmflash.plugin.torchforce import addFlashSchNetForce

    ref = np.load(reference)
    rows = []
    for dtype, suffix, precision in ((torch.float64, "", "double"), (torch.float32, "_f32", "single")):
        schnet = importMlcg(checkpoint, includePriors=False).to(dtype)
        types = torch.tensor(ref["atom_types"])
        out = [schnet.energy_and_forces(torch.tensor(p, dtype=dtype), types) for p in ref["positions"]]
        rows.append(("SchNet alone", "model (torch)", precision,
                     *relativeErrors([o[0].item() for o in out], [o[1].double().numpy() for o in out],
                                     ref[f"energies_schnet{suffix}"], ref[f"forces_schnet{suffix}"])))
        for name in ("Reference", "CPU"):
            system = openmm.System()
            for _ in range(topology.getNumAtoms()):
                system.addParticle(12.0)
            addFlashSchNetForce(system, modelPath, topology, precision=precision)
            rows.append(("SchNet alone", f"TorchForce, {name}", precision,
                         *relativeErrors(*openmmEnergiesForces(system, ref["positions"], name),
                                         ref[f"energies_schnet{suffix}"], ref[f"forces_schnet{suffix}"])))
        system = MLPotential("flashschnet", modelPath=modelPath).createSystem(topology, precision=precision)
        rows.append(("SchNet + priors", "MLPotential, Reference", precision,
                     *relativeErrors(*openmmEnergiesForces(system, ref["positions"], "Reference"),
                                     ref[f"energies{suffix}"], ref[f"forces{suffix}"])))
    print(f"{'target':<17}{'path':<26}{'precision':<11}{'max rel. dE':>13}{'max rel. dF':>13}")
    for target, path, precision, e, f in rows:
        print(f"{target:<17}{path:<26}{precision:<11}{e:>13.2e}{f:>13.2e}")
    return [{"target": t, "path": p, "precision": pr, "energyRelError": e, "forceRelError": f}
            for t, p, pr, e, f in rows]


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
    parser.add_argument("--reference", default=os.path.join(DATA, "reference_cln_ca.npz"),
                        help="mlcg reference energies and forces for the accuracy table ('' to skip it)")
    parser.add_argument("--output", default=os.path.join(RESULTS, "mlcg_chignolin_1ns.json"), help="results JSON")
    parser.add_argument("--png", default=os.path.join(FIGURES, "mlcg_chignolin_1ns.png"), help="figure")
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
    accuracy = accuracyTable(args.checkpoint, args.reference, model_path, pdb.topology) if args.reference else None

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
        "accuracy": {"metric": "max over 16 frames of |dE|/|E| and ||dF||/||F|| against mlcg's own energies and "
                                "forces; float32 against mlcg's float32 run", "rows": accuracy},
        "provenance": provenance(),
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    if os.path.exists(args.output):  # keep what other scripts store there (bench_mlcg_table_accuracy.py)
        with open(args.output) as handle:
            kept = {k: v for k, v in json.load(handle).items() if k not in result}
        result.update(kept)
    with open(args.output, "w") as handle:
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
    os.makedirs(os.path.dirname(args.png) or ".", exist_ok=True)
    fig.savefig(args.png, dpi=120)
    print(f"{result['simulatedNs']:.3f} ns in {seconds:.0f} s: {ns_per_day:.1f} ns/day; "
          f"Rg {result['radiusOfGyrationAngstrom']['mean']:.2f} +- {result['radiusOfGyrationAngstrom']['std']:.2f} A, "
          f"end-to-end {result['endToEndAngstrom']['mean']:.2f} +- {result['endToEndAngstrom']['std']:.2f} A; "
          f"wrote {args.output} and {args.png}")


if __name__ == "__main__":
    main()
