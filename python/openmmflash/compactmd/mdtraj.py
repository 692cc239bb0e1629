"""mdtraj loader for CompactMD files: importing :mod:`openmmflash.compactmd` registers ``.cmdx`` with
``mdtraj.load``; the topology comes from the file unless ``top`` is given."""

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
