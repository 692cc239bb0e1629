"""`openmmflash demo` in its short mode: a real CG simulation of the bundled chignolin model through the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from openmmflash.schnet.modelfile import bundledModels


@pytest.mark.skipif("chignolin" not in bundledModels(), reason="the bundled chignolin model is not installed")
def test_demo_quick(tmp_path):
    out = str(tmp_path / "demo")
    # One OpenMP thread: on a busy CI machine libtorch's spinning threads inside OpenMM slow the run down badly.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "openmmflash.cli", "demo", "--quick", "--platform", "CPU",
                           "--output", out], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ns/day" in proc.stdout and "CA-RMSD to native" in proc.stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["steps"] == 200 and summary["replicas"] == 2 and summary["platform"] == "CPU"
    assert np.isfinite(summary["finalPotentialEnergy_kJmol"])
    assert 100.0 < summary["meanTemperature_K"] < 600.0
    assert all(0.0 <= v < 6.0 for v in summary["caRmsdFinal_A"])
    for name in ("trajectory.dcd", "topology.pdb", "demo.png", "native.pdb"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    import mdtraj

    traj = mdtraj.load_dcd(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert traj.n_frames == 10 and traj.n_atoms == 2 * summary["beads"]


def test_demo_bad_model_is_refused(tmp_path):
    from openmmflash.cli import main

    assert main(["demo", "--model", str(tmp_path / "missing.pt"), "--quick", "--output", str(tmp_path)]) == 2
