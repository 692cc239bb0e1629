"""What the same frames take in the common trajectory formats: DCD (OpenMM's ``DCDFile``, float32 coordinates) and
XTC (mdtraj's writer, XTC's 1/1000 nm grid), measured by writing them, for comparison with a ``.cmdx`` file."""

import os
import tempfile
from typing import Dict, Optional

import numpy as np

from openmmflash.stack import import_openmm


def dcdBytes(frames: np.ndarray, topology, timestep_ps: float, interval: int, path: str) -> int:
    """Write ``frames`` (F, n, 3) nm as a DCD file at ``path`` with OpenMM's ``DCDFile``; returns its size in bytes.
    ``timestep_ps`` and ``interval`` (steps between frames) go into the header."""
    openmm = import_openmm()
    unit = openmm.unit
    with open(path, "wb") as f:
        dcd = openmm.app.DCDFile(f, topology, timestep_ps * unit.picosecond, 0, max(1, int(interval)))
        for xyz in frames:
            dcd.writeModel(np.asarray(xyz, np.float64) * 10.0 * unit.angstrom)
    return os.path.getsize(path)


def xtcBytes(frames: np.ndarray, times_ps: np.ndarray, path: str) -> Optional[int]:
    """Write ``frames`` (F, n, 3) nm as an XTC file at ``path`` with mdtraj; returns its size in bytes, or None when
    mdtraj is not installed."""
    try:
        from mdtraj.formats import XTCTrajectoryFile
    except ImportError:
        return None
    with XTCTrajectoryFile(path, "w") as f:
        f.write(np.asarray(frames, np.float32), time=np.asarray(times_ps, np.float32),
                step=np.arange(len(frames), dtype=np.int32))
    return os.path.getsize(path)


def formatSizes(frames: np.ndarray, times_ps: np.ndarray, topology, timestep_ps: float, interval: int,
                directory: Optional[str] = None) -> Dict[str, Optional[int]]:
    """{"dcd": bytes, "xtc": bytes or None} of ``frames`` (F, n, 3) nm written in both formats. With ``directory``
    the files stay there as trajectory.dcd / trajectory.xtc; without, they go to a temporary folder that is
    removed."""
    with tempfile.TemporaryDirectory(prefix="openmmflash-sizes-") as tmp:
        where = directory or tmp
        return {"dcd": dcdBytes(frames, topology, timestep_ps, interval, os.path.join(where, "trajectory.dcd")),
                "xtc": xtcBytes(frames, times_ps, os.path.join(where, "trajectory.xtc"))}
