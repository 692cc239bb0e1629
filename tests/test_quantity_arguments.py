"""Public entry points take OpenMM Quantities as well as numbers in MD units, with the same result; a Quantity in
the wrong unit is refused with a message naming the argument."""

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)
from openmm import LangevinMiddleIntegrator, NonbondedForce, Platform, System, Vec3, app, unit

from conftest import make_model
from openmmflash.compactmd import CompactReporter, CompactTrajectory
from openmmflash.units import valueIn


def test_value_in():
    assert valueIn(2.0 * unit.angstrom, unit.nanometer) == 0.2
    assert valueIn(0.002, unit.nanometer) == 0.002
    assert valueIn(1, unit.picosecond) == 1.0 and isinstance(valueIn(1, unit.picosecond), float)
    with pytest.raises(TypeError, match=r"stride must be in picosecond or a unit convertible to it .*got 1 nm"):
        valueIn(1 * unit.nanometer, unit.picosecond, "stride")


def _argon_simulation():
    """12 Lennard-Jones argon atoms on a 0.4 nm grid in vacuum, Reference platform."""
    topology = app.Topology()
    chain = topology.addChain()
    system = System()
    lj = NonbondedForce()
    positions = []
    for i in range(12):
        residue = topology.addResidue("AR", chain)
        topology.addAtom("AR", app.element.argon, residue)
        system.addParticle(39.948)
        lj.addParticle(0.0, 0.34, 0.996)
        positions.append(Vec3(0.4 * (i % 3), 0.4 * ((i // 3) % 2), 0.4 * (i // 6)))
    system.addForce(lj)
    integrator = LangevinMiddleIntegrator(120 * unit.kelvin, 1 / unit.picosecond, 0.004 * unit.picoseconds)
    integrator.setRandomNumberSeed(3)
    simulation = app.Simulation(topology, system, integrator, Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions)
    return simulation


def test_compact_reporter_max_error_quantity_equals_nm(tmp_path):
    """maxError=0.02 Angstrom writes exactly what maxError=0.002 (nm) writes, from the same frames."""
    simulation = _argon_simulation()
    paths = [str(tmp_path / "nm.cmdx"), str(tmp_path / "angstrom.cmdx")]
    reporters = [CompactReporter(paths[0], 5, maxError=0.002),
                 CompactReporter(paths[1], 5, maxError=0.02 * unit.angstrom)]
    simulation.reporters += reporters
    simulation.step(40)
    for reporter in reporters:
        reporter.close()
    with CompactTrajectory(paths[0]) as a, CompactTrajectory(paths[1]) as b:
        assert a.maxError == b.maxError == 0.002
        assert len(a) == len(b) == 8
        np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(TypeError, match="maxError must be in nanometer"):
        CompactReporter(str(tmp_path / "bad.cmdx"), 5, maxError=0.001 * unit.picosecond)


def test_validation_work_folder_takes_a_timestep_quantity(tmp_path):
    from openmmflash.workflows.cgvalidation import openWork

    model = make_model()
    fs, quantity = (openWork(str(tmp_path / name), model, timeNs=0.001, replicas=2, timestep=step)[0]
                    for name, step in (("fs", 4.0), ("quantity", 0.004 * unit.picosecond)))
    assert quantity["timestep_fs"] == pytest.approx(4.0, rel=1e-12)
    assert quantity["totalSteps"] == fs["totalSteps"]
    # the folder continues when asked with the same step in another unit, and refuses another step
    openWork(str(tmp_path / "fs"), model, timestep=4 * unit.femtosecond)
    with pytest.raises(ValueError, match="started with other settings"):
        openWork(str(tmp_path / "fs"), model, timestep=2 * unit.femtosecond)
    with pytest.raises(TypeError, match="timestep must be in femtosecond"):
        openWork(str(tmp_path / "bad"), model, timeNs=0.001, replicas=2, timestep=4 * unit.nanometer)


def test_generate_pairs_quantities_equal_numbers():
    from openmmflash.integrators.training.data import flexibleWaterBox, generatePairs, speciesOf

    top, system, pos = flexibleWaterBox(1.2, 0.5)
    common = dict(startsPerTemperature=1, pairsPerStart=2, platform="Reference", progress=False)
    numbers = generatePairs(system, pos, speciesOf(top), [300.0], 0.002, timestep=0.0005, pairSpacing=0.004,
                            equilibration=0.002, **common)
    quantities = generatePairs(system, pos, speciesOf(top), [300.0 * unit.kelvin], 2 * unit.femtosecond,
                               timestep=0.5 * unit.femtosecond, pairSpacing=4 * unit.femtosecond,
                               equilibration=0.002 * unit.picosecond, **common)
    for key in ("q0", "p0", "dq", "p1", "box", "temperature"):
        np.testing.assert_array_equal(numbers[key], quantities[key])
    assert numbers["meta"]["stride"] == pytest.approx(quantities["meta"]["stride"], rel=1e-12)
    with pytest.raises(TypeError, match="stride must be in picosecond"):
        generatePairs(system, pos, speciesOf(top), [300.0], 2 * unit.angstrom, **common)


def test_generate_replica_pairs_quantities_equal_numbers():
    from openmmflash.integrators.training.replicadata import generateReplicaPairs
    from test_flashmd_cg import TYPES, chain_system

    system, pos = chain_system(2)
    common = dict(cycles=1, platform="Reference", progress=False)
    numbers = generateReplicaPairs(system, pos, TYPES, 2, [250.0], [0.002], timestep=0.0005, decorrelation=0.01,
                                   equilibration=0.01, langevinTimestep=0.002, friction=5.0, **common)
    quantities = generateReplicaPairs(system, pos, TYPES, 2, [250.0 * unit.kelvin], [2 * unit.femtosecond],
                                      timestep=0.5 * unit.femtosecond, decorrelation=10 * unit.femtosecond,
                                      equilibration=0.01 * unit.picosecond, langevinTimestep=2 * unit.femtosecond,
                                      friction=0.005 / unit.femtosecond, **common)
    assert list(numbers) == list(quantities) == [0.002]
    # the settings as run (the Langevin noise of this generator is not seeded, so the pairs themselves differ)
    drop = ("seconds",)
    assert {k: v for k, v in numbers[0.002]["meta"].items() if k not in drop} == \
           {k: v for k, v in quantities[0.002]["meta"].items() if k not in drop}
    assert numbers[0.002]["q0"].shape == quantities[0.002]["q0"].shape == (2, len(TYPES), 3)
    with pytest.raises(TypeError, match="friction must be in /picosecond"):
        generateReplicaPairs(system, pos, TYPES, 2, [250.0], [0.002], friction=5.0 * unit.picosecond, **common)
