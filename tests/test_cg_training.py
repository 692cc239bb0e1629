"""Force matching: a few training steps reduce the loss, trained models load and run in OpenMM, mismatched data
are refused."""

import numpy as np
import pytest
import torch

from openmmflash.cg.refdata import ReferenceRun, loadReferenceData
from openmmflash.cg.training import ForceMatching, timeBlockSplit
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.stack import import_openmm

SMALL = dict(hiddenChannels=16, numFilters=16, numRbf=12, numInteractions=2, cutoff=8.0, readoutHidden=[8],
             backend="reference")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Force matching is small here; one intra-op thread avoids OpenMP spinning on a shared 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def refdir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cgref") / "gay")
    run = ReferenceRun(out, sequence="GAY", reportInterval=10, shardFrames=20, equilibrationSteps=50,
                       platform="Reference", timestep=2.0, seed=3)
    run.run(400, progress=False)
    return out


@pytest.fixture(scope="module")
def data(refdir):
    return loadReferenceData(refdir)


def test_time_block_split():
    train, val = timeBlockSplit(103, numBlocks=5, validationFraction=0.4, seed=2)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(103))
    assert np.count_nonzero(np.diff(val) != 1) <= 1  # two whole blocks: at most one jump
    with pytest.raises(ValueError, match="cannot be split"):
        timeBlockSplit(7, numBlocks=5)


def test_few_steps_reduce_force_matching_loss(data):
    trainer = ForceMatching(data, config=FlashSchNetConfig(**SMALL), numBlocks=4, validationFraction=0.25, seed=5)
    frames = trainer.train_idx
    before = trainer.evaluate(frames)["forceRMSE"]
    # 40 steps: with 20 the decrease (about 3 %) sat at the threshold and depended on the data's OpenMM run
    trainer.train(epochs=8, batchSize=5, learningRate=5e-3, maxSteps=40, progress=False)
    after = trainer.evaluate(frames)["forceRMSE"]
    assert after < 0.97 * before, (before, after)
    assert trainer.metrics["steps"] == 40
    assert trainer.metrics["validation"]["priorOnlyForceRMSE"] > 0


def test_trained_model_file_loads_and_runs_in_openmm(data, tmp_path):
    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.cg.mapping import beadTypesFromTopology
    from openmmflash.schnet.model import FlashSchNet

    openmm = import_openmm()
    trainer = ForceMatching(data, config=FlashSchNetConfig(**SMALL), numBlocks=4, validationFraction=0.25, seed=6)
    trainer.train(epochs=1, batchSize=5, maxSteps=3, progress=False)
    path = str(tmp_path / "gay.pt")
    trainer.save(path, structure=data["cgPdb"])
    model = FlashSchNet.load(path)
    meta = model.metadata
    assert meta["mapping"] == "5bead" and meta["priors"]["bonds"] and "structure" in meta
    assert meta["provenance"]["referenceSettings"]["sequence"] == "GAY"
    assert meta["validation"]["validationFrames"] == len(trainer.val_idx)
    topology, pos = data["cgTopology"], data["positions"][-1].astype(np.float64)
    system = createCGSystem(topology, model)
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.002)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pos)
    # The OpenMM force equals priors (group 1) + the network's own autograd force.
    net = context.getState(getForces=True, groups={0}).getForces(asNumpy=True)._value
    types = torch.tensor(beadTypesFromTopology(topology, meta["beadTypes"]))
    _, ref = model.energy_and_forces(torch.tensor(pos * 10.0, dtype=torch.float32), types)
    np.testing.assert_allclose(net, ref.detach().numpy() * 41.84, rtol=1e-3, atol=1e-3)
    integrator.step(20)
    state = context.getState(getPositions=True, getEnergy=True)
    assert np.all(np.isfinite(state.getPositions(asNumpy=True)._value))
    assert np.isfinite(state.getPotentialEnergy()._value)


def test_mapping_mismatch_refused(data):
    from openmmflash.cg.mapping import CGMapping
    from openmmflash.schnet.model import FlashSchNet

    table = CGMapping("ca").defaultBeadTypes()
    model = FlashSchNet(FlashSchNetConfig(numBeadTypes=len(table), **SMALL))
    model.metadata = {"beadTypes": table, "mapping": "ca"}
    with pytest.raises(ValueError, match="mapped with the '5bead' mapping but the model uses 'ca'"):
        ForceMatching(data, model=model)


def test_cli_cg_train(refdir, tmp_path):
    from openmmflash.cli import main
    from openmmflash.schnet.model import loadModel

    out = str(tmp_path / "cli.pt")
    rc = main(["cg-train", refdir, "-o", out, "--hidden", "8", "--filters", "8", "--rbf", "8", "--readout", "4",
               "--cutoff", "6", "--blocks", "4", "--validation-fraction", "0.25", "--epochs", "1", "--max-steps", "2"])
    assert rc == 0
    assert loadModel(out).metadata["validation"]["steps"] == 2
    assert main(["cg-train", str(tmp_path / "nothing"), "-o", out]) == 2


def test_observables_of_the_native_structure():
    from openmmflash.cg.observables import fractionNativeContacts, nativeContacts, observables
    from openmmflash.cg.observables import kabschRMSD
    from openmmflash.cg.structure import caIndices

    rng = np.random.default_rng(0)
    native = rng.normal(0.0, 0.4, (12, 3))  # nm
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = native @ q.T + 0.3
    ca = np.arange(12)
    obs = observables(np.stack([native, moved]), native, ca)
    np.testing.assert_allclose(obs["caRmsd"], 0.0, atol=1e-6)
    np.testing.assert_allclose(obs["Rg"][0], obs["Rg"][1], rtol=1e-12)
    pairs, r0 = nativeContacts(native * 10)
    stretched = fractionNativeContacts(np.stack([native * 10, native * 20]), pairs, r0)
    assert stretched[0] > 0.9 and stretched[1] < 0.1
    assert kabschRMSD((native * 10 + [1.0, 0, 0])[None], native * 10)[0] < 1e-6
    assert len(caIndices(__import__("openmmflash.cg.mapping", fromlist=["x"]).CGMapping("ca").mapTopology(
        _ca_topology())[0])) == 3


def _ca_topology():
    openmm = import_openmm()
    top = openmm.app.Topology()
    chain = top.addChain("A")
    for k in range(3):
        res = top.addResidue("ALA", chain, str(k + 1))
        top.addAtom("CA", openmm.app.Element.getBySymbol("C"), res)
    return top


def test_cg_validate_short(data, refdir, tmp_path):
    import json
    import os

    from openmmflash.workflows.cgvalidation import validateModel

    trainer = ForceMatching(data, config=FlashSchNetConfig(**SMALL), numBlocks=4, validationFraction=0.25, seed=7)
    trainer.train(epochs=1, batchSize=5, maxSteps=2, progress=False)
    path = str(tmp_path / "m.pt")
    trainer.save(path, structure=data["cgPdb"])
    report = validateModel(path, refdir, str(tmp_path / "val"), timeNs=0.0002, replicas=2, reportInterval=20,
                           platform="CPU", progress=False)
    saved = json.load(open(os.path.join(str(tmp_path / "val"), "validation.json")))
    assert saved["cgTimePerReplica_ns"] == pytest.approx(0.0002) and saved["replicas"] == 2
    assert isinstance(saved["stable"], bool)
    assert "Q" not in saved["cg"]  # GAY is too short for native contacts
    for key in ("caRmsd", "Rg"):
        assert 0.0 <= report["histogramOverlap"][key] <= 1.0
        assert np.isfinite(saved["cg"][key]["mean"]) and np.isfinite(saved["reference"][key]["mean"])
    assert os.path.getsize(os.path.join(str(tmp_path / "val"), "validation.png")) > 0


def test_several_runs_train_together_with_priors_from_the_model_temperature(data):
    from openmmflash.cg.priorfit import fitPriors
    from openmmflash.cg.refdata import mergeReferenceData
    from openmmflash.cg.training import runBlockSplit

    hot = dict(data, metadata=dict(data["metadata"], settings=dict(data["metadata"]["settings"], temperature=350.0)))
    hot["positions"] = data["positions"] * 1.01  # distinguishable frames, same topology
    merged = mergeReferenceData([data, hot])
    n = data["positions"].shape[0]
    assert merged["positions"].shape[0] == 2 * n and merged["runTemperatures"].tolist() == [300.0, 350.0]
    train, val = runBlockSplit(merged["runIndex"], numBlocks=4, validationFraction=0.25, seed=5)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 2 * n
    for run in (0, 1):  # every run contributes to both sides
        assert np.any(merged["runIndex"][train] == run) and np.any(merged["runIndex"][val] == run)
    trainer = ForceMatching(merged, config=FlashSchNetConfig(**SMALL), numBlocks=4, validationFraction=0.25, seed=5)
    np.testing.assert_array_equal(trainer.train_idx, train)
    cold_train = train[merged["runIndex"][train] == 0]
    expected = fitPriors(data["cgTopology"], merged["positions"][cold_train], 300.0, trainer.mapping)
    assert repr(trainer.priors) == repr(expected)  # fitted on the 300 K run only
    everything = fitPriors(data["cgTopology"], merged["positions"][train], 300.0, trainer.mapping)
    assert repr(everything) != repr(expected)
    # a single run is split exactly as before the multi-run support
    np.testing.assert_array_equal(runBlockSplit(np.zeros(n, dtype=np.int64), 4, 0.25, 5)[0],
                                  timeBlockSplit(n, 4, 0.25, 5)[0])
    other = dict(data, metadata=dict(data["metadata"], settings=dict(data["metadata"]["settings"], mapping="ca")))
    with pytest.raises(ValueError, match="share the CG mapping"):
        mergeReferenceData([data, other])
