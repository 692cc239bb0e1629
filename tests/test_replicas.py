"""Replicated Systems (plugin/replicas.py): B copies of the bonded terms, and one copy back out of them."""

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)
import openmm as mm
from openmm import unit

from openmmflash.plugin.replicas import replicate, singleReplicaSystem


def _molecule():
    """5 particles with a harmonic bond, a custom angle (per-angle and global parameters), a torsion, a CMMotionRemover."""
    system = mm.System()
    for mass in (12.0, 14.0, 12.0, 16.0, 12.0):
        system.addParticle(mass)
    bonds = mm.HarmonicBondForce()
    for i in range(4):
        bonds.addBond(i, i + 1, 0.15 + 0.01 * i, 1000.0 * (i + 1))
    angles = mm.CustomAngleForce("0.5*k*scale*(theta-theta0)^2")
    angles.addPerAngleParameter("k")
    angles.addPerAngleParameter("theta0")
    angles.addGlobalParameter("scale", 0.7)
    angles.setForceGroup(2)
    for i in range(3):
        angles.addAngle(i, i + 1, i + 2, [200.0 + 10 * i, 1.9])
    torsions = mm.PeriodicTorsionForce()
    torsions.addTorsion(0, 1, 2, 3, 3, 0.3, 4.0)
    torsions.addTorsion(1, 2, 3, 4, 1, 1.1, 2.5)
    for force in (bonds, angles, torsions, mm.CMMotionRemover()):
        system.addForce(force)
    pos = np.array([[0, 0, 0], [0.15, 0.02, 0], [0.22, 0.15, 0.03], [0.37, 0.16, -0.05], [0.45, 0.3, 0.0]])
    return system, pos


def _energy(system, positions):
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_replicas_carry_every_term_and_one_copy_comes_back():
    from openmm import app

    system, pos = _molecule()
    top = app.Topology()
    chain = top.addChain()
    for k in range(5):
        top.addAtom(f"C{k}", app.element.carbon, top.addResidue("UNK", chain))
    top3, system3, pos3 = replicate(top, system, pos, 3)
    assert system3.getNumParticles() == 15 and top3.getNumAtoms() == 15
    assert [system3.getParticleMass(10 + i) for i in range(5)] == [system.getParticleMass(i) for i in range(5)]
    counts = {f.__class__.__name__: f for f in system3.getForces()}
    assert counts["HarmonicBondForce"].getNumBonds() == 12 and counts["CustomAngleForce"].getNumAngles() == 9
    assert counts["PeriodicTorsionForce"].getNumTorsions() == 6 and "CMMotionRemover" in counts
    assert counts["CustomAngleForce"].getAngleParameters(8)[:3] == [12, 13, 14]
    single = _energy(system, pos)
    assert abs(single) > 1.0
    assert _energy(system3, pos3) == pytest.approx(3 * single, rel=1e-10)
    one = singleReplicaSystem(system3, 3)
    assert one.getNumParticles() == 5
    forces = {f.__class__.__name__: f for f in one.getForces()}
    assert forces["CustomAngleForce"].getForceGroup() == 2 and forces["CustomAngleForce"].getNumGlobalParameters() == 1
    assert forces["HarmonicBondForce"].getNumBonds() == 4
    assert _energy(one, pos3[:5]) == pytest.approx(single, rel=1e-10)


def test_unsupported_force_is_named():
    system, pos = _molecule()
    system.addForce(mm.NonbondedForce())
    with pytest.raises(ValueError, match="cannot replicate a NonbondedForce"):
        replicate(None, system, pos, 2)
    with pytest.raises(ValueError, match="5 particles cannot form 2 equal replicas"):
        singleReplicaSystem(system, 2)
