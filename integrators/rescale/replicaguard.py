"""The FlashMD guard per replica: B identical, contiguous, non-interacting replicas of n particles each, every
replica's learned stride checked and rescaled against its own energy (guard.py's checks and rescale on its slice).

For replica b (H_b = V_b(q_b) + K_b before the step, V_b' = V_b(q_b')): rejected when its q', p' are not finite, one
of its particles moved more than maxDisplacement, H_b - V_b' <= 0 or alpha_b = sqrt((H_b - V_b') / K_b') is outside
[1/maxRescale, maxRescale]; else its p' <- alpha_b p' (or its share rescale). For B = 1 this is guard.py's guard.
Units: nm, nm/ps, amu, kJ/mol.
"""

from typing import Callable, List, Optional, Tuple

import numpy as np

from openmmflash.integrators.rescale.guard import checkPrediction, energyRescale


def replicaGuard(q: np.ndarray, v: np.ndarray, q1: np.ndarray, v1: np.ndarray, masses: np.ndarray, replicas: int,
                 V: Optional[np.ndarray], energies: Optional[Callable[[np.ndarray], np.ndarray]],
                 maxDisplacement: float, maxRescale: float, share: Optional[Callable] = None
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Optional[str]], np.ndarray]:
    """Check and rescale the learned step of each replica.

    q, v : [B n, 3] before the step (v after any thermostat half step); q1, v1 : [B n, 3] predicted; masses [B n].
    V : [B] V_b(q) kJ/mol and ``energies`` (positions [B n, 3] -> [B] kJ/mol), or both None (no energy rescale).
    share : None or (b, sl) -> share function of guard.energyRescale for replica b (its particles ``sl``).
    Returns (accepted [B] bool, v' [B n, 3] with accepted replicas rescaled, V_b(q') [B] (nan where not evaluated),
    reasons [B] (None where accepted), alpha [B] (nan where not evaluated)). Replicas rejected before the energy are
    evaluated at their old positions (never at non-finite ones)."""
    B = int(replicas)
    n = q.shape[0] // B
    slices = [slice(b * n, (b + 1) * n) for b in range(B)]
    reasons = [checkPrediction(q[sl], q1[sl], v1[sl], maxDisplacement) for sl in slices]
    out = np.array(v1, dtype=np.float64, copy=True)
    V1 = np.full(B, np.nan)
    alpha = np.full(B, np.nan)
    if energies is not None:
        ok = np.repeat(np.array([r is None for r in reasons]), n)[:, None]
        V1 = np.asarray(energies(np.where(ok, q1, q)), dtype=np.float64)
        for b, sl in enumerate(slices):
            if reasons[b] is not None:
                V1[b] = np.nan
                continue
            reason, vb, alpha[b] = energyRescale(v[sl], v1[sl], masses[sl], float(V[b]), float(V1[b]), maxRescale,
                                                 None if share is None else share(b, sl))
            reasons[b] = reason
            if reason is None:
                out[sl] = vb
    accepted = np.array([r is None for r in reasons])
    return accepted, out, V1, reasons, alpha
