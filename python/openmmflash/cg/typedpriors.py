"""Bead-type-keyed prior terms (mlcg's prior tables) as native OpenMM forces.

mlcg indexes each prior's parameters by the bead types of the term's beads, in term order (a bond i-j by
(t_i, t_j), a dihedral i-j-k-l by (t_i, t_j, t_k, t_l)); ``priors`` holds those tables with keys "t_i-t_j-..."::

    {"typed": True, "beadTypes": {"TYR:CA": 20, ...}, "repulsionExclusion": 2,
     "bonds": {"20-20": {"x0", "k", "v0"}},  "angles": {"20-20-3": {"x0", "k", "v0"}},
     "dihedrals": {"20-20-3-13": {"v0", "k1": [..], "k2": [..]}},  "repulsion": {"3-20": {"sigma"}}}

Forms (model units, no 1/2 factors; cos(theta) for angles; phi in mlcg's (mdtraj's) sign convention)::

    bonds      k (d - x0)^2 + v0                          -> CustomBondForce
    angles     k (cos(theta) - x0)^2 + v0                 -> CustomAngleForce
    dihedrals  v0 + sum_n k1_n sin(n phi) + k2_n cos(n phi) -> CustomTorsionForce (OpenMM's theta = phi)
    repulsion  (sigma / d)^6                              -> CustomBondForce

Terms come from the CG topology by mlcg's data-tools rule (``typedTerms``): bonds are the mapping's bonds, angles
every bonded triple, dihedrals every bonded quadruple (path i-j-k-l), repulsion every same-chain pair more than
``repulsionExclusion`` (2) bonds apart and not in the same residue. A term whose type key (or its reverse) has no
entry gets no force, as a zero entry of mlcg's table gives no energy.

With ``"terms": {"bonds": [{"atoms": [i, j], "x0", "k", "v0"}, ...], ...}`` and ``"numBeads"`` the priors are explicit
per-term lists bound to one structure (mlcg's stored neighbour lists, e.g. 5-bead phi/psi/omega/gamma terms).
"""

from typing import Dict, List, Tuple

from openmmflash.cg.mapping import beadTypesFromTopology
from openmmflash.cg.priorterms import addPriorForcesToSystem, enumerateTerms, fourierTorsionForce, repulsionForce
from openmmflash.schnet.config import ENERGY_UNITS, LENGTH_UNITS
from openmmflash.stack import import_openmm

KINDS = ("bonds", "angles", "dihedrals", "repulsion")


def typedTerms(topology, bonds: List[Tuple[int, int]], repulsionExclusion: int = 2) -> Dict[str, list]:
    """Index tuples of the bonds, angles, dihedrals and repulsion pairs of a CG topology (mlcg's rule)."""
    terms = enumerateTerms(topology, bonds, repulsionExclusion)
    atoms = list(topology.atoms())
    terms["repulsion"] = [(i, j) for i, j in terms["repulsion"] if atoms[i].residue is not atoms[j].residue]
    return {kind: terms[kind] for kind in KINDS}


def typeKey(types) -> str:
    return "-".join(str(int(t)) for t in types)


def lookupTyped(table: dict, types) -> dict:
    """Parameters of a term with bead types ``types`` (key in order, then reversed), or None."""
    return table.get(typeKey(types), table.get(typeKey(list(types)[::-1])))


def addTypedPriorForces(system, topology, bonds: List[Tuple[int, int]], priors: dict, lengthUnit: str = "angstrom",
                        energyUnit: str = "kcal/mol", forceGroup: int = 1) -> list:
    """Add the type-keyed prior terms to ``system``; returns the forces added."""
    openmm = import_openmm()
    nm = LENGTH_UNITS[lengthUnit]   # nm per model length unit
    kj = ENERGY_UNITS[energyUnit]   # kJ/mol per model energy unit
    types = beadTypesFromTopology(topology, priors["beadTypes"])
    terms = typedTerms(topology, bonds, int(priors.get("repulsionExclusion", 2)))

    explicit = priors.get("terms")
    if explicit is not None and int(priors.get("numBeads", -1)) != len(types):
        raise ValueError(f"these priors are bound to the stored {priors.get('numBeads')}-bead structure they were "
                         f"imported with; the topology has {len(types)} beads")

    def found(kind):
        if explicit is not None:
            return [(tuple(p["atoms"]), p) for p in explicit.get(kind, [])]
        table = priors.get(kind, {})
        pairs = [(t, lookupTyped(table, [types[i] for i in t])) for t in terms[kind]]
        return [(t, p) for t, p in pairs if p is not None]

    forces = []
    bonded = found("bonds")
    if bonded:
        force = openmm.CustomBondForce("k*(r-x0)^2+v0")
        for name in ("k", "x0", "v0"):
            force.addPerBondParameter(name)
        for (i, j), p in bonded:
            force.addBond(i, j, [float(p["k"]) * kj / nm**2, float(p["x0"]) * nm, float(p.get("v0", 0.0)) * kj])
        forces.append(force)

    angles = found("angles")
    if angles:
        force = openmm.CustomAngleForce("k*(cos(theta)-x0)^2+v0")
        for name in ("k", "x0", "v0"):
            force.addPerAngleParameter(name)
        for t, p in angles:
            force.addAngle(*t, [float(p["k"]) * kj, float(p["x0"]), float(p.get("v0", 0.0)) * kj])
        forces.append(force)

    torsions = found("dihedrals")
    if torsions:
        forces.append(fourierTorsionForce(torsions, kj))

    pairs = found("repulsion")
    if pairs:
        forces.append(repulsionForce(pairs, kj, nm))

    addPriorForcesToSystem(system, forces, topology, forceGroup, "mlcg prior")
    return forces
