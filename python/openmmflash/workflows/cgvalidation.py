"""Validation of a CG model against its all-atom reference: stability and structural distributions.

A CG simulation (LangevinMiddleIntegrator, FlashSchNet TorchForce + priors, B replicas) is compared with the
CG-mapped all-atom reference frames on CA-RMSD to native, Q (fraction of native CA contacts) and CA radius of
gyration (definitions in ``openmmflash.cg.observables``), and on stability: no NaN, and bonded distances inside the
range seen in the reference (+-0.5 A); bond angles are checked against the reference range +-10 degrees and
reported.

The simulation runs in chunks that need no reference data (``runValidationChunk``: a GPU command of limited wall
time saves its state and the per-frame observables into a small work folder, and the next command continues it);
``finalizeValidation`` compares the work folder with the reference data and writes ``validation.json`` and
``validation.png`` (distributions side by side, stability over time). ``validateModel`` does both in one call.
"""

import hashlib
import json
import os
import tempfile
import time
from typing import Optional

import numpy as np

from openmmflash.cg.observables import (CONTACT_BETA, CONTACT_CUTOFF, CONTACT_LAMBDA, CONTACT_SEPARATION, bondAngles,
                                        bondLengths, bondedTerms, frameRecords, observables, overlap, stats)
from openmmflash.cg.refdata import writeJsonAtomically
from openmmflash.cg.structure import caIndices, nativeStructure
from openmmflash.workflows.cgsimulation import simulateCG
from openmmflash.cg.refdata import loadReferenceData
from openmmflash.cg.training import checkMapping
from openmmflash.schnet.model import loadModel
from openmmflash.stack import import_openmm
from openmmflash.units import valueIn

WORK_FORMAT = "openmmflash.cgvalidation"
BOND_TOLERANCE = 0.5    # A beyond the reference range
ANGLE_TOLERANCE = 10.0  # degrees beyond the reference range
BURN_IN = 0.1           # fraction of each replica's frames left out of the distributions

def _machine() -> dict:
    import platform as host

    import torch


    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": host.node(), "cpu": host.processor() or host.machine(), "gpu": gpu, "torch": torch.__version__,
            "openmm": import_openmm().__version__}


def modelDigest(net) -> str:
    """sha256 of a model's config and weights (identifies the model a work folder was started with)."""
    h = hashlib.sha256(json.dumps(net.config.toDict(), sort_keys=True, default=str).encode())
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def totalSteps(timeNs: float, timestep: float, reportInterval: int) -> int:
    """MD steps per replica for ``timeNs`` at ``timestep`` fs, a whole number of report intervals."""
    return max(reportInterval, int(round(timeNs * 1e6 / timestep / reportInterval)) * reportInterval)


def _loadCheckpoint(work: str) -> Optional[dict]:
    path = os.path.join(work, "checkpoint.npz")
    if not os.path.isfile(path):
        return None
    with np.load(path) as z:
        ck = {k: z[k] for k in z.files}
    ck["stateXml"] = ck["stateXml"].tobytes().decode()
    ck["chunks"] = json.loads(str(ck["chunks"]))
    ck["stepCount"] = int(ck["stepCount"])
    return ck


def openWork(work: str, model=None, timeNs: Optional[float] = None, replicas: Optional[int] = None,
             timestep: Optional[float] = None, reportInterval: Optional[int] = None, seed: Optional[int] = None,
             fastPath=None):
    """(settings, model) of a validation work folder: the stored settings of an existing one (arguments that are not
    None must match them, else ValueError), or new ones written into a new or empty folder. ``timestep``: fs or an
    OpenMM Quantity."""
    if timestep is not None:
        timestep = valueIn(timestep, import_openmm().unit.femtosecond, "timestep")
    given = {"timeNsPerReplica": timeNs, "replicas": replicas, "timestep_fs": timestep,
             "reportInterval": reportInterval, "seed": seed, "fastPath": fastPath}
    if os.path.isfile(os.path.join(work, "settings.json")):
        settings = _storedSettings(work)
        if settings.get("format") != WORK_FORMAT:
            raise ValueError(f"{work!r} is not a CG validation work folder (settings.json of another format)")
        if model is None:
            model = settings["model"]
        net = loadModel(model) if isinstance(model, str) else model
        given["model"] = model if isinstance(model, str) else None
        given["modelDigest"] = modelDigest(net)
        diff = [f"{k}: folder {settings.get(k)!r}, asked {v!r}" for k, v in given.items()
                if v is not None and settings.get(k) != v and not (k == "model" and settings.get("modelDigest")
                                                                    == given["modelDigest"])]
        if diff:
            raise ValueError(f"the work folder {work!r} was started with other settings ({'; '.join(diff)}); "
                             "continue it with its own settings (leave those options out) or use a new folder")
        return settings, net
    if model is None or timeNs is None or replicas is None:
        raise ValueError(f"{work!r} holds no validation yet: give the model, the time per replica and the replicas "
                         "to start one")
    if replicas < 1 or timeNs <= 0:
        raise ValueError(f"replicas must be >= 1 and the time per replica > 0 (got {replicas}, {timeNs})")
    net = loadModel(model) if isinstance(model, str) else model
    settings = {"format": WORK_FORMAT, "formatVersion": 1, "model": model if isinstance(model, str) else "in-memory",
                "modelDigest": modelDigest(net), "timeNsPerReplica": float(timeNs), "replicas": int(replicas),
                "timestep_fs": float(timestep or 2.0), "reportInterval": int(reportInterval or 500),
                "seed": int(1 if seed is None else seed), "fastPath": True if fastPath is None else fastPath}
    settings["totalSteps"] = totalSteps(timeNs, settings["timestep_fs"], settings["reportInterval"])
    os.makedirs(work, exist_ok=True)
    writeJsonAtomically(os.path.join(work, "settings.json"), settings)
    return settings, net


def runValidationChunk(work: str, model=None, timeNs: Optional[float] = None, replicas: Optional[int] = None,
                       timestep: Optional[float] = None, reportInterval: Optional[int] = None,
                       seed: Optional[int] = None, fastPath=None, maxWallSeconds: Optional[float] = None,
                       platform: Optional[str] = None, progress: bool = True, dcdPath: Optional[str] = None) -> dict:
    """Simulate one chunk of a CG validation into the work folder ``work``; needs no reference data.

    A new (or empty) folder needs ``model`` (path, bundled name or FlashSchNet), ``timeNs`` (CG time per replica)
    and ``replicas``; an existing one continues from its saved OpenMM State (positions, velocities, step count)
    with the integrator reseeded for each chunk (seed + 100003 k), and refuses settings that differ from its own.
    The chunk ends after ``maxWallSeconds`` since the call (at a frame boundary, at least one frame) or at the
    target. The folder holds settings.json, checkpoint.npz (State XML + per-frame observables, replaced atomically)
    and status.json. Returns the status dict (stepsDone, totalSteps, nsDonePerReplica, complete, chunks, ...)."""
    from tqdm import tqdm

    t_start = time.time()
    settings, net = openWork(work, model, timeNs, replicas, timestep, reportInterval, seed, fastPath)
    ck = _loadCheckpoint(work)
    done = ck["stepCount"] if ck else 0
    total, dt, interval, b = (settings["totalSteps"], settings["timestep_fs"], settings["reportInterval"],
                              settings["replicas"])
    status = _status(settings, ck)
    if status["blewUp"] or done >= total:
        print(f"{work}: {'the simulation blew up: ' + status['blewUp'] if status['blewUp'] else 'target reached'} "
              f"({status['summary']}); nothing to simulate, finalize it")
        return status
    with tempfile.TemporaryDirectory(prefix="cgval-") as tmp:  # the work folder keeps few files (GPU transfers)
        topology, native, _ = nativeStructure(net, tmp)
    bonds, angles = bondedTerms(net, topology)
    k = len(ck["chunks"]) if ck else 0
    chunk_seed = settings["seed"] + 100003 * k
    ns = dt * 1e-6
    with tqdm(total=total * ns, initial=done * ns, unit="ns", disable=not progress,
              desc=f"CG validation chunk {k + 1} ({b} replicas)",
              bar_format="{l_bar}{bar}| {n:.4f}/{total:.4f} ns per replica [{elapsed}<{remaining}]") as bar:
        result = simulateCG(net, topology, native, b, total - done, interval, dt, platform=platform, seed=chunk_seed,
                            dcdPath=dcdPath, progress=False, fastPath=settings["fastPath"],
                            initialState=ck["stateXml"] if ck else None,
                            stopAt=None if maxWallSeconds is None else t_start + maxWallSeconds,
                            onReport=lambda steps: bar.update(steps * ns), stopOnBlowUp=True)
    new = frameRecords(result["positions"], native, topology, bonds, angles)
    new.update(time=result["time"], potentialEnergy=result["potentialEnergy"], temperature=result["temperature"])
    arrays = {}
    for key, value in new.items():
        old = ck.get(key) if ck else None
        if key in ("bondMin", "angleMin"):
            value = value if old is None else np.minimum(old, value) if len(value) else old
        elif key in ("bondMax", "angleMax"):
            value = value if old is None else np.maximum(old, value) if len(value) else old
        elif old is not None:
            value = np.concatenate([old, value])
        arrays[key] = value
    info = {"chunk": k + 1, "seed": chunk_seed, "firstStep": done, "steps": result["steps"],
            "wallSeconds": result["wallSeconds"], "callSeconds": time.time() - t_start,
            "platform": result["platform"], "forceOptions": result["forceOptions"], "machine": _machine(),
            "nsPerDayAggregate": result["steps"] * ns * b / max(result["wallSeconds"], 1e-9) * 86400.0}
    steady = result["frameSeconds"][1:]  # the first frame holds compilation and CUDA-graph capture
    if len(steady):
        info["msPerStepSteady"] = float(np.median(steady)) / interval * 1e3
        info["nsPerDayAggregateSteady"] = interval * ns * b / float(np.median(steady)) * 86400.0
    if result["blewUp"]:
        info["blewUp"] = result["blewUp"]
    chunks = (ck["chunks"] if ck else []) + [info]
    state = result["state"] or (ck["stateXml"] if ck else "")
    step_count = result["stepCount"] if result["state"] else done + result["steps"]
    tmp = os.path.join(work, f"checkpoint.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, stateXml=np.frombuffer(state.encode(), np.uint8), stepCount=step_count,
                        chunks=json.dumps(chunks), **arrays)
    os.replace(tmp, os.path.join(work, "checkpoint.npz"))  # the commit point of the chunk
    status = _status(settings, _loadCheckpoint(work))
    writeJsonAtomically(os.path.join(work, "status.json"), status)
    if status["blewUp"]:
        print(f"{work}: {status['blewUp']}; finalize to report it")
    elif status["complete"]:
        print(f"{work}: target reached ({status['summary']}); finalize it with the reference data")
    else:
        print(f"{work}: {status['summary']}; run again with the same work folder to continue")
    return status


def _status(settings: dict, ck: Optional[dict]) -> dict:
    done = ck["stepCount"] if ck else 0
    b, dt, total = settings["replicas"], settings["timestep_fs"], settings["totalSteps"]
    blew = next((c["blewUp"] for c in (ck["chunks"] if ck else []) if "blewUp" in c), None)
    ns = done * dt * 1e-6
    return {"model": settings["model"], "replicas": b, "stepsDone": done, "totalSteps": total,
            "nsDonePerReplica": ns, "targetNsPerReplica": total * dt * 1e-6, "nsDoneAggregate": ns * b,
            "targetNsAggregate": total * dt * 1e-6 * b, "frames": int(len(ck["time"])) if ck else 0,
            "complete": done >= total, "blewUp": blew, "chunks": ck["chunks"] if ck else [],
            "summary": f"{ns:.4g} / {total * dt * 1e-6:.4g} ns per replica, {ns * b:.4g} / "
                       f"{total * dt * 1e-6 * b:.4g} ns aggregate over {b} replicas"}


def finalizeValidation(work: str, dataDir: str, output: Optional[str] = None, model=None) -> dict:
    """Compare a work folder of ``runValidationChunk`` with the reference data in ``dataDir``; writes
    ``validation.json`` and ``validation.png`` into ``output`` (default: the work folder) and returns the report.
    ``model`` is needed only for a work folder started with an in-memory model."""
    import matplotlib

    matplotlib.use("Agg")

    if model is None and _storedSettings(work).get("model") == "in-memory":
        raise ValueError(f"{work!r} was started with an in-memory model: pass the same model to finalize it")
    settings, net = openWork(work, model)
    ck = _loadCheckpoint(work)
    if ck is None or len(ck["time"]) == 0:
        raise ValueError(f"{work!r} holds no simulated frames yet; run the simulation part first")
    output = output or work
    data = loadReferenceData(dataDir)
    checkMapping(net, data["metadata"])
    with tempfile.TemporaryDirectory(prefix="cgval-") as tmp:
        topology, native, _ = nativeStructure(net, tmp)
    if data["native"].shape != native.shape or not np.allclose(data["native"], native, atol=2e-3):
        raise ValueError(f"the reference data in {dataDir!r} are not of the model's native structure "
                         f"({data['native'].shape[0]} vs {native.shape[0]} beads or other coordinates); give the "
                         "reference-data directory the model was trained on")
    bonds, angles = bondedTerms(net, topology)
    ref_frames = data["positions"].astype(np.float64)
    ref = observables(ref_frames, native, caIndices(topology))
    ref_d, ref_a = bondLengths(ref_frames, bonds), bondAngles(ref_frames, angles)
    status = _status(settings, ck)
    b, f = settings["replicas"], len(ck["time"])
    burn = int(f * BURN_IN)
    cg = {k: ck[k][burn:].reshape(-1).astype(np.float64) for k in ("caRmsd", "Rg", "Q") if k in ck}
    lo_d, hi_d = ref_d.min(0) - BOND_TOLERANCE, ref_d.max(0) + BOND_TOLERANCE
    lo_a, hi_a = ref_a.min(0) - ANGLE_TOLERANCE, ref_a.max(0) + ANGLE_TOLERANCE
    bond_out = (ck["bondMin"] < lo_d) | (ck["bondMax"] > hi_d)        # (B, m): ever out of range
    angle_out = (ck["angleMin"] < lo_a) | (ck["angleMax"] > hi_a)
    bond_exc = float(max(0.0, (lo_d - ck["bondMin"]).max(initial=0.0), (ck["bondMax"] - hi_d).max(initial=0.0)))
    angle_exc = float(max(0.0, (lo_a - ck["angleMin"]).max(initial=0.0), (ck["angleMax"] - hi_a).max(initial=0.0)))
    atoms = list(topology.atoms())

    def named(terms, out):  # the first 20 terms that left their range, as RES<id>:<bead> tuples
        return [" ".join(f"{atoms[i].residue.name}{atoms[i].residue.id}:{atoms[i].name}" for i in t)
                for t in terms[out.any(0)][:20]]

    per_replica = status["nsDonePerReplica"]
    md_wall = sum(c["wallSeconds"] for c in ck["chunks"])
    finite = all(np.all(np.isfinite(ck[k])) for k in ("caRmsd", "Rg", "bondMin", "bondMax"))
    report = {"model": settings["model"], "modelDigest": settings["modelDigest"],
              "referenceData": os.path.abspath(dataDir),
              "cgTime": f"{b} replicas x {per_replica:.4g} ns = {per_replica * b:.4g} ns aggregate; "
                        f"longest single trajectory {per_replica:.4g} ns",
              "cgTimePerReplica_ns": per_replica, "replicas": b, "cgTimeTotal_ns": per_replica * b,
              "longestSingleTrajectory_ns": per_replica, "complete": status["complete"],
              "targetTimePerReplica_ns": status["targetNsPerReplica"], "timestep_fs": settings["timestep_fs"],
              "steps": status["stepsDone"], "reportInterval": settings["reportInterval"], "frames": f,
              "burnInFrames": burn, "seed": settings["seed"], "fastPath": settings["fastPath"],
              "chunks": ck["chunks"], "platform": ck["chunks"][-1]["platform"],
              "forceOptions": ck["chunks"][-1]["forceOptions"], "machine": ck["chunks"][-1]["machine"],
              "finalizedOn": _machine(), "wallSeconds": md_wall,
              "aggregateNsPerDay": per_replica * b / max(md_wall, 1e-9) * 86400.0,
              "referenceTime_ns": float(data["time"][-1] * 1e-3), "referenceFrames": int(ref_frames.shape[0]),
              "stable": bool(finite and status["blewUp"] is None and not bond_out.any()),
              "blewUp": status["blewUp"],
              "bondTolerance_A": BOND_TOLERANCE, "replicasWithBondOutOfRange": float(bond_out.any(1).mean()),
              "bondsOutOfRange": int(bond_out.any(0).sum()), "bonds": int(len(bonds)),
              "maxBondExcursion_A": bond_exc, "bondsOutOfRangeList": named(bonds, bond_out),
              "angleTolerance_deg": ANGLE_TOLERANCE, "anglesInRange": bool(not angle_out.any()),
              "replicasWithAngleOutOfRange": float(angle_out.any(1).mean()),
              "anglesOutOfRange": int(angle_out.any(0).sum()), "angles": int(len(angles)),
              "maxAngleExcursion_deg": angle_exc, "anglesOutOfRangeList": named(angles, angle_out),
              "maxBondDeviationFromNative_A": float(ck["bondDeviation"].max()),
              "maxAngleDeviationFromNative_deg": float(ck["angleDeviation"].max()),
              "meanTemperature_K": float(ck["temperature"].mean()),
              "meanTemperatureSecondHalf_K": float(ck["temperature"][f // 2:].mean()),
              "Q_definition": {"beta_per_A": CONTACT_BETA, "lambda": CONTACT_LAMBDA, "cutoff_A": CONTACT_CUTOFF,
                               "minSeparation": CONTACT_SEPARATION},
              "cg": {k: stats(v) for k, v in cg.items()}, "reference": {k: stats(v) for k, v in ref.items()},
              "histogramOverlap": {k: overlap(cg[k], ref[k]) for k in cg},
              "cgFinalMean": {k: float(ck[k][-1].mean()) for k in cg}}
    os.makedirs(output, exist_ok=True)
    png = os.path.join(output, "validation.png")
    _plot(report, cg, ref, ck, png)
    report["files"] = [os.path.join(output, "validation.json"), png]
    writeJsonAtomically(report["files"][0], report)
    return report


def _storedSettings(work: str) -> dict:
    path = os.path.join(work, "settings.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{work!r} is not a CG validation work folder (no settings.json); start one with "
                                "runValidationChunk / `cg_gpu_validation.py --work`")
    with open(path) as f:
        return json.load(f)


def _plot(report: dict, cg: dict, ref: dict, ck: dict, png: str) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    labels = {"caRmsd": "CA-RMSD to native (A)", "Q": "fraction of native contacts Q", "Rg": "CA radius of gyration (A)"}
    for ax, key in zip(axes[0], ("caRmsd", "Q", "Rg")):
        if key not in cg:
            ax.set_axis_off()
            ax.set_title(f"no native contacts: no {key}", fontsize=9)
            continue
        lo_, hi_ = min(cg[key].min(), ref[key].min()), max(cg[key].max(), ref[key].max())
        bins = np.linspace(lo_, hi_ + 1e-9, 40)
        ax.hist(ref[key], bins=bins, density=True, alpha=0.55, label="all-atom reference")
        ax.hist(cg[key], bins=bins, density=True, alpha=0.55, label="FlashSchNet CG")
        ax.set_xlabel(labels[key])
        ax.set_title(f"overlap {report['histogramOverlap'][key]:.2f}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    t = ck["time"] * 1e-3  # ns
    for ax, key, label in ((axes[1, 0], "caRmsd", "CA-RMSD to native (A)"),
                           (axes[1, 1], "bondDeviation", "largest bond deviation from native (A)")):
        v = ck[key]
        ax.fill_between(t, v.min(1), v.max(1), alpha=0.3, label="replica range")
        ax.plot(t, v.mean(1), lw=1, label="replica mean")
        ax.set_xlabel("time per replica (ns)")
        ax.set_ylabel(label)
    axes[1, 0].legend(fontsize=8)
    axes[1, 2].plot(t, ck["temperature"], lw=1)
    axes[1, 2].set_xlabel("time per replica (ns)")
    axes[1, 2].set_ylabel("temperature, all replicas (K)")
    axes[1, 2].set_title(f"stable {report['stable']}, bonds out of range {report['bondsOutOfRange']}, "
                         f"angles out of range {report['anglesOutOfRange']}", fontsize=8)
    fig.suptitle(f"CG {report['cgTimeTotal_ns']:.3g} ns ({report['replicas']} x {report['cgTimePerReplica_ns']:.3g} "
                 f"ns) vs all-atom {report['referenceTime_ns']:.3g} ns")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def validateModel(model, dataDir: str, output: str, timeNs: float = 1.0, replicas: int = 4, timestep: float = 2.0,
                  reportInterval: int = 500, platform: Optional[str] = None, seed: int = 1,
                  progress: bool = True, fastPath: bool = True) -> dict:
    """Simulate ``model`` (path, bundled name or FlashSchNet) and compare with the reference run in ``dataDir``
    in one call (``runValidationChunk`` without a time limit, then ``finalizeValidation``); also writes the
    trajectory as ``validation.dcd``. ``timeNs`` is the CG time per replica; ``timestep`` is in fs or an OpenMM
    Quantity; ``fastPath`` as in ``openmmflash.workflows.cgsimulation.simulateCG``."""
    os.makedirs(output, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cgval-") as work:
        runValidationChunk(work, model, timeNs, replicas, timestep, reportInterval, seed, fastPath,
                           platform=platform, progress=progress, dcdPath=os.path.join(output, "validation.dcd"))
        return finalizeValidation(work, dataDir, output, model=None if isinstance(model, str) else model)
