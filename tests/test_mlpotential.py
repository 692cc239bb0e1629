"""MLPotential('flashschnet') through the openmmml.potentials entry point."""

import numpy as np
import pytest

from conftest import make_model
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.stack import import_openmm

openmm = import_openmm()
openmmml = pytest.importorskip("openmmml")


def energy(system, pos):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    return context.getState(getEnergy=True).getPotentialEnergy()._value


def test_create_system_matches_cg_system(tmp_path, cg_fragment):
    top, pos = cg_fragment
    model = make_model()
    path = str(tmp_path / "model.pt")
    model.save(path)
    potential = openmmml.MLPotential("flashschnet", modelPath=path)
    system = potential.createSystem(top, precision="double")
    expected = createCGSystem(top, model, precision="double")
    assert system.getNumParticles() == top.getNumAtoms()
    assert energy(system, pos) == pytest.approx(energy(expected, pos), rel=1e-10)
    without = potential.createSystem(top, includePriors=False, precision="double")
    assert len(without.getForces()) < len(system.getForces())


def test_model_path_required():
    with pytest.raises(ValueError, match="needs modelPath"):
        openmmml.MLPotential("flashschnet")


def test_atom_subset_models_only_those_atoms(tmp_path, cg_fragment):
    """addForces(atoms=...) (as createMixedSystem uses it) models the listed atoms alone."""
    from openmmflash.plugin.replicas import replicate

    top, pos = cg_fragment
    path = str(tmp_path / "model.pt")
    make_model().save(path)
    impl = openmmml.MLPotential("flashschnet", modelPath=path)._impl
    n = top.getNumAtoms()
    rtop, _, rpos = replicate(top, None, pos, 2)
    both, single = openmm.System(), openmm.System()
    for _ in range(2 * n):
        both.addParticle(12.0)
    for _ in range(n):
        single.addParticle(12.0)
    impl.addForces(rtop, both, range(n, 2 * n), 0, includePriors=False, precision="double")
    impl.addForces(top, single, None, 0, includePriors=False, precision="double")

    def evaluate(system, positions):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True)
        return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value

    e2, f2 = evaluate(both, rpos)
    e1, f1 = evaluate(single, pos)
    assert e2 == pytest.approx(e1, rel=1e-12)
    np.testing.assert_allclose(f2[n:], f1, rtol=1e-10, atol=1e-10)
    assert np.all(f2[:n] == 0.0)
    with pytest.raises(ValueError, match="includePriors=True needs the whole topology"):
        impl.addForces(rtop, openmm.System(), range(n), 0)
