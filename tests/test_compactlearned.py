"""Learned CompactMD codec: autoencoder prediction + residual on the grid keeps the bound; model bytes counted."""

import numpy as np
import pytest

from openmmflash.compactmd import CompactTrajectory, CompactWriter
from openmmflash.compactmd.learned import LearnedCodec, _from_bf16, _bf16, _quat_to_rot, _rot_to_quat


def _peptide_like(nf=40, n=30, seed=0):
    """A chain that bends smoothly, tumbles and drifts: (nf, n, 3) nm."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 1, n)
    out = []
    for t in range(nf):
        bend = 0.3 * np.sin(0.2 * t)
        chain = np.stack([s * 2.0, bend * np.sin(np.pi * s), 0.1 * np.cos(3 * s + 0.1 * t)], -1)
        angle = 0.05 * t
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        out.append(chain @ rot.T + 0.01 * t + rng.normal(0, 0.01, (n, 3)))
    return np.array(out)


@pytest.mark.parametrize("maxError, hidden", [(0.05, 0), (0.1, 0), (0.01, 8)])
def test_learned_round_trip_within_bound(maxError, hidden):
    x = _peptide_like()
    codec = LearnedCodec(maxError, latent=3, hidden=hidden, steps=5)
    layout = codec.layout(np.ones(x.shape[1], bool))
    blob = codec.encode(codec.quantize(x), layout)
    back = codec.decode(blob, *x.shape[:2], layout)
    assert np.abs(back - x).max() <= maxError
    stats = codec.lastStats
    assert stats["totalBytes"] == len(blob)
    assert stats["modelBytes"] > 0 and stats["modelBytes"] + stats["residualBytes"] + stats["sideBytes"] < len(blob)
    assert stats["device"] in ("cpu", "cuda")


def test_helpers_are_inverse():
    rng = np.random.default_rng(1)
    for _ in range(5):
        r = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        r *= np.sign(np.linalg.det(r))
        np.testing.assert_allclose(_quat_to_rot(_rot_to_quat(r)[None])[0], r, atol=1e-12)
    w = rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(_from_bf16(_bf16(w).tobytes(), w.shape), w, rtol=2**-8)


def test_learned_file_truncation_keeps_frames_exactly(tmp_path):
    x = _peptide_like(nf=30)
    path = str(tmp_path / "l.cmdx")
    with CompactWriter(path, x.shape[1], codec="learned", maxError=0.05, chunkFrames=20, latent=3, steps=5) as w:
        w.write(x[:12], step=np.arange(12))  # fits the chunk buffer (grid codecs quantize straight into it)
        w.write(x[12:], step=np.arange(12, 30))
    with CompactTrajectory(path) as traj:
        full = traj.read()
        assert traj.header["codec"]["name"] == "learned" and np.abs(full - x).max() <= 0.05
    CompactWriter(path, x.shape[1], append=True, truncateAfterStep=24).close()
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, np.arange(25))
        np.testing.assert_array_equal(traj.read(), full[:25])  # re-serialized, not re-encoded


def test_learned_refuses_nan():
    x = _peptide_like(nf=3)
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LearnedCodec().quantize(x)
