"""CompactReporter in a real OpenMM simulation, then the file opened with MDAnalysis and mdtraj and verified.

A five-residue peptide (AKAEA, built with PeptideBuilder, hydrogens added by OpenMM) runs in implicit solvent
(amber14 + OBC2) on the CPU. Every ``--interval`` steps a frame goes to ``traj.cmdx`` (CompactReporter, 0.0005 nm
bound) and, as the float32 reference, to ``traj.dcd`` (OpenMM's DCDReporter). Then:

1. MDAnalysis opens ``traj.cmdx`` (with and without a separate topology) and seeks to a random frame;
2. mdtraj loads it and computes the end-to-end distance;
3. ``openmmflash verify traj.cmdx --source traj.dcd`` checks every chunk and reports the true max error.

    python examples/compact_reporter.py --steps 4000 --interval 20 --out /tmp/compact_example
"""

import argparse
import os
import sys

import numpy as np
import torch  # noqa: F401  (before openmm)
from openmm import LangevinMiddleIntegrator, Platform, app, unit


def build_peptide(sequence, path):
    """PDB of an extended peptide with a C-terminal OXT (heavy atoms only)."""
    import PeptideBuilder
    from Bio.PDB import PDBIO

    structure = PeptideBuilder.make_extended_structure(sequence)
    PeptideBuilder.add_terminal_OXT(structure)
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--interval", type=int, default=20)
    parser.add_argument("--out", default="compact_example")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cmdx, dcd, pdbPath = (os.path.join(args.out, n) for n in ("traj.cmdx", "traj.dcd", "peptide.pdb"))
    for path in (cmdx, dcd):
        if os.path.exists(path):
            os.remove(path)

    from openmmflash.compactmd import CompactReporter

    # Build and minimize the peptide.
    build_peptide("AKAEA", pdbPath)
    pdb = app.PDBFile(pdbPath)
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(forcefield)
    with open(pdbPath, "w") as f:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, f)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    simulation = app.Simulation(modeller.topology, system, integrator, Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(modeller.positions)
    simulation.minimizeEnergy(maxIterations=200)

    # Run with the compressed reporter and a DCD reference side by side.
    reporter = CompactReporter(cmdx, args.interval)
    simulation.reporters += [reporter, app.DCDReporter(dcd, args.interval)]
    simulation.step(args.steps)
    reporter.close()
    simulation.reporters.clear()
    nFrames = args.steps // args.interval
    print(f"wrote {nFrames} frames: {os.path.getsize(cmdx)} bytes .cmdx vs {os.path.getsize(dcd)} bytes DCD; "
          f"{1e3 * reporter.perFrameSeconds:.3f} ms per report")

    # MDAnalysis: with the PDB as topology, and with the topology embedded in the file.
    import MDAnalysis as mda

    u = mda.Universe(pdbPath, cmdx)
    ref = mda.Universe(pdbPath, dcd)
    frame = int(np.random.default_rng(0).integers(nFrames))
    u.trajectory[frame]
    ref.trajectory[frame]
    print(f"MDAnalysis: {u.trajectory}; frame {frame} step {u.trajectory.ts.data['step']}, max |diff| vs DCD "
          f"{np.abs(u.atoms.positions - ref.atoms.positions).max() / 10:.6f} nm")
    print(f"MDAnalysis (embedded topology): {mda.Universe(cmdx).atoms.n_residues} residues")

    # mdtraj: load and analyse.
    import mdtraj

    traj = mdtraj.load(cmdx, top=pdbPath)
    ends = traj.topology.select("name N and resid 0 or name C and resid 4")
    distance = mdtraj.compute_distances(traj, [ends])[:, 0]
    print(f"mdtraj: {traj}; end-to-end distance {distance.mean():.3f} +- {distance.std():.3f} nm")

    # Verify every chunk and the true max error against the DCD.
    from openmmflash.cli import main as cli

    return cli(["verify", cmdx, "--source", dcd, "--top", pdbPath])


if __name__ == "__main__":
    sys.exit(main())
