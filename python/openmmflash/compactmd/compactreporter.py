"""``CompactReporter``: an OpenMM reporter that writes error-bounded compressed trajectories (``.cmdx``)."""

import time as _time

import numpy as np

from openmmflash.compactmd.compactwriter import CompactWriter
from openmmflash.compactmd.topology import CompactTopology
from openmmflash.units import valueIn


class CompactReporter:
    """Write positions to a CompactMD file every ``reportInterval`` steps.

    Parameters
    ----------
    file : str
        Output path (``.cmdx``).
    reportInterval : int
        Steps between frames.
    maxError : float or openmm.unit.Quantity, optional
        Guaranteed bound on |written - true| per coordinate: a length Quantity or a number in nm (default 0.0005 nm,
        XTC's precision; when appending, the file's bound, and a different value is an error).
    codec : str, optional
        ``"bounded"`` (default) or ``"xtc"`` (integers on XTC's 1/1000 nm grid); when appending, the file's.
    append : bool
        Continue an existing file. Frames in it whose step is >= the first new frame's step are dropped first
        (with a warning naming them), so restarting from a checkpoint leaves no duplicate frames; an append that
        would drop every frame is refused, and a gap of steps is reported. Atom count, topology, codec and
        bound must match.
    overwrite : bool
        Replace an existing non-empty file when not appending (otherwise FileExistsError).
    flushInterval : float or None
        0 (default): every frame is in the file when ``report`` returns (a crash or kill -9 loses at most the
        frame being written). > 0: frames are written at most every that many seconds. None: only whole chunks.
    enforcePeriodicBox : bool or None
        Wrap molecules into the box; None wraps when the system is periodic.
    atomSubset : sequence of int, optional
        0-based indices of the atoms to write (the embedded topology is cut to them).
    chunkFrames : int
        Frames per compressed chunk (the memory held).

    Frames carry ``simulation.currentStep`` as their step, the state's time (ps) and, for periodic systems, the
    box vectors (nm). ``close()`` (or a ``with`` block, or the end of the script) writes the index; a file that
    was never closed (kill -9, a crash) stays readable with every frame that reached it. ``perFrameSeconds``
    gives the mean cost of one report.

    >>> simulation.reporters.append(CompactReporter("traj.cmdx", 1000))   # doctest: +SKIP
    """

    def __init__(self, file, reportInterval, maxError=None, codec=None, append=False,
                 enforcePeriodicBox=None, atomSubset=None, chunkFrames=100, overwrite=False, flushInterval=0.0):
        if int(reportInterval) < 1:
            raise ValueError(f"reportInterval must be a positive number of steps, got {reportInterval}")
        self._file = str(file)
        self._reportInterval = int(reportInterval)
        if maxError is not None:
            from openmm import unit

            maxError = valueIn(maxError, unit.nanometer, "maxError")  # a length Quantity, or a number in nm
        self._maxError = maxError
        self._codec = codec
        self._append = bool(append)
        self._enforcePeriodicBox = enforcePeriodicBox
        self._atomSubset = None if atomSubset is None else np.asarray(sorted(set(map(int, atomSubset))), np.int64)
        if self._atomSubset is not None and len(self._atomSubset) == 0:
            raise ValueError("atomSubset is empty; give at least one atom index or None for all atoms")
        self._chunkFrames = int(chunkFrames)
        self._overwrite = bool(overwrite)
        self._flushInterval = flushInterval
        self._writer = None
        self._seconds = 0.0
        self._frames = 0

    def describeNextReport(self, simulation):
        steps = self._reportInterval - simulation.currentStep % self._reportInterval
        return {"steps": steps, "periodic": self._enforcePeriodicBox, "include": ["positions"]}

    def _open(self, simulation):
        from openmm import unit

        nAll = simulation.topology.getNumAtoms()
        topology = CompactTopology.from_openmm(simulation.topology)
        if self._atomSubset is not None:
            if self._atomSubset[0] < 0 or self._atomSubset[-1] >= nAll:
                raise ValueError(f"atomSubset holds indices outside 0..{nAll - 1}")
            topology = topology.subset(self._atomSubset)
        dt = simulation.integrator.getStepSize().value_in_unit(unit.picosecond)
        self._periodic = simulation.system.usesPeriodicBoundaryConditions()
        self._writer = CompactWriter(self._file, topology.nAtoms, topology=topology, codec=self._codec,
                                     maxError=self._maxError, chunkFrames=self._chunkFrames, append=self._append,
                                     overwrite=self._overwrite, dt=dt, flushInterval=self._flushInterval,
                                     stepInterval=self._reportInterval)

    def report(self, simulation, state):
        """Write one frame from ``state`` (positions in nm)."""
        from openmm import unit

        start = _time.perf_counter()
        if self._writer is None:
            self._open(simulation)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self._atomSubset is not None:
            pos = pos[self._atomSubset]
        box = None
        if self._periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        self._writer.write(pos, step=simulation.currentStep, time=state.getTime().value_in_unit(unit.picosecond),
                           box=box)
        self._seconds += _time.perf_counter() - start
        self._frames += 1

    @property
    def perFrameSeconds(self):
        """Mean wall time of one ``report`` call so far, s (0 before the first)."""
        return self._seconds / self._frames if self._frames else 0.0

    def flush(self, fsync=False):
        """Make every reported frame part of the file (already so with the default ``flushInterval=0``)."""
        if self._writer is not None:
            self._writer.flush(fsync)

    def close(self):
        """Fold the last frames into a chunk and write the index. Safe to call twice."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
