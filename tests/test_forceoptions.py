"""FlashSchNetForceOptions: the options object and the keyword calls build the same forces at every entry point."""

import dataclasses

import numpy as np
import pytest

from conftest import make_model
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.plugin.forceoptions import FlashSchNetForceOptions
from openmmflash.plugin.replicas import replicate
from openmmflash.plugin.torchforce import addFlashSchNetForce, createFlashSchNetForce
from openmmflash.schnet.filtertable import FilterTableOptions
from openmmflash.stack import import_openmm

openmm = import_openmm()
unit = openmm.unit


def bare_system(n):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    return system


def evaluate(system, positions):
    """(energy kJ/mol, forces (N, 3) kJ/mol/nm) on the Reference platform."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def assert_same(a, b):
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
@pytest.mark.parametrize("keywords", [dict(precision="double", filterMode="exact"),
                                      dict(precision="single", filterTable=FilterTableOptions(tolerance=1e-4)),
                                      dict(precision="double", forceGroup=3, neighborCapacity=2048)])
def test_object_and_keywords_give_identical_forces(cg_fragment, backend, keywords):
    top, pos = cg_fragment
    model = make_model()
    by_keywords, by_object = bare_system(top.getNumAtoms()), bare_system(top.getNumAtoms())
    f1 = addFlashSchNetForce(by_keywords, model, top, backend=backend, **keywords)
    f2 = addFlashSchNetForce(by_object, model, top, backend=backend, forceOptions=FlashSchNetForceOptions(**keywords))
    assert f1.getForceGroup() == f2.getForceGroup() == keywords.get("forceGroup", 0)
    assert_same(evaluate(by_keywords, pos), evaluate(by_object, pos))


def test_keywords_replace_fields_and_the_object_is_not_changed(cg_fragment):
    top, pos = cg_fragment
    model = make_model()
    options = FlashSchNetForceOptions(precision="single", forceGroup=2)
    before = dataclasses.replace(options)
    mixed, plain = bare_system(top.getNumAtoms()), bare_system(top.getNumAtoms())
    force = addFlashSchNetForce(mixed, model, top, forceOptions=options, precision="double", filterMode="exact")
    addFlashSchNetForce(plain, model, top, precision="double", filterMode="exact", forceGroup=2)
    assert force.getForceGroup() == 2
    assert_same(evaluate(mixed, pos), evaluate(plain, pos))
    assert options == before and options.numParticles is None      # the System's count went to a copy


def test_cg_system_with_options_object(cg_fragment):
    """createCGSystem: replicas from the object when not given, and the same System as the keyword call."""
    top, pos = cg_fragment
    model = make_model()
    rtop, rsystem, rpos = replicate(top, createCGSystem(top, model, addModelForce=False), pos, 2)
    keywords = createCGSystem(rtop, model, replicas=2, precision="double", filterMode="exact")
    options = createCGSystem(rtop, model, forceOptions=FlashSchNetForceOptions(replicas=2, precision="double",
                                                                                 filterMode="exact"))
    assert_same(evaluate(keywords, rpos), evaluate(options, rpos))
    with pytest.raises(ValueError, match="replicas must be identical copies"):
        createCGSystem(rtop, model, forceOptions=FlashSchNetForceOptions(replicas=3))    # 3 x 30 beads
    createCGSystem(rtop, model, replicas=2, forceOptions=FlashSchNetForceOptions(replicas=3))  # replicas= wins


def test_mlpotential_takes_the_options_object(tmp_path, cg_fragment):
    openmmml = pytest.importorskip("openmmml")
    top, pos = cg_fragment
    path = str(tmp_path / "model.pt")
    make_model().save(path)
    potential = openmmml.MLPotential("flashschnet", modelPath=path)
    keywords = potential.createSystem(top, precision="double", filterMode="exact")
    options = potential.createSystem(top, forceOptions=FlashSchNetForceOptions(precision="double",
                                                                                filterMode="exact"))
    assert_same(evaluate(keywords, pos), evaluate(options, pos))
    with pytest.raises(TypeError, match=r"unknown FlashSchNet force options \['precison'\]"):
        potential.createSystem(top, precison="double")


def test_bad_options_are_refused_clearly(cg_fragment):
    top, _ = cg_fragment
    model = make_model()
    with pytest.raises(ValueError, match="precision must be one of"):
        FlashSchNetForceOptions(precision="half")
    with pytest.raises(ValueError, match="filterMode must be one of"):
        FlashSchNetForceOptions(filterMode="fast")
    with pytest.raises(ValueError, match="CUDAGraphWarmupSteps must be >= 1"):
        createFlashSchNetForce(model, top, CUDAGraphWarmupSteps=0)
    with pytest.raises(TypeError, match=r"unknown FlashSchNet force options \['replica'\]; known options"):
        createFlashSchNetForce(model, top, replica=2)
    with pytest.raises(TypeError, match="forceOptions must be a FlashSchNetForceOptions"):
        createFlashSchNetForce(model, top, forceOptions={"precision": "double"})
    with pytest.raises(TypeError, match="device is an option of the PythonForce backend"):
        createFlashSchNetForce(model, top, device="cpu")
