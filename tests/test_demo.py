"""`openmmflash demo`: real CG simulations of the bundled chignolin model through the CLI (short runs), the
CompactReporter trajectory and its size against DCD/XTC, the FlashMD option, the equilibration verdict and --pdb."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from openmmflash.schnet.modelfile import bundledModels

needs_chignolin = pytest.mark.skipif("chignolin" not in bundledModels(),
                                     reason="the bundled chignolin model is not installed")


def _run_demo(out, *extra, platform="CPU"):
    # One OpenMP thread: on a busy CI machine libtorch's spinning threads inside OpenMM slow the run down badly.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "openmmflash.cli", "demo", "--quick", "--platform", platform,
                           "--output", out, *extra], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.load(open(os.path.join(out, "summary.json")))


@needs_chignolin
def test_demo_quick(tmp_path):
    from openmmflash.cg.observables import kabschRMSD
    from openmmflash.compactmd.compacttrajectory import CompactTrajectory
    from openmmflash.stack import import_openmm

    out = str(tmp_path / "demo")
    stdout, summary = _run_demo(out)
    for text in ("ns/day", "CA-RMSD to native", "smaller than DCD", "equilibration", ".cmdx"):
        assert text in stdout
    assert summary["steps"] == 200 and summary["replicas"] == 2 and summary["platform"] == "CPU"
    assert summary["integrator"] == "langevin" and summary["frames"] == 10
    assert np.isfinite(summary["finalPotentialEnergy_kJmol"])
    assert 100.0 < summary["meanTemperature_K"] < 600.0 and len(summary["temperaturePerReplica_K"]) == 2
    assert all(0.0 <= v < 6.0 for v in summary["caRmsdFinal_A"])
    assert set(summary["observablesLastHalf"]) == {"caRmsd", "Rg", "Q"}
    assert summary["observablesNative"]["caRmsd"] < 1e-6 and summary["observablesNative"]["Q"] > 0.99
    assert summary["reference"]["ensemble"] is None and summary["reference"]["forceMatching"]["forceRMSE"] > 0
    # a 0.4 ps run from the native structure is too short: the verdict says so, with reasons
    assert summary["equilibration"]["equilibrated"] is False and summary["equilibration"]["reasons"]
    assert "NOT equilibrated" in stdout
    for name in ("trajectory.cmdx", "topology.pdb", "demo.png", "native.pdb"):
        assert os.path.getsize(os.path.join(out, name)) > 0

    # the size comparison: measured file sizes, and .cmdx smaller than both
    sizes = summary["trajectory"]["bytes"]
    assert sizes["cmdx"] == os.path.getsize(os.path.join(out, "trajectory.cmdx"))
    assert sizes["dcd"] > sizes["cmdx"] and summary["trajectory"]["dcdOverCmdx"] == sizes["dcd"] / sizes["cmdx"]
    assert sizes["xtc"] > sizes["cmdx"]

    # the .cmdx file reads back: all frames of all replicas, the last one giving the reported CA-RMSD
    openmm = import_openmm()
    pdb = openmm.app.PDBFile(os.path.join(out, "native.pdb"))
    ca = np.array([a.index for a in pdb.topology.atoms() if a.name == "CA"])
    native = pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.angstrom)
    with CompactTrajectory(os.path.join(out, "trajectory.cmdx")) as traj:
        assert traj.nFrames == summary["frames"]
        xyz = traj.read()
        assert xyz.shape == (summary["frames"], 2 * summary["beads"], 3)
        assert traj.steps[-1] == 200
    last = xyz[-1].reshape(2, summary["beads"], 3) * 10.0
    rmsd = kabschRMSD(last[:, ca].astype(np.float64), native[ca])
    np.testing.assert_allclose(rmsd, summary["caRmsdFinal_A"], atol=0.01)


@needs_chignolin
def test_demo_flashmd_quick(tmp_path):
    out = str(tmp_path / "flashmd")
    stdout, summary = _run_demo(out, "--integrator", "flashmd")
    assert "FlashMDLangevinIntegrator" in stdout and "learned strides" in stdout
    fm = summary["flashmd"]
    assert summary["integrator"] == "flashmd" and fm["model"] == "chignolin-cg-40fs-stiff"
    assert summary["timestep_fs"] == pytest.approx(40.0) and summary["steps"] == 10  # 0.4 ps in 40 fs strides
    assert fm["learnedStrides"] + fm["fallbacks"] == summary["steps"]
    assert 0.0 <= fm["fallbackRate"] <= 1.0 and fm["quantized"] is False
    fractions = fm["replicaFallbackFractions"]  # the guard acts per replica
    assert len(fractions) == summary["replicas"] and all(0.0 <= f <= fm["fallbackRate"] + 1e-12 for f in fractions)
    assert summary["frames"] == 10 and summary["trajectory"]["bytes"]["cmdx"] > 0
    assert np.isfinite(summary["finalPotentialEnergy_kJmol"])


@pytest.mark.cuda
@needs_chignolin
@pytest.mark.parametrize("integrator", ["langevin", "flashmd"])
def test_demo_quick_cuda(tmp_path, integrator):
    """The quick demo on the CUDA platform: the fast path (fused kernels, padded list, CUDA graphs) for the force,
    the FlashMD network on the GPU."""
    _, s = _run_demo(str(tmp_path / integrator), "--integrator", integrator, platform="CUDA")
    assert s["platform"] == "CUDA" and s["forceOptions"]["backend"] == "flash"
    assert s["frames"] == 10 and s["trajectory"]["bytes"]["cmdx"] > 0
    assert np.isfinite(s["finalPotentialEnergy_kJmol"]) and 150.0 < s["meanTemperature_K"] < 450.0
    assert all(0.0 <= v < 6.0 for v in s["caRmsdFinal_A"])
    if integrator == "flashmd":
        assert s["flashmd"]["learnedStrides"] + s["flashmd"]["fallbacks"] == s["steps"] == 10


@needs_chignolin
def test_demo_quantized_says_none_is_shipped(tmp_path, capsys):
    from openmmflash.cli import main

    out = str(tmp_path / "q")
    assert main(["demo", "--quick", "--integrator", "flashmd", "--quantized", "--output", out]) == 2
    err = capsys.readouterr().err
    assert "no quantized model is shipped for 'chignolin-cg-40fs-stiff'" in err and "water" in err
    assert main(["demo", "--quick", "--quantized", "--output", out]) == 2
    assert "--integrator flashmd" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "summary.json"))  # refused before anything ran


def test_demo_bad_model_is_refused(tmp_path):
    from openmmflash.cli import main

    assert main(["demo", "--model", str(tmp_path / "missing.pt"), "--quick", "--output", str(tmp_path)]) == 2


@needs_chignolin
def test_demo_pdb_with_unseen_residues_is_refused(tmp_path, capsys):
    """A protein with a residue type no bundled model was trained on (CYS: neither chignolin nor 3a4r has one)."""
    from openmmflash.cli import main
    from openmmflash.schnet.model import loadModel

    native = loadModel("chignolin").metadata["structure"]
    path = tmp_path / "mutant.pdb"
    path.write_text(native.replace("TYR", "CYS"))
    assert main(["demo", "--quick", "--pdb", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no FlashSchNet model supports the residue types" in err and "never saw CYS" in err
    assert "chignolin" in err


@needs_chignolin
def test_model_for_protein_picks_a_model_trained_on_its_residues(tmp_path):
    from openmmflash.schnet.model import loadModel
    from openmmflash.cg.inputchecks import trainingResidues
    from openmmflash.workflows.modelchoice import modelForProtein, trainedSequence

    net = loadModel("chignolin")
    assert trainedSequence(net) == ["GLY", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "GLY"]
    path = tmp_path / "chignolin.pdb"
    path.write_text(net.metadata["structure"])
    chosen, name, topology, positions = modelForProtein(str(path))
    assert name == "chignolin"  # the model trained on this sequence, though 3a4r saw all its residue types too
    assert topology.getNumAtoms() == 47 and positions.shape == (47, 3)
    assert {r.name for r in topology.residues()} <= trainingResidues(chosen.metadata)


def _relaxing(frames, replicas, seed):
    """Temperatures (F, B) and CA-RMSD (F, B) of a run that starts cold and native and relaxes over 200 frames."""
    rng = np.random.default_rng(seed)
    k = np.arange(frames)[:, None]
    temperature = 300.0 - 150.0 * np.exp(-k / 5.0) + rng.normal(0.0, 36.0, (frames, replicas))
    rmsd = 3.3 * (1.0 - np.exp(-k / 200.0)) + rng.normal(0.0, 0.1, (frames, replicas))
    return temperature, rmsd


def test_equilibration_verdict_short_and_long_runs():
    from openmmflash.workflows.equilibration import equilibrationVerdict

    # the same relaxation, recorded for 60 frames (still drifting) and for 3000 (long equilibrated tail)
    t, r = _relaxing(60, 4, 1)
    short = equilibrationVerdict(t, 300.0, {"caRmsd": r})
    assert short["equilibrated"] is False
    assert not short["checks"]["caRmsd"]["passed"] and any("caRmsd still drifts" in x for x in short["reasons"])
    t, r = _relaxing(3000, 4, 1)
    long = equilibrationVerdict(t, 300.0, {"caRmsd": r})
    assert long["equilibrated"] is True and long["reasons"] == []
    assert abs(long["checks"]["temperature"]["lastHalfMean_K"] - 300.0) < 5.0


def test_equilibration_verdict_temperature_and_length():
    from openmmflash.workflows.equilibration import equilibrationVerdict

    rng = np.random.default_rng(2)
    flat = 3.0 + rng.normal(0.0, 0.1, (400, 4))
    cold = equilibrationVerdict(280.0 + rng.normal(0.0, 36.0, (400, 4)), 300.0, {"Rg": flat})
    assert cold["equilibrated"] is False and not cold["checks"]["temperature"]["passed"]
    assert "from the 300 K bath" in cold["reasons"][0]
    few = equilibrationVerdict(300.0 + rng.normal(0.0, 36.0, (20, 1)), 300.0, {})
    assert few["equilibrated"] is False and "too few samples" in few["reasons"][0]
    tiny = equilibrationVerdict(np.full((5, 2), 300.0), 300.0, {"Rg": flat[:5, :2]})
    assert tiny["equilibrated"] is False and "too short to judge" in tiny["reasons"][0]


def test_format_sizes_write_readable_files(tmp_path):
    """DCD and XTC of the same frames: sizes are those of the files, which read back (DCD to float32, XTC to
    1/1000 nm)."""
    import mdtraj

    from openmmflash.compactmd.formatsizes import formatSizes
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    top = openmm.app.Topology()
    chain = top.addChain()
    for i in range(7):
        res = top.addResidue("ALA", chain)
        top.addAtom("CA", openmm.app.Element.getBySymbol("C"), res)
    frames = np.random.default_rng(0).uniform(0.0, 3.0, (5, 7, 3))
    sizes = formatSizes(frames, np.arange(5) * 0.1, top, 0.002, 50, directory=str(tmp_path))
    assert sizes["dcd"] == os.path.getsize(tmp_path / "trajectory.dcd")
    assert sizes["xtc"] == os.path.getsize(tmp_path / "trajectory.xtc")
    dcd = mdtraj.load_dcd(str(tmp_path / "trajectory.dcd"), top=mdtraj.Topology.from_openmm(top))
    np.testing.assert_allclose(dcd.xyz, frames, atol=1e-5)
    xtc = mdtraj.load_xtc(str(tmp_path / "trajectory.xtc"), top=mdtraj.Topology.from_openmm(top))
    np.testing.assert_allclose(xtc.xyz, frames, atol=0.0006)


@needs_chignolin
def test_demo_pdb_run_against_a_reference_ensemble(tmp_path):
    """--pdb end to end, with a model file that carries a reference ensemble (a copy of chignolin with samples
    added): the summary compares the run with it and the model is used for its own sequence."""
    from openmmflash.demo import runDemo
    from openmmflash.schnet.model import loadModel
    from openmmflash.schnet.modelfile import saveModel

    net = loadModel("chignolin")
    rng = np.random.default_rng(0)
    reference = {"caRmsd": rng.normal(3.4, 0.4, 500).tolist(), "Rg": rng.normal(6.1, 0.4, 500).tolist(),
                 "Q": rng.uniform(0.1, 0.5, 500).tolist()}
    model_path = str(tmp_path / "chignolin-with-reference.pt")
    saveModel(net, model_path, referenceObservables=reference)
    pdb = tmp_path / "chignolin.pdb"
    pdb.write_text(net.metadata["structure"])
    s = runDemo(model_path, steps=100, replicas=1, platform="CPU", output=str(tmp_path / "out"), reportInterval=10,
                progress=False, pdb=str(pdb))
    assert s["model"] == model_path and s["protein"] == str(pdb)  # same sequence: no transferability note
    ens = s["reference"]["ensemble"]
    assert ens["Rg"]["mean"] == pytest.approx(np.mean(reference["Rg"]))
    assert set(s["reference"]["overlap"]) == {"caRmsd", "Rg", "Q"}
    assert all(0.0 <= v <= 1.0 for v in s["reference"]["overlap"].values())
    assert s["frames"] == 10 and os.path.getsize(tmp_path / "out" / "demo.png") > 0
