"""FlashMD integrators on real OpenMM Contexts (flexible TIP3P-FB water, CPU and Reference platforms).

Models here are tiny and untrained: a "free-flight" model (network head zeroed, so the learned map is
q' = q + p stride / m, p' = p) gives steps the guard accepts, a random network gives steps it rejects.
"""

import io
import math

import numpy as np
import pytest
import torch

from conftest import H_MASS, O_MASS, relaxed_water_box

import openmm as mm
from openmm import app, unit

from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.network.modelfile import FlashMDModel
from openmmflash.integrators.engine.stepper import FlashMDStepper, random_rotation
from openmmflash.integrators.engine.thermostats import FlashMDBussiIntegrator, FlashMDLangevinIntegrator

STRIDE = 0.0005  # ps; short enough that free flight is accepted by the guard (maxRescale=2) for flexible water


def make_model(stride=STRIDE, free_flight=True, scale=1.0, seed=0):
    torch.manual_seed(seed)
    model = FlashMDModel([1, 8], [H_MASS, O_MASS], stride, 1.6, dict(channels=8, num_layers=1, num_rbf=8,
                                                                      cutoff=0.4))
    with torch.no_grad():
        if free_flight:
            model.network.head.vec.weight.zero_()
        else:
            model.network.head.vec.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def water():
    return relaxed_water_box(200)


def simulation(water, integrator, platform="CPU", system=None):
    top, sys0, pos = water
    sim = app.Simulation(top, system or sys0, integrator, mm.Platform.getPlatformByName(platform))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    return sim


def total_energy(context):
    st = context.getState(getEnergy=True)
    return (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_bookkeeping_with_reporters(water, tmp_path):
    integ = FlashMDIntegrator(model=make_model(), randomSeed=3, maxRescale=2.0)
    assert integ.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(STRIDE)
    sim = simulation(water, integ)
    calls = []
    original = integ.step
    integ.step = lambda n: (calls.append(n), original(n))[1]
    log = io.StringIO()
    sim.reporters.append(app.StateDataReporter(log, 3, step=True, time=True, totalEnergy=True))
    sim.reporters.append(app.DCDReporter(str(tmp_path / "t.dcd"), 7))
    sim.step(23)
    assert sum(calls) == 23 and max(calls) <= 10
    assert sim.currentStep == 23 and sim.context.getStepCount() == 23
    assert sim.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(23 * STRIDE)
    rows = [line.split(",") for line in log.getvalue().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [3, 6, 9, 12, 15, 18, 21]
    assert [float(r[1]) for r in rows] == pytest.approx([s * STRIDE for s in (3, 6, 9, 12, 15, 18, 21)])
    from MDAnalysis.lib.formats.libdcd import DCDFile
    with DCDFile(str(tmp_path / "t.dcd")) as dcd:
        header = dcd.header
        assert dcd.n_frames == 3
    assert header["istart"] == 7 and header["nsavc"] == 7
    assert header["delta"] * 0.04888821 == pytest.approx(STRIDE, rel=1e-4)  # AKMA time unit -> ps
    assert integ.getNumLearnedSteps() + integ.getNumFallbacks() == 23
    assert integ.getNumLearnedSteps() >= 15  # free flight (no forces) drains K into V, so some strides fall back


def test_energy_exactly_conserved_after_rescale(water):
    integ = FlashMDIntegrator(model=make_model(), randomSeed=3, maxRescale=2.0)
    sim = simulation(water, integ, platform="Reference")
    e0 = total_energy(sim.context)
    energies = []
    for _ in range(5):
        sim.step(1)
        energies.append(total_energy(sim.context))
    assert integ.getNumFallbacks() == 0
    alphas = integ.getRescaleFactors()
    assert len(alphas) == 5 and np.all(np.abs(alphas - 1) > 1e-6)  # the rescale really acted
    assert np.allclose(energies, e0, rtol=0, atol=1e-7 * abs(e0))
    # Without the rescale free flight changes the energy: the check above is not trivially true.
    integ2 = FlashMDIntegrator(model=make_model(), rescaleEnergy=False, randomSeed=3)
    sim2 = simulation(water, integ2, platform="Reference")
    sim2.step(5)
    assert abs(total_energy(sim2.context) - e0) > 1e-3 * abs(e0) * 1e-2


def test_center_of_mass_conserved(water):
    top, system, pos = water
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    types = [a.element.atomic_number for a in top.atoms()]
    stepper = FlashMDStepper(make_model(free_flight=False, scale=5.0), masses, types, randomRotation=True,
                             generator=torch.Generator().manual_seed(1))
    q = torch.as_tensor(np.stack([pos, pos + 0.01]), dtype=torch.float64)
    p = torch.randn(2, len(masses), 3, dtype=torch.float64) * torch.as_tensor(np.sqrt(masses * 2.5))[None, :, None]
    p[1] += 3.0  # a replica with net momentum
    box = torch.as_tensor([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()])
    q1, p1 = stepper.step(q, p, box)
    m = torch.as_tensor(masses)[None, :, None]
    M = m.sum()
    assert torch.allclose(p1.sum(1), p.sum(1), atol=1e-9)
    com0, com1 = (m * q).sum(1) / M, (m * q1).sum(1) / M
    assert torch.allclose(com1, com0 + p.sum(1) / M * STRIDE, atol=1e-10)
    assert (q1 - q - p / m * STRIDE).abs().max() > 1e-5  # the network did move atoms beyond free flight


def test_painn_equivariance(water):
    top, system, pos = water
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    types = [a.element.atomic_number for a in top.atoms()]
    stepper = FlashMDStepper(make_model(free_flight=False, scale=5.0), masses, types, dtype=torch.float64)
    q = torch.as_tensor(pos)
    p = torch.randn(len(masses), 3, dtype=torch.float64) * torch.as_tensor(np.sqrt(masses * 2.5))[:, None]
    box = torch.as_tensor([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()])
    R = random_rotation(torch.Generator().manual_seed(4))
    q_a, p_a = stepper.step(q, p, box, rotation=R)
    q_b, p_b = stepper.step(q, p, box)
    assert torch.allclose(q_a, q_b, atol=1e-10) and torch.allclose(p_a, p_b, atol=1e-9)


@pytest.mark.parametrize("kind", ["nan", "huge"])
def test_guard_falls_back_instead_of_nan(water, kind):
    model = make_model(free_flight=False, scale=1e4)
    if kind == "nan":
        with torch.no_grad():
            model.network.head.gate[2].bias.fill_(float("nan"))
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=model, randomSeed=2)
    sim = simulation(water, integ)
    sim.step(6)
    st = sim.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    assert np.isfinite(st.getPositions(asNumpy=True)._value).all()
    assert np.isfinite(st.getVelocities(asNumpy=True)._value).all()
    assert math.isfinite(st.getPotentialEnergy()._value)
    assert integ.getNumFallbacks() == 6 and integ.getNumLearnedSteps() == 0
    assert sim.currentStep == 6
    assert ("non-finite" in integ.lastRejection) if kind == "nan" else True


def test_rejections_are_counted_by_kind(water):
    bad = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(free_flight=False, scale=1e4), randomSeed=2)
    sim = simulation(water, bad)
    sim.step(4)
    counts = bad.getRejectionCounts()
    assert bad.getNumFallbacks() == 4 and sum(counts.values()) == 4
    assert set(counts) <= {"nonFinite", "displacement", "energyAbove", "rescaleLow", "rescaleHigh", "species"}
    good = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=2, maxRescale=2.0)
    sim = simulation(water, good)
    sim.step(4)
    assert good.getNumFallbacks() == 0 and good.getRejectionCounts() == {}


def test_stride_and_mass_mismatch_refused(water):
    with pytest.raises(ValueError, match="does not match the FlashMD model's stride"):
        FlashMDIntegrator(model=make_model(), stepSize=2 * STRIDE * unit.picosecond)
    top, system, pos = water
    hmr = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    hmr.setParticleMass(1, 2.016)  # a deuterium / repartitioned hydrogen
    integ = FlashMDIntegrator(model=make_model())
    sim = simulation(water, integ, system=hmr)
    with pytest.raises(ValueError, match="particle 1 has mass 2.016"):
        sim.step(1)
    integ = FlashMDIntegrator(model=make_model())
    integ.setAtomTypes(top)
    sim = simulation(water, integ, system=hmr)
    with pytest.raises(ValueError, match="do not transfer across masses"):
        sim.step(1)
    constrained = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    constrained.addConstraint(0, 1, 0.09572)
    sim = simulation(water, FlashMDIntegrator(model=make_model()), system=constrained)
    with pytest.raises(ValueError, match="constraints"):
        sim.step(1)


@pytest.mark.parametrize("cls", [FlashMDLangevinIntegrator, FlashMDBussiIntegrator])
def test_checkpoint_round_trip_reproduces_continuation(water, cls):
    def make():
        integ = cls(300 * unit.kelvin, 1.0 / unit.picosecond if cls is FlashMDLangevinIntegrator else 0.05, None,
                    model=make_model(free_flight=False, scale=0.05), randomSeed=11, maxRescale=2.0,
                    randomRotation=True)
        return integ, simulation(water, integ, platform="Reference")

    integ, sim = make()
    sim.step(3)
    checkpoint = sim.context.createCheckpoint()
    sim.step(4)
    expected = sim.context.getState(getPositions=True, getVelocities=True)
    integ2, sim2 = make()
    sim2.context.loadCheckpoint(checkpoint)
    assert sim2.currentStep == 3
    sim2.step(4)
    got = sim2.context.getState(getPositions=True, getVelocities=True)
    assert np.array_equal(got.getPositions(asNumpy=True)._value, expected.getPositions(asNumpy=True)._value)
    assert np.array_equal(got.getVelocities(asNumpy=True)._value, expected.getVelocities(asNumpy=True)._value)
    assert integ2.getCheckpointState() == integ.getCheckpointState()
    # A different seed gives a different continuation: the noise really comes from the checkpointed state.
    integ3, sim3 = make()
    sim3.context.loadCheckpoint(checkpoint)
    integ3.setGlobalVariableByName("flashmdSeed", 12)
    sim3.step(4)
    assert not np.array_equal(sim3.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value,
                              expected.getVelocities(asNumpy=True)._value)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_barostat_changes_volume(water, anisotropic):
    top, system, pos = water
    npt = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    if anisotropic:
        npt.addForce(mm.MonteCarloAnisotropicBarostat(mm.Vec3(1, 1, 1) * unit.bar, 300 * unit.kelvin, True, True,
                                                      True, 1))
    else:
        npt.addForce(mm.MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin, 1))
    integ = FlashMDLangevinIntegrator(300, 5.0, None, model=make_model(), randomSeed=5)
    sim = simulation(water, integ, system=npt)
    v0 = sim.context.getState().getPeriodicBoxVolume()
    volumes = []
    for _ in range(10):
        sim.step(2)
        volumes.append(sim.context.getState().getPeriodicBoxVolume())
    assert any(abs((v - v0) / v0) > 1e-6 for v in volumes)
    assert integ.getNumLearnedSteps() > 0


def test_species_temperatures(water):
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=5)
    sim = simulation(water, integ)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    temps = integ.computeSpeciesTemperatures()
    assert set(temps) == {"H", "O"}
    assert 200 < temps["H"] < 400 and 200 < temps["O"] < 400


def test_langevin_half_step_is_exact_ou(water):
    """From v = 0 one O half step gives v ~ N(0, (1 - a^2) kT / m), a = exp(-gamma stride / 2)."""
    gamma, temperature = 50.0, 300.0
    integ = FlashMDLangevinIntegrator(temperature, gamma, None, model=make_model(), randomSeed=9)
    sim = simulation(water, integ)
    sim.step(1)  # binds the Context
    a = math.exp(-0.5 * gamma * STRIDE)
    masses = integ._masses
    draws = np.stack([integ._thermostatHalfStep(np.zeros((len(masses), 3))) for _ in range(40)])
    z = draws * np.sqrt(masses / ((1 - a * a) * 0.00831446261815324 * temperature))[None, :, None]
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1.0) < 0.03
    # and a = exp(-gamma dt / 2) damps the old velocity exactly (no noise at T -> 0 limit is tested via mean)
    v = np.ones((len(masses), 3))
    mean = np.mean([integ._thermostatHalfStep(v) for _ in range(40)], axis=0)
    assert abs(mean.mean() - a) < 0.02


def test_bussi_half_step_relaxes_to_target(water):
    """With tau much shorter than the stride, one SVR half step draws K from the canonical distribution."""
    integ = FlashMDBussiIntegrator(300 * unit.kelvin, 1e-5, None, model=make_model(), randomSeed=4)
    sim = simulation(water, integ)
    sim.step(1)
    masses = integ._masses[:, None]
    rng = np.random.default_rng(0)
    v = rng.standard_normal((len(masses), 3)) * np.sqrt(0.00831446261815324 * 30.0 / masses)  # a 30 K state
    temps = []
    for _ in range(30):
        u = integ._thermostatHalfStep(v)
        assert np.allclose((masses * u).sum(0), (masses * v).sum(0))  # momentum kept
        vcom = (masses * u).sum(0) / masses.sum()
        temps.append(((masses * (u - vcom) ** 2).sum()) / ((3 * len(masses) - 3) * 0.00831446261815324))
    assert abs(np.mean(temps) - 300.0) < 15.0 and np.std(temps) > 5.0


def _species_kinetic(context, integ):
    v = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    m = integ._masses[:, None]
    u = np.asarray(v) - (m * v).sum(0) / m.sum()
    k = 0.5 * (m * u * u).sum(-1)
    return np.array([k[integ._types == z].sum() for z in (1, 8)]), (m * v).sum(0)


@pytest.mark.parametrize("species_rescale", [True, False])
def test_species_rescale_keeps_shares_and_energy(water, species_rescale):
    """speciesRescale: each species keeps its share of the kinetic energy across a learned step, H stays exact and
    the total momentum is kept; the global rescale (False) lets the network move energy between species."""
    integ = FlashMDIntegrator(model=make_model(free_flight=False, scale=3.0, seed=2), randomSeed=3, maxRescale=2.0,
                              speciesRescale=species_rescale)
    sim = simulation(water, integ, platform="Reference")
    integ.setContext(sim.context)
    e0 = total_energy(sim.context)
    k0, p0 = _species_kinetic(sim.context, integ)
    sim.step(3)
    assert integ.getNumFallbacks() == 0 and integ.getNumLearnedSteps() == 3
    k1, p1 = _species_kinetic(sim.context, integ)
    assert abs(total_energy(sim.context) - e0) < 1e-7 * abs(e0)
    share_change = abs(k1[0] / k1.sum() - k0[0] / k0.sum())
    if species_rescale:
        assert share_change < 2e-5
        assert np.allclose(p1, p0, atol=1e-6)  # the total momentum (non-zero here) is kept
    else:
        assert share_change > 2e-4  # the network does move energy between species: the check above can fail


def test_species_rescale_needs_energy_rescale():
    with pytest.raises(ValueError, match="speciesRescale"):
        FlashMDIntegrator(model=make_model(), rescaleEnergy=False, speciesRescale=True)
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model())
    assert integ.speciesRescale  # the Langevin variant keeps equipartition by default
    assert not FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), rescaleEnergy=False).speciesRescale


def test_species_rescale_auto_is_on_for_water(water):
    """The Langevin default "auto" keeps the per-species rescale for water (dozens of O and H per box)."""
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=1)
    sim = simulation(water, integ)
    integ.setContext(sim.context)
    assert integ.speciesRescale
    sim.step(2)
    assert sim.currentStep == 2


def test_state_carried_between_strides_without_state_changing_forces(water, monkeypatch):
    """Inside one step(n), a System with no barostat, CMMotionRemover or Andersen thermostat (the flexible-water box
    here has none) lets each stride start
    from the state the previous accepted stride set, without reading it back: same trajectory, fewer reads."""
    top, sys0, pos = water
    passive = mm.XmlSerializer.clone(sys0)
    for i in reversed(range(passive.getNumForces())):
        if isinstance(passive.getForce(i), mm.CMMotionRemover):
            passive.removeForce(i)
    reads = []
    original = mm.Context.getState

    def counting(self, *args, **kwargs):
        if kwargs.get("getVelocities") and kwargs.get("getPositions"):
            reads.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mm.Context, "getState", counting)
    finals = []
    for carry in (True, False):
        integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=5, maxRescale=2.0)
        sim = simulation(water, integ, system=passive)
        integ.setContext(sim.context)
        assert integ._passive
        integ._passive = carry
        reads.clear()
        sim.step(6)
        assert integ.getNumFallbacks() == 0 and sim.currentStep == 6
        finals.append((len(reads), sim.context.getState(getPositions=True, getVelocities=True)))
    (n_on, st_on), (n_off, st_off) = finals
    assert n_on == 1 and n_off == 6
    for get in ("getPositions", "getVelocities"):
        a = getattr(st_on, get)(asNumpy=True)._value
        b = getattr(st_off, get)(asNumpy=True)._value
        assert np.allclose(a, b, rtol=0, atol=1e-5)
    # With a CMMotionRemover the integrator writes velocities with the centre of mass at rest, which the remover then
    # leaves as they are: still carried, same trajectory as reading back, total momentum zero.
    with_cmm = mm.XmlSerializer.clone(passive)
    with_cmm.addForce(mm.CMMotionRemover(1))
    finals = []
    for carry in (True, False):
        integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=5, maxRescale=2.0)
        sim = simulation(water, integ, system=with_cmm)
        integ.setContext(sim.context)
        assert integ._passive and integ._removeCOM
        integ._passive = carry
        reads.clear()
        sim.step(6)
        assert integ.getNumFallbacks() == 0
        finals.append((len(reads), sim.context.getState(getPositions=True, getVelocities=True)))
    (n_on, st_on), (n_off, st_off) = finals
    assert n_on == 1 and n_off == 6
    for get in ("getPositions", "getVelocities"):
        assert np.allclose(getattr(st_on, get)(asNumpy=True)._value, getattr(st_off, get)(asNumpy=True)._value,
                           rtol=0, atol=1e-5)
    masses = np.array([with_cmm.getParticleMass(i)._value for i in range(with_cmm.getNumParticles())])
    momentum = (masses[:, None] * st_on.getVelocities(asNumpy=True)._value).sum(0)
    assert np.abs(momentum).max() < 1e-6
    # With a barostat (it changes the state inside every step) the state is always read back.
    stateful = mm.XmlSerializer.clone(passive)
    stateful.addForce(mm.MonteCarloBarostat(1.0, 300.0, 1))
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=make_model(), randomSeed=5, maxRescale=2.0)
    sim = simulation(water, integ, system=stateful)
    integ.setContext(sim.context)
    assert not integ._passive
    reads.clear()
    sim.step(3)
    assert len(reads) == 3
