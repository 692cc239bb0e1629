"""mdtraj loader for CompactMD files: importing :mod:`openmmflash.compactmd` registers ``.cmdx`` with
``mdtraj.load``; the topology comes from the file unless ``top`` is given.

``mdtraj.load(path)`` without ``top`` parses ``path`` itself as the topology before it calls the loader, and
mdtraj's topology parser knows no ``.cmdx``; :func:`_install_topology_hook` teaches it to take the embedded
topology of a ``.cmdx`` file (every other argument goes to mdtraj's own parser unchanged).
"""

import os

import mdtraj.core.trajectory as _mdtraj_trajectory
import numpy as np
from mdtraj.formats.registry import FormatRegistry

from openmmflash.compactmd.compacttrajectory import CompactTrajectory


@FormatRegistry.register_loader(".cmdx")
def load_cmdx(filename, top=None, stride=None, atom_indices=None, frame=None):
    """Load a ``.cmdx`` file as an ``mdtraj.Trajectory`` (positions nm, time ps, unit cell when stored).

    Parameters follow ``mdtraj.load_xtc``: ``top`` (anything ``mdtraj`` accepts as a topology; default: the
    embedded one), ``stride``, ``atom_indices`` (0-based) and ``frame`` (a single frame index).
    """
    import mdtraj

    with CompactTrajectory(filename) as traj:
        if top is None:
            if traj.topology is None:
                raise ValueError(f"{filename} has no embedded topology; pass top=... (a PDB or topology)")
            topology = traj.topology.to_mdtraj()
        else:
            topology = mdtraj.core.trajectory._parse_topology(top)
        if topology.n_atoms != traj.nAtoms:
            raise ValueError(f"the topology has {topology.n_atoms} atoms but {filename} holds {traj.nAtoms}")
        frames = np.arange(len(traj))[::stride or 1] if frame is None else np.array([int(frame)])
        xyz = traj.read(frames)
        boxes = traj.boxes[frames]
        times = traj.times[frames]
    if atom_indices is not None:
        atom_indices = np.asarray(atom_indices, np.int64)
        xyz = xyz[:, atom_indices]
        topology = topology.subset(atom_indices)
    out = mdtraj.Trajectory(xyz, topology, time=times)
    if len(frames) and np.isfinite(boxes).all():
        out.unitcell_vectors = boxes.astype(np.float32)
    return out


def _embedded_topology(path):
    with CompactTrajectory(path) as traj:
        if traj.topology is None:
            raise ValueError(f"{path} has no embedded topology; pass top=... (a PDB, PSF, GRO, PRMTOP or mdtraj "
                             f"Topology)")
        return traj.topology.to_mdtraj()


def _install_topology_hook():
    parse = _mdtraj_trajectory._parse_topology
    if getattr(parse, "_cmdx", False):
        return

    def _parse_topology(top, **kwargs):
        if isinstance(top, (str, os.PathLike)) and str(top).lower().endswith(".cmdx"):
            return _embedded_topology(str(top))
        return parse(top, **kwargs)

    _parse_topology._cmdx = True
    _parse_topology.__doc__ = parse.__doc__
    _mdtraj_trajectory._parse_topology = _parse_topology


_install_topology_hook()
