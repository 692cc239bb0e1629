"""Is a short run equilibrated? A verdict from the recorded data of B independent replicas.

- Temperature: the mean over the last half of the frames (all replicas) must lie within ``temperatureTolerance``
  (K) of the bath (or 3 standard errors, if larger), and the data must pin it down that well: a standard error
  above the tolerance is "too few samples to tell". The standard error comes from the means of up to 4 blocks of
  the last half per replica (at least that of independent frames), so correlated frames (weak friction, frequent
  reports) do not shrink it.
- Drift: for each structural observable (CA-RMSD, Rg, ...) the change between the mean of the third and of the
  fourth quarter of the run (averaged over replicas) must stay below ``driftFraction`` times the observable's
  standard deviation over the last half (or ``driftFloor``, A, if larger). A stationary series changes by far less
  between quarters than it fluctuates; a relaxing one (a trend) by more.
- At least ``minFrames`` frames (two per quarter); a shorter run is "too short to judge", i.e. not equilibrated.
"""

from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np


@dataclass
class EquilibrationCriteria:
    """Tolerances of :func:`equilibrationVerdict`."""
    temperatureTolerance: float = 5.0    # K
    driftFraction: float = 0.6           # of the observable's standard deviation over the last half
    driftFloor: float = 0.05             # A: a smaller drift always passes
    minFrames: int = 8
    temperatureBlocks: int = 4           # blocks per replica for the temperature's standard error


def equilibrationVerdict(temperature: np.ndarray, targetTemperature: float, observables: Dict[str, np.ndarray],
                         criteria: Optional[EquilibrationCriteria] = None) -> dict:
    """Verdict on a run from its frames.

    temperature : (frames, B) K per replica; targetTemperature : K (the bath);
    observables : {name: (frames, B)} structural observables in A (e.g. caRmsd, Rg).
    Returns {"equilibrated": bool, "reasons": [str] (empty when equilibrated), "checks": {...}, "criteria": {...}}.
    """
    c = criteria or EquilibrationCriteria()
    temperature = np.asarray(temperature, np.float64)
    if temperature.ndim == 1:
        temperature = temperature[:, None]
    frames = temperature.shape[0]
    reasons, checks = [], {}
    if frames < c.minFrames:
        reasons.append(f"too short to judge: {frames} frames recorded, at least {c.minFrames} are needed "
                       "(run longer or report more often)")
        return {"equilibrated": False, "reasons": reasons, "checks": checks, "criteria": asdict(c)}
    half = temperature[frames // 2:]
    mean_t = float(half.mean())
    # standard error from block means (up to 4 blocks per replica), so correlated frames do not shrink it
    blocks = np.stack([b.mean(0) for b in np.array_split(half, min(c.temperatureBlocks, half.shape[0]))]).ravel()
    se_t = float("inf")
    if blocks.size > 1:  # at least the error of independent frames: few blocks estimate it poorly
        se_t = max(float(blocks.std(ddof=1) / np.sqrt(blocks.size)), float(half.std(ddof=1) / np.sqrt(half.size)))
    tol_t = max(c.temperatureTolerance, 3.0 * se_t)
    ok_t = se_t <= c.temperatureTolerance and abs(mean_t - targetTemperature) <= tol_t
    checks["temperature"] = {"lastHalfMean_K": mean_t, "standardError_K": se_t, "target_K": float(targetTemperature),
                             "tolerance_K": tol_t, "passed": bool(ok_t)}
    if se_t > c.temperatureTolerance:
        reasons.append(f"too few samples to tell the temperature within {c.temperatureTolerance:g} K: "
                       f"{mean_t:.1f} +- {se_t:.1f} K over the last half ({half.size} replica frames)")
    elif not ok_t:
        reasons.append(f"temperature {mean_t:.1f} +- {se_t:.1f} K over the last half, "
                       f"{mean_t - targetTemperature:+.1f} K from the {targetTemperature:.0f} K bath "
                       f"(tolerance {tol_t:.1f} K)")
    q = frames // 4
    for name, values in observables.items():
        v = np.asarray(values, np.float64)
        v = v[:, None] if v.ndim == 1 else v
        third, fourth = v[frames - 2 * q:frames - q].mean(), v[frames - q:].mean()
        drift = float(fourth - third)
        tol = max(c.driftFloor, c.driftFraction * float(v[frames // 2:].std()))
        ok = abs(drift) <= tol
        checks[name] = {"thirdQuarterMean": float(third), "fourthQuarterMean": float(fourth), "drift": drift,
                        "tolerance": tol, "passed": bool(ok)}
        if not ok:
            reasons.append(f"{name} still drifts: {drift:+.2f} A between the third and the last quarter of the run "
                           f"(tolerance {tol:.2f} A, {c.driftFraction:g} x its spread)")
    return {"equilibrated": not reasons, "reasons": reasons, "checks": checks, "criteria": asdict(c)}
