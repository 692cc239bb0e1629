"""MLPotential('flashschnet') through the openmmml.potentials entry point."""

import numpy as np
import pytest

from conftest import make_model
from openmmflash.cg.cgsystem import createCGSystem
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
