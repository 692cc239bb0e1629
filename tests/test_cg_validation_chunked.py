"""Chunked, resumable CG validation: a run split into two calls continues the first (same frames, same step count),
the finalize step reports on the work folder, and a work folder with other settings is refused."""

import json
import os

import numpy as np
import pytest
import torch

from openmmflash.cg.refdata import ReferenceRun, loadReferenceData
from openmmflash.cg.training import ForceMatching
from openmmflash.workflows.cgvalidation import finalizeValidation, runValidationChunk
from openmmflash.schnet.config import FlashSchNetConfig

TINY = dict(hiddenChannels=8, numFilters=8, numRbf=6, numInteractions=1, cutoff=6.0, readoutHidden=[4],
            backend="reference")
RUN = dict(timeNs=0.00012, replicas=2, timestep=2.0, reportInterval=10, seed=4, platform="CPU", progress=False)
STEPS = 60  # 0.00012 ns at 2 fs, 6 frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(reference-data directory, model file) of a GAY peptide: 300 reference steps, a 2-step trained model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("cgval")
        refdir = str(root / "gay")
        ReferenceRun(refdir, sequence="GAY", reportInterval=10, shardFrames=30, equilibrationSteps=20,
                     platform="Reference", seed=5).run(300, progress=False)
        data = loadReferenceData(refdir)
        trainer = ForceMatching(data, config=FlashSchNetConfig(**TINY), numBlocks=3, validationFraction=0.34, seed=2)
        trainer.train(epochs=1, batchSize=10, maxSteps=2, progress=False)
        path = str(root / "gay.pt")
        trainer.save(path, structure=data["cgPdb"])
        yield refdir, path
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """Work folders of the same validation in one call and in two calls (the first stops after one frame)."""
    _, model = tiny
    root = tmp_path_factory.mktemp("work")
    one, two = str(root / "one"), str(root / "two")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = runValidationChunk(one, model, **RUN)
        first = runValidationChunk(two, model, maxWallSeconds=0.0, **RUN)
        second = runValidationChunk(two, **{k: RUN[k] for k in ("platform", "progress")})  # settings from the folder
    finally:
        torch.set_num_threads(threads)
    return one, two, single, first, second


def _checkpoint(work):
    with np.load(os.path.join(work, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files}


def test_split_run_continues_the_first_chunk(runs):
    one, two, single, first, second = runs
    assert single["complete"] and single["stepsDone"] == STEPS and single["frames"] == 6
    assert not first["complete"] and first["stepsDone"] == 10 and first["frames"] == 1
    assert second["complete"] and second["stepsDone"] == STEPS and second["frames"] == single["frames"]
    assert [c["firstStep"] for c in second["chunks"]] == [0, 10]
    assert [c["steps"] for c in second["chunks"]] == [10, 50]
    assert second["chunks"][0]["seed"] != second["chunks"][1]["seed"]  # each chunk reseeds the thermostat
    a, b = _checkpoint(one), _checkpoint(two)
    np.testing.assert_allclose(b["time"], a["time"])
    np.testing.assert_allclose(b["time"], np.arange(1, 7) * 10 * 2e-3)  # ps, continuing the step count
    assert b["caRmsd"].shape == a["caRmsd"].shape == (6, 2)
    # The first chunk is the same trajectory as the start of the single run (same minimization, velocities, seed).
    np.testing.assert_allclose(b["caRmsd"][0], a["caRmsd"][0], rtol=1e-4, atol=1e-4)
    assert 'stepCount="60"' in b["stateXml"].tobytes().decode()
    assert np.all(b["bondMin"] <= b["bondMax"]) and b["bondMin"].shape[0] == 2
    status = json.load(open(os.path.join(two, "status.json")))
    assert status["nsDonePerReplica"] == pytest.approx(0.00012)


def test_complete_folder_is_not_simulated_again(runs):
    one = runs[0]
    before = os.path.getmtime(os.path.join(one, "checkpoint.npz"))
    status = runValidationChunk(one, platform="CPU", progress=False)
    assert status["complete"] and len(status["chunks"]) == 1
    assert os.path.getmtime(os.path.join(one, "checkpoint.npz")) == before


def test_mismatched_work_folder_is_refused(runs, tiny):
    two = runs[1]
    with pytest.raises(ValueError, match=r"other settings \(replicas: folder 2, asked 3\)"):
        runValidationChunk(two, tiny[1], timeNs=RUN["timeNs"], replicas=3, platform="CPU", progress=False)
    with pytest.raises(ValueError, match="holds no validation yet"):
        runValidationChunk(os.path.join(two, "new"), platform="CPU")


def test_finalize_report_of_a_chunked_run(runs, tiny, tmp_path):
    refdir, _ = tiny
    report = finalizeValidation(runs[1], refdir, str(tmp_path))
    saved = json.load(open(os.path.join(str(tmp_path), "validation.json")))
    assert saved["cgTime"] == ("2 replicas x 0.00012 ns = 0.00024 ns aggregate; "
                               "longest single trajectory 0.00012 ns")
    assert saved["complete"] and saved["steps"] == STEPS and saved["frames"] == 6 and len(saved["chunks"]) == 2
    assert saved["cgTimeTotal_ns"] == pytest.approx(0.00024)
    assert isinstance(saved["stable"], bool) and isinstance(saved["anglesInRange"], bool)
    assert saved["bonds"] > 0 and saved["angles"] > 0 and saved["blewUp"] is None
    assert len(saved["anglesOutOfRangeList"]) == min(20, saved["anglesOutOfRange"])
    assert 100.0 < saved["meanTemperature_K"] < 600.0
    assert "Q" not in saved["cg"]  # GAY is too short for native contacts
    for key in ("caRmsd", "Rg"):
        assert 0.0 <= report["histogramOverlap"][key] <= 1.0
        assert np.isfinite(saved["cg"][key]["mean"]) and np.isfinite(saved["reference"][key]["mean"])
    assert os.path.getsize(os.path.join(str(tmp_path), "validation.png")) > 0


def test_cli_cg_validate_work_folder(tiny, tmp_path):
    from openmmflash.cli import main

    refdir, model = tiny
    work, out = str(tmp_path / "work"), str(tmp_path / "report")
    first = ["cg-validate", model, "--work", work, "--time", "0.00004", "--replicas", "2", "--report-interval", "10",
             "--platform", "CPU", "--max-wall", "0"]
    assert main(first) == 0  # simulation only: one frame, no reference data needed
    assert json.load(open(os.path.join(work, "status.json")))["stepsDone"] == 10
    assert main(["cg-validate", model, refdir, "--work", work, "--replicas", "3", "--platform", "CPU"]) == 2
    assert main(["cg-validate", model, refdir, "--work", work, "--platform", "CPU", "-o", out]) == 0
    saved = json.load(open(os.path.join(out, "validation.json")))
    assert saved["complete"] and saved["steps"] == 20 and saved["replicas"] == 2 and len(saved["chunks"]) == 2
    assert main(["cg-validate", model, "--platform", "CPU"]) == 2  # neither reference data nor --work
