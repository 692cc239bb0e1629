"""The ``openmmflash`` jobs under ``torchrun --nproc-per-node N`` or ``srun -n N``: each process (rank) runs its share
of the replicas or reference runs on its own device and writes its own part; rank 0 gathers the summary (the demo's
own wrapper is ``openmmflash.demo.runDemoRanks``).

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

from openmmflash.cg.refdata import writeJsonAtomically
from openmmflash.cg.structure import nativeStructure
from openmmflash.distributed import Ensemble
from openmmflash.integrators.training.data import loadDataset, saveDataset
from openmmflash.schnet.model import loadModel
from openmmflash.workflows.cgvalidation import (_loadCheckpoint, _storedSettings, finalizeValidation,
                                                runValidationChunk)

PARTS_FILE = "parts.json"


def checkParts(ens: Ensemble, path: str, job: str) -> None:
    """Record (rank 0) or check the world size of a job's parts in the JSON file ``path``; every rank raises the same
    error for parts made by another number of processes."""
    stored = None
    if os.path.isfile(path):
        with open(path) as f:
            stored = json.load(f)
    if stored is not None and (stored.get("job") != job or stored.get("worldSize") != ens.worldSize):
        raise ValueError(f"{path!r} describes the parts of a {stored.get('job')} job of {stored.get('worldSize')} "
                         f"processes; resume it with the same command under `torchrun --nproc-per-node "
                         f"{stored.get('worldSize')}` or `srun -n {stored.get('worldSize')}`, or use another output")
    ens.barrier()  # every rank has read it before rank 0 writes it
    if ens.isMain and stored is None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"job": job, "worldSize": ens.worldSize, "launcher": ens.launcher}, f, indent=1)
        os.replace(tmp, path)


def shareOrRefuse(ens: Ensemble, count: int, what: str, option: str) -> range:
    """``ens.share(count)``, refusing fewer items (``what``, set by the command-line ``option``) than ranks."""
    mine = ens.share(count)
    if count < ens.worldSize:
        raise ValueError(f"{count} {what} cannot be shared over {ens.worldSize} processes; give {option} >= "
                         f"{ens.worldSize} or start fewer processes")
    return mine


# -- cg-data ---------------------------------------------------------------------------------------------------------
def referenceRunPart(ens: Ensemble, output: str, steps: int, settings: dict) -> tuple:
    """(directory, steps, ReferenceRun settings) of this rank's part of ``openmmflash cg-data``: one process records
    all ``steps`` into ``output``; under a launcher rank k records its share of the frames (``steps`` /
    reportInterval, balanced) in an independent run ``output/run.rank<k>`` with seed ``ens.seed(seed)``, each
    resumable on its own (rerun the same command with the same number of processes)."""
    if not ens.distributed:
        return output, steps, settings
    interval = int(settings.get("reportInterval", 100))
    if steps % interval:
        raise ValueError(f"steps ({steps}) must be a multiple of reportInterval ({interval})")
    frames = shareOrRefuse(ens, steps // interval, "frames", "--steps / --report-interval")
    checkParts(ens, os.path.join(output, PARTS_FILE), "cg-data")
    part = dict(settings, seed=ens.seed(settings.get("seed", 1)))
    return os.path.join(output, f"run.rank{ens.rank}"), len(frames) * interval, part


def referenceParts(directories) -> list:
    """Reference-data directories with each ``cg-data`` job of several processes (``parts.json``) replaced by its
    per-rank runs ``run.rank<k>`` (train on them together: ``refdata.mergeReferenceData``)."""
    out = []
    for directory in directories:
        path = os.path.join(directory, PARTS_FILE)
        if os.path.isfile(path) and not os.path.isfile(os.path.join(directory, "metadata.json")):
            with open(path) as f:
                world = int(json.load(f)["worldSize"])
            out += [os.path.join(directory, f"run.rank{k}") for k in range(world)]
        else:
            out.append(directory)
    return out


# -- flashmd-data ----------------------------------------------------------------------------------------------------
def generatePairsRanks(ens: Ensemble, output: str, generate, count: int, what: str, option: str):
    """``openmmflash flashmd-data`` over the ranks of ``ens``: ``count`` units of work (the (temperature, start)
    runs, or the replicas of a CG System) are shared out in order, rank k calls ``generate(indices)`` for its share
    and saves the dataset as ``<output>.rank<k>.npz`` (kept; a rerun reuses a part made for the same share), and
    rank 0 concatenates the parts in rank order into ``output`` (``meta["rankShares"]``: each rank's indices).
    Returns the dataset on rank 0, None elsewhere."""
    mine = list(shareOrRefuse(ens, count, what, option))
    checkParts(ens, f"{output}.parts.json", "flashmd-data")
    part = ens.partPath(output)
    if os.path.isfile(part) and loadDataset(part)["meta"].get("rankShare") == mine:
        print(f"rank {ens.rank}: reusing {part}")
    else:
        data = generate(mine)
        data["meta"]["rankShare"] = mine
        saveDataset(part, data)
    ens.barrier()
    if not ens.isMain:
        return None
    parts = [loadDataset(ens.partPath(output, k)) for k in range(ens.worldSize)]
    keys = ("q0", "p0", "dq", "p1", "box", "temperature")
    merged = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    merged["masses"], merged["types"] = parts[0]["masses"], parts[0]["types"]
    merged["meta"] = dict(parts[0]["meta"], rankShares=[p["meta"]["rankShare"] for p in parts],
                          rankSeeds=[p["meta"].get("seed") for p in parts],
                          seconds=max(p["meta"].get("seconds", 0.0) for p in parts), worldSize=ens.worldSize)
    merged["meta"].pop("rankShare")
    saveDataset(output, merged)
    return merged


# -- cg-validate -----------------------------------------------------------------------------------------------------
REPLICA_ROWS = ("bondMin", "bondMax", "angleMin", "angleMax")  # (replicas, terms); other records (frames, replicas)


def mergeValidationParts(parts: list, target: str, beads: int) -> dict:
    """Write into ``target`` a CG validation work folder holding the replicas of every rank's work folder in
    ``parts`` (rank order), for ``workflows.cgvalidation.finalizeValidation``: per-replica records side by side over the
    frames all parts have, the System's potential energy summed and its temperature averaged over the degrees of
    freedom (``beads`` per replica), and chunk wall times the slowest rank's. The folder is for reporting only (its
    saved State is rank 0's). Returns the merged settings."""
    settings = [_storedSettings(p) for p in parts]
    cks = [_loadCheckpoint(p) for p in parts]
    empty = [p for p, ck in zip(parts, cks) if ck is None or len(ck["time"]) == 0]
    if empty:
        raise ValueError(f"the rank parts {empty} hold no simulated frames yet; run the simulation first")
    frames = min(len(ck["time"]) for ck in cks)
    replicas = np.array([s["replicas"] for s in settings])
    dof = 3.0 * beads * replicas - 3.0
    arrays = {}
    for key in cks[0]:
        if key in ("stateXml", "chunks", "stepCount"):
            continue
        if key in REPLICA_ROWS:
            arrays[key] = np.concatenate([ck[key] for ck in cks], axis=0)
        elif key == "time":
            arrays[key] = cks[0][key][:frames]
        elif key == "potentialEnergy":
            arrays[key] = sum(ck[key][:frames] for ck in cks)
        elif key == "temperature":
            arrays[key] = sum(ck[key][:frames] * d for ck, d in zip(cks, dof)) / dof.sum()
        else:
            arrays[key] = np.concatenate([ck[key][:frames] for ck in cks], axis=1)
    chunks = []
    for k, info in enumerate(cks[0]["chunks"]):
        same = [ck["chunks"][k] for ck in cks if len(ck["chunks"]) > k]
        merged = dict(info, wallSeconds=max(c["wallSeconds"] for c in same), ranks=same)
        blew = [f"rank {r}: {c['blewUp']}" for r, c in enumerate(same) if "blewUp" in c]
        if blew:
            merged["blewUp"] = "; ".join(blew)
        chunks.append(merged)
    merged_settings = dict(settings[0], replicas=int(replicas.sum()), rankReplicas=replicas.tolist(),
                           rankSeeds=[s["seed"] for s in settings])
    os.makedirs(target, exist_ok=True)
    writeJsonAtomically(os.path.join(target, "settings.json"), merged_settings)
    np.savez_compressed(os.path.join(target, "checkpoint.npz"),
                        stateXml=np.frombuffer(cks[0]["stateXml"].encode(), np.uint8),
                        stepCount=min(ck["stepCount"] for ck in cks), chunks=json.dumps(chunks), **arrays)
    return merged_settings


def validateRanks(ens: Ensemble, model: str, data: Optional[str], output: str, work: Optional[str], timeNs: float,
                  replicas: int, timestep: float, reportInterval: int, seed: int, fastPath=None,
                  maxWallSeconds: Optional[float] = None, platform: Optional[str] = None) -> Optional[dict]:
    """``openmmflash cg-validate`` over the ranks of ``ens``: rank k simulates its share of the replicas (seed
    ``ens.seed(seed)``) in its own resumable work folder ``<work>/rank<k>`` (``work`` default ``<output>/work``);
    once every part reached the target (or blew up) and ``data`` is given, rank 0 merges the parts and writes one
    validation.json (with ``worldSize``) and validation.png into ``output``. Returns the report on rank 0 when
    written, else None."""
    work = work or os.path.join(output, "work")
    checkParts(ens, os.path.join(work, PARTS_FILE), "cg-validate")
    mine = shareOrRefuse(ens, replicas, "replicas", "--replicas")
    part = os.path.join(work, f"rank{ens.rank}")
    status = runValidationChunk(part, model, timeNs, len(mine), timestep, reportInterval, ens.seed(seed), fastPath,
                                maxWallSeconds=maxWallSeconds, platform=platform, progress=ens.isMain)
    statuses = ens.gather(status)
    if not ens.isMain or not data or not all(s["complete"] or s["blewUp"] for s in statuses):
        if ens.isMain:
            print(f"{work}: parts of {ens.worldSize} ranks; " + ("run the same command again to continue" if data
                  else "give the reference data to write the report once every part is done"))
        return None
    net = loadModel(model)
    with tempfile.TemporaryDirectory(prefix="cgval-merged-") as tmp:
        topology, _, _ = nativeStructure(net, tmp)
        mergeValidationParts([os.path.join(work, f"rank{k}") for k in range(ens.worldSize)],
                             os.path.join(tmp, "merged"), topology.getNumAtoms())
        report = finalizeValidation(os.path.join(tmp, "merged"), data, output)
    report.update(worldSize=ens.worldSize, launcher=ens.launcher, work=os.path.abspath(work),
                  parts=[os.path.join(work, f"rank{k}") for k in range(ens.worldSize)])
    writeJsonAtomically(report["files"][0], report)
    return report
