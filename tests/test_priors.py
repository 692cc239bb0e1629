"""Prior terms as native OpenMM forces: each term's energy against a NumPy evaluation of the mlcg form."""

import numpy as np
import pytest

from conftest import PRIORS
from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.priors import addPriorForces, enumerateTerms, lookup
from openmmflash.stack import import_openmm

openmm = import_openmm()
unit = openmm.unit


def torsion(p):
    """Dihedral angle in OpenMM's (IUPAC) convention, radians."""
    b1, b2, b3 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2))


def numpy_prior_energy(kind, params, p):
    """mlcg forms in kcal/mol with positions in Angstrom."""
    if kind == "bonds":
        d = np.linalg.norm(p[1] - p[0])
        return params["k"] * (d - params["x0"]) ** 2 + params.get("v0", 0.0)
    if kind == "angles":
        a, b = p[0] - p[1], p[2] - p[1]
        c = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        return params["k"] * (c - params["cos0"]) ** 2
    if kind == "dihedrals":
        phi = torsion(p)
        e = params["v0"]
        for n, (s, c) in enumerate(zip(params["k1"], params["k2"]), start=1):
            e += s * np.sin(n * phi) + c * np.cos(n * phi)
        return e
    if kind == "impropers":
        dphi = (torsion(p) - params["phi0"] + np.pi) % (2 * np.pi) - np.pi
        return params["k"] * dphi ** 2
    return (params["sigma"] / np.linalg.norm(p[1] - p[0])) ** 6


@pytest.fixture(scope="module")
def fragment_terms(cg_fragment):
    top, pos = cg_fragment
    bonds = CGMapping("5bead").bondedPairs(top)
    return top, pos, bonds, enumerateTerms(top, bonds)


def test_terms_of_the_5bead_topology(fragment_terms):
    top, _, bonds, terms = fragment_terms
    residues = list(top.residues())
    assert len(bonds) == top.getNumAtoms() - 1  # a tree: one chain
    names = [a.name for a in top.atoms()]
    phis = [t for t in terms["dihedrals"] if [names[i] for i in t] == ["C", "N", "CA", "C"]]
    assert len(phis) == len(residues) - 1
    chirality = [t for t in terms["impropers"] if [names[i] for i in t] == ["N", "CB", "C", "CA"]]
    assert len(chirality) == sum(r.name != "GLY" for r in residues)
    excluded = {tuple(sorted(b)) for b in bonds} | {tuple(sorted((a[0], a[2]))) for a in terms["angles"]}
    assert not excluded & set(terms["repulsion"])
    n = top.getNumAtoms()
    assert len(terms["repulsion"]) == n * (n - 1) // 2 - len(excluded)


@pytest.mark.parametrize("kind", ["bonds", "angles", "dihedrals", "impropers", "repulsion"])
def test_prior_energy_matches_mlcg_form(fragment_terms, kind):
    top, pos, bonds, terms = fragment_terms
    priors = {kind: PRIORS[kind]}
    system = openmm.System()
    for _ in range(top.getNumAtoms()):
        system.addParticle(12.0)
    forces = addPriorForces(system, top, bonds, priors)
    assert len(forces) == 1
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    rng = np.random.default_rng(0)
    positions = pos + rng.normal(scale=0.01, size=pos.shape)  # off the ideal geometry
    context.setPositions(positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    atoms = list(top.atoms())
    expected, count = 0.0, 0
    for term in terms[kind]:
        params = lookup(PRIORS[kind], atoms, term, kind)
        if params is not None:
            expected += numpy_prior_energy(kind, params, positions[list(term)] * 10.0)
            count += 1
    assert count > 0
    assert energy == pytest.approx(expected * 4.184, rel=1e-9)


def test_bond_offset_uses_custom_force(fragment_terms):
    top, _, bonds, _ = fragment_terms
    system = openmm.System()
    for _ in range(top.getNumAtoms()):
        system.addParticle(12.0)
    forces = addPriorForces(system, top, bonds, {"bonds": {"N-CA": {"x0": 1.46, "k": 10.0, "v0": 0.5}}})
    assert forces[0].__class__.__name__ == "CustomBondForce"


def test_residue_specific_key_wins(fragment_terms):
    top, _, _, terms = fragment_terms
    atoms = list(top.atoms())
    names = [a.name for a in atoms]
    for t in terms["dihedrals"]:
        if [names[i] for i in t] == ["C", "N", "CA", "C"]:
            params = lookup(PRIORS["dihedrals"], atoms, t, "dihedrals")
            ca = [atoms[i] for i in t if atoms[i].name == "CA"][0]
            expected = "C-N-CA-C:GLY" if ca.residue.name == "GLY" else "C-N-CA-C"
            assert params is PRIORS["dihedrals"][expected]
