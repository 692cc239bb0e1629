"""FlashMD data generation, training, model files and CLI, on a tiny flexible-water box (CPU platform)."""

import numpy as np
import pytest
import torch

import openmm as mm
from openmm import app, unit

from openmmflash.cli import main as cli_main
from openmmflash.integrators.training.data import loadDataset
from openmmflash.integrators.network.modelfile import FlashMDModel, availableModels, loadModel, saveModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
from openmmflash.integrators.training.trainer import Trainer, train

from conftest import WATER_STRIDE as STRIDE  # ps


@pytest.fixture(scope="module")
def dataset(water_pairs):
    return water_pairs


def test_dataset_pairs_follow_the_dynamics(dataset):
    path, system, top, pos = dataset
    data = loadDataset(path)
    assert data["q0"].shape == (10, system.getNumParticles(), 3)
    assert data["meta"]["stride"] == STRIDE
    m = data["masses"][None, :, None]
    # dq is close to free flight for a 2 fs stride, and momenta change (forces act): a real NVE pair.
    free = data["p0"] / m * STRIDE
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    assert rms(data["dq"] - free) < 0.5 * rms(data["dq"])
    assert np.abs(data["p1"] - data["p0"]).max() > 1.0
    # total momentum is conserved by the reference NVE run (PME: to float precision)
    assert np.allclose(data["p0"].sum(1), data["p1"].sum(1), atol=0.05)


def test_training_reduces_loss(dataset):
    path, system, top, pos = dataset
    trainer = Trainer(path, channels=16, numLayers=2, numRBF=8, cutoff=0.4, lr=3e-3, batchSize=2,
                      energyWeight=0.1, system=system, energyPlatform="CPU", iterations=60, seed=1)
    idx = trainer.train_idx
    before = float(trainer.loss(idx, augment=False)[0].detach())
    for _ in range(60):
        trainer.trainStep()
    after = float(trainer.loss(idx, augment=False)[0].detach())
    # The model starts at the free-flight map, already a fair guess over 2 fs; training must improve on it.
    assert after < 0.9 * before
    metrics = trainer.validate()
    assert metrics["numValidationPairs"] == 1 and np.isfinite(metrics["rmse_dq_nm_Z1"])


def test_potential_energy_target_compares_with_the_true_end_point(dataset, monkeypatch):
    """energyTarget="potential": the energy term is log1p(((V(q + dq_pred) - V(q + dq)) / (sqrt(N) kT))^2), here
    recomputed with another Context (augmentation made the identity, so the prediction is the plain one); "total"
    gives another value; a bad name is refused."""
    import openmmflash.integrators.training.trainer as training
    from openmmflash.integrators.engine.stepper import batch_edges
    path, system, top, pos = dataset
    common = dict(channels=8, numLayers=1, numRBF=4, cutoff=0.4, batchSize=2, energyWeight=0.1, system=system,
                  energyPlatform="Reference", seed=1)
    pot, tot = Trainer(path, energyTarget="potential", **common), Trainer(path, energyTarget="total", **common)
    monkeypatch.setattr(training, "random_rotation", lambda g, dtype: torch.eye(3, dtype=dtype))
    idx = pot.train_idx[:2]
    values = []
    for t in (pot, tot):
        t.iteration, t.iterations = 1, 1  # past the ramp: the energy term is on
        plain = t._batch
        monkeypatch.setattr(t, "_batch", lambda i, augment, plain=plain: plain(i, False))  # no time reversal
        values.append(float(t.loss(idx, augment=True)[3].detach()))
    model = pot.model
    q0, p0, dq = pot.q0[idx], pot.p0[idx], pot.dq[idx]
    B, N, _ = q0.shape
    box = pot._box(idx)
    src, dst, ev = batch_edges(q0, box, model.cutoff)
    s = model.momentumScale
    with torch.no_grad():
        a, _ = model.normalized(pot.type_idx.repeat(B), (p0 / pot.sqrt_m / s).reshape(B * N, 3), src, dst, ev)
    dq_pred = (a.reshape(B, N, 3) * model.stride * s / pot.sqrt_m).double().numpy()
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    terms = []
    for b in range(B):
        if box is not None:
            ctx.setPeriodicBoxVectors(*box[b].double().numpy())
        V = []
        for q in (q0[b].double().numpy() + dq_pred[b], (q0[b] + dq[b]).double().numpy()):
            ctx.setPositions(q)
            V.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        kT = training.KB * float(pot.temperature[idx][b])
        terms.append(np.log1p(((V[0] - V[1]) / (np.sqrt(N) * kT)) ** 2))
    assert values[0] == pytest.approx(np.mean(terms), rel=1e-4, abs=1e-5)
    assert abs(values[1] - values[0]) > 1e-3
    with pytest.raises(ValueError, match="energyTarget"):
        Trainer(path, energyTarget="kinetic", **common)


def test_energy_term_gradient_is_minus_force(dataset):
    from openmmflash.integrators.training.trainer import _OpenMMPotential, makeEnergyContext
    path, system, top, pos = dataset
    ctx = makeEnergyContext(system, "Reference")
    q = torch.tensor(pos[None], dtype=torch.float64, requires_grad=True)
    V = _OpenMMPotential.apply(q, ctx)
    V.sum().backward()
    ctx.setPositions(pos)
    forces = ctx.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer)
    assert np.allclose(q.grad[0].numpy(), -np.asarray(forces))


def test_cli_train_resume_and_model_file(dataset, tmp_path):
    path, system, top, pos = dataset
    out = str(tmp_path / "m.pt")
    args = ["flashmd-train", path, "-o", out, "--iterations", "6", "--channels", "8", "--layers", "1",
            "--cutoff", "0.4", "--batch-size", "2", "--quiet"]
    assert cli_main(args) == 0
    state = torch.load(out + ".state", weights_only=False)
    assert state["iteration"] == 6
    assert cli_main(args[:5] + ["12"] + args[6:]) == 0  # resumes from iteration 6
    assert torch.load(out + ".state", weights_only=False)["iteration"] == 12
    model = loadModel(out)
    assert model.stride == STRIDE and model.species == [1, 8]
    assert model.speciesMasses == pytest.approx([1.007947, 15.99943])
    assert model.provenance["iterations"] == 12 and model.provenance["dataset"]["stride"] == STRIDE
    assert "rmse_dq_nm_Z8" in model.validation
    # The file drives an OpenMM run.
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=out, randomSeed=1)
    sim = app.Simulation(top, system, integ, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    sim.step(3)
    assert sim.currentStep == 3
    with pytest.raises(ValueError, match="no FlashMD model file or shipped model named"):
        loadModel("no-such-model")


@pytest.mark.cuda
def test_resume_on_cuda(dataset, tmp_path):
    """Training on the GPU resumes from its .state (loaded onto the GPU; the CPU generator's state comes back)."""
    path, system, top, pos = dataset
    out = str(tmp_path / "m.pt")
    args = ["flashmd-train", path, "-o", out, "--iterations", "4", "--channels", "8", "--layers", "1",
            "--cutoff", "0.4", "--batch-size", "2", "--device", "cuda", "--quiet"]
    assert cli_main(args) == 0
    assert cli_main(args[:5] + ["8"] + args[6:]) == 0
    assert torch.load(out + ".state", weights_only=False, map_location="cpu")["iteration"] == 8


def test_cli_fine_tunes_an_existing_model(dataset, tmp_path):
    """flashmd-train --init continues from a model's weights (not from scratch) and records where it started;
    a model of another stride is refused with a clear error unless --restride, which warm-starts it at the data's
    stride."""
    path, system, top, pos = dataset
    first, tuned = str(tmp_path / "first.pt"), str(tmp_path / "tuned.pt")
    base = ["--iterations", "4", "--channels", "8", "--layers", "1", "--cutoff", "0.4", "--batch-size", "2", "--quiet"]
    assert cli_main(["flashmd-train", path, "-o", first] + base) == 0
    start = loadModel(first)
    assert cli_main(["flashmd-train", path, "-o", tuned, "--init", first, "--lr", "1e-6"] + base[:2] + base[-3:]) == 0
    model = loadModel(tuned)
    assert model.provenance["initialModel"] == first
    assert model.provenance["initialProvenance"]["iterations"] == 4
    drift = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), start.state_dict().values()))
    assert 0 < drift < 1e-3  # tiny lr: moved, but stayed at the start (a fresh model would differ at O(1))
    other = FlashMDModel(start.species, start.speciesMasses, 2 * start.stride, start.momentumScale, start.config)
    saveModel(other, str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="does not match the dataset.*restride"):
        train(path, str(tmp_path / "x.pt"), iterations=1, initialModel=str(tmp_path / "other.pt"), progress=False)
    restrided = str(tmp_path / "restrided.pt")
    assert cli_main(["flashmd-train", path, "-o", restrided, "--init", str(tmp_path / "other.pt"), "--restride",
                     "--lr", "1e-6"] + base[:2] + base[-3:]) == 0
    model = loadModel(restrided)
    assert model.stride == pytest.approx(start.stride)
    assert model.provenance["initialStride"] == pytest.approx(2 * start.stride)
    drift = max(float((a - b).abs().max()) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert drift < 1e-3  # the other model's weights, now at the data's stride


def test_cli_data(tmp_path):
    out = str(tmp_path / "d.npz")
    assert cli_main(["flashmd-data", "--water-box", "1.2", "--water-cutoff", "0.5", "--stride", "1",
                     "--starts", "1", "--pairs", "2", "--spacing", "0.002", "--equilibration", "0.01",
                     "--platform", "CPU", "-o", out, "--quiet"]) == 0
    assert loadDataset(out)["q0"].shape[0] == 2
    assert cli_main(["flashmd-data", "--stride", "1", "-o", out]) == 2  # no system given: clear error
    dense = str(tmp_path / "dense.npz")
    assert cli_main(["flashmd-data", "--water-box", "1.2", "--water-cutoff", "0.5", "--water-density", "1.03",
                     "--stride", "1", "--starts", "1", "--pairs", "2", "--spacing", "0.002", "--equilibration",
                     "0.01", "--platform", "CPU", "-o", dense, "--quiet"]) == 0
    d = loadDataset(dense)
    assert d["q0"].shape[0] == 2 and d["box"][0, 0, 0] < 1.2 - 1e-3
    # several densities of one box train one model: merged, each frame's energy with its own box
    model = str(tmp_path / "m.pt")
    assert cli_main(["flashmd-train", out, dense, "-o", model, "--iterations", "2", "--channels", "8", "--layers",
                     "1", "--cutoff", "0.4", "--batch-size", "2", "--energy-weight", "0.1", "--water-box", "1.2",
                     "--water-cutoff", "0.5", "--platform", "CPU", "--quiet"]) == 0
    parts = loadModel(model).provenance["dataset"]["parts"]
    assert len(parts) == 2
    assert cli_main(["flashmd-train", out, str(tmp_path / "missing.npz"), "-o", model, "--quiet"]) == 2


def test_energy_term_uses_each_frames_box():
    from openmmflash.integrators.training.data import flexibleWaterBox
    from openmmflash.integrators.training.trainer import _OpenMMPotential, makeEnergyContext
    _, system, pos = flexibleWaterBox(1.2, 0.5)
    _, dense_system, dense_pos = flexibleWaterBox(1.2, 0.5, density=1.05)
    boxes = [np.array([v.value_in_unit(unit.nanometer) for v in s.getDefaultPeriodicBoxVectors()])
             for s in (system, dense_system)]
    expected = []
    for s, p in ((system, pos), (dense_system, dense_pos)):
        ctx = makeEnergyContext(s, "Reference")
        ctx.setPositions(p)
        expected.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    ctx = makeEnergyContext(system, "Reference")  # one Context, its box reset per frame
    q = torch.tensor(np.stack([pos, dense_pos]), dtype=torch.float64)
    V = _OpenMMPotential.apply(q, ctx, torch.tensor(np.stack(boxes)))
    np.testing.assert_allclose(V.numpy(), expected, rtol=1e-5)  # PME grid fixed when the Context was made
    assert abs(expected[0] - expected[1]) > 1.0  # the box matters: the check can fail


def test_water_box_at_a_density():
    from openmmflash.integrators.training.data import flexibleWaterBox
    top, system, pos = flexibleWaterBox(1.6, 0.7)
    top2, system2, pos2 = flexibleWaterBox(1.6, 0.7, density=1.02)
    masses = np.array([system2.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system2.getNumParticles())])
    edge = system2.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer)
    assert masses.sum() / 6.02214076e23 / (edge ** 3 * 1e-21) == pytest.approx(1.02, rel=1e-9)
    assert top2.getPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer) == pytest.approx(edge)
    for res in list(top2.residues())[:5]:  # molecules keep their shape, their centres move
        i = [a.index for a in res.atoms()]
        np.testing.assert_allclose(pos2[i] - pos2[i].mean(0), pos[i] - pos[i].mean(0), atol=1e-12)
    assert np.abs(pos2 - pos).max() > 0.01
    with pytest.raises(ValueError, match="twice the cutoff"):
        flexibleWaterBox(1.6, 0.7, density=4.0)


@pytest.mark.parametrize("name", availableModels())
def test_shipped_models_load(name):
    model = loadModel(name)
    assert model.stride > 0 and model.validation and model.provenance


def test_species_kinetic_loss():
    from openmmflash.integrators.engine.stepper import random_rotation
    from openmmflash.integrators.training.trainer import species_kinetic_loss
    torch.manual_seed(0)
    B, N = 3, 6
    type_idx = torch.tensor([1, 0, 0] * 2).repeat(B)
    tb = torch.randn(B * N, 3)
    assert float(species_kinetic_loss(tb, tb, type_idx, B)) == 0.0
    # H momenta 10 % too large, O right: ratio 1.21 for one of the two species -> 0.21^2 / 2
    b = tb.clone()
    b[type_idx == 0] *= 1.1
    assert abs(float(species_kinetic_loss(b, tb, type_idx, B)) - 0.21 ** 2 / 2) < 1e-5
    R = random_rotation(torch.Generator().manual_seed(1), dtype=torch.float32)
    assert abs(float(species_kinetic_loss(b @ R.T, tb @ R.T, type_idx, B)) - 0.21 ** 2 / 2) < 1e-5


def test_kinetic_term_in_training(dataset):
    path, system, top, pos = dataset
    trainer = Trainer(path, channels=8, numLayers=1, numRBF=8, cutoff=0.4, batchSize=2, kineticWeight=1.0,
                      iterations=5, seed=2)
    idx = trainer.train_idx[:2]
    total, lq, lp, _ = trainer.loss(idx, augment=False)
    assert trainer.lastKinetic is not None and trainer.lastKinetic > 0
    assert abs(float(total.detach()) - (float(lq.detach()) + float(lp.detach()) + trainer.lastKinetic)) < 1e-5
    trainer.trainStep()
    metrics = trainer.validate()
    assert 0.5 < metrics["kinetic_ratio_Z1"] < 2.0 and 0.5 < metrics["kinetic_ratio_Z8"] < 2.0


def test_bond_term_matches_an_independent_recomputation(dataset):
    """bondWeight: L_B = mean k/2 (|r_ij(q + dq_pred)| - |r_ij(q + dq)|)^2 / kT over frames and HarmonicBondForce
    bonds, recomputed here in numpy; training with it lowers the held-out bond-length error energy; a System
    without bonds is refused."""
    from openmmflash.integrators.training.trainer import harmonicBonds
    path, system, top, pos = dataset
    common = dict(channels=16, numLayers=2, numRBF=8, cutoff=0.4, batchSize=2, iterations=40, seed=3)
    trainer = Trainer(path, system=system, bondWeight=1.0, lr=3e-3, **common)
    idx = trainer.train_idx[:2]
    total, lq, lp, _ = trainer.loss(idx, augment=False)
    lb = float((total - lq - lp).detach())
    model = trainer.model
    q0, p0, dq, p1 = (t.double().cpu().numpy() for t in trainer._batch(idx, False))
    from openmmflash.integrators.engine.stepper import batch_edges
    B, N, _ = q0.shape
    with torch.no_grad():
        src, dst, ev = batch_edges(trainer.q0[idx], trainer._box(idx), model.cutoff)
        a, _ = model.normalized(trainer.type_idx.repeat(B), (trainer.p0[idx] / trainer.sqrt_m / model.momentumScale)
                                .reshape(B * N, 3), src, dst, ev)
    dq_pred = (a.reshape(B, N, 3) * model.stride * model.momentumScale / trainer.sqrt_m).double().cpu().numpy()
    atoms, k = (t.cpu().numpy() for t in harmonicBonds(system))
    i, j = atoms[:, 0], atoms[:, 1]
    assert len(i) == 2 * (N // 3)  # two O-H bonds per water molecule
    true, pred = q0 + dq, q0 + dq_pred
    dr = np.linalg.norm(pred[:, j] - pred[:, i], axis=-1) - np.linalg.norm(true[:, j] - true[:, i], axis=-1)
    kT = 0.00831446261815324 * trainer.temperature[idx].double().cpu().numpy()[:, None]
    assert lb == pytest.approx(float((0.5 * k * dr ** 2 / kT).mean()), rel=1e-4)
    before = trainer.validate()["bondLengthErrorEnergy_kJmol"]
    for _ in range(40):
        trainer.trainStep()
    assert trainer.validate()["bondLengthErrorEnergy_kJmol"] < 0.85 * before
    bare = mm.System()
    for _ in range(N):
        bare.addParticle(1.0)
    with pytest.raises(ValueError, match="HarmonicBondForce"):
        Trainer(path, system=bare, bondWeight=1.0, **common)
    with pytest.raises(ValueError, match="bondWeight > 0 needs the System"):
        Trainer(path, bondWeight=1.0, **common)


def test_angle_term_matches_numpy():
    """angleWeight's L_A = mean k (cos theta(q1 + err) - cos theta(q1))^2 / kT over CustomAngleForce angles with the
    CG priors' energy k*(cos(theta)-cos0)^2 (found by parameter name, in any order); other angle forces are ignored."""
    from openmmflash.integrators.training.trainer import cosineAngles, stiff_coordinate_loss
    system = mm.System()
    for _ in range(5):
        system.addParticle(12.0)
    f = mm.CustomAngleForce("k*(cos(theta)-cos0)^2")
    f.addPerAngleParameter("cos0")
    f.addPerAngleParameter("k")
    f.addAngle(0, 1, 2, [-0.3, 40.0])
    f.addAngle(2, 3, 4, [0.1, 75.0])
    system.addForce(f)
    other = mm.HarmonicAngleForce()
    other.addAngle(1, 2, 3, 2.0, 100.0)
    system.addForce(other)
    atoms, k = cosineAngles(system)
    assert atoms.tolist() == [[0, 1, 2], [2, 3, 4]] and k.tolist() == [40.0, 75.0]
    rng = np.random.default_rng(0)
    q1 = rng.normal(size=(3, 5, 3)) * 0.2
    err = rng.normal(size=(3, 5, 3)) * 0.01
    kT = np.array([2.4, 2.5, 2.9])

    def cosines(x):
        a, b = x[:, atoms[:, 0]] - x[:, atoms[:, 1]], x[:, atoms[:, 2]] - x[:, atoms[:, 1]]
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    want = (k.numpy() * (cosines(q1 + err) - cosines(q1)) ** 2 / kT[:, None]).mean()
    got = stiff_coordinate_loss(torch.tensor(q1), torch.tensor(err), (atoms, k.double()), "angles", torch.tensor(kT))
    assert float(got) == pytest.approx(want, rel=1e-10)


def test_symplectic_defect_of_known_maps():
    """0 for symplectic maps (free flight, a harmonic oscillator's exact flow, a nonlinear kick); for p' = 0.9 p it is
    exactly -0.1 omega(u, w) with the same tangent vectors."""
    import math
    from openmmflash.integrators.training.trainer import symplectic_defect
    Q, P = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    for f in (lambda Q, P: (Q + 0.3 * P, P), lambda Q, P: (c * Q + s * P, -s * Q + c * P),
              lambda Q, P: (Q, P - torch.sin(Q))):
        assert symplectic_defect(f, Q, P, 2, torch.Generator().manual_seed(1)).abs().max() < 1e-12
    d = symplectic_defect(lambda Q, P: (Q + P, 0.9 * P), Q, P, 2, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    uQ, uP, wQ, wP = (torch.randn(Q.shape, generator=g, dtype=Q.dtype) for _ in range(4))
    omega = ((uQ * wP).sum(-1) - (uP * wQ).sum(-1)).view(2, -1).sum(1)
    assert torch.allclose(d, -0.1 * omega, atol=1e-12)


def test_symplectic_term_matches_finite_differences_and_trains(dataset):
    """The trainer's symplectic defect of the network (edges following the positions) equals an independent
    finite-difference one of the network's map in physical units (q, p) -> (q', p') with the edges rebuilt from the
    perturbed positions, omega scaled by stride s^2; training
    with symplecticWeight runs and reports the held-out defect."""
    from openmmflash.integrators.engine.stepper import batch_edges
    path, system, top, pos = dataset
    trainer = Trainer(path, channels=8, numLayers=1, cutoff=0.4, batchSize=2, device="cpu", symplecticWeight=1.0)
    model = trainer.model.double()
    trainer.sqrt_m = trainer.sqrt_m.double()
    idx = trainer.train_idx[:1]
    q0, p0 = trainer.q0[idx].double(), trainer.p0[idx].double()
    N = q0.shape[1]
    src, dst, ev = batch_edges(q0, trainer.box[idx].double(), model.cutoff)
    x = (p0 / trainer.sqrt_m / model.momentumScale).reshape(N, 3)
    g = torch.Generator()
    trainer.generator.manual_seed(5)
    d = trainer._symplecticDefect(x, src, dst, ev, 1).detach()
    g.manual_seed(5)
    uQ, uP, wQ, wP = (torch.randn((N, 3), generator=g, dtype=torch.float64) for _ in range(4))
    # the same tangent vectors in physical units: q = Q stride s / sqrt(m), p = P sqrt(m) s
    sm = trainer.sqrt_m.reshape(N, 1)
    tau, s = model.stride, model.momentumScale
    phys = lambda vQ, vP: (vQ * tau * s / sm, vP * sm * s)  # noqa: E731
    types = trainer.type_idx
    box = trainer.box[idx].double()

    def stride(q, p):  # the network's unconstrained map in physical units, edges rebuilt from q
        s_, d_, ev_ = batch_edges(q[None], box, model.cutoff)
        dq_s, p_s = model(types, p, sm, s_, d_, ev_)
        return q + dq_s / sm, p_s * sm

    def push(vq, vp, eps=1e-6):
        plus = stride(q0[0] + eps * vq, p0[0] + eps * vp)
        minus = stride(q0[0] - eps * vq, p0[0] - eps * vp)
        return (plus[0] - minus[0]) / (2 * eps), (plus[1] - minus[1]) / (2 * eps)

    def omega(aq, ap, bq, bp):
        return float(((aq * bp).sum() - (ap * bq).sum()).detach())

    u, w = phys(uQ, uP), phys(wQ, wP)
    d_fd = omega(*push(*u), *push(*w)) - omega(*u, *w)
    assert abs(d_fd) > 1e-4 * abs(omega(*u, *w))  # not symplectic (a fresh network is close to free flight)
    assert float(d[0]) * tau * s ** 2 == pytest.approx(d_fd, rel=1e-4, abs=1e-6)
    trainer = Trainer(path, channels=8, numLayers=1, cutoff=0.4, batchSize=2, device="cpu", symplecticWeight=1.0)
    for _ in range(2):
        assert np.isfinite(trainer.trainStep())
    assert trainer.validate()["symplecticDefect"] > 0
