"""CompactMD codecs: error bound, lossless coding, bit-exact XTC re-encoding, refusal of bad positions."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmmflash.compactmd import residualcoder, valuestream, watertransform
from openmmflash.compactmd.codec import BoundedCodec, XTCCodec
from openmmflash.compactmd.codecregistry import make_codec

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _trajectory(seed, nFrames, nAtoms, scale, drift):
    """Random walk of nAtoms around random centres: positions (F, N, 3) in nm, float64."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(-scale, scale, size=(nAtoms, 3))
    steps = rng.normal(0.0, drift, size=(nFrames, nAtoms, 3))
    return start + np.cumsum(steps, axis=0)


@SETTINGS
@given(seed=st.integers(0, 2**31), nFrames=st.integers(1, 12), nAtoms=st.integers(1, 40),
       scale=st.sampled_from([0.5, 10.0, 120.0, 1.0e5]), drift=st.sampled_from([0.0, 0.002, 0.1, 3.0]),
       maxError=st.sampled_from([0.0005, 0.001, 0.01, 0.1]), blockAtoms=st.sampled_from([1, 7, 4096]))
def test_bounded_round_trip_within_bound(seed, nFrames, nAtoms, scale, drift, maxError, blockAtoms):
    x = _trajectory(seed, nFrames, nAtoms, scale, drift)
    codec = BoundedCodec(maxError, blockAtoms=blockAtoms)
    seq = np.random.default_rng(seed).random(nAtoms) < 0.7
    water = np.random.default_rng(seed + 1).random(nAtoms) < 0.5
    layout = codec.layout(seq, water)
    q = codec.quantize(x)
    blob = codec.encode(q, layout)
    back = codec.decode(blob, nFrames, nAtoms, layout)
    np.testing.assert_array_equal(back, q)  # the residual coder is lossless
    assert np.abs(codec.dequantize(back, np.float64) - x).max() <= maxError
    if scale <= 120.0 and drift <= 0.1:
        # float32 output also meets the bound within |x| < 128 nm (see codec module docstring)
        assert np.abs(codec.dequantize(back).astype(np.float64) - x).max() <= maxError


def test_extreme_grid_values_round_trip():
    """Coordinates at the edge of the allowed range and jumps across it stay exact (int32 wrap-around)."""
    codec = BoundedCodec(0.0005)
    limit = codec.gridStep * (2**28 - 1)
    x = np.array([[[limit, -limit, 0.0], [-limit, limit, limit]], [[-limit, limit, -limit], [limit, -limit, 0.0]],
                  [[limit, limit, limit], [-limit, -limit, -limit]]])
    q = codec.quantize(x)
    for mode_seq in (np.array([False, True]), np.array([False, False])):
        for water in (None, np.array([True, True])):
            layout = codec.layout(mode_seq, water)
            back = codec.decode(codec.encode(q, layout), 3, 2, layout)
            np.testing.assert_array_equal(back, q)
    assert np.abs(codec.dequantize(q, np.float64) - x).max() <= 0.0005


@pytest.mark.parametrize("mode", range(len(residualcoder.MODES)))
def test_every_predictor_inverts(mode):
    rng = np.random.default_rng(mode)
    q = rng.integers(-2**28, 2**28, size=(6, 9, 3)).astype(np.int32)
    seq = rng.random(9) < 0.5
    full = np.ones(9, bool)
    full[0] = False
    r = residualcoder._residual(q, mode, seq & full, full)
    np.testing.assert_array_equal(residualcoder._unresidual(r, mode, seq & full, full), q)


@pytest.mark.parametrize("bad, match", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                        (1e7, "outside the range")])
def test_bad_positions_refused(bad, match):
    x = np.zeros((2, 3, 3))
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=match):
        BoundedCodec().quantize(x)


def test_bad_max_error_refused():
    with pytest.raises(ValueError, match="maxError must be a positive"):
        BoundedCodec(-1.0)
    with pytest.raises(ValueError, match="unknown codec"):
        make_codec("zip")


@pytest.mark.parametrize("precision", [1000.0, 100.0])
def test_xtc_codec_is_bit_exact_against_mdtraj(tmp_path, precision):
    """Positions of a real XTC (written by MDAnalysis at the given precision, read by mdtraj) come back
    bit-identical."""
    import MDAnalysis as mda
    from mdtraj.formats import XTCTrajectoryFile

    rng = np.random.default_rng(3)
    x = (rng.uniform(0, 6, size=(5, 50, 3)) + np.cumsum(rng.normal(0, 0.01, (5, 50, 3)), 0)).astype(np.float32)
    path = str(tmp_path / "a.xtc")
    u = mda.Universe.empty(50, trajectory=True)
    with mda.Writer(path, 50, precision=int(round(np.log10(precision)))) as w:
        for frame in x:
            u.atoms.positions = frame * 10.0
            u.dimensions = [60.0, 60.0, 60.0, 90.0, 90.0, 90.0]
            w.write(u.atoms)
    with XTCTrajectoryFile(path) as f:
        xtc, *_ = f.read()
    codec = XTCCodec(precision)
    q = codec.quantize(xtc)
    layout = codec.layout(np.ones(50, bool))
    back = codec.dequantize(codec.decode(codec.encode(q, layout), 5, 50, layout))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.view(np.int32), xtc.view(np.int32))
    assert np.abs(back - x).max() <= 0.5 / precision + 1e-6


def test_xtc_codec_refuses_off_grid_input():
    with pytest.raises(ValueError, match="not on the XTC grid"):
        XTCCodec(1000.0).quantize(np.full((1, 2, 3), 0.12345))


@pytest.mark.parametrize("maxError", [0.0005, 0.002, 0.05])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_fast_path_keeps_the_bound(maxError, dtype):
    """Near the largest |x| of the float32 path, with values close to half-grid points (worst rounding)."""
    from openmmflash.compactmd.codec import FAST_STEPS

    codec = BoundedCodec(maxError)
    rng = np.random.default_rng(11)
    k = rng.integers(-FAST_STEPS + 2, FAST_STEPS - 2, size=(3, 4000, 3))
    x = ((k + 0.5 + rng.uniform(-1e-4, 1e-4, k.shape)) * codec.gridStep).astype(dtype)
    back = codec.dequantize(codec.quantize(x))
    assert back.dtype == np.float32
    assert np.abs(back.astype(np.float64) - x.astype(np.float64)).max() <= maxError


def _rigid_waters(rng, nf, nw, sites):
    """TIP3P/TIP4P-like rigid waters at random orientations: (nf, nw * sites, 3) nm."""
    angle = np.deg2rad(104.52)
    template = [[0, 0, 0], [0.09572, 0, 0], [0.09572 * np.cos(angle), 0.09572 * np.sin(angle), 0]]
    template = np.array(template + ([[0.015 * np.cos(angle / 2), 0.015 * np.sin(angle / 2), 0]] if sites == 4 else []))
    rot = np.linalg.qr(rng.normal(size=(nf, nw, 3, 3)))[0]
    centre = rng.uniform(0, 3, (1, nw, 1, 3)) + rng.normal(0, 0.05, (nf, nw, 1, 3))
    return (centre + np.einsum("fwij,sj->fwsi", rot, template)).reshape(nf, nw * sites, 3)


@pytest.mark.parametrize("sites", [3, 4])
def test_water_layout_round_trip(sites):
    """Solute + rigid 3- or 4-site water (virtual site on the HOH bisector): lossless; H1/H2 go through the
    rigid-geometry transform and the virtual site through the in-molecule linear prediction."""
    rng = np.random.default_rng(sites)
    nw, nf = 60, 5
    water = _rigid_waters(rng, nf, nw, sites)
    solute = rng.uniform(0, 3, (1, 20, 3)) + np.cumsum(rng.normal(0, 0.01, (nf, 20, 3)), axis=0)
    x = np.concatenate([solute, water], axis=1)
    seq = np.ones(x.shape[1], bool)
    seq[20::sites] = False
    seq[[0, 7]] = False
    waterMask = np.zeros(x.shape[1], bool)
    waterMask[20:] = True
    codec = BoundedCodec(0.0005)
    layout = codec.layout(seq, waterMask)
    assert [(s, len(f)) for s, f in layout.groups] == [(sites, nw)]
    q = codec.quantize(x)
    np.testing.assert_array_equal(codec.decode(codec.encode(q, layout), nf, x.shape[1], layout), q)
    t, groups, extra = watertransform.forward(q, layout)
    assert groups[0][1] is not None and extra.shape == (nf, nw, 3)  # rigid geometry chosen
    assert np.abs(extra).max() <= 3 and np.abs(t[:, 20 + 2::sites, 1:]).max() <= 3  # H2: small errors only
    if sites == 4:
        assert np.abs(t[:, 20 + 3::4]).max() <= 2  # virtual site: residual of the linear prediction


@SETTINGS
@given(seed=st.integers(0, 2**31), nw=st.integers(1, 30), nf=st.integers(1, 4), sites=st.sampled_from([3, 4, 5]),
       jitter=st.sampled_from([0.0, 0.001, 0.3]))
def test_water_transform_is_lossless_for_any_input(seed, nw, nf, sites, jitter):
    """Rigid, slightly flexible or scrambled "waters" all decode exactly (the transform is chosen per chunk)."""
    rng = np.random.default_rng(seed)
    base = _rigid_waters(rng, nf, nw, min(sites, 4))
    if sites == 5:
        base = np.concatenate([base.reshape(nf, nw, 4, 3), base.reshape(nf, nw, 4, 3)[:, :, :1] + 0.01], axis=2)
        base = base.reshape(nf, nw * 5, 3)
    x = base + rng.normal(0, jitter, base.shape)
    seq = np.ones(x.shape[1], bool)
    seq[::sites] = False
    codec = BoundedCodec(0.0005)
    layout = codec.layout(seq, np.ones(x.shape[1], bool))
    q = codec.quantize(x)
    np.testing.assert_array_equal(codec.decode(codec.encode(q, layout), nf, x.shape[1], layout), q)


@pytest.mark.parametrize("bits_source", [1, 3, 12, 20])
def test_value_streams_round_trip_with_escapes(bits_source):
    """Bit-packed streams with escapes and byte-plane streams decode exactly; near-constant data packs tight."""
    import zstandard

    rng = np.random.default_rng(bits_source)
    r = rng.integers(-(2 ** (bits_source - 1)) if bits_source > 1 else 0, 2 ** (bits_source - 1) + 1,
                     200_000).astype(np.int32)
    outliers = rng.choice(r.size, 300, replace=False)
    r[outliers] = rng.integers(-2**30, 2**30, 300)
    blob = valuestream._encode_values(r, zstandard.ZstdCompressor(level=1))
    back, end = valuestream._decode_values(memoryview(blob), 0, r.size, zstandard.ZstdDecompressor())
    assert end == len(blob)
    np.testing.assert_array_equal(back, r)
    if bits_source == 1:  # values in {0, 1} plus 0.15 % outliers: well under one byte per value
        assert len(blob) < r.size / 4


def test_water_recognition():
    """By residue name, by elements, and by repeated 3-atom residues when names are missing."""
    from openmmflash.compactmd.topology import CompactTopology

    def top(resnames, elements, sizes):
        res = np.repeat(np.arange(len(sizes)), sizes)
        n = int(np.sum(sizes))
        return CompactTopology(["X"] * n, elements, [resnames[i] for i in res], res + 1, res, ["A"] * n)

    named = top(["ALA", "HOH"], ["C"] * 5 + ["O", "H", "H"], [5, 3])
    np.testing.assert_array_equal(named.waterMask(), [False] * 5 + [True] * 3)
    by_element = top(["LIG", "XYZ"], ["C"] * 5 + ["O", "H", "H"], [5, 3])
    np.testing.assert_array_equal(by_element.waterMask(), [False] * 5 + [True] * 3)
    unnamed = top(["UNK"] * 61, ["X"] * 187, [3] * 60 + [7])
    assert unnamed.waterMask()[:180].all() and not unnamed.waterMask()[180:].any()
    few = top(["UNK"] * 3, ["X"] * 9, [3, 3, 3])
    assert not few.waterMask().any()


def test_far_apart_fake_water_is_coded_without_the_geometry_table():
    """Regression: one 'water' whose atoms are 1e5 nm apart (random coordinates flagged as water) made the H2 angle
    table ~pi * R2 entries long (tens of GB); such waters are now coded without the geometry transform."""
    import resource

    from openmmflash.compactmd import watergeometry

    seed, nFrames, nAtoms = 1846923787, 6, 36
    x = _trajectory(seed, nFrames, nAtoms, 1.0e5, 0.1)
    codec = BoundedCodec(0.0005, blockAtoms=4096)
    layout = codec.layout(np.random.default_rng(seed).random(nAtoms) < 0.7,
                          np.random.default_rng(seed + 1).random(nAtoms) < 0.5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q = codec.quantize(x)
    back = codec.decode(codec.encode(q, layout), nFrames, nAtoms, layout)
    np.testing.assert_array_equal(back, q)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: well under 0.5 GB
    with pytest.raises(ValueError, match="corrupt"):
        watergeometry._circle((100.0, 1.0e8, 0.3))
