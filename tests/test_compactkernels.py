"""Compiled CompactMD kernels against the numpy reference (bit-identical), and the numpy fallback end to end."""

import os
import subprocess
import sys

import numpy as np
import pytest
import zstandard

from openmmflash.compactmd import codec, kernels, residualcoder, valuestream

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


@pytest.fixture
def numpy_path(monkeypatch):
    """Call ``fn`` with the compiled kernels switched off."""
    def run(fn, *args):
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
        try:
            return fn(*args)
        finally:
            monkeypatch.setattr(kernels, "HAVE_NUMBA", True)
    return run


@pytest.mark.parametrize("nf", [1, 2, 3, 9])
def test_residual_blocks_match_numpy(nf, numpy_path):
    rng = np.random.default_rng(nf)
    for n in (1, 6, 41):
        q = rng.integers(-2**28, 2**28, (nf, n, 3)).astype(np.int32)  # wraps modulo 2**32 like numpy
        full = rng.random(n) < 0.7
        full[::8] = False  # block starts predict nothing from the previous block (as in Layout)
        seq = full & (rng.random(n) < 0.5)
        modes = rng.integers(0, 5, len(np.arange(0, n, 8))).astype(np.uint8)
        ref = numpy_path(residualcoder._assemble, q, modes, None, 8, full, seq)
        got = residualcoder._assemble(q, modes, None, 8, full, seq)
        assert np.array_equal(got, ref)
        assert np.array_equal(residualcoder._disassemble(got, modes, 8, full, seq), q)
        # known atoms (chain roots): their residual slots are ignored and their values taken from `known`
        where = full.copy()
        r = got.copy()
        r[:, ~where] = 12345
        ref = numpy_path(residualcoder._disassemble, r.copy(), modes, 8, full & where, seq & where, q, where)
        got = residualcoder._disassemble(r.copy(), modes, 8, full & where, seq & where, q, where)
        assert np.array_equal(got, ref)
        assert np.array_equal(got, q)


def test_mode_costs_match_numpy(numpy_path):
    rng = np.random.default_rng(3)
    for nf in (2, 3, 30):
        q = np.cumsum(rng.integers(-20, 20, (nf, 50, 3)), axis=0).astype(np.int32)
        full = np.ones(50, bool)
        full[[0, 17]] = False
        seq = full & (rng.random(50) < 0.5)
        starts = np.arange(0, 50, 16)
        w = rng.random(50) < 0.8
        ref = numpy_path(residualcoder._block_costs, q, seq, full, starts, w)
        assert np.array_equal(residualcoder._block_costs(q, seq, full, starts, w), ref)


def test_value_streams_match_numpy(numpy_path):
    rng = np.random.default_rng(4)
    zc, dz = zstandard.ZstdCompressor(), zstandard.ZstdDecompressor()
    cases = [rng.integers(-2**31, 2**31 - 1, 999), rng.integers(-300, 300, 5000), np.zeros(77, int)]
    for bits in (1, 2, 4):
        r = rng.integers(0, 2 ** (bits - 1), 20000)
        r[rng.integers(0, 20000, 40)] = rng.integers(-70000, 70000, 40)
        cases.append(r)
    for r in cases:
        r = r.astype(np.int32)
        blob = valuestream._encode_values(r, zc)
        ref_blob = numpy_path(valuestream._encode_values, r, zc)
        assert blob[0] == ref_blob[0]  # same format chosen
        for b in (blob, ref_blob):
            assert np.array_equal(valuestream._decode_values(b, 0, r.size, dz)[0], r)
            assert np.array_equal(numpy_path(valuestream._decode_values, b, 0, r.size, dz)[0], r)


def test_quantize_matches_numpy_and_refuses_bad_input(numpy_path):
    c = codec.BoundedCodec(0.0005)
    x = np.random.default_rng(5).normal(0, 4, (3, 20, 3))
    for dt in (np.float32, np.float64):
        q = c.quantize(x.astype(dt))
        assert np.array_equal(q, numpy_path(c.quantize, x.astype(dt)))
        assert np.array_equal(c.dequantize(q), numpy_path(c.dequantize, q))
        assert np.abs(c.dequantize(q) - x.astype(dt)).max() <= 0.0005
    far = x.copy()
    far[1, 2, 0] = 100.0  # beyond the float32 fast range: exact float64 path
    assert np.array_equal(c.quantize(far), numpy_path(c.quantize, far))
    x[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2, atom 3"):
        c.quantize(x)


def test_numpy_fallback_round_trip(tmp_path):
    """Without numba (OPENMMFLASH_NO_NUMBA=1) a file written with the kernels reads back identically."""
    from openmmflash.compactmd import CompactTrajectory, CompactWriter

    rng = np.random.default_rng(6)
    x = (np.cumsum(rng.normal(0, 0.01, (12, 30, 3)), axis=0) + rng.uniform(0, 3, (30, 3))).astype(np.float32)
    path = str(tmp_path / "k.cmdx")
    with CompactWriter(path, 30) as w:
        w.write(x)
    with CompactTrajectory(path) as t:
        fast = t.read()
    code = (f"import numpy as np; from openmmflash.compactmd import CompactTrajectory, kernels; "
            f"assert not kernels.HAVE_NUMBA; np.save({str(tmp_path / 'y.npy')!r}, CompactTrajectory({path!r}).read())")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, OPENMMFLASH_NO_NUMBA="1"))
    assert np.array_equal(np.load(tmp_path / "y.npy"), fast)
    assert np.abs(fast - x).max() <= 0.0005


def test_take_put_atoms_match_numpy():
    rng = np.random.default_rng(7)
    a = rng.integers(-9, 9, (4, 25, 3)).astype(np.int32)
    idx = np.array([0, 3, 4, 11, 24])
    got = kernels.take_atoms(a, idx)
    assert got.flags.c_contiguous and np.array_equal(got, a[:, idx])
    dst, ref = a.copy(), a.copy()
    src = rng.integers(-9, 9, (4, 5, 3)).astype(np.int32)
    kernels.put_atoms(dst, idx, src)
    ref[:, idx] = src
    assert np.array_equal(dst, ref)


def test_water_geometry_inverse_matches_numpy(numpy_path):
    """Compiled decoder of rigid-water geometry gives the integers of the numpy decoder (hence of the encoder)."""
    from openmmflash.compactmd import watergeometry

    rng = np.random.default_rng(8)
    for r in (20.0, 96.0, 400.0):  # O-H length in grid steps (coarse to fine bounds)
        nf, nw = 3, 300
        o = rng.integers(-5000, 5000, (nf, nw, 3))
        u = rng.normal(size=(nf, nw, 3))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        p = rng.normal(size=(nf, nw, 3))
        p -= (p * u).sum(-1, keepdims=True) * u
        p /= np.linalg.norm(p, axis=-1, keepdims=True)
        ang = np.deg2rad(104.5)
        h1 = np.rint(o + r * u).astype(np.int32)
        h2 = np.rint(o + r * (np.cos(ang) * u + np.sin(ang) * p)).astype(np.int32)
        o = o.astype(np.int32)
        q = np.stack([o, h1, h2], axis=2).reshape(nf, 3 * nw, 3)  # O H H per molecule
        params = watergeometry.fit(q, 3 * np.arange(nw))
        assert params is not None
        slots = watergeometry.forward(o, h1, h2, params)
        ref_slots = numpy_path(watergeometry.forward, o, h1, h2, params)
        # the angle index may differ by arctan2 rounding; the H1 slots and the decoded atoms may not
        assert np.array_equal(slots[0], ref_slots[0])
        assert np.abs(slots[1][..., 0].astype(np.int64) - ref_slots[1][..., 0]).max() <= 1
        assert np.array_equal(numpy_path(watergeometry.inverse, o, *slots, params)[1], h2)
        got = watergeometry.inverse(o, *slots, params)
        ref = numpy_path(watergeometry.inverse, o, *slots, params)
        for g, f, true in zip(got, ref, (h1, h2)):
            assert np.array_equal(g, f) and np.array_equal(g, true)
        bad = slots[1].copy()
        bad[0, 0, 0] = 10**8
        with pytest.raises(ValueError, match="angle index"):
            watergeometry.inverse(o, slots[0], bad, slots[2], params)


def test_water_linear_prediction_matches_numpy(numpy_path):
    from openmmflash.compactmd import watertransform

    rng = np.random.default_rng(9)
    q = rng.integers(-3000, 3000, (3, 40, 3)).astype(np.int32)
    first = np.arange(0, 40, 4)  # 4-site waters
    coefs = [np.array([0.7]), np.array([0.31, 0.29])]
    for k in (1, 2, 3):
        ref = numpy_path(watertransform.water_pred, q, first, k, coefs)
        assert np.array_equal(watertransform.water_pred(q, first, k, coefs), ref)


@pytest.mark.parametrize("nf", [1, 2, 3, 7])
def test_inner_class_decode_in_place_matches_numpy(nf, numpy_path, monkeypatch):
    """The fused decoder of the I class (kernels.unresidual_inner) gives the numpy path's integers, for every
    predictor mode per block, residues of 1-9 atoms, waters and values that wrap modulo 2**32."""
    rng = np.random.default_rng(nf)
    sizes = rng.integers(1, 10, 40)
    resindex = np.repeat(np.arange(len(sizes)), sizes)
    n = len(resindex)
    water = np.zeros(n, bool)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    for s in starts[sizes == 3][:4]:
        water[s:s + 3] = True
    seqMask = np.r_[False, resindex[1:] == resindex[:-1]]
    layout = residualcoder.Layout(seqMask, water, blockAtoms=16)
    base = rng.integers(-2**20, 2**20, (n, 3))
    q = (base + np.cumsum(rng.integers(-50, 50, (nf, n, 3)), axis=0)).astype(np.int32)
    q[:, ::11] = rng.integers(-2**28, 2**28, (nf, len(q[0, ::11]), 3))
    for modes in range(5):  # force each predictor mode for the I blocks
        monkeypatch.setattr(residualcoder, "_pick_modes",
                            lambda a, blocks, *rest, m=modes, **kw: np.full(len(blocks), m, np.uint8))
        blob = residualcoder.encode(q, layout)
        got = residualcoder.decode(blob, nf, n, layout)
        ref = numpy_path(residualcoder.decode, blob, nf, n, layout)
        assert np.array_equal(got, ref) and np.array_equal(got, q)


@pytest.mark.parametrize("sites,jitter,kind", [(3, 0.0, "geometry"), (4, 0.0, "geometry"), (4, 0.02, None),
                                                (5, 0.3, None)])
def test_fused_water_stream_matches_numpy(sites, jitter, kind, numpy_path):
    """The compiled W stream (watertransform.forward_stream, water_stream_forward/inverse) equals the numpy
    transform's W rows (the stored angle index may differ by one), and chunks written by either decode to the same
    integers with either decoder, for rigid, flexible and scrambled waters between solute atoms."""
    from openmmflash.compactmd import watertransform

    rng = np.random.default_rng(sites)
    nf, nw = 4, 70
    ang = np.deg2rad(104.52)
    tpl = [[0, 0, 0], [0.09572, 0, 0], [0.09572 * np.cos(ang), 0.09572 * np.sin(ang), 0]]
    tpl = np.array(tpl + [[0.015 * np.cos(ang / 2), 0.015 * np.sin(ang / 2), 0]] * (sites - 3))
    rot = np.linalg.qr(rng.normal(size=(nf, nw, 3, 3)))[0]
    centre = rng.uniform(0, 3, (1, nw, 1, 3)) + rng.normal(0, 0.05, (nf, nw, 1, 3))
    water = (centre + np.einsum("fwij,sj->fwsi", rot, tpl)).reshape(nf, nw * sites, 3)
    water += rng.normal(0, jitter, water.shape)
    x = np.concatenate([rng.uniform(0, 3, (nf, 9, 3)), water], axis=1)
    seq = np.ones(x.shape[1], bool)
    seq[9::sites] = False
    seq[0] = False
    wmask = np.r_[np.zeros(9, bool), np.ones(nw * sites, bool)]
    c = codec.BoundedCodec(0.0005)
    layout = c.layout(seq, wmask)
    q = c.quantize(x)
    a, groups = watertransform.forward_stream(q, layout)
    t, ref_groups, extra = numpy_path(watertransform.forward, q, layout)
    ref = np.concatenate([t[:, layout.Wslots], extra], axis=1)  # slot order (blob version 5)
    assert a.shape == ref.shape and [g[1] is None for g in groups] == [g[1] is None for g in ref_groups]
    if kind == "geometry":
        assert groups[0][1] not in (None, "raw")
    angle = np.zeros(a.shape[1], bool)
    if groups[0][1] not in (None, "raw"):
        angle[layout.waterRows()[0][:, 1]] = True  # H2 slot 0: the angle index
    diff = a.astype(np.int64) - ref
    assert np.abs(diff[:, angle, 0]).max(initial=0) <= 1
    assert not diff[:, ~angle].any() and not diff[:, angle, 1:][np.abs(diff[:, angle, 0]) == 0].any()
    blob = c.encode(q, layout)
    ref_blob = numpy_path(c.encode, q, layout)
    for b in (blob, ref_blob):
        assert np.array_equal(c.decode(b, nf, x.shape[1], layout), q)
        assert np.array_equal(numpy_path(c.decode, b, nf, x.shape[1], layout), q)


def test_xtc_quantize_kernel_matches_numpy(numpy_path):
    """The one-pass XTC grid check gives the numpy path's integers (float32 and float64 input, into a buffer) and
    refuses the same off-grid value."""
    rng = np.random.default_rng(12)
    c = codec.XTCCodec(1000.0)
    q = rng.integers(-2**22, 2**22, (3, 50, 3)).astype(np.int32)
    x = c.dequantize(q)
    for arr in (x, x.astype(np.float64)):
        out = np.empty_like(q)
        assert c.quantize(arr, out=out) is out and np.array_equal(out, q)
        assert np.array_equal(numpy_path(c.quantize, arr), q)
    bad = x.copy()
    bad[1, 7, 2] = np.nextafter(bad[1, 7, 2], np.float32(np.inf))
    for run in (c.quantize, lambda a: numpy_path(c.quantize, a)):
        with pytest.raises(ValueError, match=r"frame 1, atom 7\) is not on the XTC grid"):
            run(bad)


def test_l1_cost_matches_numpy(numpy_path):
    """The compiled size proxy of the water-transform choice equals the numpy one (strided views, 1-3+ frames)."""
    from openmmflash.compactmd import watertransform

    rng = np.random.default_rng(13)
    for shape in [(1, 5, 3), (2, 7, 3), (3, 11, 3), (6, 40, 3)]:
        a = rng.integers(-2**27, 2**27, shape).astype(np.int32)
        for view in (a, a[:, ::3], a.astype(np.int64)):
            assert watertransform.l1_cost(view) == numpy_path(watertransform.l1_cost, view)


def test_workspace_reuses_and_caps_scratch_buffers(monkeypatch):
    """A scratch array reuses its name's buffer, a second name gets its own memory, and requests beyond the
    per-thread cap are fresh arrays that the pool does not keep."""
    from openmmflash.compactmd import workspace

    monkeypatch.setattr(workspace, "_local", __import__("threading").local())
    monkeypatch.setattr(workspace, "MAX_POOLED_BYTES", 4096)
    a = workspace.scratch("a", (10, 3), np.int32)
    a[:] = 7
    b = workspace.scratch("a", 30, np.int32)
    assert b.shape == (30,) and np.shares_memory(a, b) and (b == 7).all()
    c = workspace.scratch("c", (2, 5), np.float64)
    assert not np.shares_memory(a, c) and c.flags.c_contiguous
    big = workspace.scratch("d", 1000, np.int64)  # 8000 bytes: over the cap
    assert big.shape == (1000,) and "d" not in workspace._local.pool
    assert sum(v.nbytes for v in workspace._local.pool.values()) <= 4096


def test_workspace_borrowed_buffer_goes_to_the_next_borrower(monkeypatch, tmp_path):
    """A buffer given back is handed to the next borrow of the same or a smaller size, once; writers return
    theirs when closed, and a file written with a reused buffer reads back the same."""
    from openmmflash.compactmd import CompactTrajectory, CompactWriter, workspace

    monkeypatch.setattr(workspace, "_local", __import__("threading").local())
    a = workspace.borrow((4, 5, 3), np.int32)
    workspace.give_back(a)
    b = workspace.borrow((2, 5, 3), np.int32)
    c = workspace.borrow((2, 5, 3), np.int32)
    assert np.shares_memory(a, b) and not np.shares_memory(b, c)
    x = np.random.default_rng(3).uniform(0, 2, (6, 5, 3))
    paths = [str(tmp_path / f"{k}.cmdx") for k in range(2)]
    for path in paths:
        with CompactWriter(path, 5, chunkFrames=4, flushInterval=None) as w:
            w.write(x)
        assert w._buf is None and workspace._local.spare is not None
    with CompactTrajectory(paths[0]) as t0, CompactTrajectory(paths[1]) as t1:
        assert np.array_equal(t0.read(), t1.read()) and np.abs(t0.read() - x).max() <= 0.0005


@pytest.mark.parametrize("nbytes", [1, 2, 3, 4])
def test_decoding_into_buffers_matches_numpy(nbytes, numpy_path):
    """Value streams decoded straight into a buffer (byte planes of every width, bit-packed values with escapes,
    odd lengths) equal the numpy decoder's values."""
    dz = zstandard.ZstdDecompressor()
    zc = zstandard.ZstdCompressor(level=1)
    rng = np.random.default_rng(nbytes)
    top = 2 ** (8 * nbytes - 2)
    for n in (1, 7, 1001):
        for r in (rng.integers(-top, top, n).astype(np.int32),
                  np.where(rng.random(n) < 0.002, rng.integers(-top, top, n), rng.integers(-1, 2, n)).astype(np.int32)):
            blob = valuestream._encode_values(r, zc)
            out = np.empty(n, np.int32)
            got, end = valuestream._decode_values(blob, 0, n, dz, out)
            ref, ref_end = numpy_path(valuestream._decode_values, blob, 0, n, dz)
            assert got is out and end == ref_end == len(blob) and np.array_equal(out, ref) and np.array_equal(ref, r)
