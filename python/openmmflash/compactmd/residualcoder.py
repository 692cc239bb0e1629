"""Lossless coding of a chunk of integer (grid) coordinates: prediction in time, along the atom sequence and
inside water molecules, then zigzag, byte planes and zstandard.

A chunk ``q`` has shape (F, N, 3), int32, with ``|q| <= 2**28`` so that every residual below fits in int32.
Atoms fall in three classes (:class:`Layout`, from the topology's residues and water residues):

- **S** (starts): the first atom of each residue (a water's oxygen, an ion, a residue's N) - coded as a compact
  sub-trajectory, spatially against the previous S atom or in time;
- **W** (water): the other atoms of 3- to 5-site waters, first replaced by their offset from a prediction made
  inside the molecule (``H1 - O``; ``H2 - O - c (H1 - O)``; a virtual site ``M - O - a (H1 - O) - b (H2 - O)``,
  coefficients fitted per chunk by least squares, stored as float64), then coded plainly or in time;
- **I** (inner): the other atoms, predicted from the atom before them (same residue).

Each class is cut into blocks of ``blockAtoms`` atoms and each block picks, per chunk, the predictor with the
smallest sum of absolute residuals on a sample of frames:

=====  ===============  ==============================================================================
mode   name             residual r[t, i] (frame 0 always uses ``space``)
=====  ===============  ==============================================================================
0      space            q[t, i] - q[t, p(i)]   (p(i): previous atom for I, previous S atom for S; W: plain)
1      time1            q[t, i] - q[t-1, i]
2      time1+seq        Δq[t, i] - Δq[t, i-1],  Δq = q[t] - q[t-1]   (I only)
3      time2            q[t] - 2 q[t-1] + q[t-2]                  (frame 1: time1)
4      time2+seq        Δ²q[t, i] - Δ²q[t, i-1]                    (I only; frame 1: time1+seq)
=====  ===============  ==============================================================================

Every inverse is a (segmented) cumulative sum, so decoding is vectorized. Arithmetic is modulo 2**32 (numpy
int32 wraps), which is exact because every true value fits in int32.

Rigid 3+-site waters may instead code H1 and H2 by geometry (:mod:`~openmmflash.compactmd.watergeometry`: H1
on a sphere, H2 on a circle around O), chosen per chunk and group when it is smaller; its H2 errors add one extra
row per water at the end of the W stream.

Each water group is coded raw (no transform, best for closely spaced frames), with the linear in-molecule
residuals, or with the geometry, whichever has the smallest size proxy on the first frames.

Blob layout (version 5, docs/compactmd-format.md §5; value streams: :mod:`~openmmflash.compactmd.valuestream`,
water: :mod:`~openmmflash.compactmd.watertransform`): ``u8 version``, the water groups (``u32 nGroups``; per group
``u8 size, u8 kind`` (0 linear, 1 geometry, 2 raw), 3 float64 geometry parameters if kind 1,
``(size-1)(size-2)/2`` float64 coefficients), then S, W, I: ``u32 nBlocks, u8 mode[nBlocks]`` and the coded
residuals (:func:`_put_stream`; the W class in slot order with a segmentation flag, :func:`_put_slots`). Version 3
(still decoded) has the W class in atom order, coded like S and I.
"""

import struct

import numpy as np

from openmmflash.compactmd import kernels, limits, watertransform, workspace
from openmmflash.compactmd.valuestream import _decode_values, _encode_values, _encode_values_fast, _zigzag

MODES = ("space", "time1", "time1+seq", "time2", "time2+seq")
_VERSION = 5  # 5: W class in slot order, optionally one value stream per slot and coordinate; 3 is still read
_V3 = 3
_PLAIN_VERSION = 4  # tail chunks: every atom against the previous one (frame 0), then in time; no water transform
_SAMPLE_FRAMES = 8


def _space(a, mask):
    """Residual along atoms: a[:, i] - mask[i] * a[:, i-1]; a shape (F, n, 3), mask shape (n,) (mask[0] ignored)."""
    r = a.copy()
    if a.shape[1] > 1:
        m = mask[1:]
        if m.all():
            np.subtract(r[:, 1:], a[:, :-1], out=r[:, 1:])
        elif m.any():
            r[:, 1:] -= a[:, :-1] * m[None, :, None].astype(np.int32)
    return r


def _unspace(r, mask):
    """Inverse of :func:`_space`: a cumulative sum along atoms restarted where ``mask`` is False."""
    n = r.shape[1]
    if n < 2 or not mask[1:].any():
        return r.copy()
    c = np.cumsum(r, axis=1, dtype=np.int32)
    if mask[1:].all():
        return c
    prev = np.zeros_like(c)
    prev[:, 1:] = c[:, :-1]
    restart = np.where(~mask, np.arange(n), 0)
    restart[0] = 0
    start = np.maximum.accumulate(restart)
    return c - prev[:, start]


def _prefix_time(d, first):
    """Running sum over frames: out[0] = first, out[t] = out[t-1] + d[t-1]; d shape (F-1, n, 3)."""
    out = np.empty((d.shape[0] + 1,) + d.shape[1:], np.int32)
    out[0] = first
    for t in range(d.shape[0]):
        np.add(out[t], d[t], out=out[t + 1])
    return out


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


def _sample_frames(nf, samples):
    """``np.unique(np.linspace(min(2, nf - 1), nf - 1, min(samples, nf - 1)).astype(int))`` (nf >= 2), computed
    with Python floats in numpy's order of operations (it runs for every class of every chunk)."""
    lo, hi, k = min(2, nf - 1), nf - 1, min(samples, nf - 1)
    if k == 1:
        return np.array([lo], np.int64)
    step = (hi - lo) / (k - 1)
    return np.array(sorted({int(j * step + lo) for j in range(k - 1)} | {hi}), np.int64)


def _block_costs(q, seq, full, starts, weight=None):
    """Sum of |residual| per (mode, block) on up to ``_SAMPLE_FRAMES`` sample frames; shape (modes, blocks).

    ``weight`` (n,) bool restricts the cost to some atoms (the others' residuals are not transmitted)."""
    nf = q.shape[0]
    samples = max(2, min(_SAMPLE_FRAMES, 300_000 // max(1, q.shape[1] * 3)))
    ts = _sample_frames(nf, samples)
    ts2 = ts[ts >= 2]
    if kernels.HAVE_NUMBA:
        per = kernels.mode_costs(q, ts.astype(np.int64), full, seq)[:5 if len(ts2) else 3]
        if weight is not None:
            per = per * weight
        return np.add.reduceat(per, starts, axis=1) if per.shape[1] else np.zeros((len(per), len(starts)))
    d1 = q[ts] - q[ts - 1]
    cands = [_space(q[ts], full), d1, _space(d1, seq)]
    if len(ts2):
        d2 = (q[ts2] - q[ts2 - 1]) - (q[ts2 - 1] - q[ts2 - 2])
        cands += [d2, _space(d2, seq)]
    costs = np.empty((len(cands), len(starts)))
    for m, r in enumerate(cands):
        per_atom = np.abs(r, dtype=np.int64).sum(axis=(0, 2)) / r.shape[0]
        if weight is not None:
            per_atom = per_atom * weight
        costs[m] = np.add.reduceat(per_atom, starts) if len(per_atom) else 0.0
    return costs


class Layout:
    """Atom classes for a chunk of ``n`` atoms.

    Parameters
    ----------
    seqMask : bool (n,)   True where atom i is in the same residue as atom i-1
    waterMask : bool (n,), optional   True for atoms of water residues
    blockAtoms : int
    """

    def __init__(self, seqMask, waterMask=None, blockAtoms=4096):
        seq = np.asarray(seqMask, bool).copy()
        n = len(seq)
        if n:
            seq[0] = False
        self.n, self.blockAtoms = n, int(blockAtoms)
        water = np.zeros(n, bool) if waterMask is None else np.asarray(waterMask, bool)
        cls = np.where(seq, 2, 0).astype(np.int8)
        self.groups = []  # (size, first-atom indices) of waters with 3-5 sites
        starts = np.flatnonzero(~seq)
        if water.any() and len(starts):
            sizes = np.diff(np.append(starts, n))
            isw = water[starts]
            for size in (3, 4, 5):
                first = starts[isw & (sizes == size)]
                if len(first):
                    self.groups.append((size, first))
                    for k in range(1, size):
                        cls[first + k] = 1
        self.cls = cls
        self.S = np.flatnonzero(cls == 0)
        self.W = np.flatnonzero(cls == 1)
        self.inner = cls == 2
        self.nI = int(self.inner.sum())
        # The I class works on a compact array: its atoms plus the atoms just before them (chain roots).
        iidx = np.flatnonzero(self.inner)
        self.Iidx = np.union1d(iidx, iidx - 1).astype(np.int64) if len(iidx) else iidx
        m = len(self.Iidx)
        innerC = self.inner[self.Iidx]
        adjacent = np.zeros(m, bool)
        adjacent[1:] = self.Iidx[1:] == self.Iidx[:-1] + 1
        self.innerC = innerC
        self.innerIdx = np.flatnonzero(innerC)
        self.blocksI = np.arange(0, max(m, 1), self.blockAtoms)
        fullC = innerC & adjacent
        fullC[self.blocksI[self.blocksI < m]] = False
        self.fullI = fullC
        self.seqI = fullC.copy()

    def waterRows(self, slotOrder=True):
        """Per water group, int64 (nWaters, size - 1): the row of atom ``first + k`` in the W class array, in slot
        order (blob version 5: group by group, all k = 1 atoms, then all k = 2 atoms, ...; see :attr:`Wslots`) or
        in atom order (version 3, :attr:`W`)."""
        key = "_rowsSlot" if slotOrder else "_rowsAtom"
        if getattr(self, key, None) is None:
            if slotOrder:
                rows, base = [], 0
                for size, first in self.groups:
                    nw = len(first)
                    rows.append(base + np.arange(size - 1, dtype=np.int64)[None, :] * nw
                                + np.arange(nw, dtype=np.int64)[:, None])
                    base += nw * (size - 1)
            else:
                rows = [np.searchsorted(self.W, first[:, None] + np.arange(1, size)).astype(np.int64)
                        for size, first in self.groups]
            setattr(self, key, rows)
        return getattr(self, key)

    @property
    def Wslots(self):
        """The W atoms in slot order (blob version 5)."""
        if getattr(self, "_wslots", None) is None:
            self._wslots = np.concatenate([first + k for size, first in self.groups for k in range(1, size)]) \
                if self.groups else self.W
        return self._wslots

    def slotSegments(self, geometric):
        """Row ranges (lo, hi) of the W stream in slot order, one per group and slot k, then one per geometry
        group's extra rows (``geometric``: per group, whether it has them)."""
        bounds, pos = [], 0
        for size, first in self.groups:
            for k in range(1, size):
                bounds.append((pos, pos + len(first)))
                pos += len(first)
        for (size, first), geo in zip(self.groups, geometric):
            if geo:
                bounds.append((pos, pos + len(first)))
                pos += len(first)
        return bounds

    def compact_masks(self, m, spatial):
        """(block starts, full mask, seq mask) for a compact class array of ``m`` atoms (kept per layout; do not
        modify them)."""
        cache = self.__dict__.setdefault("_masks", {})
        key = (int(m), bool(spatial))
        if key not in cache:
            blocks = np.arange(0, max(m, 1), self.blockAtoms)
            full = np.full(m, bool(spatial))
            full[blocks[blocks < m]] = False
            cache[key] = (blocks, full, np.zeros(m, bool))
        return cache[key]


def _pick_modes(a, blocks, full, seq, weight=None, allowed=None):
    nf = a.shape[0]
    modes = np.zeros(len(blocks), np.uint8)
    if nf > 1 and a.shape[1]:
        costs = _block_costs(a, seq, full, blocks, weight)
        if allowed is not None:
            costs[[m for m in range(costs.shape[0]) if m not in allowed]] = np.inf
        modes[:] = np.argmin(costs, axis=0)
    return modes


def _assemble(a, modes, blocks, blockAtoms, full, seq):
    """Residual array for per-block modes."""
    if kernels.HAVE_NUMBA:
        return kernels.residual_blocks(a, np.ascontiguousarray(modes, np.uint8), blockAtoms, full, seq)
    r = None
    n = a.shape[1]
    for mode in np.unique(modes):
        rm = _residual(a, int(mode), seq, full)
        if r is None:
            r = rm
        else:
            sel = np.repeat(modes == mode, blockAtoms)[:n]
            r[:, sel] = rm[:, sel]
    return r


def _disassemble(r, modes, blockAtoms, full, seq, known=None, where=None, out=None):
    """Inverse of :func:`_assemble`. With ``known``/``where``: slots outside ``where`` take the residual that
    the known values give (their masks are False, so they depend on nothing else). ``out``: where to decode
    (compiled kernels only)."""
    if kernels.HAVE_NUMBA:
        if known is None:
            known, where = np.empty((0, 0, 3), np.int32), np.empty(0, bool)
        return kernels.unresidual_blocks(np.ascontiguousarray(r), np.ascontiguousarray(modes, np.uint8),
                                         blockAtoms, full, seq, np.ascontiguousarray(known), where, out)
    q = None
    n = r.shape[1]
    for mode in np.unique(modes):
        rr = r
        if known is not None:
            rr = _residual(known, int(mode), seq, full)
            rr[:, where] = r[:, where]
        qm = _unresidual(rr, int(mode), seq, full)
        if q is None:
            q = qm
        else:
            sel = np.repeat(modes == mode, blockAtoms)[:n]
            q[:, sel] = qm[:, sel]
    return q


def _count_escapes4(v):
    """How many values would escape 4-bit packing (zigzag >= 15)."""
    if kernels.HAVE_NUMBA:
        return int(kernels.zigzag_stats(np.ascontiguousarray(v, np.int32))[1][3])
    return int((_zigzag(v) >= 15).sum())


def _put_stream(out, zc, modes, r):
    """One class: ``u32 nBlocks, u8 modes[nBlocks], u8 split``, then either all frames as one value stream
    (split 0) or frame 0 and frames 1.. as two (split 1; frame 0 is coded in space and has much larger
    residuals, which would keep the other frames from being bit-packed)."""
    head = [struct.pack("<I", len(modes)), modes.tobytes()]
    rest = r[1:].reshape(-1)
    if kernels.HAVE_NUMBA:
        _put_stream_fast(out, zc, head, r, rest)
        return
    # Split only when frames 1.. could then be bit-packed (few values at or above the 4-bit escape).
    if r.shape[0] > 1 and rest.size and _count_escapes4(rest) * 256 <= rest.size:
        split = _encode_values(r[:1].reshape(-1), zc) + _encode_values(rest, zc)
        whole = _encode_values(r.reshape(-1), zc) if r.shape[0] <= 4 else None  # short chunks: compare
        if whole is None or len(split) < len(whole):
            out += head + [b"\x01", split]
            return
        out += head + [b"\x00", whole]
        return
    out += head + [b"\x00", _encode_values(r.reshape(-1), zc)]


def _put_stream_fast(out, zc, head, r, rest):
    """:func:`_put_stream` with each part zigzagged once (same bytes)."""
    flat = np.ascontiguousarray(r).reshape(-1)
    cut = flat.size - rest.size if r.shape[0] > 1 else flat.size
    _put_zigzagged(out, zc, head, r.shape[0], *kernels.zigzag_stats_split(flat, cut))


def _put_residuals(out, zc, modes, a, blockAtoms, full, seq, keep=None):
    """:func:`_put_stream` of the residuals of ``a`` (F, n, 3) for per-block ``modes`` (compiled: residuals
    zigzagged in one pass, never stored as int32); ``keep`` (n,) bool: only those atoms are transmitted."""
    nf, n = a.shape[:2]
    modes = np.ascontiguousarray(modes, np.uint8)
    head = [struct.pack("<I", len(modes)), modes.tobytes()]
    if keep is None:
        rank, nkeep = np.arange(n, dtype=np.int64), n
    else:
        rank = np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)
        nkeep = int(keep.sum())
    if not nkeep:
        _put_stream(out, zc, modes, np.zeros((nf, 0, 3), np.int32))
        return
    u, sa, sb = kernels.residual_zigzag(np.ascontiguousarray(a).reshape(nf, n * 3), modes, blockAtoms, full, seq,
                                        rank, nkeep, workspace.scratch("zigzag", nf * nkeep * 3, np.uint32))
    _put_zigzagged(out, zc, head, nf, u, sa, sb)


def _put_zigzagged(out, zc, head, nf, u, sa, sb):
    """The split decision and value streams of :func:`_put_stream` from zigzagged values ``u`` (frame 0 first)
    and the statistics of frame 0 (``sa``) and of frames 1.. (``sb``)."""
    cut = u.size // nf if nf > 1 else u.size
    rest_size = u.size - cut
    both = (u, np.array([max(sa[0], sb[0]), sa[1] + sb[1], sa[2] + sb[2], sa[3] + sb[3]]))
    if nf > 1 and rest_size and sb[3] * 256 <= rest_size:
        split = _encode_values_fast(None, zc, (u[:cut], sa)) + _encode_values_fast(None, zc, (u[cut:], sb))
        whole = _encode_values_fast(None, zc, both) if nf <= 4 else None  # short chunks: compare
        if whole is None or len(split) < len(whole):
            out += head + [b"\x01", split]
        else:
            out += head + [b"\x00", whole]
        return
    out += head + [b"\x00", _encode_values_fast(None, zc, both)]


def _put_slots(out, zc, modes, a, layout, full, seq, geometric):
    """The W class (slot order): ``u32 nBlocks, u8 modes[nBlocks], u8 segmented``; then, when all blocks code
    plain values and a group uses the rigid geometry (its slots: an axis code, offsets, an angle index and small
    errors, each with its own value distribution), one ``u8 split`` + value stream(s) per slot segment and
    coordinate; otherwise ``u8 split`` + value stream(s) of all rows as in :func:`_put_stream`."""
    r = _assemble(a, modes, None, layout.blockAtoms, full, seq) if a.shape[1] else a
    segmented = bool(len(modes)) and not modes.any() and a.shape[1] > 0 and any(geometric)
    out += [struct.pack("<I", len(modes)), np.ascontiguousarray(modes, np.uint8).tobytes(), bytes([segmented])]
    if not segmented:
        _put_body(out, zc, r)
        return
    for lo, hi in layout.slotSegments(geometric):
        for c in range(3):  # plain values: frame 0 is like the others, so one stream (split 0)
            out += [b"\x00", _encode_values(np.ascontiguousarray(r[:, lo:hi, c]).reshape(-1), zc)]


def _put_body(out, zc, r):
    """``u8 split`` and the value stream(s) of :func:`_put_stream` for residuals ``r`` (F, ...)."""
    k = len(out)
    _put_stream(out, zc, np.zeros(0, np.uint8), r)
    del out[k:k + 2]  # the empty block head


def _get_slots(blob, pos, nFrames, m, layout, geometric, dz):
    """Inverse of :func:`_put_slots` -> (modes, residuals (F, m, 3), new position)."""
    (nblocks,) = struct.unpack_from("<I", blob, pos)
    modes = np.frombuffer(blob[pos + 4:pos + 4 + nblocks], np.uint8)
    if (modes >= len(MODES)).any():
        raise ValueError("residual stream names an unknown predictor")
    segmented = blob[pos + 4 + nblocks]
    pos += 5 + nblocks
    if segmented == 0:
        _, r, pos = _get_body(blob, pos, nFrames, m * 3, dz)
        return modes, r.reshape(nFrames, m, 3), pos
    bounds = layout.slotSegments(geometric)
    if segmented != 1 or (bounds[-1][1] if bounds else 0) != m:
        raise ValueError("bad W stream segmentation")
    r = workspace.scratch("slots", (nFrames, m, 3), np.int32)
    for lo, hi in bounds:
        for c in range(3):
            _, v, pos = _get_body(blob, pos, nFrames, hi - lo, dz)
            r[:, lo:hi, c] = v.reshape(nFrames, hi - lo)
    return modes, r, pos


def _get_body(blob, pos, nFrames, count, dz):
    """Inverse of :func:`_put_body` for ``count`` values per frame -> (no modes, values, new position)."""
    return _get_stream(blob, pos, nFrames, count, dz, headless=True)


def _get_stream(blob, pos, nFrames, count, dz, headless=False):
    """Inverse of :func:`_put_stream` for ``count`` values per frame -> (modes, values, new position);
    ``headless``: no block head (a body of :func:`_put_body`)."""
    if headless:
        modes, nblocks = np.zeros(0, np.uint8), 0
        pos -= 4
    else:
        (nblocks,) = struct.unpack_from("<I", blob, pos)
        modes = np.frombuffer(blob[pos + 4:pos + 4 + nblocks], np.uint8)
        if (modes >= len(MODES)).any():
            raise ValueError("residual stream names an unknown predictor")
    split = blob[pos + 4 + nblocks]
    pos += 5 + nblocks
    out = workspace.scratch("values", count * nFrames, np.int32) if kernels.HAVE_NUMBA else None
    if split == 0:
        values, pos = _decode_values(blob, pos, count * nFrames, dz, out)
        return modes, values, pos
    if split != 1 or nFrames < 2:
        raise ValueError("bad residual stream split flag")
    if out is not None:
        _, pos = _decode_values(blob, pos, count, dz, out[:count])
        _, pos = _decode_values(blob, pos, count * (nFrames - 1), dz, out[count:])
        return modes, out, pos
    first, pos = _decode_values(blob, pos, count, dz)
    rest, pos = _decode_values(blob, pos, count * (nFrames - 1), dz)
    return modes, np.concatenate([first, rest]), pos


def encode(q, layout, level=1):
    """Code a chunk ``q`` (F, N, 3) int32 losslessly with the atom classes of ``layout``. Returns bytes."""
    q = np.ascontiguousarray(q, dtype=np.int32)
    nf, n, _ = q.shape
    wstream = None
    if kernels.HAVE_NUMBA:  # the W stream straight from q (t equals q outside the W atoms)
        t, extra = q, np.zeros((nf, 0, 3), np.int32)
        wstream, groups = watertransform.forward_stream(q, layout) if layout.groups else (None, [])
        groups = groups or []
    else:
        t, groups, extra = watertransform.forward(q, layout)
        if t is None:
            t, groups, extra = q, [], np.zeros((nf, 0, 3), np.int32)
    out = [struct.pack("<BI", _VERSION, len(groups))]
    for size, params, coefs in groups:
        kind = 2 if params == "raw" else int(params is not None)
        out.append(struct.pack("<BB", size, kind) + np.asarray(params if kind == 1 else [], "<f8").tobytes()
                   + np.concatenate(coefs).astype("<f8").tobytes())
    zc = limits.compressor(level)
    for idx, spatial in ((layout.S, True), (layout.Wslots, False)):
        a = wstream if not spatial and wstream is not None else \
            kernels.take_atoms(t, idx, workspace.scratch("class", (nf, len(idx), 3), np.int32))
        if not spatial and extra.shape[1]:
            a = np.concatenate([a, extra], axis=1)
        blocks, full, seq = layout.compact_masks(a.shape[1], spatial)
        modes = _pick_modes(a, blocks, full, seq, allowed=(0, 1, 3))
        if not spatial:
            _put_slots(out, zc, modes, a, layout, full, seq, [g[1] not in (None, "raw") for g in groups])
        elif kernels.HAVE_NUMBA:
            _put_residuals(out, zc, modes, a, layout.blockAtoms, full, seq)
        else:
            _put_stream(out, zc, modes, _assemble(a, modes, blocks, layout.blockAtoms, full, seq) if a.shape[1] else a)
    a = t if len(layout.Iidx) == n else \
        kernels.take_atoms(t, layout.Iidx, workspace.scratch("class", (nf, len(layout.Iidx), 3), np.int32))
    modes = _pick_modes(a, layout.blocksI, layout.fullI, layout.seqI, weight=layout.innerC)
    if kernels.HAVE_NUMBA:
        _put_residuals(out, zc, modes, a, layout.blockAtoms, layout.fullI, layout.seqI, layout.innerC)
        return b"".join(out)
    if layout.nI:
        r = kernels.take_atoms(_assemble(a, modes, layout.blocksI, layout.blockAtoms, layout.fullI, layout.seqI),
                               layout.innerIdx)
    else:
        r = t[:, :0]
    _put_stream(out, zc, modes, r)
    return b"".join(out)


def _plain_masks(n):
    full = np.ones(n, bool)
    full[0] = False
    return full, np.zeros(n, bool), np.ones(1, np.uint8)


def encode_plain(q, level=1):
    """Fast coding of a few frames (the tail of a file being written): blob version 4, ``u8 version`` then one
    value stream of the residuals of mode ``time1`` over all atoms as one block (frame 0: previous atom)."""
    q = np.ascontiguousarray(q, dtype=np.int32)
    nf, n, _ = q.shape
    full, seq, modes = _plain_masks(n)
    r = _assemble(q, modes, [0], max(n, 1), full, seq)
    return bytes([_PLAIN_VERSION]) + _encode_values(r.reshape(-1), limits.compressor(level))


def is_plain(blob):
    """True for a blob of :func:`encode_plain` (a tail chunk)."""
    return len(blob) > 0 and blob[0] == _PLAIN_VERSION


def _decode_plain(blob, nFrames, nAtoms):
    full, seq, modes = _plain_masks(nAtoms)
    r, pos = _decode_values(blob, 1, nFrames * nAtoms * 3, None)
    if pos != len(blob):
        raise ValueError("plain residual stream has trailing bytes")
    return _disassemble(r.reshape(nFrames, nAtoms, 3), modes, max(nAtoms, 1), full, seq)


def decode(blob, nFrames, nAtoms, layout, out=None):
    """Inverse of :func:`encode` (and of :func:`encode_plain`): int32 array of shape (nFrames, nAtoms, 3), written
    into ``out`` (C-contiguous int32 of that shape) when given, except for a plain blob."""
    blob = memoryview(blob)
    if len(blob) and blob[0] == _PLAIN_VERSION:
        return _decode_plain(blob, nFrames, nAtoms)
    version, ngroups = struct.unpack_from("<BI", blob, 0)
    if version not in (_VERSION, _V3):
        raise ValueError(f"unsupported residual stream version {version}")
    slots = version == _VERSION  # W class in slot order (version 5) or atom order (version 3)
    if layout.n != nAtoms:
        raise ValueError(f"layout has {layout.n} atoms, the chunk {nAtoms}")
    pos, groups, nextra = 5, [], 0
    for g in range(ngroups):
        size, geometric = blob[pos], blob[pos + 1]
        pos += 2
        params = "raw" if geometric == 2 else None
        if geometric == 1:
            params = tuple(np.frombuffer(blob[pos:pos + 24], "<f8").tolist())
            pos += 24
            nextra += len(layout.groups[g][1]) if g < len(layout.groups) else 0
        nc = (size - 1) * (size - 2) // 2
        flat = np.frombuffer(blob[pos:pos + 8 * nc], "<f8")
        groups.append((size, params, [flat[(k - 1) * (k - 2) // 2:(k - 1) * (k - 2) // 2 + k - 1]
                                      for k in range(2, size)]))
        pos += 8 * nc
    if ngroups and [g[0] for g in groups] != [g[0] for g in layout.groups]:
        raise ValueError("water groups of the chunk do not match the file's layout")
    dz = None  # value streams decompress through limits.decompress
    t = np.empty((nFrames, nAtoms, 3), np.int32) if out is None else out
    extra = np.zeros((nFrames, 0, 3), np.int32)
    for idx, spatial in ((layout.S, True), (layout.Wslots if slots else layout.W, False)):
        m = len(idx) + (0 if spatial else nextra)
        if slots and not spatial:
            geometric = [g[1] not in (None, "raw") for g in groups]
            modes, r, pos = _get_slots(blob, pos, nFrames, m, layout, geometric, dz)
        else:
            modes, r, pos = _get_stream(blob, pos, nFrames, m * 3, dz)
        blocks, full, seq = layout.compact_masks(m, spatial)
        if len(modes) != len(blocks):
            raise ValueError("residual stream does not match the atom count")
        if m:
            a = _disassemble(r.reshape(nFrames, m, 3), modes, layout.blockAtoms, full, seq,
                             out=workspace.scratch("S" if spatial else "W", (nFrames, m, 3), np.int32))
            if not spatial and ngroups and kernels.HAVE_NUMBA:
                wstream = a  # inverse_stream below writes the W atoms
                continue
            kernels.put_atoms(t, idx, a[:, :len(idx)])
            if not spatial:
                extra = a[:, len(idx):]
    modes, r, pos = _get_stream(blob, pos, nFrames, layout.nI * 3, dz)
    if len(modes) != len(layout.blocksI):
        raise ValueError("residual stream does not match the atom count")
    if layout.nI and kernels.HAVE_NUMBA:
        rpos = np.full(len(layout.Iidx), -1, np.int64)
        rpos[layout.innerIdx] = np.arange(len(layout.innerIdx))
        kernels.unresidual_inner(t, np.ascontiguousarray(r.reshape(nFrames, layout.nI, 3)), layout.Iidx,
                                 layout.innerC, rpos, np.ascontiguousarray(modes, np.uint8), layout.blockAtoms,
                                 layout.fullI, layout.seqI)
    elif layout.nI:
        known = t if len(layout.Iidx) == nAtoms else kernels.take_atoms(t, layout.Iidx)
        full = np.empty_like(known)
        kernels.put_atoms(full, layout.innerIdx, r.reshape(nFrames, layout.nI, 3))
        a = _disassemble(full, modes, layout.blockAtoms, layout.fullI, layout.seqI, known=known, where=layout.innerC)
        kernels.put_atoms(t, layout.Iidx[layout.innerC], kernels.take_atoms(a, layout.innerIdx))
    if ngroups and kernels.HAVE_NUMBA:
        watertransform.inverse_stream(t, wstream, layout, groups, slots)
    elif ngroups:
        t = watertransform.inverse(t, layout, groups, extra)
    return t
