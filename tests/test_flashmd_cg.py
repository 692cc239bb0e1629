"""FlashMD for replicated, non-periodic molecules (the CG-protein path): dense CUDA-graph step, replica data, replicas
in the integrator. Small chains of C/N/O "beads" with native OpenMM bonded forces on the Reference platform."""

import numpy as np
import pytest
import torch

import openmm as mm
from openmm import unit

from openmmflash.integrators.engine.densestep import DenseReplicaStep, denseEdges
from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.network.modelfile import FlashMDModel, availableModels
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
from openmmflash.integrators.training.replicadata import generateReplicaPairs
from openmmflash.integrators.engine.stepper import FlashMDStepper, random_rotation

MASS = {6: 12.011, 7: 14.007, 8: 15.999}
TYPES = [7, 6, 6, 8, 7, 6, 6]


def chain_system(replicas):
    """B copies of a 7-bead chain (bonds 0.15 nm, angles 110 deg), placed 2 nm apart, not periodic."""
    n = len(TYPES)
    system = mm.System()
    bonds, angles = mm.HarmonicBondForce(), mm.HarmonicAngleForce()
    pos = []
    for b in range(replicas):
        for i, z in enumerate(TYPES):
            system.addParticle(MASS[z])
            pos.append([2.0 * b + 0.15 * i, 0.05 * (i % 2), 0.0])
        for i in range(n - 1):
            bonds.addBond(b * n + i, b * n + i + 1, 0.15, 2e5)
        for i in range(n - 2):
            angles.addAngle(b * n + i, b * n + i + 1, b * n + i + 2, 1.92, 400.0)
    system.addForce(bonds)
    system.addForce(angles)
    return system, np.array(pos)


def chain_model(stride=0.004, seed=0):
    torch.manual_seed(seed)
    model = FlashMDModel([6, 7, 8], [MASS[6], MASS[7], MASS[8]], stride, 1.6,
                         dict(channels=8, num_layers=2, num_rbf=8, cutoff=0.35))
    with torch.no_grad():
        model.network.head.vec.weight.mul_(20.0)  # a clearly non-trivial learned correction
    return model


def test_dense_edges_cover_all_pairs_within_replicas():
    src, dst = denseEdges(2, 3)
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert len(pairs) == 2 * 3 * 2
    assert all((s < 3) == (d < 3) and s != d for s, d in pairs)


@pytest.mark.parametrize("rotate", [False, True])
def test_dense_step_equals_neighbor_list_step(rotate):
    _, pos = chain_system(3)
    B, n = 3, len(TYPES)
    rng = np.random.default_rng(0)
    q = pos.reshape(B, n, 3) + 0.02 * rng.standard_normal((B, n, 3))
    masses = np.array([MASS[z] for z in TYPES])
    p = rng.standard_normal((B, n, 3)) * np.sqrt(masses * 2.5)[:, None]
    stepper = FlashMDStepper(chain_model(), masses, TYPES)
    R = random_rotation(torch.Generator().manual_seed(3)) if rotate else None
    q_ref, p_ref = stepper.step(torch.as_tensor(q), torch.as_tensor(p), None, rotation=R)
    dense = DenseReplicaStep(stepper, B, useCUDAGraph=False)
    q1, p1, e = dense(q, p, R)
    assert e is None  # no PyTorch energy attached
    # the learned correction is large enough to matter, and the two paths agree
    assert np.abs(p_ref.numpy() - p).max() > 1e-2
    np.testing.assert_allclose(q1, q_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(p1, p_ref.numpy(), atol=1e-4)
    # centre-of-mass momentum of each replica is kept
    np.testing.assert_allclose(p1.sum(1), p.sum(1), atol=1e-6)


def test_replica_pairs_are_nve_segments_at_each_temperature():
    B, n = 4, len(TYPES)
    system, pos = chain_system(B)
    sets = generateReplicaPairs(system, pos, TYPES, B, [250.0, 350.0], [0.002, 0.004], timestep=0.0002, cycles=3,
                                decorrelation=0.02, equilibration=0.05, platform="Reference", progress=False)
    d2, d4 = sets[0.002], sets[0.004]
    assert d4["q0"].shape == (3 * B, n, 3) and d4["meta"]["periodic"] is False
    np.testing.assert_array_equal(d2["q0"], d4["q0"])
    assert np.abs(d4["dq"]).max() > np.abs(d2["dq"]).max()
    assert sorted(set(d4["temperature"].tolist())) == [250.0, 350.0]
    assert not np.any(d4["box"])
    # each pair is a short NVE segment of one replica: its total energy is conserved
    one, _ = chain_system(1)
    ctx = mm.Context(one, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    m = d4["masses"][:, None]

    def energy(q, p):
        ctx.setPositions(q.astype(np.float64))
        return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) + \
            float((p.astype(np.float64) ** 2 / (2 * m)).sum())

    for k in range(0, d4["q0"].shape[0], 5):
        e0 = energy(d4["q0"][k], d4["p0"][k])
        e1 = energy(d4["q0"][k] + d4["dq"][k], d4["p1"][k])
        assert abs(e1 - e0) < 0.05 * max(1.0, abs(e0))


def test_integrator_replicas_keep_each_replica_momentum_and_refuse_mismatch():
    B = 2
    system, pos = chain_system(B)
    model = chain_model(stride=0.002)
    integ = FlashMDIntegrator(model=model, rescaleEnergy=False, replicas=B, device="cpu")
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    m = np.array([MASS[z] for z in TYPES] * B)[:, None]
    v0 = ctx.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    integ.enableProfiling(True)
    integ.step(3)
    assert {"readState", "network", "writeAndStep"} <= set(integ.timings)
    assert all(t >= 0 for t in integ.timings.values())
    v1 = ctx.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    assert integ.getNumLearnedSteps() == 3 and ctx.getStepCount() == 3
    P0 = (m * v0).reshape(B, -1, 3).sum(1)
    P1 = (m * np.asarray(v1)).reshape(B, -1, 3).sum(1)
    np.testing.assert_allclose(P1, P0, atol=1e-5)
    with pytest.raises(ValueError, match="both"):
        integ.setEnergyEvaluator({0}, None)
    bad = FlashMDIntegrator(model=model, rescaleEnergy=False, replicas=3, device="cpu")
    with pytest.raises(ValueError, match="replicas=3"):
        bad.setContext(mm.Context(system, bad, mm.Platform.getPlatformByName("Reference")))


def test_flashschnet_energy_evaluator_matches_the_system_energy():
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    full, system, pos, _, _, net = buildCGSystem(2)
    integ = FlashMDIntegrator(model=chain_model(), stepSize=0.004, rescaleEnergy=True, replicas=2, device="cpu")
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos + 0.01 * np.random.default_rng(1).standard_normal(pos.shape))
    groups, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu")
    assert groups == {1}
    full_v = integ.computeRescaleEnergy(ctx)
    integ.setEnergyEvaluator(groups, energy)
    split_v = integ.computeRescaleEnergy(ctx)
    prior_v = ctx.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(full_v - prior_v) > 1.0  # the FlashSchNet part is not negligible
    assert split_v == pytest.approx(full_v, rel=1e-5, abs=1e-3)


def test_torch_priors_equal_openmm_energy_and_forces():
    """Every prior term of the CG System in PyTorch: energy and -gradient equal OpenMM's (Reference platform), also
    far from the native structure, where the sign of the torsion and the improper wrap matter."""
    from openmmflash.cg.torchpriors import priorEnergyFunction
    from openmmflash.workflows.flashmdcg import buildCGSystem
    _, system, pos, _, _, _ = buildCGSystem(2)
    kinds = {type(f).__name__ for f in system.getForces() if f.getName().startswith("FlashSchNet prior")}
    assert kinds == {"HarmonicBondForce", "CustomAngleForce", "CustomTorsionForce", "CustomBondForce"}
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    fn = priorEnergyFunction(system)
    rng = np.random.default_rng(3)
    for scale in (0.003, 0.05):
        q = pos + scale * rng.standard_normal(pos.shape)
        ctx.setPositions(q)
        st = ctx.getState(getEnergy=True, getForces=True, groups={1})
        x = torch.tensor(q, requires_grad=True)
        e = fn(x)
        e.backward()
        assert float(e.detach()) == pytest.approx(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                                                  rel=1e-10)
        f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(-x.grad.numpy(), f, rtol=1e-7, atol=1e-6 * np.abs(f).max())


def test_torch_priors_evaluator_needs_no_openmm_energy_and_refuses_other_forces():
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    full, system, pos, _, _, net = buildCGSystem(2)
    groups, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch")
    assert groups == set()
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    q = pos + 0.01 * np.random.default_rng(2).standard_normal(pos.shape)
    ctx.setPositions(q)
    full_v = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy(q) == pytest.approx(full_v, rel=1e-5, abs=1e-3)
    extra = mm.CustomExternalForce("0.1*x^2")  # a user's restraint that the PyTorch energy does not know
    extra.addParticle(0, [])
    extra.setForceGroup(2)
    system.addForce(extra)
    with pytest.raises(ValueError, match="priors='openmm'"):
        flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", priors="torch")


def test_energy_inside_the_fixed_shape_step_gives_the_same_run():
    """With a TorchEnergy the fixed-shape step computes the FlashSchNet part of V(q') with the network (one graph on
    CUDA, eager here); the run equals the one that evaluates it separately on the positions OpenMM holds."""
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    full, system, pos, _, _, net = buildCGSystem(2)
    runs = []
    for fused in (True, False):
        integ = FlashMDLangevinIntegrator(300, 1.0, None, model=chain_model(), replicas=2, device="cpu", randomSeed=4,
                                          maxRescale=10.0, useCUDAGraph=fused)
        integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", positions=pos))
        ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
        ctx.setPositions(pos)
        ctx.setVelocitiesToTemperature(300, 2)
        integ.step(5)
        assert (integ._dense is not None and integ._dense.energy is not None) == fused
        assert integ.getNumLearnedSteps() >= 3
        st = ctx.getState(getPositions=True, getVelocities=True)
        runs.append((integ.getNumFallbacks(), st.getPositions(asNumpy=True)._value,
                     st.getVelocities(asNumpy=True)._value, integ.getRescaleFactors()))
    (fb_a, q_a, v_a, a_a), (fb_b, q_b, v_b, a_b) = runs
    assert fb_a == fb_b
    np.testing.assert_allclose(a_a, a_b, rtol=1e-5)
    np.testing.assert_allclose(q_a, q_b, atol=1e-5)
    np.testing.assert_allclose(v_a, v_b, atol=1e-3)


def test_torch_priors_give_the_same_run_as_openmm_priors():
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    full, system, pos, _, _, net = buildCGSystem(2)
    runs = []
    for priors in ("torch", "openmm"):
        integ = FlashMDLangevinIntegrator(300, 1.0, None, model=chain_model(), replicas=2, device="cpu", randomSeed=4,
                                          maxRescale=10.0)
        integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 2, device="cpu", positions=pos,
                                                             priors=priors))
        ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
        ctx.setPositions(pos)
        ctx.setVelocitiesToTemperature(300, 2)
        integ.step(5)
        assert integ.getNumLearnedSteps() >= 3
        runs.append((integ.getNumFallbacks(), integ.getRescaleFactors(),
                     ctx.getState(getPositions=True).getPositions(asNumpy=True)._value))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-5)
    np.testing.assert_allclose(runs[0][2], runs[1][2], atol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_energy_equals_openmm_energy():
    """On CUDA the FlashSchNet energy is sized by a padded list and replayed as a graph; with the priors from
    OpenMM it equals the System's energy."""
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    full, system, pos, _, _, net = buildCGSystem(2, platformName="CUDA")
    groups, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cuda", positions=pos)
    assert energy.capturable and energy._graph is not None
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CUDA"))
    for seed in range(3):  # replays of one graph at different positions
        q = pos + 0.01 * np.random.default_rng(seed).standard_normal(pos.shape)
        ctx.setPositions(q)
        full_v = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        prior_v = ctx.getState(getEnergy=True, groups=groups).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole)
        assert prior_v + energy(q) == pytest.approx(full_v, rel=1e-4, abs=1e-2)


@pytest.mark.cuda
def test_cuda_graph_energy_with_torch_priors_equals_openmm_energy():
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator
    full, system, pos, _, _, net = buildCGSystem(2, platformName="CUDA")
    groups, energy = flashSchNetEnergyEvaluator(system, net, full, 2, device="cuda", positions=pos, priors="torch")
    assert groups == set() and energy.capturable and energy._graph is not None
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CUDA"))
    for seed in range(3):
        q = pos + 0.01 * np.random.default_rng(seed).standard_normal(pos.shape)
        ctx.setPositions(q)
        full_v = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert energy(q) == pytest.approx(full_v, rel=1e-4, abs=1e-2)


def test_cli_makes_cg_protein_pairs_and_trains_on_them(tmp_path):
    from openmmflash.cli import main as cli_main
    from openmmflash.integrators.training.data import loadDataset
    out = str(tmp_path / "cg.npz")
    assert cli_main(["flashmd-data", "--cg-model", "chignolin", "--replicas", "2", "--stride", "4", "--timestep",
                     "1", "--pairs", "2", "--spacing", "0.004", "--equilibration", "0.004", "--platform", "CPU",
                     "--quiet", "-o", out]) == 0
    data = loadDataset(out)
    assert data["q0"].shape == (4, 47, 3) and data["meta"]["periodic"] is False
    assert sorted(set(data["types"].tolist())) == [6, 7, 8]
    model_path = str(tmp_path / "cg.pt")
    assert cli_main(["flashmd-train", out, "-o", model_path, "--iterations", "3", "--batch-size", "2", "--channels",
                     "8", "--layers", "1", "--device", "cpu", "--quiet"]) == 0
    from openmmflash.integrators.network.modelfile import loadModel
    assert loadModel(model_path).provenance["dataset"]["periodic"] is False


@pytest.mark.parametrize("name", [m for m in availableModels() if m.startswith("chignolin-cg-40fs")])
def test_shipped_cg_models_run_the_bundled_protein(name):
    """The shipped 40 fs CG models drive the bundled chignolin under FlashMDLangevinIntegrator (bead-type species,
    PyTorch energy for the rescale, 10/ps): 50 strides stay finite, mostly learned, near 300 K, with the step count
    and time of 50 strides."""
    from openmmflash.workflows.flashmdcg import buildCGSystem, flashSchNetEnergyEvaluator, useCGBeadTypes
    full, system, pos, _, _, net = buildCGSystem(1)
    integ = FlashMDLangevinIntegrator(300 * unit.kelvin, 10 / unit.picosecond, None, model=name, randomSeed=3,
                                      device="cpu")
    useCGBeadTypes(integ, net, full)
    integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, full, 1, device="cpu", priors="torch"))
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    temps = []
    for _ in range(10):
        integ.step(5)
        st = ctx.getState(getPositions=True, getEnergy=True)
        assert np.all(np.isfinite(st.getPositions(asNumpy=True)._value))
        temps.append(2 * st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
                     / ((3 * system.getNumParticles() - 3) * 0.00831446261815324))
    assert ctx.getStepCount() == 50
    assert ctx.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(50 * 0.04)
    assert integ.getNumFallbacks() <= 15, integ.getRejectionCounts()
    assert 200 < np.mean(temps) < 400


def test_biased_shipped_models_warn_once(caplog, tmp_path):
    """A shipped model whose closed-loop validation found a biased ensemble says so (with the measured figures) when
    an integrator loads it, once per process; a model without such findings stays quiet."""
    import logging
    from openmmflash.integrators.engine import flashmdintegrator
    from openmmflash.integrators.network.modelfile import ensembleNote, modelPath

    flashmdintegrator._warned_models.clear()
    with caplog.at_level(logging.WARNING, logger="openmmflash.flashmd"):
        FlashMDLangevinIntegrator(300, 10, None, model="chignolin-cg-40fs-stiff", device="cpu", randomSeed=1)
        FlashMDLangevinIntegrator(300, 10, None, model="chignolin-cg-40fs-stiff", device="cpu", randomSeed=2)
        FlashMDLangevinIntegrator(300, 10, None, model="water-tip3pfb-8fs-npt", device="cpu", randomSeed=1)
    warned = [r.getMessage() for r in caplog.records if "chignolin-cg-40fs-stiff" in r.getMessage()]
    assert len(warned) == 1 and "Rg 7.02 vs 7.74" in warned[0] and "ordinary MD" in warned[0]
    assert not any("water" in r.getMessage() for r in caplog.records)
    assert ensembleNote(modelPath("chignolin-cg-20fs")) is not None  # by path of the shipped file, too
    assert ensembleNote("water-tip3pfb-8fs-npt") is None
    # a model loaded first (as run scripts do) and handed over as an object is still recognised, once
    from openmmflash.integrators.network.modelfile import loadModel, saveModel
    flashmdintegrator._warned_models.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="openmmflash.flashmd"):
        FlashMDLangevinIntegrator(300, 10, None, model=loadModel("chignolin-cg-40fs"), device="cpu", randomSeed=1)
    assert sum("chignolin-cg-40fs:" in r.getMessage() for r in caplog.records) == 1
    # a copy outside the package is somebody's own model: no shipped note
    copy = str(tmp_path / "chignolin-cg-40fs.pt")
    saveModel(loadModel("chignolin-cg-40fs"), copy)
    assert ensembleNote(copy) is None and ensembleNote(loadModel(copy)) is None


def test_validation_reuses_a_saved_langevin_reference(tmp_path):
    """bench_flashmd_cg.py --validate --reference-only --save-reference writes the Langevin run's observables per
    frame; a later --reference run compares a FlashMD model with them instead of running Langevin again, and refuses a
    reference made at another temperature."""
    import json
    import os
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "benchmarks", "bench_flashmd_cg.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = [sys.executable, script, "--validate", "--time", "0.8", "--burn", "0.08", "--frame-interval", "0.08",
              "--platform", "CPU", "--results", str(tmp_path)]
    ref = str(tmp_path / "ref.npz")
    subprocess.run(common + ["--reference-only", "--replicas", "1", "--save-reference", ref, "--tag", "_ref"],
                   check=True, env=env, capture_output=True)
    saved = np.load(ref)
    assert set(saved.files) == {"run", "caRmsd", "Rg", "Q"} and saved["Rg"].shape == (10,)
    subprocess.run(common + ["--reference", ref, "--model", "chignolin-cg-40fs-stiff", "--energy", "torch",
                             "--tag", "_flash"], check=True, env=env, capture_output=True)
    rep = json.load(open(tmp_path / "flashmd_cg_validation_flash.json"))
    lang = rep["runs"]["langevin"]
    assert lang["loadedFrom"] == "ref.npz" and lang["frames"] == 10 and len(lang["speciesTemperature_K"]) == 16
    assert lang["observables"]["Rg"]["mean"] == pytest.approx(float(saved["Rg"].mean()))
    flash = rep["runs"]["chignolin-cg-40fs-stiff"]
    assert flash["frames"] == 10 and 0 <= flash["histogramOverlapWithLangevin"]["Rg"] <= 1
    # block standard errors (8 blocks of one frame here) from the saved frames
    from openmmflash.blockstats import blockStandardError
    assert lang["observables"]["Rg"]["standardError"] == pytest.approx(blockStandardError(saved["Rg"], blocks=8))
    assert flash["observables"]["Rg"]["standardError"] > 0
    bad = subprocess.run(common + ["--reference", ref, "--temperature", "310", "--tag", "_bad"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "is a 300 K run" in bad.stderr


def test_phase_space_volume_diagnostic():
    """flashmd_cg_jacobian.py: velocity Verlet over a short stride preserves phase-space volume (log |det J| = 0 to
    rounding), and the determinant lemma for the rescaled learned stride equals that map's own Jacobian."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "benchmarks"))
    from flashmd_cg_jacobian import PhaseSpaceMaps, logDet
    from openmmflash.workflows.flashmdcg import buildCGSystem

    full, system, positions, topology, native, net = buildCGSystem(1, platformName="CPU", removeCMMotion=False)
    maps = PhaseSpaceMaps("chignolin-cg-40fs-stiff", system, net, topology)
    rng = np.random.default_rng(3)
    p = rng.standard_normal((maps.n, 3)) * np.sqrt(0.0083145 * 300 * maps.m.numpy())
    x = torch.tensor(np.concatenate([np.asarray(positions).reshape(-1), (p - p.mean(0)).reshape(-1)]))
    assert abs(logDet(lambda y: maps.verlet(y, 0.004, 2), x)[0]) < 1e-6
    ld_m, ld_g, alpha = maps.logDets(x)
    assert ld_g == pytest.approx(logDet(maps.rescaled, x)[0], abs=1e-6)
    assert np.isfinite(ld_m) and 0.5 < alpha < 2
    # what the stride misses before the rescale is what the rescale gives back: H(M x) - H(x) = K' (1 - alpha^2)
    with torch.no_grad():
        k1 = maps.kinetic(maps.split(maps.learned(x))[1])
        assert float(maps.energyError(x)) == pytest.approx(float(k1) * (1 - alpha ** 2), rel=1e-6, abs=1e-8)
