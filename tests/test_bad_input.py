"""Bad input gets a clear error, and the Context stays usable afterwards."""

import numpy as np
import pytest

from conftest import make_model
from openmmflash.cg.mapping import CGMapping, beadTypesFromTopology
from openmmflash.plugin.torchforce import addFlashSchNetForce, createFlashSchNetForce
from openmmflash.stack import import_openmm

openmm = import_openmm()


def system_with_force(top, n_particles, **options):
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(12.0)
    system.addForce(createFlashSchNetForce(make_model(), top, numParticles=top.getNumAtoms(), **options))
    return system


def context_for(system):
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def test_wrong_particle_count_refused_at_creation(cg_fragment):
    top, _ = cg_fragment
    system = openmm.System()
    for _ in range(top.getNumAtoms() + 2):
        system.addParticle(12.0)
    n = top.getNumAtoms()
    with pytest.raises(ValueError, match=f"System has {n + 2} particles but {n} bead types"):
        addFlashSchNetForce(system, make_model(), top)


def test_wrong_particle_count_at_evaluation(cg_fragment):
    top, pos = cg_fragment
    context = context_for(system_with_force(top, top.getNumAtoms() + 1))
    context.setPositions(np.vstack([pos, [[0.0, 0.0, 0.0]]]))
    n = top.getNumAtoms()
    with pytest.raises(openmm.OpenMMException, match=f"created for {n} particles but the System has {n + 1}"):
        context.getState(getEnergy=True)


def test_unknown_bead_types(cg_fragment):
    top, _ = cg_fragment
    table = {k: v for k, v in CGMapping().defaultBeadTypes().items() if not k.startswith("ARG")}
    with pytest.raises(ValueError, match="types unknown to the model.*ARG:CA"):
        beadTypesFromTopology(top, table)
    with pytest.raises(ValueError, match=r"bead types \[99\] are unknown to the model"):
        createFlashSchNetForce(make_model(), beadTypes=[99] * top.getNumAtoms())


def test_nan_positions_then_recover(cg_fragment):
    top, pos = cg_fragment
    context = context_for(system_with_force(top, top.getNumAtoms()))
    bad = pos.copy()
    bad[3, 1] = np.nan
    context.setPositions(bad)
    with pytest.raises(openmm.OpenMMException, match="NaN"):
        context.getState(getEnergy=True)
    context.setPositions(pos)  # nothing was corrupted: the same Context evaluates again
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy()._value)


def test_capacity_overflow_is_an_error_not_a_silent_drop(cg_fragment):
    top, pos = cg_fragment
    context = context_for(system_with_force(top, top.getNumAtoms(), neighborCapacity=40))
    context.setPositions(pos)
    with pytest.raises(openmm.OpenMMException, match="neighbor list overflow.*neighborCapacity"):
        context.getState(getEnergy=True)
    roomy = context_for(system_with_force(top, top.getNumAtoms(), neighborCapacity=3000))
    exact = context_for(system_with_force(top, top.getNumAtoms()))
    for ctx in (roomy, exact):
        ctx.setPositions(pos)
    e1 = roomy.getState(getEnergy=True).getPotentialEnergy()._value
    e2 = exact.getState(getEnergy=True).getPotentialEnergy()._value
    assert e1 == pytest.approx(e2, rel=1e-6)


def test_mismatched_replicas(cg_fragment):
    top, _ = cg_fragment
    with pytest.raises(ValueError, match="cannot form 2 equal replicas"):
        createFlashSchNetForce(make_model(), top, replicas=2)  # 45 beads
    with pytest.raises(ValueError, match="replicas must be identical copies"):
        createFlashSchNetForce(make_model(), top, replicas=5)  # 5 x 9 beads, but different residues


def test_bad_options(cg_fragment):
    top, _ = cg_fragment
    with pytest.raises(ValueError, match="precision must be one of"):
        createFlashSchNetForce(make_model(), top, precision="half")
    with pytest.raises(ValueError, match="backend must be"):
        addFlashSchNetForce(openmm.System(), make_model(), top, backend="cuda")
    with pytest.raises(ValueError, match="unknown CG mapping"):
        CGMapping("martini")
