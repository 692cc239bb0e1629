"""Device-resident FlashMD strides (integrators/residentloop.py): the same run as the host path, counter-based noise,
checkpoints, the checks that refuse a PyTorch energy which is not the System's, and the guard. On the CPU the loop
runs eagerly; the CUDA-graph form is tested under the cuda mark."""

import numpy as np
import pytest
import torch

import openmm as mm
from openmm import unit

from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
from openmmflash.integrators.engine.energyeval import TorchEnergy
from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.engine.residentloop import counterNormal, lowbias32
from openmmflash.integrators.engine.thermostats import FlashMDBussiIntegrator, FlashMDLangevinIntegrator

from test_flashmd_cg import chain_model


@pytest.fixture(scope="module")
def cg():
    """(topology, System, positions [B n, 3] nm, FlashSchNet model) of 2 chignolin replicas."""
    full, system, pos, _, _, net = buildCGSystem(2)
    return full, system, pos, net


def _lowbias32_python(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_lowbias32_matches_exact_integer_arithmetic():
    xs = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    got = lowbias32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [_lowbias32_python(x) for x in xs]
    assert len(set(got)) == len(xs)


def test_counter_normal_is_standard_normal_and_reproducible():
    idx = torch.arange(2 * 200000)
    seed, c = torch.tensor(7), torch.tensor(3)
    z = counterNormal(seed, c, 0, idx)
    assert z.dtype == torch.float64 and z.shape == (200000,)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    assert abs(float((z ** 4).mean()) - 3.0) < 0.05  # Gaussian tails, not just the right variance
    assert torch.equal(z, counterNormal(torch.tensor(7), torch.tensor(3), 0, idx))
    others = [counterNormal(seed, torch.tensor(4), 0, idx), counterNormal(seed, c, 1, idx),
              counterNormal(torch.tensor(8), c, 0, idx)]
    for w in others:  # another counter, stream or seed: uncorrelated numbers
        assert abs(float((z * w).mean())) < 0.01


def _run(cg, resident, steps=6, maxRescale=10.0, integrator=FlashMDIntegrator, model=None, **kw):
    full, system, pos, net = cg
    if integrator is FlashMDIntegrator:
        integ = FlashMDIntegrator(model=model or chain_model(), stepSize=0.004, replicas=2, device="cpu", randomSeed=4,
                                  maxRescale=maxRescale, deviceResident=resident, **kw)
    else:
        integ = integrator(300, 5.0, 0.004, model=model or chain_model(), replicas=2, device="cpu", randomSeed=4,
                           maxRescale=maxRescale, deviceResident=resident, **kw)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch"))
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300, 2)
    v = ctx.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    m = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(pos))])[:, None]
    ctx.setVelocities(v - (m * v).sum(0) / m.sum())  # at rest, as the CMMotionRemover keeps it
    if steps:
        integ.step(steps)
    return integ, ctx


def _state(ctx):
    st = ctx.getState(getPositions=True, getVelocities=True)
    return (st.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))


def test_resident_strides_equal_the_host_strides(cg):
    """NVE: learned strides (energy rescale) and fallbacks (PyTorch forces vs OpenMM's C++ substeps) give the same
    trajectory, counters and rescale factors as the host path; step count and time advance as usual."""
    runs = []
    for resident in (True, False):
        integ, ctx = _run(cg, resident)
        assert integ.isDeviceResident() == resident
        assert ctx.getStepCount() == 6 and ctx.getTime().value_in_unit(unit.picosecond) == pytest.approx(0.024)
        runs.append((integ.getNumLearnedSteps(), integ.getNumFallbacks(), integ.getRejectionCounts(),
                     integ.getRescaleFactors(), *_state(ctx)))
    (la, fa, ka, aa, qa, va), (lb, fb, kb, ab, qb, vb) = runs
    assert (la, fa, ka) == (lb, fb, kb)
    assert la >= 2 and fa >= 2  # both kinds of stride were compared
    np.testing.assert_allclose(aa, ab, rtol=1e-6)
    np.testing.assert_allclose(qa, qb, atol=1e-6)
    np.testing.assert_allclose(va, vb, atol=1e-4)


def test_resident_strides_under_simulation_with_reporters(cg, tmp_path):
    """app.Simulation drives the resident integrator like any other: reporters at odd intervals see the right step
    and time, and the DCD file gets its frames."""
    import io
    from openmm import app
    full, system, pos, net = cg
    integ = FlashMDLangevinIntegrator(300, 10.0, 0.004, model=chain_model(), replicas=2, device="cpu",
                                      deviceResident=True, maxRescale=1.5)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch"))
    sim = app.Simulation(full, system, integ, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300, 1)
    log = io.StringIO()
    sim.reporters.append(app.StateDataReporter(log, 3, step=True, time=True))
    sim.reporters.append(app.DCDReporter(str(tmp_path / "t.dcd"), 2))
    sim.step(7)
    assert integ.isDeviceResident()
    assert sim.currentStep == 7 and sim.context.getStepCount() == 7
    assert sim.context.getTime().value_in_unit(unit.picosecond) == pytest.approx(7 * 0.004)
    rows = [line.split(",") for line in log.getvalue().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [3, 6]
    assert [float(r[1]) for r in rows] == pytest.approx([0.012, 0.024])
    import mdtraj
    traj = mdtraj.load_dcd(str(tmp_path / "t.dcd"), top=mdtraj.Topology.from_openmm(full))
    assert traj.n_frames == 3  # steps 2, 4, 6
    np.testing.assert_allclose(traj.xyz[-1], sim.context.getState(getPositions=True).getPositions(
        asNumpy=True).value_in_unit(unit.nanometer), atol=0.05)  # the last frame, one stride before the end
    assert integ.getNumLearnedSteps() + integ.getNumFallbacks() == 7


def test_resident_rescale_conserves_energy_exactly(cg):
    full, system, pos, net = cg
    integ, ctx = _run(cg, True, steps=0)
    _, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch")
    m = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(pos))])[:, None]

    def total():
        q, v = _state(ctx)
        return energy(q) + 0.5 * float((m * v * v).sum())
    checked = 0
    for _ in range(6):
        h0, n0 = total(), integ.getNumLearnedSteps()
        integ.step(1)
        if integ.getNumLearnedSteps() > n0:
            assert total() == pytest.approx(h0, abs=2e-3)
            checked += 1
    assert checked >= 2


def test_resident_langevin_checkpoint_continues_identically(cg):
    integ, ctx = _run(cg, True, steps=2, integrator=FlashMDLangevinIntegrator, maxRescale=1.3)
    assert integ.isDeviceResident()
    chk = ctx.createCheckpoint()
    integ.step(3)
    q_a, v_a = _state(ctx)
    ctx.loadCheckpoint(chk)
    integ.step(3)
    q_b, v_b = _state(ctx)
    np.testing.assert_array_equal(q_a, q_b)
    np.testing.assert_array_equal(v_a, v_b)
    # the counters are global variables: the checkpoint restored them too
    assert ctx.getStepCount() == 5 and integ.getNumLearnedSteps() + integ.getNumFallbacks() == 5


def test_resident_guard_falls_back_instead_of_nan(cg):
    bad = chain_model()
    with torch.no_grad():
        bad.network.head.vec.weight.mul_(1e6)
    integ, ctx = _run(cg, True, steps=3, model=bad)
    q, v = _state(ctx)
    assert np.isfinite(q).all() and np.isfinite(v).all()
    assert integ.getNumFallbacks() == 3 and integ.getNumLearnedSteps() == 0
    assert integ.lastRejection is not None and sum(integ.getRejectionCounts().values()) == 3


def test_resident_refuses_what_it_cannot_run(cg):
    full, system, pos, net = cg
    integ = FlashMDIntegrator(model=chain_model(), stepSize=0.004, replicas=2, device="cpu", deviceResident=True)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu"))  # priors in OpenMM
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    with pytest.raises(ValueError, match="priors='torch'"):
        integ.step(1)
    bussi = FlashMDBussiIntegrator(300, 0.1, 0.004, model=chain_model(), replicas=2, device="cpu", deviceResident=True)
    bussi.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch"))
    ctx = mm.Context(system, bussi, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    with pytest.raises(ValueError, match="FlashMDBussiIntegrator has no resident"):
        bussi.step(1)
    assert ctx.getStepCount() == 0


def test_resident_refuses_an_energy_that_is_not_the_systems(cg):
    full, system, pos, net = cg
    _, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch")
    wrong = TorchEnergy(lambda x: 1.01 * energy.fn(x), system.getNumParticles(), "cpu")
    integ = FlashMDIntegrator(model=chain_model(), stepSize=0.004, replicas=2, device="cpu", deviceResident=True)
    integ.setEnergyEvaluator(set(), wrong)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    q0 = ctx.getState(getPositions=True).getPositions(asNumpy=True)
    with pytest.raises(ValueError, match="does not match the System"):
        integ.step(2)
    assert ctx.getStepCount() == 0
    np.testing.assert_array_equal(ctx.getState(getPositions=True).getPositions(asNumpy=True), q0)


def _cudaRun(cuda_cg, integ, steps):
    """Bind ``integ`` (energy all in PyTorch) to a CUDA Context of the CG System at 300 K and run ``steps``."""
    full, system, pos, net = cuda_cg
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cuda", positions=pos,
                                                         priors="torch"))
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CUDA"), {"Precision": "mixed"})
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300, 2)
    integ.step(steps)
    return ctx


@pytest.mark.cuda
def test_cuda_graph_resident_strides_equal_eager_ones():
    """On CUDA the learned and fallback strides are compiled (torch.compile) and replayed as graphs: same run as the
    eager, uncompiled loop, and a Langevin run at 300 K stays finite with counted fallbacks."""
    full, system, pos, _, _, net = buildCGSystem(2, platformName="CUDA")
    cuda_cg = (full, system, pos, net)
    runs = []
    for graph in (True, False):
        integ = FlashMDIntegrator(model=chain_model(), stepSize=0.004, replicas=2, device="cuda", randomSeed=4,
                                  maxRescale=10.0, deviceResident=True, useCUDAGraph=graph)
        integ.residentCompile = graph
        ctx = _cudaRun(cuda_cg, integ, 6)
        assert (integ._resident.graphs is not None) == graph and integ._resident.compiled == graph
        runs.append((integ.getNumLearnedSteps(), integ.getNumFallbacks(), *_state(ctx)))
    assert runs[0][:2] == runs[1][:2] and runs[0][0] >= 1 and runs[0][1] >= 1
    np.testing.assert_allclose(runs[0][2], runs[1][2], atol=1e-4)
    integ = FlashMDLangevinIntegrator(300, 1.0, 0.004, model=chain_model(), replicas=2, device="cuda", maxRescale=1.25)
    ctx = _cudaRun(cuda_cg, integ, 50)
    assert integ.isDeviceResident() and ctx.getStepCount() == 50
    assert integ.getNumLearnedSteps() + integ.getNumFallbacks() == 50
    q, v = _state(ctx)
    assert np.isfinite(q).all() and np.isfinite(v).all()


def test_dense_pair_energy_equals_the_neighbor_list_energy(cg):
    """pairs="dense" (every ordered pair in each replica, plain CFConv) gives the neighbor-list energy and forces, also
    when pairs lie beyond the cutoff (structure stretched 1.6x: their filter is exactly 0); "auto" takes the
    neighbor list on a CPU; unknown values are refused."""
    full, system, pos, net = cg
    n = len(pos) // 2
    x = np.array(pos, dtype=np.float64)
    for b in range(2):  # stretch each replica about its centre
        c = x[b * n:(b + 1) * n].mean(0)
        x[b * n:(b + 1) * n] = c + 1.6 * (x[b * n:(b + 1) * n] - c)
    d = np.linalg.norm(x[:n, None] - x[None, :n], axis=-1)
    assert (d > net.cutoff / 10).any()  # some pairs are beyond the model's cutoff (Angstrom -> nm)
    out = {}
    for pairs in ("auto", "dense"):
        _, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch", pairs=pairs)
        q = torch.tensor(x, requires_grad=True)
        e = energy.fn(q)
        (g,) = torch.autograd.grad(e, q)
        out[pairs] = (float(e.detach()), g.numpy())
    assert out["dense"][0] == pytest.approx(out["auto"][0], rel=1e-10, abs=1e-8)
    np.testing.assert_allclose(out["dense"][1], out["auto"][1], rtol=1e-9, atol=1e-8)
    with pytest.raises(ValueError, match="pairs must be"):
        flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch", pairs="all")
