"""The fixed-shape periodic FlashMD step (paddedstep.py): equal to the neighbor-list stepper, overflow handling,
its use by the integrators; on CUDA, the graph replay against the eager stepper.

Real flexible TIP3P-FB water boxes (PME) and small random PaiNN models whose learned correction is large enough to
matter; the shipped quantized water model (W4A8) too.
"""

import numpy as np
import pytest
import torch

from conftest import H_MASS, O_MASS, relaxed_water_box

import openmm as mm
from openmm import app, unit

from openmmflash.integrators.network.modelfile import FlashMDModel
from openmmflash.integrators.engine.paddedstep import PaddedReplicaStep
from openmmflash.integrators.engine.stepper import FlashMDStepper, random_rotation
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator

STRIDE = 0.0005  # ps


def random_model(stride=STRIDE, scale=5.0, seed=0, cutoff=0.4):
    torch.manual_seed(seed)
    model = FlashMDModel([1, 8], [H_MASS, O_MASS], stride, 1.6, dict(channels=8, num_layers=2, num_rbf=8,
                                                                      cutoff=cutoff))
    with torch.no_grad():
        model.network.head.vec.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def water():
    top, system, pos = relaxed_water_box(100)
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    types = [a.element.atomic_number for a in top.atoms()]
    box = np.array([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()])
    return top, system, pos, masses, types, box


def state(water, replicas, seed=0):
    """(q [B, N, 3], p [B, N, 3]) near the box's structure, thermal momenta with some net momentum."""
    _, _, pos, masses, _, box = water
    rng = np.random.default_rng(seed)
    q = pos[None] + 0.005 * rng.standard_normal((replicas, len(masses), 3))
    q[:, :, 0] += 0.3 * box[0, 0]  # some atoms leave the box: the minimum image must handle them
    p = rng.standard_normal((replicas, len(masses), 3)) * np.sqrt(masses * 2.5)[None, :, None] + 0.5
    return q, p


@pytest.mark.parametrize("dtype,replicas,rotate", [(torch.float64, 1, False), (torch.float32, 2, True)])
def test_padded_step_equals_stepper(water, dtype, replicas, rotate):
    _, _, _, masses, types, box = water
    stepper = FlashMDStepper(random_model(), masses, types, dtype=dtype)
    q, p = state(water, replicas)
    R = random_rotation(torch.Generator().manual_seed(5)) if rotate else None
    q_ref, p_ref = stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(box), rotation=R)
    padded = PaddedReplicaStep(stepper, replicas, periodic=True, useCUDAGraph=False)
    q1, p1 = padded(q, p, box, R)
    assert padded.capacity >= padded.numPairs > 0 and padded.numOverflows == 0
    # the learned correction matters (beyond free flight), and the two paths agree
    assert np.abs(p_ref.numpy() - p).max() > 1e-2
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q1, q_ref.numpy(), **tol)
    np.testing.assert_allclose(p1, p_ref.numpy(), **tol)
    np.testing.assert_allclose(p1.sum(1), p.sum(1), atol=1e-8)  # momentum of each replica kept


def test_overflow_regrows_and_gives_the_same_answer(water):
    _, _, _, masses, types, box = water
    stepper = FlashMDStepper(random_model(), masses, types, dtype=torch.float64)
    q, p = state(water, 1, seed=1)
    q_ref, p_ref = stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(box))
    padded = PaddedReplicaStep(stepper, 1, periodic=True, useCUDAGraph=False, capacity=10)
    q1, p1 = padded(q, p, box)
    assert padded.numOverflows == 1 and padded.capacity >= 1.3 * padded.numPairs - 1 > 10
    np.testing.assert_allclose(q1, q_ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p1, p_ref.numpy(), rtol=1e-12, atol=1e-12)
    # a larger box (barostat) is just a new buffer value; a box too small for the cutoff is refused on the host
    big = box * 1.02
    q2, _ = padded(q, p, big)
    q2_ref, _ = stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(big))
    np.testing.assert_allclose(q2, q2_ref.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="too small for the cutoff"):
        padded(q, p, box * 0.6)


def test_quantized_model_padded_step(water, monkeypatch):
    """The shipped W4A8 water model (cutoff 0.5 nm) through the padded step equals the stepper."""
    from openmmflash.gaq.weights import QuantizedLinear
    monkeypatch.setattr(QuantizedLinear, "useKernel", False)  # same codes and scales; the kernel is tested in GAQ
    _, _, _, masses, types, box = water
    stepper = FlashMDStepper("water-tip3pfb-8fs-gaq-w4a8", masses, types)
    q, p = state(water, 1, seed=2)
    q_ref, p_ref = stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(box))
    q1, p1 = PaddedReplicaStep(stepper, 1, periodic=True, useCUDAGraph=False)(q, p, box)
    np.testing.assert_allclose(q1, q_ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1, p_ref.numpy(), rtol=1e-5, atol=1e-4)


def run_integrator(water, useCUDAGraph, platform="CPU", device="cpu", steps=3):
    top, system, pos, *_ = water
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=random_model(scale=1.0), randomSeed=11, randomRotation=True,
                                      maxRescale=2.0, useCUDAGraph=useCUDAGraph, device=device)
    sim = app.Simulation(top, system, integ, mm.Platform.getPlatformByName(platform))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    sim.step(steps)
    st = sim.context.getState(getPositions=True, getVelocities=True)
    return integ, st.getPositions(asNumpy=True)._value, st.getVelocities(asNumpy=True)._value


def test_integrator_uses_padded_step_when_asked(water):
    integ, q, v = run_integrator(water, True)
    assert integ._padded is not None and integ._padded.graph is None  # CPU: the padded step runs eagerly
    assert integ._stepper.numCalls >= 1 and integ.getNumLearnedSteps() >= 1
    eager, q0, v0 = run_integrator(water, False)
    assert eager._padded is None and eager._dense is None
    assert integ.getNumLearnedSteps() == eager.getNumLearnedSteps()
    np.testing.assert_allclose(q, q0, atol=1e-5)
    np.testing.assert_allclose(v, v0, atol=1e-3)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


def assert_same_step(q1, p1, q_ref, p_ref, q, p, quantized):
    """Graph and eager results agree: to float32 rounding, or for a quantized model to well within its sensitivity
    to summation order (float32 atomics add in any order; in the W4A8 model such a change moves some activations
    across a rounding boundary and changes the whole output: on CPU, permuting the atoms changes dq by 2.4 % RMS)."""
    if not quantized:
        np.testing.assert_allclose(q1, q_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p1, p_ref, rtol=1e-4, atol=1e-3)
        return
    assert rms(q1 - q_ref) < 0.1 * rms(q_ref - q) and np.abs(q1 - q_ref).max() < 0.01
    assert rms(p1 - p_ref) < 0.1 * rms(p_ref - p)


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["random", "water-tip3pfb-8fs-gaq-w4a8"])
def test_cuda_graph_step_equals_eager_stepper(water, model):
    _, _, _, masses, types, box = water
    quantized = model != "random"
    stepper = FlashMDStepper(random_model() if model == "random" else model, masses, types, device="cuda")
    padded = PaddedReplicaStep(stepper, 2, periodic=True, useCUDAGraph=True)
    for seed in range(3):  # several replays of one captured graph
        q, p = state(water, 2, seed=seed)
        R = random_rotation(torch.Generator().manual_seed(seed))
        q_ref, p_ref = stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(box), rotation=R)
        q_ref, p_ref = q_ref.cpu().numpy(), p_ref.cpu().numpy()
        q1, p1 = padded(q, p, box, R)
        assert padded.graph is not None and not padded.captureFailed
        assert_same_step(q1, p1, q_ref, p_ref, q, p, quantized)
    assert padded.numCaptures == 1
    # overflow on the device: a tiny capacity is grown and the graph captured again, same answer
    small = PaddedReplicaStep(stepper, 2, periodic=True, useCUDAGraph=True, capacity=100)
    q1, p1 = small(q, p, box, R)
    assert small.numOverflows == 1 and small.numCaptures == 2
    assert_same_step(q1, p1, q_ref, p_ref, q, p, quantized)


def test_padded_step_follows_the_barostat(water):
    """MonteCarloBarostat changes the box every stride; the padded step takes each new box from the state."""
    top, system, pos, *_ = water
    npt = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    barostat = mm.MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin, 1)
    barostat.setRandomNumberSeed(5)  # seed 0 draws a new seed each run: about 1 run in 4,000 rejected all six moves
    npt.addForce(barostat)
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=random_model(scale=1.0), randomSeed=11, maxRescale=2.0,
                                      useCUDAGraph=True, device="cpu")
    sim = app.Simulation(top, npt, integ, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    v0 = sim.context.getState().getPeriodicBoxVolume()
    for _ in range(5):  # a box move is accepted about 3 times in 4; stride on until one is
        sim.step(6)
        st = sim.context.getState(getPositions=True, getVelocities=True)
        if abs(st.getPeriodicBoxVolume() / v0 - 1) > 1e-6:
            break
    assert integ._padded is not None and integ.getNumLearnedSteps() > 0
    assert abs(st.getPeriodicBoxVolume() / v0 - 1) > 1e-6  # the box did change
    # at the new box the padded step (buffers reused) still equals the stepper
    box = np.asarray(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    q = np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[None]
    p = np.asarray(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))[None] * \
        integ._masses[None, :, None]
    q1, p1 = integ._padded(q, p, box)
    q_ref, p_ref = integ._stepper.step(torch.as_tensor(q), torch.as_tensor(p), torch.as_tensor(box))
    np.testing.assert_allclose(q1, q_ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1, p_ref.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(integ._padded.box.numpy(), box)


@pytest.mark.cuda
def test_cuda_langevin_picks_the_graph(water):
    platform = "CUDA" if "CUDA" in [mm.Platform.getPlatform(i).getName()
                                    for i in range(mm.Platform.getNumPlatforms())] else "CPU"
    integ, q, v = run_integrator(water, None, platform=platform, device="cuda", steps=4)
    assert integ._padded is not None and integ._padded.graph is not None and not integ._padded.captureFailed
    assert integ._stepper.numCalls >= 1 and np.isfinite(q).all() and np.isfinite(v).all()
    eager, q0, v0 = run_integrator(water, False, platform=platform, device="cuda", steps=4)
    assert eager._padded is None
    assert integ.getNumLearnedSteps() == eager.getNumLearnedSteps()
    np.testing.assert_allclose(q, q0, atol=1e-4)
