"""Checks of what a user hands to the CG layer, with messages that say what to do (the messages about water, ions
and ligands left out by ``CGMapping.mapTopology`` are in residuemessages.py).

- :func:`requireCGTopology`: an all-atom Topology where a CG one is needed gets "coarse-grain first" and the call.
- :func:`warnUnseenResidues`: an :class:`UnseenResiduesWarning` naming residue types the model was never trained on.
"""

import warnings
from collections import Counter
from typing import Optional, Set

from openmmflash.cg.mapping import IGNORED, CGMapping, canonicalResidue
from openmmflash.cg.residuemessages import userStacklevel


COARSE_GRAIN_FIRST = ("Coarse-grain first: topology, positions = openmmflash.loadProtein('protein.pdb') (from a "
                      "PDB/mmCIF file), or from an all-atom Topology: mapping = openmmflash.CGMapping('5bead'); "
                      "cgTopology, indices = mapping.mapTopology(topology); cgPositions = "
                      "mapping.mapPositions(positions, indices); then system = openmmflash.createCGSystem(cgTopology, "
                      "model).")


class UnseenResiduesWarning(UserWarning):
    """A CG model is applied to residue types it was never trained on."""


def requireCGTopology(topology, mapping: CGMapping, what: str) -> None:
    """Raise "coarse-grain first" when ``topology`` holds atoms that are not beads of ``mapping`` (all-atom input).

    ``what`` names the call that needs a CG topology (for the message).
    """
    if not hasattr(topology, "residues"):
        raise TypeError(f"{what} needs a CG openmm.app.Topology, not {type(topology).__name__}. {COARSE_GRAIN_FIRST}")
    for residue in topology.residues():
        extra = sorted({a.name for a in residue.atoms()} - set(mapping.beadNames))
        if extra:
            kind = "water or an ion" if residue.name.upper() in IGNORED else "atoms that are no CG beads"
            raise ValueError(f"{what} needs a CG topology (one particle per {mapping.name} bead: "
                             f"{', '.join(mapping.beadNames)}), but residue {residue.name} {residue.id} holds {kind} "
                             f"({', '.join(extra[:8])}{', ...' if len(extra) > 8 else ''}): this looks like an "
                             f"all-atom topology. {COARSE_GRAIN_FIRST}")


def trainingResidues(metadata: dict) -> Optional[Set[str]]:
    """Residue types of the protein(s) a CG model was trained on (from ``metadata["trainingResidues"]`` or the
    training structure ``metadata["structure"]``, a PDB text), or None when the model file does not say."""
    if metadata.get("trainingResidues"):
        return {canonicalResidue(r) for r in metadata["trainingResidues"]}
    pdb = metadata.get("structure")
    if not pdb:
        return None
    return {canonicalResidue(line[17:20].strip()) for line in pdb.splitlines() if line.startswith(("ATOM", "HETATM"))}


def warnUnseenResidues(model, topology) -> None:
    """Warn when ``topology`` holds residue types the CG ``model`` was never trained on."""
    seen = trainingResidues(getattr(model, "metadata", {}) or {})
    if seen is None:
        return
    present = Counter(canonicalResidue(r.name) for r in topology.residues())
    unseen = sorted(set(present) - seen - IGNORED)
    if unseen:
        counts = ", ".join(f"{name} ({present[name]})" for name in unseen)
        covering = [name for name, residues in _bundledTrainingResidues().items()
                    if residues is not None and set(present) - IGNORED <= residues]
        hint = f" The bundled model(s) {', '.join(covering)} were trained on all of this protein's residue types." \
            if covering else ""
        warnings.warn(f"the model was never trained on residue types {counts}: it was trained on a protein with "
                      f"{', '.join(sorted(seen))} only, so its forces on the other residues are untested "
                      "extrapolation. Use a model trained on proteins that contain them (openmmflash cg-data, "
                      f"cg-train).{hint}", UnseenResiduesWarning, stacklevel=userStacklevel())


def _bundledTrainingResidues() -> dict:
    """Bundled FlashSchNet model name -> its training residue types (None where the file does not say)."""
    from openmmflash.schnet.modelfile import bundledModels, readModelFile, resolveModelPath

    return {name: trainingResidues(readModelFile(resolveModelPath(name)).get("metadata", {}))
            for name in bundledModels()}
