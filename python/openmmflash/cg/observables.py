"""Structural observables of CG frames, for validation against the all-atom reference.

- CA-RMSD to the native structure (A, after optimal superposition),
- Q, the fraction of native CA contacts, Q = 1/N sum_(i,j) 1 / (1 + exp(beta (r_ij - lambda r0_ij))) over CA pairs
  with |i - j| >= 3 residues and r0_ij < 8 A in the native structure, beta = 5 1/A, lambda = 1.2
  (Best, Hummer & Eaton, PNAS 2013, with a CA-level tolerance),
- radius of gyration of the CA atoms (A),
- bond lengths (A) and angles (degrees) of the CG topology, and histogram overlaps of two samples.
"""

import numpy as np

from openmmflash.cg.structure import caIndices
from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.priors import enumerateTerms

CONTACT_BETA = 5.0      # 1/A
CONTACT_LAMBDA = 1.2
CONTACT_CUTOFF = 8.0    # A
CONTACT_SEPARATION = 3  # residues


def kabschRMSD(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """RMSD after optimal superposition of frames x (frames, n, 3) on ref (n, 3); same units as the input."""
    x = x - x.mean(axis=1, keepdims=True)
    ref = ref - ref.mean(axis=0)
    out = np.empty(x.shape[0])
    for k in range(x.shape[0]):
        h = x[k].T @ ref
        u, s, vt = np.linalg.svd(h)
        d = np.sign(np.linalg.det(u @ vt))
        s[-1] *= d
        e = (np.sum(x[k] ** 2) + np.sum(ref ** 2) - 2 * s.sum()) / x.shape[1]
        out[k] = np.sqrt(max(e, 0.0))
    return out


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


def stats(v: np.ndarray) -> dict:
    """mean, std, min, max of a sample."""
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def overlap(a: np.ndarray, b: np.ndarray, bins: int = 30) -> float:
    """Histogram overlap (0..1) of two samples on a common range."""
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    ha, _ = np.histogram(a, bins=bins, range=(lo, hi + 1e-9))
    hb, _ = np.histogram(b, bins=bins, range=(lo, hi + 1e-9))
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


def bondedTerms(model, topology):
    """(bonds (m, 2), angles (k, 3)) bead indices of a CG topology under the model's mapping."""
    bonds = CGMapping(model.metadata.get("mapping") or "5bead").bondedPairs(topology)
    angles = enumerateTerms(topology, bonds)["angles"]
    return np.array(bonds, dtype=int).reshape(-1, 2), np.array(angles, dtype=int).reshape(-1, 3)


def bondLengths(x: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Lengths (..., m) in A of positions x (..., n, 3) in nm."""
    return np.linalg.norm(x[..., bonds[:, 0], :] - x[..., bonds[:, 1], :], axis=-1) * 10.0


def bondAngles(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Angles (..., k) in degrees of positions x (..., n, 3)."""
    a = x[..., angles[:, 0], :] - x[..., angles[:, 1], :]
    b = x[..., angles[:, 2], :] - x[..., angles[:, 1], :]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def frameRecords(frames: np.ndarray, native: np.ndarray, topology, bonds, angles) -> dict:
    """Per-frame observables of CG frames (F, B, n, 3) nm, small enough to keep for a whole validation: caRmsd, Rg,
    Q (if the structure has native contacts), the largest bond (A) and angle (degrees) deviation from the native
    structure (F, B), and each replica's extreme bond lengths and angles (B, m) / (B, k)."""
    f, b, n, _ = frames.shape
    x = frames.astype(np.float64)
    obs = observables(x.reshape(f * b, n, 3), native, caIndices(topology))
    out = {k: v.reshape(f, b).astype(np.float32) for k, v in obs.items()}
    d, a = bondLengths(x, bonds), bondAngles(x, angles)
    out["bondDeviation"] = np.abs(d - bondLengths(native, bonds)).max(-1, initial=0.0).astype(np.float32)
    out["angleDeviation"] = np.abs(a - bondAngles(native, angles)).max(-1, initial=0.0).astype(np.float32)
    for key, v in (("bond", d), ("angle", a)):
        out[f"{key}Min"], out[f"{key}Max"] = v.min(0).astype(np.float32), v.max(0).astype(np.float32)
    return out
