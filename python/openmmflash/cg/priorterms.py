"""Prior term lists of a CG topology and force builders shared by ``openmmflash.cg.priors`` (name-keyed
parameters) and ``openmmflash.cg.typedpriors`` (bead-type-keyed parameters)."""

from collections import defaultdict
from typing import Dict, List, Tuple

from openmmflash.stack import import_openmm

NAME_ORDER = {"N": 0, "CA": 1, "CB": 2, "C": 3, "O": 4}


def enumerateTerms(topology, bonds: List[Tuple[int, int]], repulsionExclusion: int = 2) -> Dict[str, list]:
    """Index tuples of every prior term of a CG topology with the given bonds.

    Angles are bonded triples, dihedrals bonded quadruples (i-j-k-l paths), impropers one per bead with exactly
    three bonded neighbours (neighbours in N, CA, CB, C, O order then by index, the centre last), repulsion pairs
    all same-chain pairs more than ``repulsionExclusion`` bonds apart.
    """
    atoms = list(topology.atoms())
    neighbors = defaultdict(set)
    for i, j in bonds:
        neighbors[i].add(j)
        neighbors[j].add(i)
    angles, dihedrals, impropers = [], [], []
    for j in range(len(atoms)):
        nb = sorted(neighbors[j])
        for a in range(len(nb)):
            for b in range(a + 1, len(nb)):
                angles.append((nb[a], j, nb[b]))
        if len(nb) == 3:
            ordered = sorted(nb, key=lambda k: (NAME_ORDER.get(atoms[k].name, 9), k))
            impropers.append((ordered[0], ordered[1], ordered[2], j))
    for j, k in bonds:
        for i in sorted(neighbors[j] - {k}):
            for m in sorted(neighbors[k] - {j}):
                if i != m:
                    dihedrals.append((i, j, k, m))
    repulsion = []
    for chain in topology.chains():
        members = [a.index for a in chain.atoms()]
        for i in members:
            # Breadth-first search to find beads within the exclusion distance.
            near, frontier = {i}, {i}
            for _ in range(repulsionExclusion):
                frontier = {n for f in frontier for n in neighbors[f]} - near
                near |= frontier
            repulsion += [(i, j) for j in members if j > i and j not in near]
    return {"bonds": list(bonds), "angles": angles, "dihedrals": dihedrals, "impropers": impropers,
            "repulsion": repulsion}


def fourierTorsionForce(found, kj: float):
    """CustomTorsionForce v0 + sum_n k1_n sin(n theta) + k2_n cos(n theta) of (indices, {"v0", "k1", "k2"}) terms,
    energies times ``kj``."""
    openmm = import_openmm()
    degree = max(max(len(p.get("k1", [])), len(p.get("k2", []))) for _, p in found)
    series = " + ".join(f"s{n}*sin({n}*theta) + c{n}*cos({n}*theta)" for n in range(1, degree + 1))
    force = openmm.CustomTorsionForce(f"v0 + {series}" if degree else "v0")
    names = ["v0"] + [f"{x}{n}" for n in range(1, degree + 1) for x in ("s", "c")]
    for name in names:
        force.addPerTorsionParameter(name)
    for t, p in found:
        k1 = list(p.get("k1", [])) + [0.0] * degree
        k2 = list(p.get("k2", [])) + [0.0] * degree
        values = [float(p.get("v0", 0.0))] + [v for n in range(degree) for v in (k1[n], k2[n])]
        force.addTorsion(*t, [v * kj for v in values])
    return force


def repulsionForce(found, kj: float, nm: float):
    """CustomBondForce (sigma/r)^6 of ((i, j), {"sigma"}) pairs; sigma in model length units (times ``nm``), energy
    times ``kj``."""
    openmm = import_openmm()
    force = openmm.CustomBondForce(f"{kj}*(sigma/r)^6")
    force.addPerBondParameter("sigma")
    for (i, j), p in found:
        force.addBond(i, j, [float(p["sigma"]) * nm])
    return force


def addPriorForcesToSystem(system, forces, topology, forceGroup: int, label: str) -> None:
    """Add ``forces`` to ``system`` in ``forceGroup``, named "<label> (<class>)", periodic when ``topology`` has a
    box."""
    for force in forces:
        force.setForceGroup(forceGroup)
        force.setName(f"{label} ({force.__class__.__name__})")
        if topology.getPeriodicBoxVectors() is not None and hasattr(force, "setUsesPeriodicBoundaryConditions"):
            force.setUsesPeriodicBoundaryConditions(True)
        system.addForce(force)
