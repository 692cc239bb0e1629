"""Validation of a CG model against its all-atom reference: stability and structural distributions.

A CG simulation (LangevinMiddleIntegrator, FlashSchNet TorchForce + priors, B replicas) is compared with the
CG-mapped all-atom reference frames on

- CA-RMSD to the native structure (A, after optimal superposition),
- Q, the fraction of native CA contacts, Q = 1/N sum_(i,j) 1 / (1 + exp(beta (r_ij - lambda r0_ij))) over CA pairs
  with |i - j| >= 3 residues and r0_ij < 8 A in the native structure, beta = 5 1/A, lambda = 1.2
  (Best, Hummer & Eaton, PNAS 2013, with a CA-level tolerance),
- radius of gyration of the CA atoms (A),
- stability: no NaN, and bonded distances inside the range seen in the reference (+-0.5 A).

Writes ``validation.json`` and ``validation.png`` (distributions side by side) into the output folder.
"""

import json
import os
from typing import Optional

import numpy as np

from openmmflash.demo import caIndices, kabschRMSD, simulateCG

CONTACT_BETA = 5.0      # 1/A
CONTACT_LAMBDA = 1.2
CONTACT_CUTOFF = 8.0    # A
CONTACT_SEPARATION = 3  # residues


def nativeContacts(native_ca: np.ndarray):
    """(pairs (m, 2), r0 (m,)) of native CA contacts; native_ca (n, 3) in A."""
    n = native_ca.shape[0]
    i, j = np.triu_indices(n, CONTACT_SEPARATION)
    r0 = np.linalg.norm(native_ca[i] - native_ca[j], axis=-1)
    keep = r0 < CONTACT_CUTOFF
    return np.stack([i[keep], j[keep]], 1), r0[keep]


def fractionNativeContacts(ca: np.ndarray, pairs: np.ndarray, r0: np.ndarray) -> np.ndarray:
    """Q (frames,) of CA positions (frames, n, 3) in A."""
    if len(pairs) == 0:
        raise ValueError("the native structure has no CA contacts to measure Q with")
    r = np.linalg.norm(ca[:, pairs[:, 0]] - ca[:, pairs[:, 1]], axis=-1)
    return (1.0 / (1.0 + np.exp(CONTACT_BETA * (r - CONTACT_LAMBDA * r0)))).mean(1)


def radiusOfGyration(x: np.ndarray) -> np.ndarray:
    """Rg (frames,) of positions (frames, n, 3) (equal weights)."""
    c = x - x.mean(axis=1, keepdims=True)
    return np.sqrt((c ** 2).sum(-1).mean(1))


def observables(frames_nm: np.ndarray, native_nm: np.ndarray, ca: np.ndarray) -> dict:
    """CA-RMSD, Q and Rg (frames,) of CG frames (frames, n, 3) nm."""
    x = frames_nm[:, ca] * 10.0
    ref = native_nm[ca] * 10.0
    pairs, r0 = nativeContacts(ref)
    out = {"caRmsd": kabschRMSD(x, ref), "Rg": radiusOfGyration(x)}
    if len(pairs):  # a peptide too short for contacts |i - j| >= 3 has no Q
        out["Q"] = fractionNativeContacts(x, pairs, r0)
    return out


def _stats(v: np.ndarray) -> dict:
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def overlap(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """Histogram overlap (0..1) of two samples on a common range."""
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    ha, _ = np.histogram(a, bins=bins, range=(lo, hi + 1e-9))
    hb, _ = np.histogram(b, bins=bins, range=(lo, hi + 1e-9))
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def _machine() -> dict:
    import platform as host

    import torch

    from openmmflash.stack import import_openmm

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": host.node(), "cpu": host.processor() or host.machine(), "gpu": gpu, "torch": torch.__version__,
            "openmm": import_openmm().__version__}


def validateModel(model, dataDir: str, output: str, timeNs: float = 1.0, replicas: int = 4, timestep: float = 2.0,
                  reportInterval: int = 500, platform: Optional[str] = None, seed: int = 1,
                  progress: bool = True, fastPath: bool = True) -> dict:
    """Simulate ``model`` (path, bundled name or FlashSchNet) and compare with the reference run in ``dataDir``.

    ``timeNs`` is the CG time per replica; ``fastPath`` as in ``openmmflash.demo.simulateCG``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from openmmflash.cg.mapping import CGMapping
    from openmmflash.cg.refdata import loadReferenceData
    from openmmflash.cg.training import checkMapping
    from openmmflash.schnet.modelfile import loadModel

    net = loadModel(model) if isinstance(model, str) else model
    data = loadReferenceData(dataDir)
    checkMapping(net, data["metadata"])
    os.makedirs(output, exist_ok=True)
    topology, native = data["cgTopology"], data["native"]
    steps = max(reportInterval, int(round(timeNs * 1e6 / timestep / reportInterval)) * reportInterval)
    result = simulateCG(net, topology, native, replicas, steps, reportInterval, timestep, platform=platform,
                        seed=seed, dcdPath=os.path.join(output, "validation.dcd"), progress=progress,
                        fastPath=fastPath)
    ca = caIndices(topology)
    frames = result["positions"]                       # (frames, B, n, 3) nm
    burn = frames.shape[0] // 10                       # drop the first 10 % of each replica
    cg_frames = frames[burn:].reshape(-1, frames.shape[2], 3).astype(np.float64)
    cg = observables(cg_frames, native, ca)
    ref = observables(data["positions"].astype(np.float64), native, ca)
    bonds = np.array(CGMapping(net.metadata.get("mapping") or "5bead").bondedPairs(topology))
    ref_d = np.linalg.norm(data["positions"][:, bonds[:, 0]] - data["positions"][:, bonds[:, 1]], axis=-1) * 10
    cg_d = np.linalg.norm(frames[..., bonds[:, 0], :] - frames[..., bonds[:, 1], :], axis=-1) * 10
    lo, hi = ref_d.min(0) - 0.5, ref_d.max(0) + 0.5
    out_of_range = float(np.mean(np.any((cg_d < lo) | (cg_d > hi), axis=-1)))
    per_replica = steps * timestep * 1e-6
    report = {"model": str(model) if isinstance(model, str) else "in-memory", "referenceData": os.path.abspath(dataDir),
              "cgTime": f"{replicas} replicas x {per_replica:.4g} ns = {per_replica * replicas:.4g} ns aggregate; "
                        f"longest single trajectory {per_replica:.4g} ns",
              "cgTimePerReplica_ns": per_replica, "replicas": replicas,
              "cgTimeTotal_ns": per_replica * replicas, "longestSingleTrajectory_ns": per_replica,
              "timestep_fs": timestep, "steps": steps, "reportInterval": reportInterval,
              "platform": result["platform"], "forceOptions": result["forceOptions"],
              "machine": _machine(), "wallSeconds": result["wallSeconds"],
              "aggregateNsPerDay": per_replica * replicas / max(result["wallSeconds"], 1e-9) * 86400.0,
              "referenceTime_ns": float(data["time"][-1] * 1e-3), "referenceFrames": int(data["positions"].shape[0]),
              "stable": bool(np.all(np.isfinite(frames)) and out_of_range == 0.0),
              "framesWithBondOutOfRange": out_of_range,
              "meanTemperature_K": float(result["temperature"].mean()),
              "Q_definition": {"beta_per_A": CONTACT_BETA, "lambda": CONTACT_LAMBDA, "cutoff_A": CONTACT_CUTOFF,
                               "minSeparation": CONTACT_SEPARATION},
              "cg": {k: _stats(v) for k, v in cg.items()}, "reference": {k: _stats(v) for k, v in ref.items()},
              "histogramOverlap": {k: overlap(cg[k], ref[k]) for k in cg}}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    labels = {"caRmsd": "CA-RMSD to native (A)", "Q": "fraction of native contacts Q", "Rg": "CA radius of gyration (A)"}
    for ax, key in zip(axes, ("caRmsd", "Q", "Rg")):
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
    axes[0].legend(fontsize=8)
    fig.suptitle(f"CG {report['cgTimeTotal_ns']:.3g} ns ({replicas} x {report['cgTimePerReplica_ns']:.3g} ns) vs "
                 f"all-atom {report['referenceTime_ns']:.3g} ns")
    fig.tight_layout()
    png = os.path.join(output, "validation.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    report["files"] = [os.path.join(output, "validation.json"), png]
    with open(os.path.join(output, "validation.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
