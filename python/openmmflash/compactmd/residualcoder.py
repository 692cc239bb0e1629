"""Lossless coding of a chunk of integer (grid) coordinates: prediction in time and along the atom sequence, then
zigzag, byte planes and zstandard.

A chunk ``q`` has shape (F, N, 3), int32, with ``|q| <= 2**28`` so that every residual below fits in int32.
Atoms are cut into blocks of ``blockAtoms``; each block picks, per chunk, the predictor that gives the smallest sum
of absolute residuals on a sample of frames:

=====  ===============  ==============================================================================
mode   name             residual r[t, i] (frame 0 always uses ``space``)
=====  ===============  ==============================================================================
0      space            q[t, i] - q[t, i-1]                      (XTC-like; independent frames)
1      time1            q[t, i] - q[t-1, i]
2      time1+seq        Δq[t, i] - s_i Δq[t, i-1],  Δq = q[t] - q[t-1]; s_i = 1 if atom i-1 is in i's residue
3      time2            q[t] - 2 q[t-1] + q[t-2]                  (frame 1: time1)
4      time2+seq        Δ²q[t, i] - s_i Δ²q[t, i-1]                (frame 1: time1+seq)
=====  ===============  ==============================================================================

``s_i`` is the sequence mask of :class:`~openmmflash.compactmd.topology.CompactTopology`: a water's hydrogens are
predicted from its oxygen's motion, residues move as a unit, and unrelated neighbours are not mixed. Every inverse
is a (segmented) cumulative sum, so decoding is vectorized. Arithmetic is modulo 2**32 (numpy int32 wraps), which
is exact because every true value fits in int32.

Blob layout: ``u8 version, u32 nblocks, u8 mode[nblocks]``, then two streams (atoms continuing a residue,
atoms starting one), each ``u8 nbytes, u64 size`` + zstd(byte planes of zigzag(r)), low byte plane first.
"""

import struct

import numpy as np
import zstandard

MODES = ("space", "time1", "time1+seq", "time2", "time2+seq")
_VERSION = 1
_SAMPLE_FRAMES = 8


def _space(a, mask):
    """Residual along atoms: a[:, i] - mask[i] * a[:, i-1]; a shape (F, n, 3), mask shape (n,) (mask[0] ignored)."""
    r = a.copy()
    if a.shape[1] > 1:
        off = np.flatnonzero(~mask[1:]) + 1
        np.subtract(r[:, 1:], a[:, :-1], out=r[:, 1:])
        if len(off):
            r[:, off] = a[:, off]
    return r


def _prefix_time(d, first):
    """Running sum over frames: out[0] = first, out[t] = out[t-1] + d[t-1]; d shape (F-1, n, 3)."""
    out = np.empty((d.shape[0] + 1,) + d.shape[1:], np.int32)
    out[0] = first
    for t in range(d.shape[0]):
        np.add(out[t], d[t], out=out[t + 1])
    return out


def _unspace(r, mask):
    """Inverse of :func:`_space`: a cumulative sum along atoms restarted where ``mask`` is False."""
    n = r.shape[1]
    c = np.cumsum(r, axis=1, dtype=np.int32)
    if mask[1:].all():
        return c
    prev = np.zeros_like(c)
    prev[:, 1:] = c[:, :-1]
    restart = np.where(~mask, np.arange(n), 0)
    restart[0] = 0
    start = np.maximum.accumulate(restart)
    return c - prev[:, start]


def _residual(q, mode, seq, full):
    """Residual of one block for one mode; q shape (F, n, 3) int32."""
    r = np.empty_like(q)
    r[0] = _space(q[:1], full)[0]
    if q.shape[0] == 1:
        return r
    if mode == 0:
        r[1:] = _space(q[1:], full)
        return r
    d1 = q[1:] - q[:-1]
    if mode in (1, 2):
        r[1:] = d1 if mode == 1 else _space(d1, seq)
        return r
    d2 = d1[1:] - d1[:-1]
    if mode == 3:
        r[1] = d1[0]
        r[2:] = d2
    else:
        r[1:2] = _space(d1[:1], seq)
        r[2:] = _space(d2, seq)
    return r


def _unresidual(r, mode, seq, full):
    q = np.empty_like(r)
    q[0] = _unspace(r[:1], full)[0]
    if r.shape[0] == 1:
        return q
    if mode == 0:
        q[1:] = _unspace(r[1:], full)
        return q
    if mode in (1, 2):
        d1 = r[1:] if mode == 1 else _unspace(r[1:], seq)
    else:
        d = r[1:] if mode == 3 else _unspace(r[1:], seq)
        d1 = _prefix_time(d[1:], d[0])  # d[0] = Δq[1], d[k] = Δ²q: prefix sums give Δq
    q[1:] = _prefix_time(d1, q[0])[1:]
    return q


def _block_costs(q, seq, full, starts):
    """Sum of |residual| per (mode, block) on up to ``_SAMPLE_FRAMES`` sample frames; shape (modes, blocks)."""
    nf = q.shape[0]
    ts = np.unique(np.linspace(min(2, nf - 1), nf - 1, min(_SAMPLE_FRAMES, nf - 1)).astype(int))
    ts2 = ts[ts >= 2]
    d1 = q[ts] - q[ts - 1]
    cands = [_space(q[ts], full), d1, _space(d1, seq)]
    if len(ts2):
        d2 = (q[ts2] - q[ts2 - 1]) - (q[ts2 - 1] - q[ts2 - 2])
        cands += [d2, _space(d2, seq)]
    costs = np.empty((len(cands), len(starts)))
    for m, r in enumerate(cands):
        per_atom = np.abs(r, dtype=np.int64).sum(axis=(0, 2)) / r.shape[0]
        costs[m] = np.add.reduceat(per_atom, starts)
    return costs


def _masks(seqMask, n, blockAtoms):
    starts = np.arange(0, max(n, 1), blockAtoms)
    full = np.ones(n, bool)
    full[starts[starts < n]] = False
    seq = np.asarray(seqMask, bool) & full
    return starts, full, seq


def _zigzag_planes(r):
    """zigzag of a flat int32 array -> (nbytes, list of uint8 byte planes, low byte first)."""
    u = ((r << 1) ^ (r >> 31)).view(np.uint32)
    top = int(u.max()) if u.size else 0
    nbytes = max(1, (top.bit_length() + 7) // 8)
    return nbytes, [(u >> np.uint32(8 * k)).astype(np.uint8) if k else u.astype(np.uint8) for k in range(nbytes)]


def _from_planes(raw, count, nbytes):
    p = np.frombuffer(raw, np.uint8)
    u = p[:count].astype(np.uint32)
    for k in range(1, nbytes):
        u |= p[k * count:(k + 1) * count].astype(np.uint32) << np.uint32(8 * k)
    return (u >> np.uint32(1)).view(np.int32) ^ -(u & np.uint32(1)).view(np.int32)


def encode(q, seqMask, level=1, blockAtoms=4096):
    """Code a chunk ``q`` (F, N, 3) int32 losslessly; ``seqMask`` bool (N,). Returns bytes.

    Residuals of atoms that continue a residue (``seqMask``) and of atoms that start one are coded as two streams,
    since their magnitudes differ by orders of magnitude in ``space`` mode.
    """
    q = np.ascontiguousarray(q, dtype=np.int32)
    nf, n, _ = q.shape
    starts, full, seq = _masks(seqMask, n, blockAtoms)
    modes = np.zeros(len(starts), np.uint8)
    if nf > 1 and n:
        modes[:] = np.argmin(_block_costs(q, seq, full, starts), axis=0)
    r = None
    for mode in np.unique(modes):
        rm = _residual(q, int(mode), seq, full)
        if r is None:
            r = rm
        else:
            sel = np.repeat(modes == mode, blockAtoms)[:n]
            r[:, sel] = rm[:, sel]
    inner = np.asarray(seqMask, bool)
    if inner.all():
        streams = [r.reshape(-1), r[:, :0].reshape(-1)]
    else:
        streams = [r[:, inner].reshape(-1), r[:, ~inner].reshape(-1)]
    out = [struct.pack("<BI", _VERSION, len(modes)), modes.tobytes()]
    zc = zstandard.ZstdCompressor(level=level)
    for s in streams:
        nbytes, planes = _zigzag_planes(s)
        cobj = zc.compressobj(size=sum(p.nbytes for p in planes))
        body = b"".join([cobj.compress(p) for p in planes] + [cobj.flush()])
        out.append(struct.pack("<BQ", nbytes, len(body)))
        out.append(body)
    return b"".join(out)


def decode(blob, nFrames, nAtoms, seqMask, blockAtoms=4096):
    """Inverse of :func:`encode`: int32 array of shape (nFrames, nAtoms, 3)."""
    blob = memoryview(blob)
    version, nblocks = struct.unpack_from("<BI", blob, 0)
    if version != _VERSION:
        raise ValueError(f"unsupported residual stream version {version}")
    starts, full, seq = _masks(seqMask, nAtoms, blockAtoms)
    modes = np.frombuffer(blob[5:5 + nblocks], np.uint8)
    if nblocks != len(starts) or (modes >= len(MODES)).any():
        raise ValueError("residual stream does not match the atom count or names an unknown predictor")
    inner = np.asarray(seqMask, bool)
    counts = [nFrames * int(inner.sum()) * 3, nFrames * int((~inner).sum()) * 3]
    pos = 5 + nblocks
    r = np.empty((nFrames, nAtoms, 3), np.int32)
    dz = zstandard.ZstdDecompressor()
    for count, sel in zip(counts, (inner, ~inner)):
        nbytes, size = struct.unpack_from("<BQ", blob, pos)
        pos += 9
        if not 1 <= nbytes <= 4:
            raise ValueError(f"residual stream has {nbytes} byte planes (1 to 4 allowed)")
        raw = dz.decompress(bytes(blob[pos:pos + size]), max_output_size=max(count * nbytes, 1))
        pos += size
        if len(raw) != count * nbytes:
            raise ValueError(f"residual stream holds {len(raw)} bytes, expected {count * nbytes}")
        if count == r.size:
            r = _from_planes(raw, count, nbytes).reshape(nFrames, nAtoms, 3)
        elif count:
            r[:, sel] = _from_planes(raw, count, nbytes).reshape(nFrames, -1, 3)
    q = None
    for mode in np.unique(modes):
        qm = _unresidual(r, int(mode), seq, full)
        if q is None:
            q = qm
        else:
            sel = np.repeat(modes == mode, blockAtoms)[:nAtoms]
            q[:, sel] = qm[:, sel]
    return q
