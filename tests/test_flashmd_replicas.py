"""FlashMD's guard and fallback per replica: the bundled CG protein as B replicas in one System (real OpenMM Contexts,
CPU platform), one replica started hot so that its learned stride is rejected. The other replicas must end where they
would alone with the learned stride, the hot one where a fallback run of it alone ends; B = 1 is unchanged."""

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

import openmm as mm

from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.engine.replicaenergy import ReplicaEnergy
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.rescale.replicaguard import replicaGuard
from openmmflash.integrators.rescale.guard import checkPrediction, energyRescale
from openmmflash.workflows.flashmdcg import buildCGSystem, cgFallbackSubsteps, flashSchNetReplicaEnergy

MODEL = "chignolin-cg-20fs"
HOT = 1  # the replica started hot
B = 3


def _start(replicas, seed=5):
    """(topology, System, positions, velocities [B n, 3] nm/ps, net): the native structure in every replica,
    300 K velocities of one draw per copy, copy HOT's velocities scaled by 6 (its learned stride is rejected)."""
    top, system, pos, _, native, net = buildCGSystem(replicas, removeCMMotion=False)
    n = len(native)
    rng = np.random.default_rng(seed)
    m = np.array([system.getParticleMass(i)._value for i in range(n)])
    v1 = rng.standard_normal((B, n, 3)) * np.sqrt(2.494 / m)[None, :, None]
    v1 -= (m[None, :, None] * v1).sum(1, keepdims=True) / m.sum()
    v1[HOT] *= 6.0
    return top, system, pos, v1[:replicas].reshape(-1, 3), net


def _integrator(replicas, **kw):
    return FlashMDIntegrator(model=MODEL, replicas=replicas, device="cpu", randomSeed=7,
                             fallbackSubsteps=cgFallbackSubsteps(loadModel(MODEL)), **kw)


def _run(system, integrator, pos, vel, strides=1):
    ctx = mm.Context(system, integrator, mm.Platform.getPlatform("CPU"))
    ctx.setPositions(pos)
    ctx.setVelocities(vel)
    integrator.step(strides)
    st = ctx.getState(getPositions=True, getVelocities=True)
    return (np.asarray(st.getPositions(asNumpy=True)._value), np.asarray(st.getVelocities(asNumpy=True)._value),
            ctx.getStepCount())


def _alone(b):
    """Replica b of the start run alone (a System of one copy): (q, v, fallbacks) after one stride."""
    top, system, pos, vel, _ = _start(B)
    _, system1, pos1, _, _ = _start(1)
    n = len(pos1)
    integ = _integrator(1)
    q, v, _ = _run(system1, integ, pos[b * n:(b + 1) * n], vel[b * n:(b + 1) * n])
    return q, v, integ.getNumFallbacks()


@pytest.fixture(scope="module")
def replicated():
    top, system, pos, vel, net = _start(B)
    integ = _integrator(B)
    integ.setReplicaEnergy(flashSchNetReplicaEnergy(system, net, top, B, device="cpu"))
    q, v, steps = _run(system, integ, pos, vel)
    return q, v, steps, integ, len(pos) // B


def test_replica_energy_adds_up_to_the_system_energy():
    top, system, pos, vel, net = _start(B)
    energy = flashSchNetReplicaEnergy(system, net, top, B, device="cpu")
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatform("CPU"))
    ctx.setPositions(pos)
    V = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    e = energy.energies(pos)
    assert e.shape == (B,)
    assert abs(e.sum() - V) < 1e-4 * abs(V)
    np.testing.assert_allclose(e, e[0], rtol=1e-5)  # identical copies of the native structure


def test_only_the_rejected_replica_falls_back(replicated):
    q, v, steps, integ, n = replicated
    assert steps == 1
    counts = integ.getReplicaFallbackCounts()
    assert counts.tolist() == [1 if b == HOT else 0 for b in range(B)]
    np.testing.assert_allclose(integ.getReplicaFallbackFractions(), counts / 1.0)
    assert integ.getNumFallbacks() == 1 and integ.getNumLearnedSteps() == 0
    assert integ.lastRejection.startswith(f"replica {HOT}:")


@pytest.mark.parametrize("b", [0, 2])
def test_accepted_replicas_equal_their_run_alone(replicated, b):
    q, v, _, _, n = replicated
    qa, va, fallbacks = _alone(b)
    assert fallbacks == 0  # alone, its learned stride is accepted too
    _, _, pos, vel, _ = _start(B)
    assert np.abs(qa - pos[b * n:(b + 1) * n]).max() > 1e-3  # the stride moved it
    np.testing.assert_allclose(q[b * n:(b + 1) * n], qa, atol=2e-6)
    np.testing.assert_allclose(v[b * n:(b + 1) * n], va, rtol=1e-4, atol=1e-4)


def test_rejected_replica_equals_its_fallback_run_alone(replicated):
    q, v, _, _, n = replicated
    qa, va, fallbacks = _alone(HOT)
    assert fallbacks == 1  # alone it is rejected and advanced by OpenMM's velocity-Verlet substeps
    np.testing.assert_allclose(q[HOT * n:(HOT + 1) * n], qa, atol=1e-5)
    np.testing.assert_allclose(v[HOT * n:(HOT + 1) * n], va, rtol=1e-4, atol=1e-3)


def test_whole_system_guard_sends_every_replica_to_the_fallback():
    top, system, pos, vel, net = _start(B)
    integ = _integrator(B)
    q, v, _ = _run(system, integ, pos, vel)
    assert integ.getReplicaFallbackCounts().tolist() == [1] * B
    n = len(pos) // B
    qa, _, _ = _alone(0)
    assert np.abs(q[:n] - qa).max() > 1e-4  # replica 0 lost its learned stride


def test_one_replica_is_unchanged_by_a_replica_energy():
    _, system1, pos1, vel1, _ = _start(1)
    top, _, _, _, net = _start(1)
    plain, per = _integrator(1), _integrator(1)
    per.setReplicaEnergy(flashSchNetReplicaEnergy(system1, net, top, 1, device="cpu"))
    a, b = _run(system1, plain, pos1, vel1, 3), _run(system1, per, pos1, vel1, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert plain.getNumFallbacks() == per.getNumFallbacks()


def test_replica_guard_of_one_replica_is_the_guard():
    rng = np.random.default_rng(1)
    m = rng.uniform(10, 16, 8)
    q, v = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    q1, v1 = q + 0.01 * rng.standard_normal((8, 3)), v * 1.01
    acc, out, V1, reasons, alpha = replicaGuard(q, v, q1, v1, m, 1, np.array([5.0]), lambda x: np.array([4.0]),
                                                0.1, 1.25)
    reason, ref, a = energyRescale(v, v1, m, 5.0, 4.0, 1.25)
    assert acc.tolist() == [reason is None] and np.array_equal(out, ref) and alpha[0] == a
    assert checkPrediction(q, q1, v1, 0.1) is None


def test_replica_guard_evaluates_no_energy_at_a_non_finite_prediction():
    rng = np.random.default_rng(2)
    m = np.full(6, 12.0)
    q, v = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    q1 = q + 0.001
    q1[4] = np.nan  # replica 1 of 2
    seen = []

    def energies(x):
        seen.append(x.copy())
        return np.array([1.0, 1.0])
    acc, _, V1, reasons, _ = replicaGuard(q, v, q1, v.copy(), m, 2, np.array([1.0, 1.0]), energies, 0.1, 1.25)
    assert acc.tolist() == [True, False] and reasons[1] == "non-finite prediction" and np.isnan(V1[1])
    assert np.isfinite(seen[0]).all()


def test_replica_energy_must_match_the_system_and_the_integrator():
    top, system, pos, vel, net = _start(B)
    wrong = ReplicaEnergy(lambda x: (0.0 * x).sum((1, 2)), B, len(pos) // B, "cpu")
    integ = _integrator(B)
    integ.setReplicaEnergy(wrong)
    ctx = mm.Context(system, integ, mm.Platform.getPlatform("CPU"))
    ctx.setPositions(pos)
    with pytest.raises(ValueError, match="do not add up"):
        integ.step(1)
    with pytest.raises(ValueError, match="for 2 replicas"):
        _integrator(B).setReplicaEnergy(ReplicaEnergy(wrong.fn, 2, 10, "cpu"))


def test_langevin_without_friction_is_the_nve_per_replica_run(replicated):
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    q, v, _, _, n = replicated
    top, system, pos, vel, net = _start(B)
    integ = FlashMDLangevinIntegrator(300.0, 0.0, None, model=MODEL, replicas=B, device="cpu", randomSeed=7,
                                      fallbackSubsteps=cgFallbackSubsteps(loadModel(MODEL)))
    integ.setReplicaEnergy(flashSchNetReplicaEnergy(system, net, top, B, device="cpu"))
    ql, vl, _ = _run(system, integ, pos, vel)
    assert integ.getReplicaFallbackCounts().tolist() == [1 if b == HOT else 0 for b in range(B)]
    np.testing.assert_array_equal(ql, q)
    np.testing.assert_array_equal(vl, v)


def test_per_species_rescale_accepts_and_rejects_each_replica_as_alone():
    top, system, pos, vel, net = _start(B)
    integ = _integrator(B, speciesRescale=True)
    integ.setReplicaEnergy(flashSchNetReplicaEnergy(system, net, top, B, device="cpu"))
    _run(system, integ, pos, vel)
    _, system1, _, _, _ = _start(1)
    n = len(pos) // B
    for b in range(B):
        alone = _integrator(1, speciesRescale=True)
        _run(system1, alone, pos[b * n:(b + 1) * n], vel[b * n:(b + 1) * n])
        assert alone.getNumFallbacks() == integ.getReplicaFallbackCounts()[b]
    assert integ.getReplicaFallbackCounts()[HOT] == 1


def test_resident_strides_guard_per_replica(replicated):
    """deviceResident=True on the CPU (eager): the per-replica resident loop gives the host path's outcome."""
    from openmmflash.workflows.flashmdcg import flashSchNetEnergyEvaluator
    q, v, _, _, n = replicated
    top, system, pos, vel, net = _start(B)
    integ = _integrator(B, deviceResident=True)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, top, B, device="cpu", priors="torch",
                                                         pairs="list"))
    integ.setReplicaEnergy(flashSchNetReplicaEnergy(system, net, top, B, device="cpu"))
    qr, vr, steps = _run(system, integ, pos, vel)
    assert integ.isDeviceResident() and steps == 1
    assert integ.getReplicaFallbackCounts().tolist() == [1 if b == HOT else 0 for b in range(B)]
    assert integ.getNumFallbacks() == 1
    np.testing.assert_allclose(qr, q, atol=1e-5)
    np.testing.assert_allclose(vr, v, rtol=1e-4, atol=1e-3)
    whole = _integrator(B, deviceResident=True)
    whole.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, top, B, device="cpu", priors="torch",
                                                         pairs="list"))
    _run(system, whole, pos, vel)
    assert whole.getReplicaFallbackCounts().tolist() == [1] * B


def test_per_replica_strides_refuse_a_non_finite_state_before_any_energy():
    from openmmflash.integrators.engine.statecheck import NonFiniteStateError
    top, system, pos, vel, net = _start(B)
    integ = _integrator(B)
    calls = []
    real = flashSchNetReplicaEnergy(system, net, top, B, device="cpu")
    integ.setReplicaEnergy(ReplicaEnergy(lambda x: calls.append(1) or real.fn(x), B, real.n, "cpu"))
    ctx = mm.Context(system, integ, mm.Platform.getPlatform("CPU"))
    bad = pos.copy()
    bad[len(pos) // B + 2] = np.nan  # one particle of replica 1
    ctx.setPositions(bad)
    ctx.setVelocities(vel)
    with pytest.raises(NonFiniteStateError, match="positions are not finite"):
        integ.step(1)
    assert not calls
