"""CompactMD container: random access, crash recovery, corruption detection, append and restart truncation."""

import os
import warnings

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmmflash.compactmd import (CompactTopology, CompactTrajectory, CompactWriter, CorruptChunkError,
                                   IncompleteFileWarning)
from openmmflash.compactmd import compactfile as cf
from openmmflash.compactmd.compactwriter import RestartWarning


def _positions(nFrames, nAtoms, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 3, (nAtoms, 3)) + np.cumsum(rng.normal(0, 0.01, (nFrames, nAtoms, 3)), axis=0)


def _write(path, x, chunkFrames=4, boxes=None, **kw):
    with CompactWriter(path, x.shape[1], chunkFrames=chunkFrames, **kw) as w:
        for i, frame in enumerate(x):
            w.write(frame, step=10 * i, time=0.02 * i, box=None if boxes is None else boxes[i])
    return path


def _open_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteFileWarning)
        return CompactTrajectory(path, **kw)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(nFrames=st.integers(1, 15), nAtoms=st.integers(1, 12), chunkFrames=st.integers(1, 6),
       seed=st.integers(0, 1000))
def test_random_access_equals_sequential_read(tmp_path, nFrames, nAtoms, chunkFrames, seed):
    x = _positions(nFrames, nAtoms, seed)
    rng = np.random.default_rng(seed)
    boxes = np.eye(3) * rng.uniform(2, 4, (nFrames, 1, 1)) + np.triu(rng.uniform(0, 0.5, (nFrames, 3, 3)), 1).transpose(0, 2, 1)
    path = _write(str(tmp_path / f"r{seed}_{nFrames}_{nAtoms}_{chunkFrames}.cmdx"), x, chunkFrames, boxes)
    with CompactTrajectory(path) as traj:
        assert len(traj) == nFrames and not traj.recovered
        sequential = np.array([f.positions for f in traj])
        assert np.abs(sequential - x).max() <= traj.maxError
        order = rng.permutation(nFrames)
        for i in order:
            frame = traj[int(i)]
            np.testing.assert_array_equal(frame.positions, sequential[i])
            assert frame.step == 10 * i
            np.testing.assert_allclose(frame.box, boxes[i])  # a box that changes every frame
        np.testing.assert_array_equal(traj[order], sequential[order])
        np.testing.assert_array_equal(traj[::-2], sequential[::-1][::2])
        np.testing.assert_allclose(traj.times, 0.02 * np.arange(nFrames))


def test_truncated_at_every_byte_of_last_chunk(tmp_path):
    x = _positions(10, 5)
    path = _write(str(tmp_path / "t.cmdx"), x, chunkFrames=4)  # chunks of 4, 4, 2 frames
    data = open(path, "rb").read()
    with CompactTrajectory(path) as traj:
        last = traj.chunks[-1].offset
        chunkEnd = traj._dataEnd  # the index starts here
        full = traj.read()
    cut = str(tmp_path / "cut.cmdx")
    for end in range(last, len(data)):
        with open(cut, "wb") as f:
            f.write(data[:end])
        with pytest.warns(IncompleteFileWarning):
            traj = CompactTrajectory(cut)
        expected = 8 if end < chunkEnd else 10  # cut inside the last chunk, or inside the index/footer
        with traj:
            assert len(traj) == expected, end
            np.testing.assert_array_equal(traj.read(), full[:expected])


def test_every_flipped_byte_is_detected(tmp_path):
    """Flip each byte in turn: opening or reading raises CorruptChunkError/ValueError or warns; never wrong data."""
    x = _positions(5, 3)
    path = _write(str(tmp_path / "f.cmdx"), x, chunkFrames=2)
    data = bytearray(open(path, "rb").read())
    with CompactTrajectory(path) as traj:
        good = traj.read()
    bad = str(tmp_path / "bad.cmdx")
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        open(bad, "wb").write(flipped)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with CompactTrajectory(bad) as traj:
                    out = traj.read()
                    steps = traj.steps
            except (CorruptChunkError, ValueError):
                continue
        assert any(issubclass(w.category, IncompleteFileWarning) for w in caught), f"byte {pos} undetected"
        np.testing.assert_array_equal(out, good[:len(out)])  # what is returned is right
        np.testing.assert_array_equal(steps, 10 * np.arange(len(out)))


def test_corrupt_chunk_reports_location(tmp_path):
    x = _positions(6, 4)
    path = _write(str(tmp_path / "c.cmdx"), x, chunkFrames=2, flushInterval=None)
    with CompactTrajectory(path) as traj:
        target = traj.chunks[1]
    data = bytearray(open(path, "rb").read())
    data[target.offset + 50] ^= 0xFF
    open(path, "wb").write(data)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj[0].positions.shape, (4, 3))  # chunk 0 is fine
        with pytest.raises(CorruptChunkError, match=f"chunk 1 \\(byte {target.offset}, frames 2-3\\)") as err:
            traj[3]
        assert err.value.offset == target.offset and err.value.chunk == 1
        with pytest.raises(CorruptChunkError):
            traj.verify()


def test_corrupt_index_can_be_recovered(tmp_path):
    x = _positions(6, 4)
    path = _write(str(tmp_path / "i.cmdx"), x, chunkFrames=2)
    data = bytearray(open(path, "rb").read())
    data[-20] ^= 0x01  # inside the index
    open(path, "wb").write(data)
    with pytest.raises(CorruptChunkError, match="index .* is corrupt"):
        CompactTrajectory(path)
    with _open_quiet(path, recover=True) as traj:
        assert len(traj) == 6 and np.abs(traj.read() - x).max() <= traj.maxError


def test_refuses_to_overwrite(tmp_path):
    path = _write(str(tmp_path / "o.cmdx"), _positions(2, 3))
    with pytest.raises(FileExistsError, match="append=True"):
        CompactWriter(path, 3)
    with CompactWriter(path, 3, overwrite=True) as w:
        w.write(np.zeros((3, 3)))
    assert len(CompactTrajectory(path)) == 1


def test_append_with_wrong_atom_count_or_topology_refused(tmp_path):
    top = CompactTopology.generic(3)
    path = _write(str(tmp_path / "a.cmdx"), _positions(3, 3), topology=top)
    size = os.path.getsize(path)
    with pytest.raises(ValueError, match="cannot append 4-atom frames .* holds 3 atoms"):
        CompactWriter(path, 4, append=True)
    other = CompactTopology.generic(3)
    other.names[1] = "CA"
    with pytest.raises(ValueError, match="embedded topology differs"):
        CompactWriter(path, 3, topology=other, append=True)
    assert os.path.getsize(path) == size  # nothing was touched
    assert len(CompactTrajectory(path)) == 3


def test_append_continues_and_restart_leaves_no_duplicates(tmp_path):
    x = _positions(12, 4)
    path = str(tmp_path / "r.cmdx")
    _write(path, x[:9], chunkFrames=4)  # steps 0..80
    # restart from a checkpoint at step 50: the next frame written is step 60
    with pytest.warns(RestartWarning, match="removed 3 frames at steps 60, 70, 80"):
        with CompactWriter(path, 4, append=True, chunkFrames=4) as w:
            for i in range(6, 12):
                w.write(x[i], step=10 * i, time=0.02 * i)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, 10 * np.arange(12))
        assert np.abs(traj.read() - x).max() <= traj.maxError


def test_truncate_after_step(tmp_path):
    x = _positions(10, 4)
    path = _write(str(tmp_path / "s.cmdx"), x, chunkFrames=3)
    CompactWriter(path, 4, append=True, truncateAfterStep=45).close()
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, [0, 10, 20, 30, 40])
        np.testing.assert_array_equal(traj.read(), CompactTrajectory(_write(str(tmp_path / "s2.cmdx"), x[:5],
                                                                            chunkFrames=3)).read())


def test_append_to_crashed_file(tmp_path):
    """A file never closed (no index) plus a partial chunk: append drops the partial chunk and continues."""
    x = _positions(9, 4)
    path = str(tmp_path / "crash.cmdx")
    w = CompactWriter(path, 4, chunkFrames=3)
    for i in range(7):
        w.write(x[i], step=i)
    w._f.flush()
    os.truncate(path, os.path.getsize(path) - 10)  # cut the second chunk
    w._f = None  # simulate the process dying
    with pytest.warns(RestartWarning, match="removed 3 frames at steps 3, 4, 5"):
        with CompactWriter(path, 4, append=True, chunkFrames=3) as w2:
            for i in range(3, 9):
                w2.write(x[i], step=i)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, np.arange(9))


def test_bad_frames_never_reach_the_file(tmp_path):
    path = str(tmp_path / "n.cmdx")
    with CompactWriter(path, 2, chunkFrames=2) as w:
        w.write(np.zeros((2, 3)), step=0)
        with pytest.raises(ValueError, match="NaN"):
            w.write(np.full((2, 3), np.nan), step=1)
        with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
            w.write(np.zeros((3, 3)), step=1)
        w.write(np.ones((2, 3)), step=2)
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, [0, 2])


def test_not_a_compact_file(tmp_path):
    path = tmp_path / "x.cmdx"
    path.write_bytes(b"hello world, this is not a trajectory")
    with pytest.raises(ValueError, match="not a CompactMD file"):
        CompactTrajectory(str(path))


def test_header_records_format_facts(tmp_path):
    path = _write(str(tmp_path / "h.cmdx"), _positions(2, 3), maxError=0.01)
    with CompactTrajectory(path) as traj:
        h = traj.header
        assert h["nAtoms"] == 3 and h["units"] == {"length": "nm", "time": "ps"} and h["maxError"] == 0.01
        assert h["codec"]["name"] == "bounded" and h["version"] == cf.VERSION
    assert open(path, "rb").read(8) == cf.MAGIC


def test_version1_files_still_read_and_newer_versions_refused(tmp_path, monkeypatch):
    """Format 2 stores the topology as compact columns; files of format 1 (plain lists) still open."""
    names = ["N", "CA", "C", "O", "N", "CA"]
    top = CompactTopology(names, ["N", "C", "C", "O", "N", "C"], ["ALA"] * 4 + ["GLY"] * 2,
                          np.array([1, 1, 1, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 1]), ["A"] * 6,
                          np.array([[0, 1], [1, 2], [2, 3], [2, 4], [4, 5]]))
    x = _positions(5, 6)
    new = _write(str(tmp_path / "v2.cmdx"), x, topology=top)
    monkeypatch.setattr(cf, "VERSION", 1)
    monkeypatch.setattr(CompactTopology, "to_file_dict", CompactTopology.to_dict)
    old = _write(str(tmp_path / "v1.cmdx"), x, topology=top)
    monkeypatch.undo()
    for path, version in ((new, cf.VERSION), (old, 1)):
        with CompactTrajectory(path) as t:
            assert t.header["version"] == version
            assert ("encoding" in t.header["topology"]) == (version >= 2)
            assert t.topology.digest() == top.digest() and t.topology.names == names
            assert np.array_equal(t.topology.bonds, top.bonds)
            assert np.abs(t.read() - x).max() <= 0.0005
    monkeypatch.setattr(cf, "VERSION", cf.VERSION + 1)
    future = _write(str(tmp_path / "v_next.cmdx"), x, topology=top)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="newer than this openmmflash reads.*upgrade"):
        CompactTrajectory(future)


def test_version3_header_with_inline_topology_still_reads(tmp_path, monkeypatch):
    """Format 4 keeps the topology out of the metadata JSON (parsed on first use); format 3 headers (topology inside
    the metadata) still read, and a format-4 header without its topology section is refused as corrupt."""
    top = CompactTopology(["O", "H1", "H2", "CA"], ["O", "H", "H", "C"], ["HOH"] * 3 + ["ALA"],
                          np.array([1, 1, 1, 2]), np.array([0, 0, 0, 1]), ["A"] * 4, np.array([[0, 1], [0, 2]]))
    x = _positions(4, 4)
    new = _write(str(tmp_path / "v4.cmdx"), x, topology=top)
    monkeypatch.setattr(cf, "VERSION", 3)
    old = _write(str(tmp_path / "v3.cmdx"), x, topology=top)
    monkeypatch.undo()
    for path, version in ((new, 4), (old, 3)):
        with CompactTrajectory(path) as t:
            assert t.header["version"] == version and t.header["waterMask"] == "1110"
            assert t.topology.digest() == top.digest()
            assert np.array_equal(t.read(), CompactTrajectory(new).read())
    with open(new, "rb") as f:
        meta, _ = cf.read_header(f)
    assert "topology" in meta and meta.get("topology")["encoding"] == "columns-delta"
    raw = bytearray(open(new, "rb").read())
    size = int.from_bytes(raw[12:16], "little")
    body = zstandard.ZstdDecompressor().decompress(bytes(raw[16:16 + size]))
    cut = zstandard.ZstdCompressor().compress(body[:body.index(b"\n")])
    bad = raw[:12] + len(cut).to_bytes(4, "little") + cut + cf.crc(cut).to_bytes(4, "little") + raw[20 + size:]
    path = tmp_path / "cut.cmdx"
    path.write_bytes(bytes(bad))
    with pytest.raises(cf.CorruptChunkError, match="topology section"):
        CompactTrajectory(str(path))


def test_multi_chunk_read_and_piecewise_writes_match_whole(tmp_path):
    """Frames written in pieces that fit or overflow the chunk buffer read back as one bulk write does, and a read
    across chunks (decoded straight into the output) equals the chunk-by-chunk frames."""
    x = _positions(23, 7)
    whole = _write(str(tmp_path / "w.cmdx"), x, chunkFrames=5)
    path = str(tmp_path / "p.cmdx")
    with CompactWriter(path, 7, chunkFrames=5, flushInterval=None) as w:
        for lo, hi in ((0, 2), (2, 5), (5, 6), (6, 19), (19, 23)):
            w.write(x[lo:hi], step=np.arange(lo, hi))
    with CompactTrajectory(whole) as a, CompactTrajectory(path) as b:
        assert [c.nFrames for c in b.chunks] == [5, 5, 5, 5, 3]
        full = b.read()
        assert np.array_equal(full, a.read()) and np.abs(full - x).max() <= 0.0005
        assert np.array_equal(full[3:17], np.stack([b[i].positions for i in range(3, 17)]))
        assert np.array_equal(b.read([21, 2, 9]), full[[21, 2, 9]])
