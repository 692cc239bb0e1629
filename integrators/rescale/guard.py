"""The FlashMD guard: checks of one learned step and its energy rescale, as functions of numpy arrays.

Per stride (H = V(q) + K(p) before the step, V' = V(q') from the System):
    reject when q' or p' is not finite, or some particle moved more than maxDisplacement;
    alpha = sqrt((H - V') / K');  reject when V' is not finite, H - V' <= 0 or alpha outside
    [1/maxRescale, maxRescale];  else p' <- alpha p' (or a share rescale: per species, species.py, or per
    molecular mode, modes.py).
A rejected stride is advanced by ordinary substeps instead (flashmdintegrator.py). Units: nm, nm/ps, amu, kJ/mol.
"""

import math
from typing import Callable, Optional, Tuple

import numpy as np

REJECTION_KINDS = ("nonFinite", "displacement", "energyAbove", "rescaleLow", "rescaleHigh", "species", "modes")


def displacementReason(disp: float, maxDisplacement: float) -> str:
    return f"displacement {disp:.3g} nm > maxDisplacement {maxDisplacement:.3g} nm"


def energyAboveReason(E: float) -> str:
    """E = H - V' <= 0, kJ/mol."""
    return f"H - V' = {E:.4g} kJ/mol <= 0"


def rescaleReason(alpha: float, maxRescale: float) -> str:
    return f"rescale factor {alpha:.4g} outside [{1 / maxRescale:.3g}, {maxRescale:.3g}]"


def checkPrediction(q: np.ndarray, q1: np.ndarray, v1: np.ndarray, maxDisplacement: float) -> Optional[str]:
    """Reason to reject the prediction (q' [N, 3] nm, v' [N, 3] nm/ps) from q before any energy is computed, or
    None."""
    if not (np.isfinite(q1).all() and np.isfinite(v1).all()):
        return "non-finite prediction"
    disp = np.sqrt(((q1 - q) ** 2).sum(-1)).max()
    if disp > maxDisplacement:
        return displacementReason(disp, maxDisplacement)
    return None


def energyRescale(v: np.ndarray, v1: np.ndarray, masses: np.ndarray, V: float, V1: float, maxRescale: float,
                  share: Optional[Callable] = None) -> Tuple[Optional[str], np.ndarray, float]:
    """(reason to reject or None, rescaled v' [N, 3], alpha): the momenta after the step rescaled so that
    V' + K' equals V + K (v the velocities before the step, masses [N] amu). With ``share(v, v1, kinetic) ->
    (velocities, reason)`` the kinetic energy H - V' is shared as ``share`` decides instead of by one factor
    (species.speciesShareRescale, modes.modeShareRescale); alpha must be within bounds either way."""
    m = masses[:, None]
    K = 0.5 * float((m * v * v).sum())
    K1 = 0.5 * float((m * v1 * v1).sum())
    H = V + K
    if not math.isfinite(V1) or not K1 > 0:
        return f"non-finite energy {V1}", v1, math.nan
    if H - V1 <= 0:
        return energyAboveReason(H - V1), v1, math.nan
    alpha = math.sqrt((H - V1) / K1)
    if not (1.0 / maxRescale <= alpha <= maxRescale):
        return rescaleReason(alpha, maxRescale), v1, alpha
    if share is None:
        return None, v1 * alpha, alpha
    shared, reason = share(v, v1, H - V1)
    return reason, (v1 if reason is not None else shared), alpha


def rejectionKind(reason: str) -> str:
    """The kind (one of REJECTION_KINDS) of a rejection reason written by this module."""
    if reason.startswith("non-finite"):
        return "nonFinite"
    if reason.startswith("displacement"):
        return "displacement"
    if reason.startswith("H - V'"):
        return "energyAbove"
    if reason.startswith("rescale factor"):
        return "rescaleLow" if float(reason.split()[2]) < 1 else "rescaleHigh"
    if reason.startswith("modes"):
        return "modes"
    return "species"
