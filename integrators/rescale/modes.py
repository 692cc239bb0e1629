"""Molecular modes of the FlashMD integrators: velocities split per molecule into translation, rotation and
vibration, the energy rescale that keeps each mode's share of the kinetic energy, and per-mode temperatures.

For a molecule with masses m_i, positions r_i about its centre of mass and velocities v_i (centre-of-mass velocity
v_c, u_i = v_i - v_c): angular momentum L = sum m_i r_i x u_i, inertia I = sum m_i (|r_i|^2 1 - r_i r_i^T),
omega = I^+ L (pseudo-inverse: linear molecules and single atoms), rotation w_i = omega x r_i, vibration
u_i - w_i. With the System's centre-of-mass velocity V, translation t_i = v_c - V. The three parts are orthogonal in
the mass-weighted inner product and each carries zero total momentum, so K = M |V|^2 / 2 + K_t + K_r + K_v exactly
and scaling the parts separately keeps the total momentum.

Why: the shipped water model moves kinetic energy from vibrations into rotations within a stride (334 K
rotational, 270 K vibrational at 300 K with per-species rescaling; examples/benchmarks/flashmd_water_pressure.py);
keeping each mode's share leaves inter-mode exchange to the thermostat. Units: nm, nm/ps, amu, kJ/mol, K.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from openmmflash.integrators.rescale.species import KB

MODES = ("translation", "rotation", "vibration")


def moleculeGroups(molecules: Sequence[Sequence[int]]) -> List[np.ndarray]:
    """Particle indices grouped by molecule size: a list of int arrays [M_k, k] (one per size k present)."""
    by_size: Dict[int, list] = {}
    for mol in molecules:
        by_size.setdefault(len(mol), []).append(sorted(int(i) for i in mol))
    return [np.asarray(v, dtype=np.int64) for _, v in sorted(by_size.items())]


def splitModes(q: np.ndarray, v: np.ndarray, masses: np.ndarray, groups: List[np.ndarray],
               box: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(V [3], translation [N, 3], rotation [N, 3], vibration [N, 3]) with v = V + t + w + vibration.

    q, v [N, 3]; masses [N]; groups from :func:`moleculeGroups`; box [3, 3] (rectangular: molecules split by the
    periodic boundary are made whole by the minimum image relative to their first atom) or None."""
    m_all = masses[:, None]
    V = (m_all * v).sum(0) / masses.sum()
    t, w = np.zeros_like(v), np.zeros_like(v)
    for idx in groups:
        m = masses[idx][..., None]                      # [M, k, 1]
        x = q[idx]
        d = x - x[:, :1]
        if box is not None:
            edge = np.diag(box)
            d -= edge * np.round(d / edge)
        M = m.sum(1)                                    # [M, 1]
        r = d - (m * d).sum(1, keepdims=True) / M[:, None]
        vc = (m * v[idx]).sum(1) / M                    # [M, 3]
        u = v[idx] - vc[:, None]
        L = (m * np.cross(r, u)).sum(1)
        r2 = (r * r).sum(-1)[..., None, None]
        inertia = (m[..., None] * (r2 * np.eye(3) - r[..., :, None] * r[..., None, :])).sum(1)
        omega = np.einsum("mij,mj->mi", np.linalg.pinv(inertia, hermitian=True), L)
        t[idx] = (vc - V)[:, None]
        w[idx] = np.cross(omega[:, None], r)
    return V, t, w, v - V - t - w


def modeKinetic(parts, masses: np.ndarray) -> np.ndarray:
    """Kinetic energies [3] (kJ/mol) of the (translation, rotation, vibration) velocity parts."""
    m = masses[:, None]
    return np.array([0.5 * float((m * p * p).sum()) for p in parts])


def modeDegreesOfFreedom(groups: List[np.ndarray]) -> np.ndarray:
    """Degrees of freedom [3] of translation (3 per molecule, less the System's 3), rotation (0 / 2 / 3 for atoms,
    linear and other molecules; every molecule of >= 3 atoms counted as non-linear) and vibration."""
    mols = sum(len(g) for g in groups)
    rot = sum(len(g) * (0 if g.shape[1] == 1 else 2 if g.shape[1] == 2 else 3) for g in groups)
    total = sum(g.size for g in groups) * 3
    return np.array([3 * mols - 3, rot, total - 3 * mols - rot], dtype=float)


def modeTemperatures(q, v, masses, groups, box=None) -> Dict[str, float]:
    """Kinetic temperature of translation, rotation and vibration, K (equipartition check)."""
    k = modeKinetic(splitModes(q, v, masses, groups, box)[1:], masses)
    dof = modeDegreesOfFreedom(groups)
    return {name: float(2 * k[i] / (dof[i] * KB)) if dof[i] > 0 else float("nan") for i, name in enumerate(MODES)}


def modeShareRescale(q: np.ndarray, v: np.ndarray, q1: np.ndarray, v1: np.ndarray, masses: np.ndarray,
                     groups: List[np.ndarray], kinetic: float, maxRescale: float, box=None):
    """Velocities [N, 3] after the learned step (q1, v1) with total kinetic energy ``kinetic`` kJ/mol, each mode
    getting the share of the internal kinetic energy it had before the step (q, v); the System's centre-of-mass
    motion is kept as predicted. Returns (velocities, None) or (v1, reason) when a factor is outside
    [1/maxRescale, maxRescale]."""
    k0 = modeKinetic(splitModes(q, v, masses, groups, box)[1:], masses)
    V1, *parts = splitModes(q1, v1, masses, groups, box)
    k1 = modeKinetic(parts, masses)
    k_int = kinetic - 0.5 * float(masses.sum()) * float((V1 ** 2).sum())
    if not (k_int > 0 and k0.sum() > 0):
        return v1, f"modes: no internal kinetic energy left ({k_int:.4g} kJ/mol)"
    out = np.broadcast_to(V1, v1.shape).copy()
    for i, name in enumerate(MODES):
        if k0[i] == 0:
            continue
        if k1[i] <= 0:
            return v1, f"modes: no predicted {name} kinetic energy"
        a = math.sqrt(k_int * k0[i] / k0.sum() / k1[i])
        if not (1.0 / maxRescale <= a <= maxRescale):
            return v1, f"modes: {name} rescale factor {a:.4g} outside [{1 / maxRescale:.3g}, {maxRescale:.3g}]"
        out += a * parts[i]
    return out, None
