"""CG mappings of proteins: the 5-bead mapping (N, CA, CB, C, O; glycine without CB) and the CA-only mapping.

A bead sits on its mapped atom (slice mapping, as in CGSchNet's ``OPEPS_MAP`` and ``CA_MAP``). A CG Topology is an
ordinary OpenMM Topology whose atoms are beads named after their atom (N, CA, CB, C, O), so CG structures can be
written and read as PDB files. Bead types are looked up in a table ``{"N": 0, "ALA:CA": 3, ...}``: the key
"RES:NAME" first, then "NAME".
"""

from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

from openmmflash.cg.residuemessages import nonProteinResidueMessage, warnDroppedResidues
from openmmflash.stack import import_openmm

AMINO_ACIDS = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
               "PRO", "SER", "THR", "TRP", "TYR", "VAL")
ALIASES = {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "CYX": "CYS",
           "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "MSE": "MET"}
# Residues left out when mapping (solvent, ions and caps carry no CG bead), with a DroppedResiduesWarning.
IGNORED = {"HOH", "WAT", "SOL", "TIP3", "NA", "CL", "K", "MG", "CA2", "ZN", "NA+", "CL-", "ACE", "NME", "NH2"}
ELEMENTS = {"N": "N", "CA": "C", "CB": "C", "C": "C", "O": "O"}
MASSES = {"N": 14.007, "CA": 12.011, "CB": 12.011, "C": 12.011, "O": 15.999}  # amu


def canonicalResidue(name: str) -> str:
    """Standard three-letter name of a protein residue (HID -> HIS, ...)."""
    name = name.upper()
    return ALIASES.get(name, name)


class CGMapping:
    """A protein CG mapping. ``CGMapping("5bead")`` or ``CGMapping("ca")``."""

    BEADS = {"5bead": ("N", "CA", "CB", "C", "O"), "ca": ("CA",)}

    def __init__(self, name: str = "5bead"):
        key = name.lower().replace("-", "")
        if key not in self.BEADS:
            raise ValueError(f"unknown CG mapping {name!r}; choose one of {sorted(self.BEADS)}")
        self.name = key
        self.beadNames = self.BEADS[key]

    def __repr__(self):
        return f"CGMapping({self.name!r})"

    def residueBeads(self, residueName: str) -> Tuple[str, ...]:
        """Bead names of one residue (glycine has no CB)."""
        res = canonicalResidue(residueName)
        return tuple(b for b in self.beadNames if not (b == "CB" and res == "GLY"))

    def defaultBeadTypes(self) -> Dict[str, int]:
        """A bead-type table: N, C, O shared; CA and CB specific to the residue."""
        table: Dict[str, int] = {}
        for shared in ("N", "C", "O"):
            if shared in self.beadNames:
                table[shared] = len(table)
        for bead in ("CA", "CB"):
            if bead in self.beadNames:
                for res in AMINO_ACIDS:
                    if not (bead == "CB" and res == "GLY"):
                        table[f"{res}:{bead}"] = len(table)
        return table

    def mapTopology(self, topology) -> Tuple[object, List[int]]:
        """CG Topology of an all-atom (or already CG) Topology, and the index of the atom each bead sits on.

        Water, ions and caps are left out with a DroppedResiduesWarning; other non-protein residues are refused.
        """
        app = import_openmm().app
        cg = app.Topology()
        indices: List[int] = []
        dropped = Counter()
        for chain in topology.chains():
            cg_chain = None
            for residue in chain.residues():
                res = canonicalResidue(residue.name)
                if res in IGNORED or residue.name.upper() in IGNORED:
                    dropped[residue.name] += 1
                    continue
                if res not in AMINO_ACIDS:
                    raise ValueError(nonProteinResidueMessage(residue, self.name))
                atoms = {a.name: a for a in residue.atoms()}
                missing = [b for b in self.residueBeads(res) if b not in atoms]
                if missing:
                    raise ValueError(f"residue {residue.name} {residue.id} (chain {chain.id}) lacks atoms "
                                     f"{missing}; repair the structure first (openmmflash.cg.structure.loadProtein "
                                     "runs pdbfixer for you)")
                if cg_chain is None:
                    cg_chain = cg.addChain(chain.id)
                cg_res = cg.addResidue(res, cg_chain, residue.id, residue.insertionCode)
                for bead in self.residueBeads(res):
                    cg.addAtom(bead, app.Element.getBySymbol(ELEMENTS[bead]), cg_res)
                    indices.append(atoms[bead].index)
        if cg.getNumAtoms() == 0:
            raise ValueError("the topology contains no protein residue to map")
        warnDroppedResidues(dropped)
        cg.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
        beads = list(cg.atoms())
        for i, j in self.bondedPairs(cg):
            cg.addBond(beads[i], beads[j])
        return cg, indices

    def bondedPairs(self, cgTopology) -> List[Tuple[int, int]]:
        """Bead pairs bonded by the mapping's rules (N-CA, CA-CB, CA-C, C-O, C(i)-N(i+1); CA(i)-CA(i+1))."""
        pairs = []
        for chain in cgTopology.chains():
            previous = None
            for residue in chain.residues():
                beads = {a.name: a.index for a in residue.atoms()}
                if self.name == "5bead":
                    for a, b in (("N", "CA"), ("CA", "CB"), ("CA", "C"), ("C", "O")):
                        if a in beads and b in beads:
                            pairs.append((beads[a], beads[b]))
                    if previous is not None and "C" in previous and "N" in beads:
                        pairs.append((previous["C"], beads["N"]))
                elif previous is not None:
                    pairs.append((previous["CA"], beads["CA"]))
                previous = beads
        return pairs

    def mapPositions(self, positions, indices: Sequence[int]) -> np.ndarray:
        """Bead positions (N_beads, 3) from all-atom positions (array or Quantity, nm) by atom index."""
        unit = import_openmm().unit
        if unit.is_quantity(positions):
            positions = positions.value_in_unit(unit.nanometer)
        return np.asarray(positions, dtype=np.float64)[np.asarray(indices)]

    def masses(self, cgTopology) -> List[float]:
        """Bead masses in amu."""
        return [MASSES[a.name] for a in cgTopology.atoms()]


def beadTypesFromTopology(topology, table: Dict[str, int]) -> List[int]:
    """Bead type of every atom of a CG Topology from a table (key "RES:NAME", then "NAME")."""
    types, unknown = [], []
    for atom in topology.atoms():
        res = canonicalResidue(atom.residue.name)
        key = f"{res}:{atom.name}"
        if key in table:
            types.append(int(table[key]))
        elif atom.name in table:
            types.append(int(table[atom.name]))
        else:
            types.append(-1)
            unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:10])
        raise ValueError(f"{len(unknown)} beads have types unknown to the model ({shown}); the model knows "
                         f"{len(table)} bead types. Use a model trained for this mapping and these residues.")
    return types
