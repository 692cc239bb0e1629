"""FlashMD with CG bead types as species (``--species bead``, model files with ``speciesKind == "cgBead"``): data from
the bundled CG chignolin (CPU platform, 2 replicas, 2 cycles), a model trained a few steps on it, the integrator in
a real OpenMM Context with the FlashSchNet TorchForce, and the shipped element models unchanged."""

import os

import numpy as np
import pytest
import torch

import openmm as mm
from openmm import unit

from openmmflash.workflows.flashmdcg import buildCGSystem, cgBeadTypes, useCGBeadTypes
from openmmflash.integrators.training.data import loadDataset
from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.network.modelfile import MODEL_DIR, FlashMDModel, loadModel
from openmmflash.integrators.training.replicadata import generateReplicaPairs
from openmmflash.integrators.training.trainer import Trainer, train

MASS = {"N": 14.007, "CA": 12.011, "CB": 12.011, "C": 12.011, "O": 15.999}


@pytest.fixture(scope="module")
def cg():
    """(topology of one copy, System, positions nm, FlashSchNet model) of the bundled CG chignolin. Without a
    CMMotionRemover, which would change the kinetic energy after the rescale (FlashMD keeps the momentum itself)."""
    full, system, pos, _, _, net = buildCGSystem(1, removeCMMotion=False)
    return full, system, pos, net


@pytest.fixture(scope="module")
def bead_files(tmp_path_factory):
    """(dataset path, model path): pairs with bead species from the CLI, then 4 training iterations on CPU."""
    from openmmflash.cli import main as cli_main
    tmp = tmp_path_factory.mktemp("cgspecies")
    data = str(tmp / "bead.npz")
    assert cli_main(["flashmd-data", "--cg-model", "chignolin", "--species", "bead", "--replicas", "2", "--stride",
                     "4", "--timestep", "1", "--pairs", "2", "--spacing", "0.004", "--equilibration", "0.004",
                     "--platform", "CPU", "--seed", "3", "--quiet", "-o", data]) == 0
    model = str(tmp / "bead.pt")
    train(data, model, iterations=4, batchSize=2, channels=8, numLayers=1, numRBF=8, cutoff=0.6, device="cpu",
          progress=False, checkpointInterval=0)
    return data, model


def _energy(ctx):
    st = ctx.getState(getEnergy=True)
    return (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_bead_species_data_records_the_flashschnet_bead_types(bead_files, cg):
    full, system, _, net = cg
    data = loadDataset(bead_files[0])
    beads = list(full.atoms())
    assert data["q0"].shape == (4, 47, 3)
    assert data["types"].tolist() == cgBeadTypes(net, full)
    assert data["meta"]["speciesKind"] == "cgBead"
    # CA, CB and C are separate species now (16 bead types in chignolin, against 3 elements)
    types = data["types"]
    assert len(set(types.tolist())) == 16
    ca = [i for i, a in enumerate(beads) if a.name == "CA" and a.residue.name == "TYR"][0]
    c = [i for i, a in enumerate(beads) if a.name == "C"][0]
    assert types[ca] != types[c] and data["masses"][ca] == data["masses"][c] == MASS["C"]
    assert data["meta"]["speciesLabels"][str(types[ca])] == "TYR:CA"
    assert data["meta"]["speciesLabels"][str(types[c])] == "C"
    for z in set(types.tolist()):
        assert len(set(data["masses"][types == z].tolist())) == 1


def test_bead_model_file_records_species_kind(bead_files, tmp_path):
    data = loadDataset(bead_files[0])
    blob = torch.load(bead_files[1], map_location="cpu", weights_only=True)
    assert blob["version"] == 2 and blob["speciesKind"] == "cgBead"
    model = loadModel(bead_files[1])
    assert model.speciesKind == "cgBead"
    assert model.species == sorted(set(data["types"].tolist()))
    for z, m in zip(model.species, model.speciesMasses):
        assert m == pytest.approx(float(data["masses"][data["types"] == z][0]))
    assert model.speciesLabel(0) == "N" and "TYR:CA" in model.speciesLabels
    assert "bead" in model.describe() and "rmse_p_bead0" in model.validation
    # per-mass aggregates, comparable with the element models' per-species numbers
    assert {"rmse_p_m12.011", "rmse_p_m14.007", "rmse_p_m15.999"} <= set(model.validation)
    assert model.validation["rmse_dq_nm_m14.007"] == pytest.approx(model.validation["rmse_dq_nm_bead0"])
    # a second save / load keeps everything
    from openmmflash.integrators.network.modelfile import saveModel
    saveModel(model, str(tmp_path / "again.pt"))
    again = loadModel(str(tmp_path / "again.pt"))
    assert (again.speciesKind, again.speciesLabels, again.species) == (model.speciesKind, model.speciesLabels,
                                                                       model.species)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_integrator_needs_bead_types_and_runs_with_them(bead_files, cg):
    full, system, pos, net = cg
    integ = FlashMDIntegrator(model=bead_files[1], rescaleEnergy=True, speciesRescale=True, maxRescale=3.0,
                              device="cpu", randomSeed=5)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    with pytest.raises(ValueError, match=r"setAtomTypes\(beadTypes\)"):
        integ.step(1)
    with pytest.raises(ValueError, match="not a Topology"):
        integ.setAtomTypes(full)
    assert ctx.getStepCount() == 0
    assert useCGBeadTypes(integ, net, full)
    for _ in range(3):
        h0, learned = _energy(ctx), integ.getNumLearnedSteps()
        integ.step(1)
        if integ.getNumLearnedSteps() > learned:  # the energy rescale makes an accepted stride conserve H
            assert _energy(ctx) == pytest.approx(h0, abs=1e-3 * max(1.0, abs(h0)))
    assert ctx.getStepCount() == 3
    assert integ.getNumLearnedSteps() >= 1 and integ.getNumLearnedSteps() + integ.getNumFallbacks() == 3
    assert np.isfinite(ctx.getState(getPositions=True).getPositions(asNumpy=True)._value).all()
    temps = integ.computeSpeciesTemperatures(ctx)
    assert len(temps) == 16 and {"N", "C", "O", "TYR:CA", "TYR:CB"} <= set(temps)
    assert all(np.isfinite(t) and t > 0 for t in temps.values())


def test_shipped_element_model_still_loads_and_runs(cg):
    full, system, pos, net = cg
    blob = torch.load(os.path.join(MODEL_DIR, "chignolin-cg-20fs.pt"), map_location="cpu", weights_only=True)
    assert "speciesKind" not in blob and blob["version"] == 1
    model = loadModel("chignolin-cg-20fs")
    assert model.speciesKind == "element" and model.species == [6, 7, 8]
    integ = FlashMDIntegrator(model=model, device="cpu", randomSeed=2)
    assert not useCGBeadTypes(integ, net, full)  # element models keep matching by mass
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 4)
    integ.step(2)
    assert ctx.getStepCount() == 2 and ctx.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(0.04)
    assert set(integ.computeSpeciesTemperatures(ctx)) == {"C", "N", "O"}


def test_species_with_several_masses_are_refused(bead_files, cg, tmp_path):
    data = loadDataset(bead_files[0])
    data["types"] = np.zeros_like(data["types"])  # one species for N, C and O beads
    with pytest.raises(ValueError, match="exactly one mass per species"):
        Trainer(data, channels=8, numLayers=1, device="cpu")
    full, system, pos, _ = cg
    with pytest.raises(ValueError, match="exactly one mass per species"):
        generateReplicaPairs(system, pos, [0] * 47, 1, [300.0], [0.004], speciesKind="cgBead", progress=False)
    with pytest.raises(ValueError, match="speciesKind"):
        FlashMDModel([6], [12.011], 0.004, speciesKind="bead")
    from openmmflash.cli import main as cli_main
    assert cli_main(["flashmd-data", "--water-box", "1.2", "--species", "bead", "--stride", "4", "-o",
                     str(tmp_path / "unused.npz")]) == 2
    assert not os.path.exists(tmp_path / "unused.npz")


def test_bead_types_of_one_replica_serve_all_replicas(bead_files):
    full, system, pos, _, _, net = buildCGSystem(2, removeCMMotion=False)
    one = cgBeadTypes(net, full)[:47]
    integ = FlashMDIntegrator(model=bead_files[1], rescaleEnergy=False, replicas=2, device="cpu", randomSeed=3)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    integ.setAtomTypes(one[:40])
    with pytest.raises(ValueError, match="40 types for 94 particles"):
        integ.step(1)
    integ.setAtomTypes(one)  # tiled over the 2 replicas
    integ.step(2)
    assert ctx.getStepCount() == 2 and integ.getNumLearnedSteps() == 2
    assert integ._types.tolist() == cgBeadTypes(net, full)


def test_energy_term_trains_through_the_flashschnet_torchforce(bead_files, cg):
    """The training energy term takes V and -F of the predicted state from an OpenMM Context. With a TorchForce in
    the System, OpenMM runs it inside autograd.Function.forward (grad mode off), where it used to fail; its gradient
    must be -F and a training step with the term on must change the model."""
    from openmmflash.integrators.training.trainer import _OpenMMPotential, makeEnergyContext
    full, system, pos, net = cg
    context = makeEnergyContext(system, "CPU")
    q = torch.as_tensor(np.asarray(pos), dtype=torch.float64).view(1, -1, 3).requires_grad_(True)
    V = _OpenMMPotential.apply(q, context)
    V.sum().backward()
    context.setPositions(np.asarray(pos))
    st = context.getState(getEnergy=True, getForces=True)
    F = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert float(V[0].detach()) == pytest.approx(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                                                 rel=1e-6)
    assert np.allclose(q.grad[0].numpy(), -np.asarray(F), rtol=1e-5, atol=1e-3)
    data_path, model_path = bead_files
    trainer = Trainer(data_path, model=loadModel(model_path), batchSize=2, energyWeight=1.0, system=system,
                      energyPlatform="CPU", device="cpu", iterations=4)
    trainer.maxSeconds, trainer.startTime = 1.0, 0.0  # progress 1: the energy term at full weight
    before = [p.detach().clone() for p in trainer.model.parameters()]
    _, _, _, le = trainer.loss(trainer.train_idx[:2])
    assert float(le.detach()) > 0 and np.isfinite(float(le.detach()))
    trainer.trainStep()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters()))


def test_langevin_species_rescale_auto_is_off_for_bead_species(bead_files, cg):
    """FlashMDLangevinIntegrator's default speciesRescale="auto" shares the rescale per species only when every
    species is large; CG bead types (1-6 beads each) get the global rescale, as the shipped CG models need."""
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    full, system, pos, net = cg
    integ = FlashMDLangevinIntegrator(300, 1.0, None, model=bead_files[1], device="cpu", randomSeed=5)
    assert useCGBeadTypes(integ, net, full)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("CPU"))
    integ.setContext(ctx)
    assert not integ.speciesRescale
    forced = FlashMDLangevinIntegrator(300, 1.0, None, model=bead_files[1], device="cpu", speciesRescale=True)
    useCGBeadTypes(forced, net, full)
    forced.setContext(mm.Context(system, forced, mm.Platform.getPlatformByName("CPU")))
    assert forced.speciesRescale
