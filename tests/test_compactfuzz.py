"""Damaged and hostile CompactMD files: every reader either returns exactly the frames that were written or fails
with a ValueError (``CorruptChunkError``) or warns that it recovered; nothing allocates without bound, recurses or
crashes.

``OPENMMFLASH_FUZZ_FILES`` sets how many damaged files the main test builds (default 500; 10,000 for a long
run). A third are the file cut at a byte, a third have bytes flipped (every checksum then must catch it), a third
are mutated with all checksums recomputed (hostile files: only a clean failure is required, since such a file
is a valid file holding other data). Every file goes through ``CompactTrajectory``; every fifth also through
the MDAnalysis reader, the mdtraj loader and the CLI (``verify`` and ``info --recover``).
"""

import contextlib
import io
import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import zstandard

import openmmflash.compactmd  # noqa: F401  (registers the readers)
from openmmflash.cli import main
from openmmflash.compactmd import CompactTopology, CompactTrajectory, CompactWriter
from openmmflash.compactmd import compactfile as cf
from openmmflash.compactmd.compactfile import IncompleteFileWarning

N_FILES = int(os.environ.get("OPENMMFLASH_FUZZ_FILES", "500"))


def _topology():
    """A 6-atom residue, four 3-site waters and an ion (19 atoms)."""
    names = ["N", "CA", "CB", "C", "O", "OXT"] + ["O", "H1", "H2"] * 4 + ["NA"]
    elements = ["N", "C", "C", "C", "O", "O"] + ["O", "H", "H"] * 4 + ["Na"]
    resnames = ["ALA"] * 6 + ["HOH"] * 12 + ["NA"]
    resindices = np.array([0] * 6 + [1 + k // 3 for k in range(12)] + [5])
    bonds = np.array([[0, 1], [1, 2], [1, 3], [3, 4], [3, 5]] + [[6 + 3 * k, 7 + 3 * k] for k in range(4)]
                     + [[6 + 3 * k, 8 + 3 * k] for k in range(4)])
    return CompactTopology(names, elements, resnames, resindices + 1, resindices, ["A"] * 19, bonds)


def _frames(nFrames, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0.2, 2.0, (19, 3))
    for k in range(4):  # rigid-ish waters
        o = x0[6 + 3 * k]
        x0[7 + 3 * k] = o + [0.09572, 0, 0]
        x0[8 + 3 * k] = o + [-0.024, 0.0927, 0]
    return x0 + np.cumsum(rng.normal(0, 0.003, (nFrames, 19, 3)), axis=0)


def _quiet_open(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CompactTrajectory(path, **kw)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Intact files: closed (3 chunks), unclosed with a tail, and lossless XTC codec; with their true frames."""
    d = tmp_path_factory.mktemp("fuzz")
    x = _frames(9)
    box = np.diag([2.5, 2.5, 2.5])
    out = {}
    closed = str(d / "closed.cmdx")
    with CompactWriter(closed, 19, topology=_topology(), chunkFrames=4, dt=0.002) as w:
        for i in range(9):
            w.write(x[i], step=10 * i, time=0.02 * i, box=box)
    tail = str(d / "tail.cmdx")
    w = CompactWriter(tail, 19, topology=_topology(), chunkFrames=4)
    for i in range(6):
        w.write(x[i], step=10 * i)
    image = open(tail, "rb").read()  # one chunk and two tail frames, as after kill -9
    w.close()
    open(tail, "wb").write(image)
    xtc = str(d / "xtc.cmdx")
    with CompactWriter(xtc, 19, codec="xtc", chunkFrames=3, flushInterval=None) as w:
        w.write(np.round(x[:5] * 1000).astype(np.float32) * (np.float32(1) / np.float32(1000)))
    for path in (closed, tail, xtc):
        traj = _quiet_open(path)
        with traj:
            out[path] = (open(path, "rb").read(), traj.read(), traj.steps.copy())
    return d, out


def _structure(image):
    """Byte ranges covered by each checksum of an intact image: [(kind, start, end)]."""
    size = struct.unpack_from("<I", image, 12)[0]
    parts = [("meta", 16, 16 + size)]
    pos = 20 + size
    while pos + 40 <= len(image) and image[pos:pos + 4] == cf.CHUNK_MAGIC:
        plen = struct.unpack_from("<Q", image, pos + 8)[0]
        parts.append(("chunk", pos, pos + 40 + plen))
        pos += 40 + plen
    if image[pos:pos + 4] == cf.INDEX_MAGIC:
        parts.append(("index", pos, len(image) - 16))
        parts.append(("footer", len(image) - 16, len(image)))
    return parts


def _refix(image, parts):
    """Recompute every checksum of a mutated image at the positions of the intact structure."""
    b = bytearray(image)
    for kind, start, end in parts:
        if end > len(b):
            continue
        if kind == "meta":
            b[end:end + 4] = struct.pack("<I", cf.crc(bytes(b[start:end])))
        elif kind == "chunk":
            b[start + 32:start + 36] = struct.pack("<I", cf.crc(bytes(b[start + 40:end])))
            b[start + 36:start + 40] = struct.pack("<I", cf.crc(bytes(b[start:start + 36])))
        elif kind == "index":
            b[end - 4:end] = struct.pack("<I", cf.crc(bytes(b[start:end - 4])))
        elif kind == "footer":
            b[start + 8:start + 12] = struct.pack("<I", cf.crc(bytes(b[start:start + 8])))
    return bytes(b)


_CLEAN = (ValueError,)  # CorruptChunkError is a ValueError


def _check_reader(path, truth, steps, exact):
    """Open and read everything; returned frames must equal the intact file's (when ``exact``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with CompactTrajectory(path) as traj:
                n = len(traj)
                got = traj.read()
                gotSteps = traj.steps
    except _CLEAN:
        return "error"
    if exact:
        assert n <= len(truth), "more frames than were written"
        np.testing.assert_array_equal(got, truth[:n])
        np.testing.assert_array_equal(gotSteps, steps[:n])
    return n


def _check_others(path, truth, exact):
    import MDAnalysis as mda
    import mdtraj

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            u = mda.Universe(path)
            for ts in u.trajectory:
                if exact:
                    np.testing.assert_allclose(u.atoms.positions / 10.0, truth[ts.frame], rtol=0, atol=1e-6)
        except _CLEAN:
            pass
        try:
            t = mdtraj.load(path)
            if exact:
                np.testing.assert_array_equal(t.xyz, truth[:t.n_frames])
        except _CLEAN:
            pass
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["verify", path]) in (0, 1, 2)
        assert main(["info", path, "--recover"]) in (0, 2)


def test_damaged_files_never_give_wrong_frames(sources):
    d, files = sources
    rng = np.random.default_rng(2026)
    kinds = ["cut", "flip", "hostile"]
    outcomes = {k: {"error": 0, "frames": 0} for k in kinds}
    names = list(files)
    for case in range(N_FILES):
        kind = kinds[case % 3]
        src = names[(case // 3) % len(names)]
        image, truth, steps = files[src]
        if kind == "cut":
            damaged = image[:int(rng.integers(0, len(image)))]
        else:
            b = bytearray(image)
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
            damaged = bytes(b) if kind == "flip" else _refix(bytes(b), _structure(image))
            if damaged == image:
                continue
        path = str(d / f"case{case % 7}.cmdx")
        open(path, "wb").write(damaged)
        result = _check_reader(path, truth, steps, exact=kind != "hostile")
        outcomes[kind]["error" if result == "error" else "frames"] += 1
        if case % 5 == 0:
            _check_others(path, truth, exact=kind != "hostile")
    print(outcomes)
    assert sum(v["error"] for v in outcomes.values()) > 0 and outcomes["cut"]["frames"] > 0


def test_cut_at_every_byte_gives_a_prefix_of_the_frames(sources):
    d, files = sources
    for src in list(files)[:2]:  # the closed file and the unclosed file with tail chunks
        image, truth, steps = files[src]
        last = 0
        for cut in range(len(image) + 1):
            path = str(d / "cut.cmdx")
            open(path, "wb").write(image[:cut])
            n = _check_reader(path, truth, steps, exact=True)
            if n != "error":
                assert n >= last  # frames never disappear as the file grows
                last = n
        assert last == len(truth)


def _rewrite_meta(image, change):
    """Header metadata changed by ``change`` (format 4: the JSON before the newline; the topology text is kept)."""
    size = struct.unpack_from("<I", image, 12)[0]
    text, _, topology = zstandard.ZstdDecompressor().decompress(image[16:16 + size]).partition(b"\n")
    meta = json.loads(text)
    change(meta)
    body = zstandard.ZstdCompressor().compress(json.dumps(meta).encode() + b"\n" + topology)
    return image[:12] + struct.pack("<I", len(body)) + body + struct.pack("<I", cf.crc(body)) + image[20 + size:]


def _set_chunk_frames(image, nFrames):
    """First chunk head claims ``nFrames`` frames, with valid checksums (and no index: scan mode)."""
    parts = _structure(image)
    _, start, end = parts[1]
    b = bytearray(image[:end])
    b[start + 4:start + 8] = struct.pack("<I", nFrames)
    b[start + 36:start + 40] = struct.pack("<I", cf.crc(bytes(b[start:start + 36])))
    return bytes(b)


def _bomb(declared):
    """A zstd frame of a few bytes whose header declares ``declared`` bytes of content."""
    frame = bytearray(zstandard.ZstdCompressor().compress(b"\0" * 100))
    fhd = frame[4]
    assert fhd >> 6 == 0 and fhd & 0x20  # single segment, 1-byte content size
    frame[4] = (fhd & 0x3F) | (3 << 6)
    return bytes(frame[:5]) + struct.pack("<Q", declared) + bytes(frame[6:])


@pytest.mark.parametrize("name", ["huge_frames", "huge_atoms", "bad_atoms", "meta_len", "bomb_meta", "nested_json",
                                  "bad_mask", "unknown_codec", "payload_len"])
def test_crafted_headers_fail_cleanly(sources, name):
    d, files = sources
    src = [p for p in files if p.endswith("closed.cmdx")][0]
    image = files[src][0]
    if name == "huge_frames":
        damaged = _set_chunk_frames(image, 2**31)
    elif name == "huge_atoms":
        damaged = _set_chunk_frames(_rewrite_meta(image, lambda m: m.update(nAtoms=2**25, sequenceMask=None,
                                                                            waterMask=None, topology=None)), 4)
    elif name == "bad_atoms":
        damaged = _rewrite_meta(image, lambda m: m.update(nAtoms=-5))
    elif name == "meta_len":
        damaged = image[:12] + struct.pack("<I", 2**32 - 1) + image[16:]
    elif name == "bomb_meta":
        body = _bomb(2**40)
        damaged = image[:12] + struct.pack("<I", len(body)) + body + struct.pack("<I", cf.crc(body))
    elif name == "nested_json":
        body = zstandard.ZstdCompressor().compress(b"[" * 100000 + b"]" * 100000)
        damaged = image[:12] + struct.pack("<I", len(body)) + body + struct.pack("<I", cf.crc(body))
    elif name == "bad_mask":
        damaged = _rewrite_meta(image, lambda m: m.update(sequenceMask="01"))
    elif name == "unknown_codec":
        damaged = _rewrite_meta(image, lambda m: m.update(codec={"name": "zip", "params": {}}))
    else:  # payload_len: chunk head claims 2**60 payload bytes (valid head checksum)
        parts = _structure(image)
        _, start, end = parts[1]
        b = bytearray(image)
        b[start + 8:start + 16] = struct.pack("<Q", 2**60)
        b[start + 36:start + 40] = struct.pack("<I", cf.crc(bytes(b[start:start + 36])))
        damaged = bytes(b)
    path = str(d / f"crafted_{name}.cmdx")
    open(path, "wb").write(damaged)
    with pytest.raises(ValueError) as err:
        with _quiet_open(path) as traj:
            traj.read()
    assert len(str(err.value)) < 500
    if name == "huge_frames":
        assert "claims 2147483648 frames" in str(err.value)
    if name == "huge_atoms":
        assert "refusing to allocate" in str(err.value)
    if name == "payload_len":
        assert "inconsistent" in str(err.value)
    import mdtraj

    with pytest.raises(ValueError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdtraj.load(path)


def test_footer_pointing_outside_the_file_falls_back_to_the_chunks(sources):
    d, files = sources
    src = [p for p in files if p.endswith("closed.cmdx")][0]
    image, truth, _ = files[src]
    off = len(image) + 10**12
    path = str(d / "outside.cmdx")
    open(path, "wb").write(image[:-16] + struct.pack("<QI4s", off, cf.crc(struct.pack("<Q", off)), cf.FOOTER_MAGIC))
    with pytest.warns(cf.IncompleteFileWarning):
        traj = CompactTrajectory(path)
    with traj:
        np.testing.assert_array_equal(traj.read(), truth)


def test_directory_and_missing_file_errors(tmp_path, capsys):
    folder = tmp_path / "folder.cmdx"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        CompactTrajectory(str(folder))
    assert main(["info", str(folder)]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        CompactTrajectory(str(tmp_path / "none.cmdx"))


def test_mdanalysis_reader_on_file_without_complete_chunk(tmp_path):
    import MDAnalysis as mda

    path = str(tmp_path / "early.cmdx")
    w = CompactWriter(path, 19, topology=_topology(), flushInterval=None)
    w._f.flush()  # the header only, as after a crash before the first chunk
    image = open(path, "rb").read() + b"CMXC\x01"
    w.close()
    open(path, "wb").write(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(path)
        assert len(u.trajectory) == 0 and list(u.trajectory) == []
        assert u.atoms.n_atoms == 19


def test_recover_flag_reads_past_a_damaged_index(sources, capsys):
    d, files = sources
    src = [p for p in files if p.endswith("closed.cmdx")][0]
    image, truth, _ = files[src]
    b = bytearray(image)
    b[-20] ^= 0x40  # inside the index
    path = str(d / "badindex.cmdx")
    open(path, "wb").write(bytes(b))
    assert main(["verify", path]) == 1
    assert "--recover" in capsys.readouterr().err
    with pytest.warns(IncompleteFileWarning, match="no valid index"):
        assert main(["verify", path, "--recover"]) == 0
    assert "3/3 chunks intact, 9 frames (recovered without index)" in capsys.readouterr().out
    back = str(d / "back.dcd")
    with pytest.warns(IncompleteFileWarning, match="no valid index"):
        assert main(["decompress", path, "-o", back, "--recover"]) == 0
    import mdtraj

    np.testing.assert_allclose(mdtraj.load(back, top=_topology().to_mdtraj()).xyz, truth, atol=1e-6)
    assert zlib.crc32(image) != zlib.crc32(bytes(b))
