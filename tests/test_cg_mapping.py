"""All-atom -> CG mapping of a real all-atom structure (repaired with pdbfixer when atoms are missing)."""

import os

import numpy as np
import pytest

from openmmflash.cg.mapping import CGMapping, beadTypesFromTopology
from openmmflash.cg.structure import loadProtein
from openmmflash.stack import import_openmm

openmm = import_openmm()


@pytest.fixture(scope="module")
def alanine_tripeptide_pdb(tmp_path_factory):
    """An all-atom ALA-GLY-SER peptide built by pdbfixer from sequence, with a CB atom removed."""
    from pdbfixer import PDBFixer

    pytest.importorskip("PeptideBuilder")
    import PeptideBuilder
    from Bio.PDB import PDBIO

    structure = PeptideBuilder.make_extended_structure("AGSW")
    path = str(tmp_path_factory.mktemp("pdb") / "peptide.pdb")
    io = PDBIO()
    io.set_structure(structure)
    io.save(path)
    lines = [l for l in open(path) if not (l.startswith("ATOM") and l[12:16].strip() == "CB" and l[17:20] == "SER")]
    broken = path.replace(".pdb", "_broken.pdb")
    open(broken, "w").writelines(lines)
    return path, broken


@pytest.mark.parametrize("name,beads", [("5bead", 4 * 5 - 1), ("ca", 4)])
def test_map_all_atom_structure(alanine_tripeptide_pdb, name, beads):
    path, _ = alanine_tripeptide_pdb
    top, pos = loadProtein(path, mapping=name)
    assert top.getNumAtoms() == beads
    mapping = CGMapping(name)
    assert len(mapping.bondedPairs(top)) == beads - 1
    assert top.getNumBonds() == beads - 1
    pdb = openmm.app.PDBFile(path)
    atoms = {(a.residue.index, a.name): a.index for a in pdb.topology.atoms()}
    for bead, p in zip(top.atoms(), pos):
        ref = pdb.getPositions(asNumpy=True)._value[atoms[(bead.residue.index, bead.name)]]
        np.testing.assert_allclose(p, ref)
    types = beadTypesFromTopology(top, mapping.defaultBeadTypes())
    assert len(set(types)) == len(types) - (1 if name == "5bead" else 0) or len(types) == beads


def test_missing_atoms_repaired_or_refused(alanine_tripeptide_pdb):
    _, broken = alanine_tripeptide_pdb
    top, pos = loadProtein(broken)
    assert [a.name for a in top.atoms() if a.residue.name == "SER"] == ["N", "CA", "CB", "C", "O"]
    with pytest.raises(ValueError, match="missing heavy atoms.*repair=True"):
        loadProtein(broken, repair=False)


def test_cg_pdb_is_not_repaired(cg_fragment):
    top, pos = cg_fragment
    assert top.getNumAtoms() == 45 and pos.shape == (45, 3)  # 9 residues, no glycine


def test_errors():
    with pytest.raises(FileNotFoundError, match="no structure file"):
        loadProtein("/nonexistent.pdb")
    top = openmm.app.Topology()
    res = top.addResidue("XYZ", top.addChain())
    top.addAtom("CA", openmm.app.element.carbon, res)
    with pytest.raises(ValueError, match="XYZ.*not a standard amino acid"):
        CGMapping().mapTopology(top)
