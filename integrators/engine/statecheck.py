"""The state a FlashMD integrator starts a stride from must be finite.

NaN or infinite positions or velocities in the Context (from ``setPositions``, a bad checkpoint, or a System that blew
up under another integrator) are refused before the integrator asks OpenMM for any energy: on the Reference
platform a PME energy of NaN positions corrupts the heap (a crash, not an exception), and with CutoffPeriodic the NaN
would be carried on silently by the fallback substeps.
"""

import numpy as np
import openmm as mm

FAQ = "https://github.com/openmm/openmm/wiki/Frequently-Asked-Questions#nan"


class NonFiniteStateError(ValueError, mm.OpenMMException):
    """The Context holds NaN or infinite positions or velocities. A ``ValueError`` and an ``openmm.OpenMMException``
    (what OpenMM's own integrators raise for NaN coordinates), so either ``except`` catches it."""


def checkFiniteState(q: np.ndarray, v: np.ndarray, step: int) -> None:
    """Raise :class:`NonFiniteStateError` unless positions ``q`` (N, 3) nm and velocities ``v`` (N, 3) nm/ps are all
    finite; ``step`` is the integrator's step count, for the message."""
    for name, x, fix in (("positions", q, "context.setPositions(...) with finite coordinates (nm)"),
                         ("velocities", v, "context.setVelocities(...) or context.setVelocitiesToTemperature(T)")):
        bad = ~np.isfinite(x).all(axis=-1)
        if bad.any():
            idx = np.flatnonzero(bad)
            shown = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
            raise NonFiniteStateError(
                f"the Context's {name} are not finite (NaN or infinite) for {len(idx)} of {len(x)} particles "
                f"(indices {shown}) at step {step}: a FlashMD integrator refuses to step from them. Set a finite state "
                f"first: {fix}, e.g. from the last good frame or a checkpoint; if the System blew up, minimize "
                f"(simulation.minimizeEnergy()) and check the time step. See {FAQ}")
