"""Prior fitting by Boltzmann inversion: known parameters are recovered from samples of their distributions."""

import math

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

from openmmflash.cg.priorfit import (angleCosines, dihedralAngles, fitAngle, fitBond, fitDihedral, fitImproper,
                                     fitPriors, kT)
from openmmflash.stack import import_openmm

KT = kT(300.0)


def _rejection(rng, energy, lo, hi, count, weight=None):
    """Samples of p(x) ~ weight(x) exp(-energy(x)/kT) on [lo, hi]."""
    grid = np.linspace(lo, hi, 4001)
    dens = np.exp(-(energy(grid) - energy(grid).min()) / KT) * (weight(grid) if weight else 1.0)
    top = dens.max() * 1.01
    out = []
    while sum(len(o) for o in out) < count:
        x = rng.uniform(lo, hi, 4 * count)
        y = rng.uniform(0, top, 4 * count)
        d = np.exp(-(energy(x) - energy(grid).min()) / KT) * (weight(x) if weight else 1.0)
        out.append(x[y < d])
    return np.concatenate(out)[:count]


def test_bond_recovered_with_jacobian():
    rng = np.random.default_rng(0)
    x0, k = 3.8, 12.0  # a soft bond, where the d^2 Jacobian matters
    d = _rejection(rng, lambda r: k * (r - x0) ** 2, 2.8, 4.8, 200000, weight=lambda r: r ** 2)
    fit = fitBond(d, KT)
    assert fit["x0"] == pytest.approx(x0, abs=0.01)
    assert fit["k"] == pytest.approx(k, rel=0.05)


def test_angle_recovered():
    rng = np.random.default_rng(1)
    cos0, k = -0.4, 30.0
    c = _rejection(rng, lambda x: k * (x - cos0) ** 2, -1.0, 1.0, 100000)
    fit = fitAngle(c, KT)
    assert fit["cos0"] == pytest.approx(cos0, abs=0.005)
    assert fit["k"] == pytest.approx(k, rel=0.05)


def test_dihedral_fourier_series_recovered():
    rng = np.random.default_rng(2)
    k1, k2 = [0.3, -0.2, 0.1], [0.5, 0.15, -0.1]

    def energy(phi):
        return sum(k1[n] * np.sin((n + 1) * phi) + k2[n] * np.cos((n + 1) * phi) for n in range(3))

    phi = _rejection(rng, energy, -math.pi, math.pi, 300000)
    fit = fitDihedral(phi, KT, degree=3)
    np.testing.assert_allclose(fit["k1"], k1, atol=0.03)
    np.testing.assert_allclose(fit["k2"], k2, atol=0.03)
    assert fit["v0"] >= 0.0


def test_improper_recovered_across_the_branch_cut():
    rng = np.random.default_rng(3)
    phi0, k = 3.0, 20.0  # close to +pi: the samples wrap around to negative angles
    dev = rng.normal(0.0, math.sqrt(KT / (2 * k)), 100000)
    phi = (phi0 + dev + math.pi) % (2 * math.pi) - math.pi
    fit = fitImproper(phi, KT)
    assert fit["phi0"] == pytest.approx(phi0, abs=0.01)
    assert fit["k"] == pytest.approx(k, rel=0.03)


def test_dihedral_and_angle_conventions_match_openmm():
    openmm = import_openmm()
    rng = np.random.default_rng(4)
    system = openmm.System()
    for _ in range(4):
        system.addParticle(1.0)
    torsion = openmm.CustomTorsionForce("theta")
    torsion.addTorsion(0, 1, 2, 3, [])
    torsion.setForceGroup(1)
    angle = openmm.CustomAngleForce("cos(theta)")
    angle.addAngle(0, 1, 2, [])
    angle.setForceGroup(2)
    system.addForce(torsion)
    system.addForce(angle)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x = rng.normal(size=(20, 4, 3))
    ours_t = dihedralAngles(x, np.array([[0, 1, 2, 3]]))[:, 0]
    ours_a = angleCosines(x, np.array([[0, 1, 2]]))[:, 0]
    for k in range(20):
        context.setPositions(x[k])
        theta = context.getState(getEnergy=True, groups={1}).getPotentialEnergy()._value
        cos = context.getState(getEnergy=True, groups={2}).getPotentialEnergy()._value
        assert ours_t[k] == pytest.approx(theta, abs=1e-9)
        assert ours_a[k] == pytest.approx(cos, abs=1e-9)


def test_fit_priors_on_a_cg_trajectory_builds_openmm_forces(cg_fragment):
    from openmmflash.plugin.cgsystem import createCGSystem

    openmm = import_openmm()
    topology, positions = cg_fragment
    rng = np.random.default_rng(5)
    frames = positions[None] + rng.normal(0.0, 0.005, (300,) + positions.shape)  # nm
    priors = fitPriors(topology, frames, 300.0)
    for kind in ("bonds", "angles", "dihedrals", "impropers", "repulsion"):
        assert priors[kind], kind
    assert set(priors["bonds"]) == {"CA-N", "C-CA", "CA-CB", "C-O", "C-N"}
    assert priors["bonds"]["C-CA"]["x0"] == pytest.approx(10 * np.linalg.norm(positions[1] - positions[3]), abs=0.1)
    residues = {r.name for r in topology.residues()}
    assert {key.split(":")[1] for key in priors["dihedrals"] if ":" in key} == residues
    with pytest.raises(ValueError, match="frames"):
        fitPriors(topology, frames[:3], 300.0)
    system = createCGSystem(topology, priors=priors)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    assert np.isfinite(state.getPotentialEnergy()._value)
    assert np.all(np.isfinite(state.getForces(asNumpy=True)._value))
