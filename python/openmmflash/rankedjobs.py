"""The ``openmmflash`` jobs under ``torchrun --nproc-per-node N`` or ``srun -n N``: each process (rank) runs its share
of the replicas or reference runs on its own device and writes its own part; rank 0 gathers the summary.

Parts carry the rank in their names: ``trajectory.rank1.dcd`` + ``topology.rank1.pdb`` (demo), ``run.rank1/``
(cg-data: one resumable reference run per rank), ``work/rank1/`` (cg-validate work folders), ``pairs.rank1.npz``
(flashmd-data). ``parts.json`` beside them records the world size, and a job resumed with another world size is
refused, since the parts would no longer line up with the ranks.
"""

import json
import os
import tempfile
from typing import Optional

import numpy as np

from openmmflash.distributed import Ensemble

PARTS_FILE = "parts.json"


def checkParts(ens: Ensemble, directory: str, job: str) -> None:
    """Record (rank 0) or check the world size of the parts in ``directory``; every rank raises the same error for
    a directory made by another number of processes."""
    path = os.path.join(directory, PARTS_FILE)
    stored = None
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
    if stored is not None and (stored.get("job") != job or stored.get("worldSize") != ens.worldSize):
        raise ValueError(f"{directory!r} holds the parts of a {stored.get('job')} job of {stored.get('worldSize')} "
                         f"processes; resume it with the same command and `--nproc-per-node` / `-n "
                         f"{stored.get('worldSize')}`, or use another output")
    ens.barrier()  # every rank has read it before rank 0 (re)writes it
    if ens.isMain and stored is None:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"job": job, "worldSize": ens.worldSize, "launcher": ens.launcher}, f, indent=1)
        os.replace(tmp, path)


def _shareOrRefuse(ens: Ensemble, count: int, what: str, option: str) -> range:
    mine = ens.share(count)
    if count < ens.worldSize:
        raise ValueError(f"{count} {what} cannot be shared over {ens.worldSize} processes; give {option} >= "
                         f"{ens.worldSize} or start fewer processes")
    return mine


# -- demo ------------------------------------------------------------------------------------------------------------
def runDemoRanks(ens: Ensemble, model: str = "chignolin", steps: int = 3000, replicas: int = 4,
                 platform: Optional[str] = None, output: str = "openmmflash-demo", timestep: float = 2.0,
                 reportInterval: int = 100, seed: int = 1, fastPath=True) -> Optional[dict]:
    """``openmmflash.demo.runDemo`` over the ranks of ``ens``: rank k simulates its share of the replicas (seed
    ``ens.seed(seed)``, its own GPU) into trajectory.rank<k>.dcd / topology.rank<k>.pdb; rank 0 writes native.pdb,
    demo.png and one summary.json over all replicas (``worldSize``, ``ranks``). Returns the summary on rank 0,
    None elsewhere."""
    from openmmflash.demo import demoSummary, nativeStructure, plotRun, runDemoPart
    from openmmflash.schnet.modelfile import loadModel

    mine = _shareOrRefuse(ens, replicas, "replicas", "--replicas")
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
    summary["worldSize"] = ens.worldSize
    summary["launcher"] = ens.launcher
    summary["ranks"] = [{"rank": p["rank"], "replicas": p["replicas"], "device": p["device"],
                         "platform": p["result"]["platform"], "wallSeconds": p["result"]["wallSeconds"],
                         "trajectory": f"trajectory.rank{p['rank']}.dcd", "topology": f"topology.rank{p['rank']}.pdb"}
                        for p in parts]
    plotRun(merged, rmsd_all, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {replicas} replicas on {ens.worldSize} processes, {merged['platform']}")
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
