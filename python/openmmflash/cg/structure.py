"""Loading protein structures for CG modelling: all-atom PDB/mmCIF files (repaired with pdbfixer when atoms are
missing) or CG PDB files whose atoms already are beads."""

import os
from typing import Tuple

import numpy as np

from openmmflash.cg.mapping import CGMapping, IGNORED, canonicalResidue
from openmmflash.cg.repair import addMissingAtoms
from openmmflash.stack import import_openmm


def isCGTopology(topology, mapping: CGMapping) -> bool:
    """True when every protein residue holds only bead atoms of ``mapping`` (a CG structure, nothing to repair)."""
    for residue in topology.residues():
        if canonicalResidue(residue.name) in IGNORED:
            continue
        if any(atom.name not in mapping.beadNames for atom in residue.atoms()):
            return False
    return True


def loadProtein(path: str, mapping="5bead", repair: bool = True) -> Tuple[object, object]:
    """CG Topology and bead positions (nm, shape (n, 3)) of the protein in a PDB or mmCIF file.

    All-atom input with missing heavy atoms is completed with pdbfixer (missing loops are not modelled);
    with ``repair=False`` such input is refused.
    """
    openmm = import_openmm()
    app = openmm.app
    mapping = mapping if isinstance(mapping, CGMapping) else CGMapping(mapping)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no structure file at {path!r}")
    reader = app.PDBxFile if path.lower().endswith((".cif", ".mmcif")) else app.PDBFile
    structure = reader(path)
    topology, positions = structure.topology, structure.getPositions(asNumpy=True)
    if not isCGTopology(topology, mapping):
        from pdbfixer import PDBFixer

        fixer = PDBFixer(filename=path)
        fixer.findMissingResidues()
        fixer.missingResidues = {}
        fixer.findNonstandardResidues()
        fixer.findMissingAtoms()
        missing = sum(len(v) for v in fixer.missingAtoms.values())
        if fixer.nonstandardResidues or missing:
            if not repair:
                raise ValueError(f"{path!r} has {missing} missing heavy atoms and {len(fixer.nonstandardResidues)} "
                                 "nonstandard residues; call loadProtein(..., repair=True) to fix them with pdbfixer")
            fixer.replaceNonstandardResidues()
            addMissingAtoms(fixer)
        topology, positions = fixer.topology, fixer.positions
    cg, indices = mapping.mapTopology(topology)
    return cg, mapping.mapPositions(positions, indices)


def nativeStructure(model, directory: str):
    """(CG topology, positions (n, 3) nm, path) of the native structure stored in the model file."""
    pdb = model.metadata.get("structure")
    if not pdb:
        raise ValueError("the model file holds no native structure (metadata['structure']); the demo needs a model "
                         "made by `openmmflash cg-train`")
    path = os.path.join(directory, "native.pdb")
    with open(path, "w") as f:
        f.write(pdb)
    topology, positions = loadProtein(path, model.metadata.get("mapping") or "5bead")
    return topology, positions, path


def caIndices(topology) -> np.ndarray:
    """Indices (n_CA,) of the CA beads of a CG topology."""
    return np.array([a.index for a in topology.atoms() if a.name == "CA"])
