"""The bundled CG models: each loads by name, carries its native structure, priors and provenance, stays small, and
gives one OpenMM energy/force evaluation that matches the network's own autograd forces (CPU)."""

import os

import numpy as np
import pytest
import torch

from openmmflash.schnet.modelfile import BUNDLED_DIR, bundledModels
from openmmflash.stack import import_openmm

EXPECTED = {"chignolin": 10, "3a4r": 79}  # residues of the native structure stored in each model file


def test_the_two_issue_models_are_bundled():
    assert set(EXPECTED) <= set(bundledModels())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_model_loads_by_name_and_runs_in_openmm(name, tmp_path):
    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.cg.mapping import beadTypesFromTopology
    from openmmflash.cg.structure import nativeStructure
    from openmmflash.schnet.model import FlashSchNet

    openmm = import_openmm()
    assert os.path.getsize(os.path.join(BUNDLED_DIR, f"{name}.pt")) < 1_000_000  # "well under 5 MB"
    model = FlashSchNet.load(name)
    meta = model.metadata
    assert meta["mapping"] == "5bead" and meta["priors"]["bonds"] and meta["priors"]["dihedrals"]
    assert meta["provenance"]["referenceSettings"]["forceField"] == ["amber14-all.xml", "implicit/gbn2.xml"]
    assert meta["validation"]["validation"]["forceRMSE"] < meta["validation"]["initialValidation"]["forceRMSE"]
    topology, native, _ = nativeStructure(model, str(tmp_path))
    assert topology.getNumResidues() == EXPECTED[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        system = createCGSystem(topology, model)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(native)
        state = context.getState(getEnergy=True, getForces=True, groups={0})
        types = torch.tensor(beadTypesFromTopology(topology, meta["beadTypes"]))
        energy, forces = model.energy_and_forces(torch.tensor(native * 10.0, dtype=torch.float32), types)
    finally:
        torch.set_num_threads(threads)
    # Group 0 is the FlashSchNet TorchForce (the priors are group 1): kcal/mol -> kJ/mol, kcal/mol/A -> kJ/mol/nm.
    np.testing.assert_allclose(state.getPotentialEnergy()._value, float(energy.detach().sum()) * 4.184, rtol=1e-4,
                               atol=1e-3)
    expected = forces.detach().numpy() * 41.84
    error = np.abs(state.getForces(asNumpy=True)._value - expected).max()
    assert error < 1e-4 * np.abs(expected).max(), f"max force error {error} kJ/mol/nm"  # float32 model
    total = context.getState(getEnergy=True).getPotentialEnergy()._value
    assert np.isfinite(total)
