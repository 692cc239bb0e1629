"""``openmmflash demo``: a CG protein simulation with a bundled FlashSchNet model, the main job in one command.

The model's priors run as native OpenMM forces and the network as a TorchForce; B replicas of the protein share one
System (and one model call per step). The native structure stored in the model file is the start and the reference
of the CA-RMSD.
"""

import json
import os
import time
from typing import Optional

import numpy as np

from openmmflash.cg.observables import kabschRMSD
from openmmflash.cg.structure import caIndices, nativeStructure
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.schnet.model import loadModel
from openmmflash.stack import import_openmm
from openmmflash.workflows.cgsimulation import simulateCG

def plotRun(result: dict, rmsd: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for b in range(rmsd.shape[1]):
        ax[0].plot(result["time"], rmsd[:, b], lw=1, label=f"replica {b}")
    ax[0].set_xlabel("time (ps)")
    ax[0].set_ylabel("CA-RMSD to native (A)")
    ax[0].legend(fontsize=7)
    ax[1].plot(result["time"], result["potentialEnergy"], lw=1)
    ax[1].set_xlabel("time (ps)")
    ax[1].set_ylabel("potential energy, all replicas (kJ/mol)")
    ax[2].plot(result["time"], result["temperature"], lw=1)
    ax[2].axhline(result["targetTemperature"], color="k", ls="--", lw=0.8)
    ax[2].set_xlabel("time (ps)")
    ax[2].set_ylabel("temperature (K)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def runDemo(model: str = "chignolin", steps: int = 3000, replicas: int = 4, platform: Optional[str] = None,
            output: str = "openmmflash-demo", timestep: float = 2.0, reportInterval: int = 100, seed: int = 1,
            progress: bool = True, fastPath=True) -> dict:
    """Run the demo and write trajectory.dcd, native.pdb, demo.png and summary.json into ``output``."""

    os.makedirs(output, exist_ok=True)
    net = loadModel(model)
    topology, native, _ = nativeStructure(net, output)

    with open(os.path.join(output, "topology.pdb"), "w") as f:  # the DCD's topology (all replicas)
        openmm = import_openmm()

        openmm.app.PDBFile.writeFile(replicateTopology(topology, replicas),
                                     replicatePositions(native, replicas) * openmm.unit.nanometer, f)
    result = simulateCG(net, topology, native, replicas, steps, reportInterval, timestep, platform=platform,
                        seed=seed, dcdPath=os.path.join(output, "trajectory.dcd"), progress=progress,
                        fastPath=fastPath)
    ca = caIndices(topology)
    frames = result["positions"]
    rmsd = np.stack([kabschRMSD(frames[:, b][:, ca] * 10.0, native[ca] * 10.0) for b in range(replicas)], 1)
    simulated_ps = result["steps"] * timestep * 1e-3
    ns_day = simulated_ps * 1e-3 / max(result["wallSeconds"], 1e-9) * 86400.0
    summary = {"model": model, "platform": result["platform"], "replicas": replicas, "beads": topology.getNumAtoms(),
               "steps": result["steps"], "timestep_fs": timestep, "simulatedTimePerReplica_ps": simulated_ps,
               "wallSeconds": result["wallSeconds"], "nsPerDayPerReplica": ns_day,
               "nsPerDayAggregate": ns_day * replicas,
               "finalPotentialEnergy_kJmol": float(result["potentialEnergy"][-1]),
               "meanTemperature_K": float(result["temperature"][len(result["temperature"]) // 2:].mean()),
               "targetTemperature_K": result["targetTemperature"],
               "caRmsdFinal_A": [float(v) for v in rmsd[-1]], "caRmsdMean_A": float(rmsd.mean()),
               "forceOptions": result["forceOptions"]}
    plotRun(result, rmsd, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {replicas} replicas, {result['platform']}")
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def printSummary(s: dict, output: str) -> None:
    print(f"\nopenmmflash demo: {s['model']} ({s['beads']} beads) x {s['replicas']} replicas on {s['platform']}")
    print(f"  steps                {s['steps']} x {s['timestep_fs']} fs")
    print(f"  simulated time       {s['simulatedTimePerReplica_ps']:.1f} ps per replica "
          f"({s['simulatedTimePerReplica_ps'] * s['replicas']:.1f} ps in total)")
    print(f"  speed                {s['nsPerDayPerReplica']:.2f} ns/day per replica, "
          f"{s['nsPerDayAggregate']:.2f} ns/day aggregate ({s['wallSeconds']:.1f} s wall)")
    print(f"  potential energy     {s['finalPotentialEnergy_kJmol']:.1f} kJ/mol (all replicas, last frame)")
    print(f"  temperature          {s['meanTemperature_K']:.1f} K (second half; target "
          f"{s['targetTemperature_K']:.0f} K)")
    print(f"  CA-RMSD to native    {', '.join(f'{v:.2f}' for v in s['caRmsdFinal_A'])} A (last frame per replica)")
    print(f"  wrote                {output}/trajectory.dcd (topology.pdb), {output}/demo.png, "
          f"{output}/summary.json")


def _demo(args):
    steps = args.steps
    if args.time is not None:
        steps = int(round(args.time / (args.timestep * 1e-3)))
    if steps is None:
        steps = 200 if args.quick else 3000
    replicas = args.replicas or (2 if args.quick else 4)
    interval = min(args.report_interval, steps) if not args.quick else 20
    summary = runDemo(args.model, steps, replicas, args.platform, args.output, args.timestep, interval, args.seed,
                      fastPath=not args.no_fast_path)
    printSummary(summary, args.output)
