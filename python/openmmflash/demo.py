"""``openmmflash demo``: a CG protein simulation with a bundled FlashSchNet model, the main job in one command.

The model's priors run as native OpenMM forces and the network as a TorchForce; B replicas of the protein share one
System (and one model call per step). The native structure stored in the model file is the start and the reference
of the CA-RMSD.
"""

import json
import os
import tempfile
import time
from typing import Optional

import numpy as np

from openmmflash.cg.observables import kabschRMSD
from openmmflash.distributed import Ensemble, launchInfo
from openmmflash.cg.structure import caIndices, nativeStructure
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.schnet.model import loadModel
from openmmflash.stack import import_openmm
from openmmflash.workflows.cgsimulation import simulateCG
from openmmflash.workflows.rankedjobs import shareOrRefuse

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


def runDemoPart(net, topology, native, replicas: int, steps: int, platform: Optional[str], output: str,
                timestep: float, reportInterval: int, seed: int, progress: bool = True, fastPath=True, tag: str = "",
                platformProperties: Optional[dict] = None) -> tuple:
    """Simulate ``replicas`` copies of the native structure, writing trajectory{tag}.dcd and topology{tag}.pdb into
    ``output``; returns (simulateCG's result, CA-RMSD to native (frames, replicas) in A)."""
    with open(os.path.join(output, f"topology{tag}.pdb"), "w") as f:  # the DCD's topology (all replicas)
        openmm = import_openmm()
        openmm.app.PDBFile.writeFile(replicateTopology(topology, replicas),
                                     replicatePositions(native, replicas) * openmm.unit.nanometer, f)
    result = simulateCG(net, topology, native, replicas, steps, reportInterval, timestep, platform=platform,
                        seed=seed, dcdPath=os.path.join(output, f"trajectory{tag}.dcd"), progress=progress,
                        fastPath=fastPath, platformProperties=platformProperties)
    ca = caIndices(topology)
    frames = result["positions"]
    rmsd = np.stack([kabschRMSD(frames[:, b][:, ca] * 10.0, native[ca] * 10.0) for b in range(replicas)], 1)
    return result, rmsd


def demoSummary(model: str, topology, result: dict, rmsd: np.ndarray, timestep: float) -> dict:
    """The summary.json values of a demo run (result: simulateCG's keys; rmsd (frames, replicas) A)."""
    replicas = rmsd.shape[1]
    simulated_ps = result["steps"] * timestep * 1e-3
    ns_day = simulated_ps * 1e-3 / max(result["wallSeconds"], 1e-9) * 86400.0
    return {"model": model, "platform": result["platform"], "replicas": replicas, "beads": topology.getNumAtoms(),
            "steps": result["steps"], "timestep_fs": timestep, "simulatedTimePerReplica_ps": simulated_ps,
            "wallSeconds": result["wallSeconds"], "nsPerDayPerReplica": ns_day,
            "nsPerDayAggregate": ns_day * replicas,
            "finalPotentialEnergy_kJmol": float(result["potentialEnergy"][-1]),
            "meanTemperature_K": float(result["temperature"][len(result["temperature"]) // 2:].mean()),
            "targetTemperature_K": result["targetTemperature"],
            "caRmsdFinal_A": [float(v) for v in rmsd[-1]], "caRmsdMean_A": float(rmsd.mean()),
            "forceOptions": result["forceOptions"]}


def runDemo(model: str = "chignolin", steps: int = 3000, replicas: int = 4, platform: Optional[str] = None,
            output: str = "openmmflash-demo", timestep: float = 2.0, reportInterval: int = 100, seed: int = 1,
            progress: bool = True, fastPath=True) -> dict:
    """Run the demo and write trajectory.dcd, native.pdb, demo.png and summary.json into ``output``."""
    os.makedirs(output, exist_ok=True)
    net = loadModel(model)
    topology, native, _ = nativeStructure(net, output)
    result, rmsd = runDemoPart(net, topology, native, replicas, steps, platform, output, timestep, reportInterval,
                               seed, progress, fastPath)
    summary = dict(demoSummary(model, topology, result, rmsd, timestep), worldSize=1)
    plotRun(result, rmsd, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {replicas} replicas, {result['platform']}")
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def runDemoRanks(ens, model: str = "chignolin", steps: int = 3000, replicas: int = 4, platform: Optional[str] = None,
                 output: str = "openmmflash-demo", timestep: float = 2.0, reportInterval: int = 100, seed: int = 1,
                 fastPath=True) -> Optional[dict]:
    """``runDemo`` over the ranks of ``ens`` (an ``openmmflash.distributed.Ensemble``): rank k simulates its share
    of the replicas (seed ``ens.seed(seed)``, its own GPU) into trajectory.rank<k>.dcd / topology.rank<k>.pdb; rank
    0 writes native.pdb, demo.png and one summary.json over all replicas (``worldSize``, ``ranks``). Returns the
    summary on rank 0, None elsewhere."""
    mine = shareOrRefuse(ens, replicas, "replicas", "--replicas")
    os.makedirs(output, exist_ok=True)
    net = loadModel(model)
    with tempfile.TemporaryDirectory(prefix="demo-native-") as tmp:  # only rank 0 writes into the output
        topology, native, _ = nativeStructure(net, output if ens.isMain else tmp)
    result, rmsd = runDemoPart(net, topology, native, len(mine), steps, platform, output, timestep, reportInterval,
                               ens.seed(seed), ens.isMain, fastPath, tag=f".rank{ens.rank}",
                               platformProperties=ens.platformProperties(platform or "CUDA"))
    light = {k: result[k] for k in ("time", "potentialEnergy", "temperature", "wallSeconds", "steps", "platform",
                                    "targetTemperature", "forceOptions")}
    parts = ens.gather({"rank": ens.rank, "replicas": list(mine), "result": light, "rmsd": rmsd,
                        "device": str(ens.device), "dof": 3 * topology.getNumAtoms() * len(mine) - 3})
    if not ens.isMain:
        return None
    frames = min(len(p["result"]["time"]) for p in parts)
    dof = np.array([p["dof"] for p in parts], dtype=np.float64)
    merged = dict(parts[0]["result"])
    merged["potentialEnergy"] = sum(p["result"]["potentialEnergy"][:frames] for p in parts)  # all replicas
    merged["temperature"] = sum(p["result"]["temperature"][:frames] * d for p, d in zip(parts, dof)) / dof.sum()
    merged["time"] = merged["time"][:frames]
    merged["wallSeconds"] = max(p["result"]["wallSeconds"] for p in parts)  # the job ends with its slowest rank
    rmsd_all = np.concatenate([p["rmsd"][:frames] for p in parts], axis=1)
    summary = demoSummary(model, topology, merged, rmsd_all, timestep)
    summary.update(worldSize=ens.worldSize, launcher=ens.launcher)
    summary["ranks"] = [{"rank": p["rank"], "replicas": p["replicas"], "device": p["device"],
                         "platform": p["result"]["platform"], "wallSeconds": p["result"]["wallSeconds"],
                         "trajectory": f"trajectory.rank{p['rank']}.dcd", "topology": f"topology.rank{p['rank']}.pdb"}
                        for p in parts]
    plotRun(merged, rmsd_all, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {replicas} replicas on {ens.worldSize} processes, {merged['platform']}")
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
    trajectories = ("trajectory.dcd (topology.pdb)" if s.get("worldSize", 1) == 1 else
                    f"trajectory.rank<k>.dcd (topology.rank<k>.pdb), k < {s['worldSize']}")
    print(f"  wrote                {output}/{trajectories}, {output}/demo.png, {output}/summary.json")


def _demo(args):
    steps = args.steps
    if args.time is not None:
        steps = int(round(args.time / (args.timestep * 1e-3)))
    if steps is None:
        steps = 200 if args.quick else 3000
    replicas = args.replicas or (2 if args.quick else 4)
    interval = min(args.report_interval, steps) if not args.quick else 20
    if launchInfo()["worldSize"] == 1:
        summary = runDemo(args.model, steps, replicas, args.platform, args.output, args.timestep, interval,
                          args.seed, fastPath=not args.no_fast_path)
    else:  # torchrun / srun: each rank its share of the replicas, rank 0 the summary
        with Ensemble() as ens:
            summary = runDemoRanks(ens, args.model, steps, replicas, args.platform, args.output, args.timestep,
                                   interval, args.seed, fastPath=not args.no_fast_path)
        if summary is None:
            return
    printSummary(summary, args.output)
