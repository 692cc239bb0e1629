"""Which bundled FlashSchNet model can run a user's protein: one whose training protein had every residue type of
it (a model's bead-type table lists all 20 amino acids, but only the residues of its training protein were ever
seen in the force matching; that protein is the native structure stored in the model file)."""

import io
from typing import List, Optional, Tuple

from openmmflash.cg.inputchecks import trainingResidues
from openmmflash.cg.mapping import IGNORED, canonicalResidue
from openmmflash.cg.structure import loadProtein
from openmmflash.schnet.model import loadModel
from openmmflash.schnet.modelfile import bundledModels
from openmmflash.stack import import_openmm


def trainedSequence(net) -> List[str]:
    """Residue names, in order, of the protein a FlashSchNet model was trained on (its stored native structure)."""
    pdb = net.metadata.get("structure")
    if not pdb:
        return []
    topology = import_openmm().app.PDBFile(io.StringIO(pdb)).topology
    return [canonicalResidue(r.name) for r in topology.residues() if canonicalResidue(r.name) not in IGNORED]


def modelForProtein(path: str, model: Optional[str] = None) -> Tuple[object, str, object, object]:
    """(FlashSchNet model, its name, CG topology, bead positions (n, 3) nm) for the protein in ``path`` (PDB or
    mmCIF, all-atom or CG): ``model`` if given, else the bundled model trained on this very sequence, else the first
    one trained on all its residue types. Raises ValueError naming the residue types no candidate model was trained
    on."""
    candidates: List[str] = [model] if model else bundledModels()
    if not candidates:
        raise ValueError("no bundled FlashSchNet model is installed; pass --model FILE")
    found, refused = [], []
    for name in candidates:
        net = loadModel(name)
        topology, positions = loadProtein(path, net.metadata.get("mapping") or "5bead")
        residues = {canonicalResidue(r.name) for r in topology.residues()}
        if topology.getNumAtoms() == 0:
            raise ValueError(f"{path!r} holds no protein residues the CG mapping knows")
        unseen = sorted(residues - (trainingResidues(net.metadata) or set()))
        if not unseen:
            sequence = [canonicalResidue(r.name) for r in topology.residues()]
            if sequence == trainedSequence(net):
                return net, str(name), topology, positions
            found.append((net, str(name), topology, positions))
        else:
            refused.append(f"{name} (never saw {', '.join(unseen)})")
    if found:
        return found[0]
    raise ValueError(f"no FlashSchNet model supports the residue types of {path!r}: " + "; ".join(refused) +
                     ". Train one on this protein (openmmflash cg-data, then cg-train) and pass it with --model FILE")
