"""Messages about residues that coarse-graining leaves out or cannot map (used by ``CGMapping.mapTopology``).

- :func:`warnDroppedResidues`: coarse-graining drops water, ions and terminal caps (the CG models have beads for
  protein residues only); a :class:`DroppedResiduesWarning` says what was dropped and how to strip it beforehand.
- :func:`nonProteinResidueMessage`: a ligand or other non-protein residue cannot be mapped; how to remove it.
"""

import sys
import warnings
from collections import Counter

WATER = {"HOH", "WAT", "SOL", "TIP3"}
CAPS = {"ACE", "NME", "NH2"}


def userStacklevel() -> int:
    """The ``stacklevel`` of the first caller outside openmmflash (so a warning names the user's line)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("openmmflash"):
        level, frame = level + 1, frame.f_back
    return level


class DroppedResiduesWarning(UserWarning):
    """Water, ions or caps were left out when a structure was coarse-grained."""


def warnDroppedResidues(names: Counter) -> None:
    """Warn about the residues (name -> count) that coarse-graining left out, with the Modeller calls that strip them."""
    if not names:
        return
    groups = {"water molecules": sorted(n for n in names if n.upper() in WATER),
              "capping groups": sorted(n for n in names if n.upper() in CAPS)}
    groups["ions"] = sorted(n for n in names if n not in groups["water molecules"] + groups["capping groups"])
    parts = [f"{sum(names[n] for n in group)} {label} ({', '.join(group)})" for label, group in groups.items() if group]
    others = [n for n in names if n.upper() not in WATER]
    strip = "modeller = app.Modeller(topology, positions); modeller.deleteWater()"
    if others:
        strip += f"; modeller.delete([r for r in modeller.topology.residues() if r.name in {tuple(sorted(others))}])"
    warnings.warn(f"coarse-graining left out {', '.join(parts)}: the CG models have beads for protein residues only "
                  "(their solvent is implicit). To remove them yourself and silence this warning: " + strip,
                  DroppedResiduesWarning, stacklevel=userStacklevel())


def nonProteinResidueMessage(residue, mappingName: str) -> str:
    """Why ``residue`` (neither amino acid nor water/ion/cap) cannot be coarse-grained, and how to remove it."""
    return (f"residue {residue.name} {residue.id} (chain {residue.chain.id}) is not a standard amino acid, water or "
            f"ion (a ligand, cofactor or nucleotide?); the {mappingName} mapping has beads for "
            "the 20 standard amino acids only. Remove it before coarse-graining: modeller = app.Modeller(topology, "
            f"positions); modeller.delete([r for r in modeller.topology.residues() if r.name == {residue.name!r}]), "
            "or PDBFixer's removeHeterogens(keepWater=False) for every ligand; modified amino acids (MSE, ...) are "
            "replaced by openmmflash.loadProtein, which runs pdbfixer.")
