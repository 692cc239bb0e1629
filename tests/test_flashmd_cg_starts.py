"""Training data from chosen starts (examples/flashmd_train_cg.py data --starts): each replica starts from a saved
frame, e.g. a state a FlashMD run visited, and its pairs follow the CG System's own dynamics from there."""

import os
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
sys.path.insert(0, EXAMPLES)

import flashmd_train_cg  # noqa: E402

from openmmflash.integrators.training.data import loadDataset  # noqa: E402


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from openmmflash.workflows.flashmdcg import buildCGSystem
    native = buildCGSystem(1, platformName="CPU")[4]
    rng = np.random.default_rng(0)
    # five distinct "visited" states: shifted copies (0.1 nm apart) with a little noise
    x = native[None] + 0.1 * np.arange(5)[:, None, None] + 0.002 * rng.standard_normal((5, len(native), 3))
    path = str(tmp_path_factory.mktemp("frames") / "frames_flashmd.npz")
    np.savez(path, positions=x.astype(np.float32), frame_ps=0.2)
    return path, x


def test_pairs_start_from_the_given_frames(frames, tmp_path):
    path, x = frames
    out = str(tmp_path / "data")
    flashmd_train_cg.main(["data", "--replicas", "2", "--cycles", "1", "--strides", "2", "--equilibration", "0.002",
                           "--platform", "CPU", "--starts", path, "--seed", "4", "--out-dir", out])
    data = loadDataset(os.path.join(out, "chignolin_2fs.npz"))
    assert data["q0"].shape == (2, x.shape[1], 3)
    assert data["meta"]["starts"] == ["frames_flashmd.npz"]
    chosen = np.random.default_rng(4).choice(len(x), 2, replace=False)
    # one Langevin step of 2 fs (no minimization) moves beads by far less than the 0.1 nm between the frames
    for b, k in enumerate(chosen):
        d = np.abs(data["q0"][b] - x[k]).max()
        assert d < 0.01
        others = [np.abs(data["q0"][b] - x[j]).max() for j in range(len(x)) if j != k]
        assert min(others) > 0.05
    assert np.abs(data["dq"]).max() > 0  # a real NVE pair


def test_start_frames_of_the_wrong_shape_are_refused(frames, tmp_path):
    path, x = frames
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, positions=x[:, :10])
    with pytest.raises(ValueError, match="expected \\[frames, 47, 3\\]"):
        flashmd_train_cg.startStates([bad], 2, 47, 0)
    many, v = flashmd_train_cg.startStates([path], 8, 47, 0)  # more replicas than frames: drawn with replacement
    assert many.shape == (8, 47, 3) and v is None  # positions only: no velocities
    np.savez(bad, positions=x, velocities=x[:, :10])
    with pytest.raises(ValueError, match="velocities have shape"):
        flashmd_train_cg.startStates([bad], 2, 47, 0)


def test_pairs_start_from_exactly_the_saved_states(frames, tmp_path):
    """Frames with velocities (a FlashMD run's): the first cycle's pairs start from exactly those (q, p), not from
    a thermalized copy, so training sees the states the learned dynamics produce."""
    from openmmflash.workflows.flashmdcg import buildCGSystem
    path, x = frames
    _, system, _, _, _, _ = buildCGSystem(1, platformName="CPU")
    m = np.array([system.getParticleMass(i)._value for i in range(system.getNumParticles())])
    v = np.random.default_rng(1).standard_normal(x.shape) * 0.5 * np.arange(1, 6)[:, None, None]  # not thermal
    both = str(tmp_path / "frames_with_v.npz")
    np.savez(both, positions=x.astype(np.float32), velocities=v.astype(np.float32), frame_ps=0.2)
    out = str(tmp_path / "data")
    flashmd_train_cg.main(["data", "--replicas", "2", "--cycles", "1", "--strides", "2", "--platform", "CPU",
                           "--starts", both, "--seed", "4", "--out-dir", out])
    data = loadDataset(os.path.join(out, "chignolin_2fs.npz"))
    chosen = np.random.default_rng(4).choice(len(x), 2, replace=False)
    assert data["meta"]["startsWithVelocities"]
    np.testing.assert_allclose(data["q0"], x[chosen], atol=1e-5)
    np.testing.assert_allclose(data["p0"], (m[:, None] * v[chosen]), rtol=1e-5, atol=1e-5)
    assert np.abs(data["dq"]).max() > 0
