"""CGSchNet prior terms as native OpenMM forces, with parameters from the model file (model units).

Functional forms (mlcg, no 1/2 factors; lengths in the model's length unit, energies in its energy unit, angles in
radians; torsions use OpenMM's convention)::

    bonds      k (d - x0)^2 + v0                       -> HarmonicBondForce (CustomBondForce if any v0 != 0)
    angles     k (cos(theta) - cos0)^2                   -> CustomAngleForce (not HarmonicAngleForce)
    dihedrals  v0 + sum_n k1_n sin(n phi) + k2_n cos(n phi)   -> CustomTorsionForce
    impropers  k (phi - phi0)^2, phi - phi0 wrapped to [-pi, pi)   -> CustomTorsionForce
    repulsion  (sigma / d)^6 over beads more than ``repulsionExclusion`` bonds apart   -> CustomBondForce

``priors`` is a dict ``{"bonds": {key: {"x0", "k", "v0"?}}, "angles": {key: {"cos0", "k"}}, "dihedrals": {key: {"v0",
"k1": [...], "k2": [...]}}, "impropers": {key: {"phi0", "k"}}, "repulsion": {key: {"sigma"}},
"repulsionExclusion": 2}``. Keys name the beads of a term joined by "-", optionally with ":RES", the residue of the
first CA in the term ("C-N-CA-C:ALA" is the phi torsion of an alanine); the most specific key wins, and a term with
no key is left out. Repulsion keys are the two bead names sorted ("CA-O"), or "*" for all pairs.
"""

import math
from typing import Dict, List, Optional, Tuple

from openmmflash.cg.mapping import canonicalResidue
from openmmflash.cg.priorterms import (addPriorForcesToSystem, enumerateTerms,  # noqa: F401  (enumerateTerms re-exported)
                                       fourierTorsionForce, repulsionForce)
from openmmflash.cg.typedpriors import addTypedPriorForces
from openmmflash.schnet.config import ENERGY_UNITS, LENGTH_UNITS
from openmmflash.stack import import_openmm

TERM_KINDS = ("bonds", "angles", "dihedrals", "impropers", "repulsion")


def termKeys(atoms, indices, kind: str) -> List[str]:
    """Candidate parameter keys of one term, most specific first."""
    names = [atoms[i].name for i in indices]
    if kind == "repulsion":
        labels = sorted(f"{canonicalResidue(atoms[i].residue.name)}:{atoms[i].name}" for i in indices)
        return ["-".join(labels), "-".join(sorted(names)), "*"]
    orders = [names] if kind == "impropers" else [names, names[::-1]]
    residue = next((canonicalResidue(atoms[i].residue.name) for i in indices if atoms[i].name == "CA"), None)
    keys = []
    if residue is not None:
        keys += ["-".join(o) + f":{residue}" for o in orders]
    keys += ["-".join(o) for o in orders]
    return keys


def lookup(params: Dict[str, dict], atoms, indices, kind: str) -> Optional[dict]:
    for key in termKeys(atoms, indices, kind):
        if key in params:
            return params[key]
    return None


def parameterized(terms, params: Dict[str, dict], atoms, kind: str) -> list:
    """(term, parameters) for every term of ``kind`` that has parameters."""
    found = [(t, lookup(params, atoms, t, kind)) for t in terms]
    return [(t, p) for t, p in found if p is not None]


def addPriorForces(system, topology, bonds: List[Tuple[int, int]], priors: dict, lengthUnit: str = "angstrom",
                   energyUnit: str = "kcal/mol", forceGroup: int = 1) -> list:
    """Add the prior terms to ``system``; returns the forces added. Bonds are the mapping's bonded pairs."""
    if priors.get("typed"):
        # Bead-type-keyed tables (imported mlcg priors).
        return addTypedPriorForces(system, topology, bonds, priors, lengthUnit, energyUnit, forceGroup)
    openmm = import_openmm()
    nm = LENGTH_UNITS[lengthUnit]   # nm per model length unit
    kj = ENERGY_UNITS[energyUnit]   # kJ/mol per model energy unit
    atoms = list(topology.atoms())
    terms = enumerateTerms(topology, bonds, int(priors.get("repulsionExclusion", 2)))
    forces = []

    found = parameterized(terms["bonds"], priors.get("bonds", {}), atoms, "bonds")
    if found:
        if any(float(p.get("v0", 0.0)) != 0.0 for _, p in found):
            force = openmm.CustomBondForce("k*(r-x0)^2+v0")
            for name in ("k", "x0", "v0"):
                force.addPerBondParameter(name)
            for (i, j), p in found:
                force.addBond(i, j, [float(p["k"]) * kj / nm**2, float(p["x0"]) * nm, float(p.get("v0", 0)) * kj])
        else:
            force = openmm.HarmonicBondForce()
            for (i, j), p in found:
                force.addBond(i, j, float(p["x0"]) * nm, 2.0 * float(p["k"]) * kj / nm**2)
        forces.append(force)

    found = parameterized(terms["angles"], priors.get("angles", {}), atoms, "angles")
    if found:
        force = openmm.CustomAngleForce("k*(cos(theta)-cos0)^2")
        force.addPerAngleParameter("k")
        force.addPerAngleParameter("cos0")
        for t, p in found:
            force.addAngle(*t, [float(p["k"]) * kj, float(p["cos0"])])
        forces.append(force)

    found = parameterized(terms["dihedrals"], priors.get("dihedrals", {}), atoms, "dihedrals")
    if found:
        forces.append(fourierTorsionForce(found, kj))

    found = parameterized(terms["impropers"], priors.get("impropers", {}), atoms, "impropers")
    if found:
        two_pi = 2.0 * math.pi
        force = openmm.CustomTorsionForce(f"k*dphi^2; dphi = theta - phi0 - {two_pi}*floor((theta - phi0)/{two_pi} + 0.5)")
        force.addPerTorsionParameter("k")
        force.addPerTorsionParameter("phi0")
        for t, p in found:
            force.addTorsion(*t, [float(p["k"]) * kj, float(p["phi0"])])
        forces.append(force)

    found = parameterized(terms["repulsion"], priors.get("repulsion", {}), atoms, "repulsion")
    if found:
        forces.append(repulsionForce(found, kj, nm))

    addPriorForcesToSystem(system, forces, topology, forceGroup, "FlashSchNet prior")
    return forces
