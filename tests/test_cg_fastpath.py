"""The pieces around the bundled models: gzipped PDB input, the CUDA fast-path options, training stop reasons, and
(on a GPU) that CG MD on the fast path keeps the bath temperature."""

import gzip
import os
import tempfile

import numpy as np
import pytest
import torch

from openmmflash.stack import import_openmm


def test_gzipped_pdb_loads_like_the_plain_file(tmp_path):
    from openmmflash.cg.refdata import buildFromSequence, loadAllAtom

    openmm = import_openmm()
    topology, positions = buildFromSequence("GAY")
    plain = str(tmp_path / "gay.pdb")
    with open(plain, "w") as f:
        openmm.app.PDBFile.writeFile(topology, positions, f)
    with open(plain, "rb") as src, gzip.open(str(tmp_path / "gay.pdb.gz"), "wb") as dst:
        dst.write(src.read())
    a, pa = loadAllAtom(plain)
    b, pb = loadAllAtom(str(tmp_path / "gay.pdb.gz"))
    assert [x.name for x in a.atoms()] == [x.name for x in b.atoms()]
    nm = openmm.unit.nanometer
    np.testing.assert_allclose(np.asarray(pa.value_in_unit(nm)), np.asarray(pb.value_in_unit(nm)))


@pytest.fixture(scope="module")
def chignolin():
    from openmmflash.cg.structure import nativeStructure
    from openmmflash.schnet.model import FlashSchNet

    model = FlashSchNet.load("chignolin")
    with tempfile.TemporaryDirectory() as tmp:
        topology, native, _ = nativeStructure(model, tmp)
    return model, topology, native


def test_fast_path_options(chignolin):
    from openmmflash.plugin.fastpath import FAST_PATH, fastPathOptions, neighborCapacity
    from openmmflash.neighbors import build_neighbor_list

    model, _, native = chignolin
    assert fastPathOptions(model, native, 4, "CPU") == (model, {})          # nothing changes off CUDA
    assert fastPathOptions(model, native, 4, "CUDA", False) == (model, {})
    fast, options = fastPathOptions(model, native, 4, "CUDA")
    assert fast is not model and fast.backend == "flash" and model.backend == "reference"
    assert options["useCUDAGraphs"] is FAST_PATH["useCUDAGraphs"] is True
    pairs = int(build_neighbor_list(torch.tensor(native * 10.0), 1, model.config.cutoff, None, 0)[3])
    assert options["neighborCapacity"] == neighborCapacity(model, native, 4) > 4 * pairs
    _, graphs = fastPathOptions(model, native, 4, "CUDA", {"padded": False})
    assert graphs["useCUDAGraphs"] and graphs["neighborCapacity"] > 0      # graphs need a fixed-size list
    _, exact = fastPathOptions(model, native, 4, "CUDA", {"padded": False, "useCUDAGraphs": False})
    assert exact["neighborCapacity"] == 0 and not exact["useCUDAGraphs"]
    with pytest.raises(ValueError, match="unknown fast-path keys"):
        fastPathOptions(model, native, 4, "CUDA", {"graphs": True})
    assert fast.filter_precision == "fp32"
    half, _ = fastPathOptions(model, native, 4, "CUDA", {"filterPrecision": "w16a16"})
    assert half.filter_precision == "w16a16" and model.filter_precision == "fp32"
    with pytest.raises(ValueError, match="unknown filterPrecision"):
        fastPathOptions(model, native, 4, "CUDA", {"filterPrecision": "int8"})


def test_training_reports_why_it_stopped():
    from openmmflash.cg.refdata import ReferenceRun, loadReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.schnet.config import FlashSchNetConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = ReferenceRun(os.path.join(tmp, "ga"), sequence="GA", reportInterval=10, shardFrames=40,
                               equilibrationSteps=20, platform="Reference", seed=2)
            run.run(400, progress=False)
            data = loadReferenceData(os.path.join(tmp, "ga"))
        config = FlashSchNetConfig(hiddenChannels=8, numFilters=8, numRbf=6, numInteractions=1, cutoff=6.0,
                                   readoutHidden=[4], backend="reference")
        trainer = ForceMatching(data, config=config, numBlocks=4, validationFraction=0.25, seed=1)
        assert trainer.train(epochs=3, batchSize=10, maxSeconds=0.0, progress=False)["stoppedBy"] == "maxSeconds"
        assert trainer.metrics["epochs"] == 1
        assert trainer.train(epochs=1, batchSize=10, progress=False)["stoppedBy"] == "epochs"
        assert trainer.train(epochs=3, batchSize=10, maxSteps=1, progress=False)["stoppedBy"] == "maxSteps"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.cuda
@pytest.mark.parametrize("fastPath", [True, {"useCUDAGraphs": False}])
def test_cuda_fast_path_keeps_the_bath_temperature(chignolin, fastPath):
    """Regression test of the heating seen with CUDA graphs on an H100 (2 140-2 910 K at a 300 K bath)."""
    from openmmflash.workflows.cgsimulation import simulateCG

    model, topology, native = chignolin
    result = simulateCG(model, topology, native, 4, 1500, 100, 2.0, platform="CUDA", seed=1, progress=False,
                        fastPath=fastPath)
    assert abs(float(result["temperature"][5:].mean()) - 300.0) < 30.0
