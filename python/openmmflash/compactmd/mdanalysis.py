"""MDAnalysis reader and writer for CompactMD files (format ``CMDX``).

Importing :mod:`openmmflash.compactmd` registers them, so ``mda.Universe(topology, "traj.cmdx")`` works and
``u.trajectory[i]`` seeks in O(1) (one chunk read through the embedded index). ``mda.Universe("traj.cmdx")`` alone
uses the topology embedded in the file. Positions are converted from nm to Å by MDAnalysis (``units``).
"""

import numpy as np
from MDAnalysis.coordinates import base
from MDAnalysis.lib.mdamath import triclinic_box
from MDAnalysis.topology.base import TopologyReaderBase

from openmmflash.compactmd.compacttrajectory import CompactTrajectory
from openmmflash.compactmd.compactwriter import CompactWriter
from openmmflash.compactmd.topology import CompactTopology


class CMDXReader(base.ReaderBase):
    """Read a ``.cmdx`` trajectory; ``ts.data['step']`` holds the MD step, ``ts.time`` the time in ps."""

    format = "CMDX"
    units = {"time": "ps", "length": "nm"}

    def __init__(self, filename, convert_units=True, **kwargs):
        super().__init__(filename, convert_units=convert_units, **kwargs)
        self._traj = CompactTrajectory(self.filename)
        self.n_atoms = self._traj.nAtoms
        self.ts = self._Timestep(self.n_atoms, **self._ts_kwargs)
        self._frame = -1
        if len(self._traj):
            self._read_frame(0)

    @property
    def n_frames(self):
        return len(self._traj)

    def _read_frame(self, frame):
        fr = self._traj.frame(frame)
        ts = self.ts
        ts.frame = frame
        ts.positions = fr.positions
        if self.convert_units:
            self.convert_pos_from_native(ts._pos)
        ts.dimensions = None if fr.box is None else triclinic_box(*(np.asarray(fr.box) * 10.0))
        ts.time = fr.time
        ts.data["step"] = fr.step
        return ts

    def _read_next_timestep(self, ts=None):
        if ts is not None and ts is not self.ts:
            raise NotImplementedError("CMDXReader reads into its own Timestep only")
        if self.ts.frame + 1 >= self.n_frames:
            raise IOError("end of CompactMD trajectory")
        return self._read_frame(self.ts.frame + 1)

    def _reopen(self):
        self.ts.frame = -1

    def rewind(self):
        """Back to frame 0 (no read when the file holds no frame yet: MDAnalysis would otherwise recurse)."""
        if self.n_frames == 0:
            self._reopen()
            return
        super().rewind()

    def close(self):
        self._traj.close()


class CMDXWriter(base.WriterBase):
    """Write AtomGroups/Universes to ``.cmdx`` (error-bounded; ``maxError`` in nm, default 0.0005)."""

    format = "CMDX"
    multiframe = True
    units = {"time": "ps", "length": "nm"}

    def __init__(self, filename, n_atoms, maxError=0.0005, codec="bounded", chunkFrames=100, **kwargs):
        self.filename = str(filename)
        self.n_atoms = int(n_atoms)
        self._opts = dict(maxError=maxError, codec=codec, chunkFrames=chunkFrames)
        self._writer = None

    def _write_next_frame(self, obj):
        ag = obj.atoms
        ts = ag.universe.trajectory.ts
        if self._writer is None:
            self._writer = CompactWriter(self.filename, ag.n_atoms, topology=CompactTopology.from_mdanalysis(ag),
                                         overwrite=True, **self._opts)
        box = None
        if ts.dimensions is not None:
            box = ts.triclinic_dimensions / 10.0
        self._writer.write(ag.positions / 10.0, step=int(ts.data.get("step", ts.frame)), time=ts.time, box=box)

    def close(self):
        if self._writer is not None:
            self._writer.close()


class CMDXParser(TopologyReaderBase):
    """Topology embedded in a ``.cmdx`` file (names, elements, residues, chains/segments, bonds)."""

    format = "CMDX"

    def parse(self, **kwargs):
        from MDAnalysis.core.topology import Topology
        from MDAnalysis.core.topologyattrs import (Atomids, Atomnames, Bonds, ChainIDs, Elements, Resids, Resnames,
                                                   Resnums, Segids)

        with CompactTrajectory(self.filename) as traj:
            top = traj.topology or CompactTopology.generic(traj.nAtoms)
        n = top.nAtoms
        resindices = np.asarray(top.resindices)
        nres = int(resindices.max()) + 1 if n else 0
        first = np.searchsorted(resindices, np.arange(nres))
        attrs = [Atomids(np.arange(1, n + 1)), Atomnames(np.array(top.names, object)),
                 Elements(np.array(top.elements, object)), ChainIDs(np.array(top.chainids, object)),
                 Resids(np.asarray(top.resids)[first]), Resnums(np.asarray(top.resids)[first]),
                 Resnames(np.array([top.resnames[i] for i in first], object)), Segids(np.array(["SYSTEM"], object)),
                 Bonds([tuple(map(int, b)) for b in np.asarray(top.bonds)])]
        return Topology(n, nres, 1, attrs=attrs, atom_resindex=resindices,
                        residue_segindex=np.zeros(nres, np.int64))
