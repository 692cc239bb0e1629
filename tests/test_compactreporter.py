"""CompactReporter inside a real OpenMM Simulation (TIP3P water box, amber14, PME, CPU platform)."""

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)
from openmm import LangevinMiddleIntegrator, Platform, Vec3, app, unit

import openmmflash.compactmd  # noqa: F401
from openmmflash.compactmd import CompactReporter, CompactTrajectory
from openmmflash.compactmd.compactwriter import RestartWarning


class _Recorder:
    """Keeps the exact positions OpenMM hands to reporters, for comparison."""

    def __init__(self, interval, periodic=None):
        self.interval, self.periodic, self.frames, self.steps = interval, periodic, [], []

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": self.periodic, "include": ["positions"]}

    def report(self, simulation, state):
        self.frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        self.steps.append(simulation.currentStep)


@pytest.fixture(scope="module")
def water():
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=Vec3(1.6, 1.6, 1.6) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * unit.nanometer,
                             constraints=app.HBonds)
    return modeller.topology, system, modeller.positions


def _simulation(water, seed=1):
    topology, system, positions = water
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    sim = app.Simulation(topology, system, integrator, Platform.getPlatformByName("CPU"), {"Threads": "1"})
    sim.context.setPositions(positions)
    return sim


def test_reporter_protocol(water, tmp_path):
    sim = _simulation(water)
    rep = CompactReporter(str(tmp_path / "p.cmdx"), 10)
    sim.currentStep = 7
    assert rep.describeNextReport(sim) == {"steps": 3, "periodic": None, "include": ["positions"]}
    with pytest.raises(ValueError, match="reportInterval"):
        CompactReporter(str(tmp_path / "q.cmdx"), 0)


def test_reporter_writes_within_bound(water, tmp_path):
    sim = _simulation(water)
    path = str(tmp_path / "w.cmdx")
    rec = _Recorder(10)
    with CompactReporter(path, 10, chunkFrames=4) as rep:
        sim.reporters += [rep, rec]
        sim.step(100)
    assert rep.perFrameSeconds > 0
    with CompactTrajectory(path) as traj:
        assert len(traj) == 10 and not traj.recovered
        np.testing.assert_array_equal(traj.steps, rec.steps)
        np.testing.assert_allclose(traj.times, 0.002 * np.array(rec.steps), rtol=1e-9)
        assert np.abs(traj.read().astype(np.float64) - np.array(rec.frames)).max() <= 0.0005
        box = sim.context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        np.testing.assert_allclose(traj.boxes[-1], box)
        assert traj.topology.nAtoms == sim.topology.getNumAtoms()
        assert traj.header["dt"] == pytest.approx(0.002)
    # the analysis tools open it
    import MDAnalysis as mda

    from openmmflash.compactmd.mdtraj import load_cmdx

    u = mda.Universe(path)
    assert len(u.trajectory) == 10 and u.atoms.n_atoms == sim.topology.getNumAtoms()
    assert u.dimensions[0] == pytest.approx(box[0, 0] * 10.0, rel=1e-5)
    t = load_cmdx(path)
    assert t.n_frames == 10 and t.unitcell_vectors is not None


def test_reporter_atom_subset_and_bound(water, tmp_path):
    sim = _simulation(water)
    subset = [0, 1, 2, 30, 31, 32]
    path = str(tmp_path / "s.cmdx")
    rec = _Recorder(5, periodic=False)
    with CompactReporter(path, 5, maxError=0.01, atomSubset=subset, enforcePeriodicBox=False) as rep:
        sim.reporters += [rep, rec]
        sim.step(20)
    with CompactTrajectory(path) as traj:
        assert traj.nAtoms == 6 and traj.maxError == 0.01
        assert np.abs(traj.read() - np.array(rec.frames)[:, subset]).max() <= 0.01
        assert traj.topology.resnames == ["HOH"] * 6


def test_restart_from_checkpoint_has_no_duplicates(water, tmp_path):
    path = str(tmp_path / "r.cmdx")
    sim = _simulation(water)
    rep = CompactReporter(path, 10, chunkFrames=3)
    sim.reporters.append(rep)
    sim.step(40)
    checkpoint = sim.context.createCheckpoint()
    sim.step(30)  # frames at steps 50, 60, 70 will be produced again after the restart
    rep.close()
    sim.reporters.clear()
    sim.context.loadCheckpoint(checkpoint)
    sim.currentStep = 40
    rec = _Recorder(10)
    with pytest.warns(RestartWarning, match="removed 3 frames at steps 50, 60, 70"):
        with CompactReporter(path, 10, append=True, chunkFrames=3) as rep2:
            sim.reporters += [rep2, rec]
            sim.step(40)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, 10 * np.arange(1, 9))
        assert np.abs(traj.read()[4:] - np.array(rec.frames)).max() <= 0.0005


def test_nan_positions_refused_with_clear_message(water, tmp_path):
    sim = _simulation(water)
    path = str(tmp_path / "n.cmdx")
    rep = CompactReporter(path, 10)
    state = sim.context.getState(getPositions=True)
    rep.report(sim, state)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    positions[5, 1] = np.nan
    sim.context.setPositions(positions)
    with pytest.raises(ValueError, match="NaN or infinite .*atom 5.*Frequently-Asked-Questions#nan"):
        rep.report(sim, sim.context.getState(getPositions=True))
    positions[5, 1] = 3.0e6
    sim.context.setPositions(positions)
    with pytest.raises(ValueError, match="outside the range"):
        rep.report(sim, sim.context.getState(getPositions=True))
    rep.close()
    assert len(CompactTrajectory(path)) == 1


def test_append_with_other_system_refused(water, tmp_path):
    path = str(tmp_path / "m.cmdx")
    sim = _simulation(water)
    with CompactReporter(path, 5, atomSubset=range(9)) as rep:
        sim.reporters.append(rep)
        sim.step(5)
    rep2 = CompactReporter(path, 5, append=True)
    with pytest.raises(ValueError, match="cannot append"):
        rep2.report(sim, sim.context.getState(getPositions=True))


def test_existing_file_needs_append_or_overwrite(water, tmp_path):
    path = str(tmp_path / "o.cmdx")
    sim = _simulation(water)
    with CompactReporter(path, 5, atomSubset=range(9)) as rep:
        sim.reporters.append(rep)
        sim.step(10)
    sim.reporters.clear()
    rep2 = CompactReporter(path, 5, atomSubset=range(9))
    with pytest.raises(FileExistsError, match="append=True to continue it or overwrite=True to replace it"):
        rep2.report(sim, sim.context.getState(getPositions=True))
    with CompactReporter(path, 5, atomSubset=range(9), overwrite=True) as rep3:
        sim.reporters.append(rep3)
        sim.step(5)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, [15])
