"""The chunked, resumable GAQ long-run benchmark (examples/benchmarks/bench_gaq_long.py) on the Reference platform
(deterministic, so a resumed run can be compared with an uninterrupted one)."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "benchmarks")
sys.path.insert(0, BENCH)
import bench_gaq_long as bl  # noqa: E402

NS = 9 * 0.008 / 1000   # nine 8 fs strides: three samples


def _args(work, *extra):
    return bl.parse_args(["--work", str(work), "--variants", "fp32", "--ns", repr(NS), "--sample", "3",
                          "--platform", "Reference", "--device", "cpu", *extra])


def _run(work, max_wall):
    args = _args(work)
    settings = bl.prepare_work(args)
    run = bl.LongRun(str(work), "fp32", settings, "Reference", "cpu")
    run.run(max_wall)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 9 strides in one go and in two chunks (the second resumed from the saved files)."""
    one = tmp_path_factory.mktemp("one")
    two = tmp_path_factory.mktemp("two")
    whole = _run(one, 1e9)
    first = _run(two, 0.0)             # stops after one sample block: 3 strides, saved
    chunk1 = first.status["strides"]
    resumed = _run(two, 1e9)           # a new process would do the same: everything from the files
    return one, two, whole, chunk1, resumed


def test_chunked_resume_matches_one_run(runs):
    one, two, whole, chunk1, resumed = runs
    assert chunk1 == 3
    assert whole.status["done"] and resumed.status["done"]
    assert resumed.status["chunks"] == 2 and whole.status["chunks"] == 1
    assert resumed.sim.context.getStepCount() == whole.sim.context.getStepCount() == 9
    assert resumed.sim.context.getTime()._value == pytest.approx(whole.sim.context.getTime()._value, abs=1e-12)
    assert resumed.series["t_ps"] == pytest.approx(whole.series["t_ps"])
    # Same noise (seed and draw counter restored) and the same state: the same trajectory, to float noise.
    assert resumed.integ.getCheckpointState() == whole.integ.getCheckpointState()
    assert np.allclose(resumed.series["T_H"], whole.series["T_H"], rtol=1e-4)
    qa = whole.sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    qb = resumed.sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value
    assert np.abs(np.asarray(qa) - np.asarray(qb)).max() < 1e-5
    assert resumed.rdf_samples == whole.rdf_samples == 3


def test_mismatched_work_folder_refused(runs, tmp_path):
    one = runs[0]
    with pytest.raises(SystemExit, match="other settings.*ns"):
        bl.prepare_work(_args(one, "--ns", repr(NS / 2)))
    with pytest.raises(SystemExit, match="other settings.*sample"):
        bl.prepare_work(_args(one, "--sample", "5"))
    with pytest.raises(SystemExit, match="other settings.*temperature"):
        bl.prepare_work(_args(one, "--temperature", "310"))
    # The same settings but another model file for a variant.
    models = tmp_path / "models"
    models.mkdir()
    from openmmflash.integrators.network.modelfile import MODEL_DIR
    shutil.copy(os.path.join(MODEL_DIR, "water-tip3pfb-8fs-gaq-w4a8.pt"), models / "water-gaq-frame-w4a8.pt")
    work = tmp_path / "w"
    bl.prepare_work(_args(work, "--variants", "frame-w4a8", "--models-dir", str(models)))
    with open(models / "water-gaq-frame-w4a8.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(SystemExit, match="model of frame-w4a8"):
        bl.prepare_work(_args(work, "--variants", "frame-w4a8", "--models-dir", str(models)))
    with pytest.raises(FileNotFoundError, match="openmmflash quantize"):
        bl.prepare_work(_args(tmp_path / "x", "--variants", "naive-w4a8", "--models-dir", str(models)))


def test_longer_ns_extends_a_finished_run(tmp_path):
    work = tmp_path / "ext"
    args = bl.parse_args(["--work", str(work), "--variants", "fp32", "--ns", repr(3 * 0.008 / 1000), "--sample", "3",
                          "--platform", "Reference", "--device", "cpu"])
    run = bl.LongRun(str(work), "fp32", bl.prepare_work(args), "Reference", "cpu")
    assert run.run(1e9)["done"] and run.status["strides"] == 3
    longer = bl.prepare_work(_args(work))        # NS = 9 strides
    assert longer["ns"] == NS
    run = bl.LongRun(str(work), "fp32", longer, "Reference", "cpu")
    assert run.run(1e9)["done"] and run.status["strides"] == 9 and run.status["chunks"] == 2


def test_finalize_writes_expected_fields(runs, tmp_path):
    one = runs[0]
    args = bl.parse_args(["--work", str(one), "--finalize", "--discard-ps", "0", "--blocks", "2",
                          "--outdir", str(tmp_path), "--tag", "_t"])
    bl.finalize(args)
    with open(tmp_path / "gaq_long_t.json") as f:
        report = json.load(f)
    assert (tmp_path / "gaq_long_t.png").stat().st_size > 1000
    r = report["variants"]["fp32"]
    assert r["simulated_ns"] == pytest.approx(NS)
    assert r["strides"] == 9 and r["complete"] and r["stable"] and r["failure"] is None
    for key in ("T_H_K", "T_O_K", "T_H_sem_K", "T_O_sem_K", "absDeltaT_H_K", "absDeltaT_O_K",
                "Tdrift_H_K_per_ns", "Tdrift_O_K_per_ns", "fallbackFraction", "wall_s", "ms_per_stride"):
        assert np.isfinite(r[key]), key
    assert r["absDeltaT_H_K"] == pytest.approx(abs(r["T_H_K"] - 300.0))
    assert 0.0 <= r["fallbackFraction"] <= 1.0
    assert set(r["rdf"]["l1_difference_vs_langevin"]) == {"OO", "OH", "HH"}
    assert r["rdf"]["l1_difference_vs_langevin"]["OO"] > 0
    assert report["settings"]["ns"] == NS and report["machine"]["openmm"]
    assert len(r["series"]["t_ps"]) == 3
