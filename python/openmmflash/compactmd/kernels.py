"""Compiled (numba) kernels for the hot loops of CompactMD, with the numpy code as reference and fallback.

Each kernel does in one pass over memory what the numpy reference in
:mod:`~openmmflash.compactmd.residualcoder` / :mod:`~openmmflash.compactmd.valuestream` does in several, and
gives bit-identical output (tests/test_compactkernels.py checks this on random data). Arithmetic is carried in
int64 and truncated to int32 on store, which equals numpy's int32 wrap-around (modulo 2**32).

Prediction modes per block of ``blockAtoms`` atoms (see residualcoder):
  0 space      r[t,i] = q[t,i] - full[i] q[t,i-1]
  1 time1      r[t,i] = q[t,i] - q[t-1,i]
  2 time1+seq  r[t,i] = D[t,i] - seq[i] D[t,i-1],    D = q[t] - q[t-1]
  3 time2      r[t,i] = q[t,i] - 2 q[t-1,i] + q[t-2,i]           (t = 1: time1)
  4 time2+seq  r[t,i] = E[t,i] - seq[i] E[t,i-1],    E = second difference (t = 1: time1+seq)
Frame 0 always uses mode 0. Decoding walks frames in order and atoms in order inside a frame, so every
neighbour a prediction needs is already decoded.

Set ``OPENMMFLASH_NO_NUMBA=1`` (or uninstall numba) to use the numpy code.
"""

import os

import numpy as np

try:
    if os.environ.get("OPENMMFLASH_NO_NUMBA"):
        raise ImportError
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised by the fallback test in a subprocess
    HAVE_NUMBA = False

if HAVE_NUMBA:
    _jit = numba.njit(cache=True, nogil=True, boundscheck=False)
    # IEEE division semantics (no zero-divisor checks; every divisor below is nonzero, so results are identical)
    _jitn = numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")

    @_jit
    def _code_row(x, p, pp, out, lo, hi, kind, full3, seq3, sign):
        """One frame of one block on flat (n*3,) rows: x current, p previous, pp the one before.
        sign=1: out = residual of x; sign=-1: x is the output being decoded in place from residuals ``out``.
        kind: 0 space, 1 time1, 2 time1+seq, 3 time2, 4 time2+seq (already mapped for frames 0 and 1).
        Indices are unsigned (no negative-index wraparound, so the loops vectorize): the masks must be False
        for the first atom (j < 3), which :func:`_masks3` ensures."""
        three = np.uint64(3)
        ulo, uhi = np.uint64(lo), np.uint64(hi)
        if sign > 0:
            if kind == 0:
                for j in range(ulo, uhi):
                    out[j] = np.int32(np.int64(x[j]) - (np.int64(x[j - three]) if full3[j] else 0))
            elif kind == 1:
                for j in range(ulo, uhi):
                    out[j] = np.int32(np.int64(x[j]) - p[j])
            elif kind == 2:
                for j in range(ulo, uhi):
                    d = np.int64(x[j]) - p[j]
                    if seq3[j]:
                        d -= np.int64(x[j - three]) - p[j - three]
                    out[j] = np.int32(d)
            elif kind == 3:
                for j in range(ulo, uhi):
                    out[j] = np.int32(np.int64(x[j]) - 2 * np.int64(p[j]) + pp[j])
            else:
                for j in range(ulo, uhi):
                    d = np.int64(x[j]) - 2 * np.int64(p[j]) + pp[j]
                    if seq3[j]:
                        d -= np.int64(x[j - three]) - 2 * np.int64(p[j - three]) + pp[j - three]
                    out[j] = np.int32(d)
        else:
            if kind == 0:
                for j in range(ulo, uhi):
                    x[j] = np.int32(np.int64(out[j]) + (np.int64(x[j - three]) if full3[j] else 0))
            elif kind == 1:
                for j in range(ulo, uhi):
                    x[j] = np.int32(np.int64(out[j]) + p[j])
            elif kind == 2:
                for j in range(ulo, uhi):
                    d = np.int64(out[j]) + p[j]
                    if seq3[j]:
                        d += np.int64(x[j - three]) - p[j - three]
                    x[j] = np.int32(d)
            elif kind == 3:
                for j in range(ulo, uhi):
                    x[j] = np.int32(np.int64(out[j]) + 2 * np.int64(p[j]) - pp[j])
            else:
                for j in range(ulo, uhi):
                    d = np.int64(out[j]) + 2 * np.int64(p[j]) - pp[j]
                    if seq3[j]:
                        d += np.int64(x[j - three]) - 2 * np.int64(p[j - three]) + pp[j - three]
                    x[j] = np.int32(d)

    @_jit
    def _frame_kind(mode, t):
        """Predictor of frame t in a block coded with ``mode``: none for the first frame, and the first-order one
        for the second frame of a second-order mode."""
        if t == 0:
            return np.int64(0)
        if t == 1 and mode >= 3:
            return mode - 2
        return mode

    @_jit
    def _previous(a, t):
        """Rows t - 1 and t - 2 of ``a`` (row t itself where they do not exist): what the predictors read."""
        p = a[t - 1] if t >= 1 else a[t]
        pp = a[t - 2] if t >= 2 else a[t]
        return p, pp

    @_jit
    def _masks3(full, seq):
        """Per-coordinate masks for :func:`_code_row`; the first atom never has a predecessor (every layout
        already has it so; forcing it keeps a hostile mask from indexing before the row)."""
        full3 = np.repeat(full, 3)
        seq3 = np.repeat(seq, 3)
        full3[:3] = False
        seq3[:3] = False
        return full3, seq3

    @_jit
    def _blocks(a, b, modes, blockAtoms, full, seq, sign, known, where):
        """Residuals of ``a`` into ``b`` (sign 1) or ``a`` decoded from residuals ``b`` (sign -1); shapes (F, n*3)."""
        nf, n3 = a.shape[0], a.shape[1]
        full3, seq3 = _masks3(full, seq)
        for blk in range(len(modes)):
            mode = np.int64(modes[blk])
            lo = blk * blockAtoms * 3
            hi = min(n3, lo + blockAtoms * 3)
            for t in range(nf):
                kind = _frame_kind(mode, t)
                p, pp = _previous(a, t)
                if sign < 0 and known.shape[1] == n3:
                    # known atoms have False masks: give them the residual that decodes to the known value
                    for j in range(lo, hi):
                        if not where[j // 3]:
                            pr = np.int64(0)
                            if kind == 1 or kind == 2:
                                pr = np.int64(p[j])
                            elif kind >= 3:
                                pr = 2 * np.int64(p[j]) - pp[j]
                            b[t, j] = np.int32(np.int64(known[t, j]) - pr)
                _code_row(a[t], p, pp, b[t], lo, hi, kind, full3, seq3, sign)

    @_jitn
    def residual_zigzag(a, modes, blockAtoms, full, seq, rank, nkeep, u):
        """Residuals of ``a`` (F, n*3) int32 as :func:`residual_blocks` gives them, zigzagged straight into a flat
        uint32 stream (frame-major) that keeps only atoms with ``rank[i] >= 0`` (at position ``rank[i]``);
        ``u`` (F * nkeep * 3,) uint32 receives them; returns (u, statistics of frame 0, statistics of frames 1..) as
        in :func:`zigzag_stats`."""
        nf, n3 = a.shape[0], a.shape[1]
        full3, seq3 = _masks3(full, seq)
        row = np.empty(n3, np.int32)
        st = np.zeros((2, 4), np.int64)
        for blk in range(len(modes)):
            mode = np.int64(modes[blk])
            lo = blk * blockAtoms * 3
            hi = min(n3, lo + blockAtoms * 3)
            for t in range(nf):
                kind = _frame_kind(mode, t)
                p, pp = _previous(a, t)
                _code_row(a[t], p, pp, row, lo, hi, kind, full3, seq3, 1)
                part = 0 if t == 0 else 1
                base = t * nkeep * 3
                top = np.uint32(st[part, 0])
                c1 = 0
                c3 = 0
                c15 = 0
                if nkeep * 3 == n3:  # every atom kept, in order: one flat (vectorizable) loop
                    for j in range(np.uint64(lo), np.uint64(hi)):
                        v = np.int64(row[j])
                        z = np.uint32(((v << 1) ^ (v >> 63)) & 0xFFFFFFFF)
                        u[base + j] = z
                        top = max(top, z)
                        c1 += z >= 1
                        c3 += z >= 3
                        c15 += z >= 15
                else:
                    for i in range(np.uint64(lo // 3), np.uint64(hi // 3)):
                        rk = rank[i]
                        if rk < 0:
                            continue
                        for c in range(3):
                            v = np.int64(row[3 * i + c])
                            z = np.uint32(((v << 1) ^ (v >> 63)) & 0xFFFFFFFF)
                            u[base + rk * 3 + c] = z
                            top = max(top, z)
                            c1 += z >= 1
                            c3 += z >= 3
                            c15 += z >= 15
                st[part, 0] = np.int64(top)
                st[part, 1] += c1
                st[part, 2] += c3
                st[part, 3] += c15
        return u, st[0], st[1]

    def residual_blocks(q, modes, blockAtoms, full, seq):
        """Residuals (F, n, 3) int32 of ``q`` (F, n, 3) int32 with one mode per block of ``blockAtoms``."""
        q = np.ascontiguousarray(q, np.int32)
        nf, n = q.shape[:2]
        r = np.empty_like(q)
        _blocks(q.reshape(nf, n * 3), r.reshape(nf, n * 3), modes, blockAtoms, full, seq, 1,
                np.empty((0, 0), np.int32), np.empty(0, np.bool_))
        return r

    def unresidual_blocks(r, modes, blockAtoms, full, seq, known, where, out=None):
        """Inverse of :func:`residual_blocks`. Where ``where[i]`` is False, atom i is taken from ``known``
        (F, n, 3) (its masks are False: nothing depends on its residual but itself); ``r`` is then overwritten
        at those atoms."""
        r = np.ascontiguousarray(r, np.int32)
        nf, n = r.shape[:2]
        q = np.empty_like(r) if out is None else out
        k2 = np.ascontiguousarray(known, np.int32)
        k2 = k2.reshape(k2.shape[0], k2.shape[1] * 3)
        _blocks(q.reshape(nf, n * 3), r.reshape(nf, n * 3), modes, blockAtoms, full, seq, -1, k2, where)
        return q

    @_jit
    def unresidual_inner(t, r, idx, inner, rpos, modes, blockAtoms, full, seq):
        """Decode the inner (I) class in place into ``t`` (F, N, 3) int32, whose other atoms are decoded.

        The I class is coded on a compact array: compact position c is atom ``idx[c]``; ``inner[c]`` marks the
        atoms to decode (the others are chain roots, already in ``t``), whose residuals are ``r[:, rpos[c]]``;
        ``full``/``seq`` are the compact masks. Same arithmetic as :func:`unresidual_blocks` on the compact
        array (int64, stored as int32), without gathering it: a root's value is read from ``t``."""
        nf = t.shape[0]
        m = len(idx)
        one, two = np.uint64(1), np.uint64(2)  # unsigned indices: no negative-index wraparound tests
        for blk in range(len(modes)):
            mode = np.int64(modes[blk])
            lo = blk * blockAtoms
            hi = min(m, lo + blockAtoms)
            for tt in range(np.uint64(nf)):
                kind = _frame_kind(mode, np.int64(tt))
                for c in range(np.uint64(lo), np.uint64(hi)):
                    if not inner[c]:
                        continue
                    i = np.uint64(idx[c])
                    ip = np.uint64(idx[c - one]) if c > 0 else i
                    k = np.uint64(rpos[c])
                    for d in range(3):
                        v = np.int64(r[tt, k, d])
                        if kind == 0:
                            if full[c]:
                                v += t[tt, ip, d]
                        elif kind == 1:
                            v += t[tt - one, i, d]
                        elif kind == 2:
                            v += t[tt - one, i, d]
                            if seq[c]:
                                v += np.int64(t[tt, ip, d]) - t[tt - one, ip, d]
                        elif kind == 3:
                            v += 2 * np.int64(t[tt - one, i, d]) - t[tt - two, i, d]
                        else:
                            v += 2 * np.int64(t[tt - one, i, d]) - t[tt - two, i, d]
                            if seq[c]:
                                v += np.int64(t[tt, ip, d]) - 2 * np.int64(t[tt - one, ip, d]) + t[tt - two, ip, d]
                        t[tt, i, d] = np.int32(v)

    @_jit
    def mode_costs(q, ts, full, seq):
        """Per-atom mean |residual| (5, n) over sample frames ``ts`` (all >= 1) for the five modes; modes 3
        and 4 average over the frames >= 2 only (0 where there is none)."""
        n = q.shape[1]
        out = np.zeros((5, n))
        n1 = 0
        n2 = 0
        for k in range(len(ts)):
            t = ts[k]
            n1 += 1
            if t >= 2:
                n2 += 1
            for i in range(n):
                for c in range(3):
                    v = np.int64(q[t, i, c])
                    out[0, i] += abs(v - (np.int64(q[t, i - 1, c]) if full[i] else 0))
                    d = v - np.int64(q[t - 1, i, c])
                    out[1, i] += abs(d)
                    dp = (np.int64(q[t, i - 1, c]) - np.int64(q[t - 1, i - 1, c])) if seq[i] else np.int64(0)
                    out[2, i] += abs(d - dp)
                    if t >= 2:
                        e = d - (np.int64(q[t - 1, i, c]) - np.int64(q[t - 2, i, c]))
                        out[3, i] += abs(e)
                        ep = np.int64(0)
                        if seq[i]:
                            ep = (np.int64(q[t, i - 1, c]) - 2 * np.int64(q[t - 1, i - 1, c])
                                  + np.int64(q[t - 2, i - 1, c]))
                        out[4, i] += abs(e - ep)
        for i in range(n):
            for m in range(3):
                out[m, i] /= max(n1, 1)
            for m in range(3, 5):
                out[m, i] = out[m, i] / n2 if n2 else 0.0
        return out

    @_jit
    def zigzag_stats(r):
        """zigzag(r) as uint32 and [max, #>=1, #>=3, #>=15] of it."""
        flat = r.reshape(-1)
        u, head, _ = zigzag_stats_split(flat, flat.size)
        return u, head

    @_jit
    def zigzag_stats_split(r, split):
        """:func:`zigzag_stats` of a flat int32 array in one pass, with the statistics of ``[:split]`` and
        ``[split:]`` apart: (u, stats of the head, stats of the rest)."""
        n = r.size
        u = np.empty(n, np.uint32)
        st = np.zeros((2, 4), np.int64)
        for part in range(2):
            lo, hi = (0, split) if part == 0 else (split, n)
            top = np.uint32(0)
            c1 = 0
            c3 = 0
            c15 = 0
            for j in range(lo, hi):
                v = np.int64(r[j])
                z = np.uint32(((v << 1) ^ (v >> 63)) & 0xFFFFFFFF)
                u[j] = z
                if z > top:
                    top = z
                c1 += z >= 1
                c3 += z >= 3
                c15 += z >= 15
            st[part, 0], st[part, 1], st[part, 2], st[part, 3] = np.int64(top), c1, c3, c15
        return u, st[0], st[1]

    @_jit
    def byte_planes_into(u, nbytes, p):
        """uint32 (n,) -> uint8 ``p`` (nbytes * n,): byte planes, low byte first."""
        n = u.size
        for k in range(nbytes):
            sh = np.uint32(8 * k)
            for j in range(n):
                p[k * n + j] = np.uint8((u[j] >> sh) & np.uint32(255))
        return p

    def byte_planes(u, nbytes, out=None):
        """uint32 (n,) -> uint8 (nbytes * n,): byte planes, low byte first (into ``out`` when given)."""
        return byte_planes_into(u, nbytes, np.empty(nbytes * u.size, np.uint8) if out is None else out)

    @_jit
    def from_planes_unzigzag(p, count, nbytes, zigzag):
        """uint8 byte planes -> uint32 (count,) or, with ``zigzag``, their unzigzagged int32."""
        out = np.empty(count, np.int32)
        for j in range(count):  # one pass: gather the planes and unzigzag
            v = np.int64(p[j])
            for k in range(1, nbytes):
                v |= np.int64(p[k * count + j]) << (8 * k)
            out[j] = np.int32(((v >> 1) ^ -(v & 1)) if zigzag else (v - (v >> 31 << 32)))
        return out

    @_jit
    def planes_into(p, count, nbytes, out):
        """Byte planes (as :func:`from_planes_unzigzag`) unzigzagged into the int32 array ``out`` (count,)."""
        if nbytes == 1:  # the common widths as straight loops (they vectorize)
            for j in range(count):
                v = np.int64(p[j])
                out[j] = np.int32((v >> 1) ^ -(v & 1))
        elif nbytes == 2:
            for j in range(count):
                v = np.int64(p[j]) | (np.int64(p[count + j]) << 8)
                out[j] = np.int32((v >> 1) ^ -(v & 1))
        elif nbytes == 3:
            for j in range(count):
                v = np.int64(p[j]) | (np.int64(p[count + j]) << 8) | (np.int64(p[2 * count + j]) << 16)
                out[j] = np.int32((v >> 1) ^ -(v & 1))
        elif nbytes == 4:
            for j in range(count):
                v = (np.int64(p[j]) | (np.int64(p[count + j]) << 8) | (np.int64(p[2 * count + j]) << 16)
                     | (np.int64(p[3 * count + j]) << 24))
                out[j] = np.int32((v >> 1) ^ -(v & 1))
        else:
            for j in range(count):
                v = np.int64(p[j])
                for k in range(1, nbytes):
                    v |= np.int64(p[k * count + j]) << (8 * k)
                out[j] = np.int32((v >> 1) ^ -(v & 1))

    @_jit
    def unpack_into(p, count, bits, escapes, out):
        """Bit-packed values (as :func:`unpack_bits`), the escape code ``2**bits - 1`` plus the next of
        ``escapes`` (uint32), unzigzagged into ``out`` (count,) int32; returns the number of escapes met (-1 when
        more than ``len(escapes)``)."""
        per = 8 // bits
        mask = np.int32((1 << bits) - 1)
        full = count // per
        if per == 2:  # unpack whole bytes with constant shifts (vectorizes), then the tail
            for b in range(np.uint64(full)):
                byte = np.int32(p[b])
                out[2 * b] = byte & mask
                out[2 * b + 1] = byte >> 4
        elif per == 4:
            for b in range(np.uint64(full)):
                byte = np.int32(p[b])
                out[4 * b] = byte & mask
                out[4 * b + 1] = (byte >> 2) & mask
                out[4 * b + 2] = (byte >> 4) & mask
                out[4 * b + 3] = byte >> 6
        else:
            for b in range(np.uint64(full)):
                byte = np.int32(p[b])
                for s in range(8):
                    out[8 * b + s] = (byte >> s) & mask
        for j in range(full * per, count):
            out[j] = (np.int32(p[j // per]) >> (bits * (j % per))) & mask
        esc = np.int64(mask)  # escapes and unzigzag in one pass
        k = 0
        for j in range(count):
            v = np.int64(out[j])
            if v == esc:
                if k >= len(escapes):
                    return -1
                v += np.int64(escapes[k])
                k += 1
            out[j] = np.int32((v >> 1) ^ -(v & 1))
        return k

    @_jit
    def pack_bits(u, bits):
        """uint32 (n,) -> uint8 packed ``8 // bits`` per byte, values clipped to the escape ``2**bits - 1``."""
        per = 8 // bits
        esc = np.uint32((1 << bits) - 1)
        n = u.size
        out = np.zeros(-(-n // per), np.uint8)
        full = n // per
        if per == 2:  # whole bytes with the shifts as constants (the loop vectorizes), then the tail
            for b in range(np.uint64(full)):
                out[b] = np.uint8(min(u[2 * b], esc) | (min(u[2 * b + 1], esc) << np.uint32(4)))
        elif per == 4:
            for b in range(np.uint64(full)):
                out[b] = np.uint8(min(u[4 * b], esc) | (min(u[4 * b + 1], esc) << np.uint32(2))
                                  | (min(u[4 * b + 2], esc) << np.uint32(4)) | (min(u[4 * b + 3], esc) << np.uint32(6)))
        else:
            for b in range(np.uint64(full)):
                acc = np.uint32(0)
                for s in range(8):
                    acc |= min(u[8 * b + s], esc) << np.uint32(s)
                out[b] = np.uint8(acc)
        for b in range(full, len(out)):
            acc = np.uint32(0)
            for s in range(n - b * per):
                acc |= min(u[b * per + s], esc) << np.uint32(bits * s)
            out[b] = np.uint8(acc)
        return out

    @_jit
    def unpack_bits(p, count, bits):
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        u = np.empty(count, np.uint32)
        for j in range(count):
            u[j] = (p[j // per] >> np.uint8(bits * (j % per))) & mask
        return u

    def quantize_f32(x, scale, limit, out=None):
        """rint(float32(x) * scale) as flat int32 (into ``out`` when given) while |x| <= limit; returns (q, ok).
        ``ok`` is False on NaN/Inf or |x| > limit (the caller then takes the checked numpy path)."""
        return quantize_f32_into(x, scale, limit, np.empty(x.size, np.int32) if out is None else out.reshape(-1))

    @_jit
    def quantize_f32_into(x, scale, limit, q):
        flat = x.reshape(-1)
        for j in range(flat.size):
            v = np.float32(flat[j])
            if not abs(v) <= limit:
                return q, False
            q[j] = np.int32(np.rint(v * scale))
        return q, True

    @_jit
    def quantize_exact(x, scale, inv, limit, q):
        """XTC grid integers rint(float64(x) * scale) into ``q`` (flat int32), each checked to decode exactly:
        float32(q) * inv == float32(x) (float32 arithmetic, as XTC readers decode). Returns the flat index of the
        first value that is not finite, beyond ``limit`` grid steps or off the grid, or -1."""
        flat = x.reshape(-1)
        for j in range(flat.size):
            v = np.float64(flat[j]) * scale
            if not abs(v) <= limit:
                return j
            k = np.rint(v)
            q[j] = np.int32(k)
            if np.float32(k) * inv != np.float32(flat[j]):
                return j
        return -1

    def dequantize_f32(q, step, out=None):
        """float32(q) * step as flat float32 (into ``out`` when given), and max |q|."""
        return dequantize_f32_into(q, step, np.empty(q.size, np.float32) if out is None else out.reshape(-1))

    @_jit
    def dequantize_f32_into(q, step, out):
        flat = q.reshape(-1)
        top = 0
        for j in range(flat.size):
            v = flat[j]
            top = max(top, abs(np.int64(v)))
            out[j] = np.float32(v) * step
        return out, top

    @_jit
    def _take(src, idx, out):
        for t in range(src.shape[0]):
            for k in range(len(idx)):
                i = np.uint64(idx[k])  # indices from a layout, never negative: no wraparound tests
                out[t, k, 0] = src[t, i, 0]
                out[t, k, 1] = src[t, i, 1]
                out[t, k, 2] = src[t, i, 2]

    @_jit
    def _put(dst, idx, src):
        for t in range(src.shape[0]):
            for k in range(len(idx)):
                i = np.uint64(idx[k])
                dst[t, i, 0] = src[t, k, 0]
                dst[t, i, 1] = src[t, k, 1]
                dst[t, i, 2] = src[t, k, 2]


    @_jitn
    def _water_frame(x0, x1, x2, u, e, w, v):
        """Orthonormal frame (u, w, v) of the O-H1 vector (x0, x1, x2): u along it, w = u x e / |u x e| with e the
        axis least aligned with u, v = u x w. Shared by encoder and decoder, so both compute it bit-identically;
        ``e`` is scratch."""
        n = np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)
        u[0], u[1], u[2] = x0 / n, x1 / n, x2 / n
        amin = 0
        for j in range(1, 3):
            if abs(u[j]) < abs(u[amin]):
                amin = j
        e[0], e[1], e[2] = 0.0, 0.0, 0.0
        e[amin] = 1.0
        w[0] = u[1] * e[2] - u[2] * e[1]
        w[1] = u[2] * e[0] - u[0] * e[2]
        w[2] = u[0] * e[1] - u[1] * e[0]
        wn = np.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
        w[0], w[1], w[2] = w[0] / wn, w[1] / wn, w[2] / wn
        v[0] = u[1] * w[2] - u[2] * w[1]
        v[1] = u[2] * w[0] - u[0] * w[2]
        v[2] = u[0] * w[1] - u[1] * w[0]

    @_jit
    def geometry_inverse(o, s1, s2, extra, r1, centre, rho, cs, sn):
        """Decoder of :mod:`watergeometry` (same float64 operations in the same order, so the same integers):
        int32 (F, nw, 3) O positions and slots -> (h1, h2, ok); ok False when an angle index is out of range."""
        nf, nw = o.shape[0], o.shape[1]
        h1 = np.empty_like(o)
        h2 = np.empty_like(o)
        kmax = len(cs) - 1
        d = np.empty(3, np.int64)
        u = np.empty(3)
        e = np.empty(3)
        w = np.empty(3)
        v = np.empty(3)
        for t in range(nf):
            for i in range(nw):
                code = np.int64(s1[t, i, 0])
                a = code % 3
                neg = (code // 3) % 2
                z = code // 6
                err = z // 2 if z % 2 == 0 else -(z + 1) // 2
                db = np.int64(s1[t, i, 1])
                dc = np.int64(s1[t, i, 2])
                mag = np.int64(np.rint(np.sqrt(max(0.0, r1 * r1 - np.float64(db * db + dc * dc)))))
                d[a] = (-mag if neg == 1 else mag) + err
                d[(a + 1) % 3] = db
                d[(a + 2) % 3] = dc
                x0, x1, x2 = np.float64(d[0]), np.float64(d[1]), np.float64(d[2])
                _water_frame(x0, x1, x2, u, e, w, v)
                k = np.int64(s2[t, i, 0])
                ak = abs(k)
                if ak > kmax:
                    return h1, h2, False
                c = cs[ak]
                sk = -sn[ak] if k < 0 else sn[ak]
                oo = (np.int64(o[t, i, 0]), np.int64(o[t, i, 1]), np.int64(o[t, i, 2]))
                e2 = (np.int64(s2[t, i, 1]), np.int64(s2[t, i, 2]), np.int64(extra[t, i, 0]))
                for j in range(3):
                    p = np.int64(np.rint(centre * u[j] + rho * (c * w[j] + sk * v[j])))
                    h1[t, i, j] = np.int32(oo[j] + d[j])
                    h2[t, i, j] = np.int32(oo[j] + p + e2[j])
        return h1, h2, True

    @_jit
    def geometry_forward(o, h1, h2, r1, centre, rho, step, cs, sn, maxOffset):
        """Encoder of :mod:`watergeometry` -> (s1, s2, extra, ok); ok False when a molecule is out of the safe
        range (the caller then codes the group otherwise). The H2 prediction repeats :func:`geometry_inverse`'s
        operations exactly; the angle index may come from any arctan2 (it is stored)."""
        nf, nw = o.shape[0], o.shape[1]
        s1 = np.empty_like(o)
        s2 = np.empty_like(o)
        extra = np.zeros_like(o)
        kmax = len(cs) - 1
        d = np.empty(3, np.int64)
        d2 = np.empty(3, np.int64)
        u = np.empty(3)
        e = np.empty(3)
        w = np.empty(3)
        v = np.empty(3)
        for t in range(nf):
            for i in range(nw):
                for j in range(3):
                    d[j] = np.int64(h1[t, i, j]) - o[t, i, j]
                    d2[j] = np.int64(h2[t, i, j]) - o[t, i, j]
                    if abs(d[j]) > maxOffset or abs(d2[j]) > maxOffset:
                        return s1, s2, extra, False
                x0, x1, x2 = np.float64(d[0]), np.float64(d[1]), np.float64(d[2])
                if np.sqrt(x0 ** 2 + x1 ** 2 + x2 ** 2) < 0.5 * r1:
                    return s1, s2, extra, False
                a = 0
                for j in range(1, 3):
                    if abs(d[j]) > abs(d[a]):
                        a = j
                da, db, dc = d[a], d[(a + 1) % 3], d[(a + 2) % 3]
                mag = np.int64(np.rint(np.sqrt(max(0.0, r1 * r1 - np.float64(db * db + dc * dc)))))
                neg = np.int64(1) if da < 0 else np.int64(0)
                err = da - (-mag if neg == 1 else mag)
                zz = 2 * err if err >= 0 else -2 * err - 1
                s1[t, i, 0] = np.int32((zz * 2 + neg) * 3 + a)
                s1[t, i, 1] = np.int32(db)
                s1[t, i, 2] = np.int32(dc)
                _water_frame(x0, x1, x2, u, e, w, v)
                rv = 0.0
                rw = 0.0
                for j in range(3):
                    rel = np.float64(d2[j]) - centre * u[j]
                    rv += rel * v[j]
                    rw += rel * w[j]
                k = np.int64(np.rint(np.arctan2(rv, rw) / step))
                k = min(max(k, -kmax), kmax)
                ak = abs(k)
                c = cs[ak]
                sk = -sn[ak] if k < 0 else sn[ak]
                s2[t, i, 0] = np.int32(k)
                for j in range(3):
                    p = np.int64(np.rint(centre * u[j] + rho * (c * w[j] + sk * v[j])))
                    r = np.int32(d2[j] - p)
                    if j < 2:
                        s2[t, i, j + 1] = r
                    else:
                        extra[t, i, 0] = r
        return s1, s2, extra, True

    @_jit
    def water_pred(q, first, k, coefs):
        """int64 (F, nw, 3): q[:, first] + rint(sum_j coefs[j] (q[:, first + j] - q[:, first])), j = 1..k-1,
        accumulated left to right in float64 as the numpy reference does."""
        nf, nw = q.shape[0], len(first)
        out = np.empty((nf, nw, 3), np.int64)
        for t in range(nf):
            for i in range(nw):
                f = first[i]
                for c in range(3):
                    base = np.int64(q[t, f, c])
                    if k == 1:
                        out[t, i, c] = base
                        continue
                    acc = 0.0
                    for j in range(1, k):
                        acc = acc + coefs[j - 1] * np.float64(np.int64(q[t, f + j, c]) - base)
                    out[t, i, c] = base + np.int64(np.rint(acc))
        return out

    @numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
    def _linear_pred(q, t, f, k, coefs, c):
        """Prediction of water atom f+k (k >= 1) from atom f and, for k >= 2, the offsets of atoms f+1..f+k-1 with
        coefficients ``coefs[k - 2, :k - 1]``; the arithmetic of :func:`water_pred`."""
        base = np.int64(q[t, f, c])
        if k == 1:
            return base
        acc = 0.0
        for j in range(1, k):
            acc = acc + coefs[k - 2, j - 1] * np.float64(np.int64(q[t, f + np.uint64(j), c]) - base)
        return base + np.int64(np.rint(acc))

    @numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
    def _frame9(x0, x1, x2):
        """:func:`_water_frame` on scalars (the same operations in the same order): (u, w, v) as 9 floats."""
        n = np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)
        u0, u1, u2 = x0 / n, x1 / n, x2 / n
        e0, e1, e2 = 1.0, 0.0, 0.0
        if abs(u1) < abs(u0):
            if abs(u2) < abs(u1):
                e0, e2 = 0.0, 1.0
            else:
                e0, e1 = 0.0, 1.0
        elif abs(u2) < abs(u0):
            e0, e2 = 0.0, 1.0
        w0 = u1 * e2 - u2 * e1
        w1 = u2 * e0 - u0 * e2
        w2 = u0 * e1 - u1 * e0
        wn = np.sqrt(w0 * w0 + w1 * w1 + w2 * w2)
        w0, w1, w2 = w0 / wn, w1 / wn, w2 / wn
        return u0, u1, u2, w0, w1, w2, u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0

    @numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
    def _h1_slots(d0, d1, d2, r1):
        """H1 offset -> (code, b, c) of :func:`geometry_forward`'s slot 0-2."""
        ia, da, db, dc = 0, d0, d1, d2
        if abs(d1) > abs(d0):
            ia, da, db, dc = 1, d1, d2, d0
            if abs(d2) > abs(d1):
                ia, da, db, dc = 2, d2, d0, d1
        elif abs(d2) > abs(d0):
            ia, da, db, dc = 2, d2, d0, d1
        mag = np.int64(np.rint(np.sqrt(max(0.0, r1 * r1 - np.float64(db * db + dc * dc)))))
        neg = np.int64(1) if da < 0 else np.int64(0)
        err = da - (-mag if neg == 1 else mag)
        zz = 2 * err if err >= 0 else -2 * err - 1
        return (zz * 2 + neg) * 3 + ia, db, dc

    @numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
    def _h1_offset(code, db, dc, r1):
        """Inverse of :func:`_h1_slots`: the H1 offset (d0, d1, d2)."""
        ia = code % 3
        neg = (code // 3) % 2
        z = code // 6
        err = z // 2 if z % 2 == 0 else -(z + 1) // 2
        mag = np.int64(np.rint(np.sqrt(max(0.0, r1 * r1 - np.float64(db * db + dc * dc)))))
        da = (-mag if neg == 1 else mag) + err
        if ia == 0:
            return da, db, dc
        if ia == 1:
            return dc, da, db
        return db, dc, da

    @numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy", inline="always")
    def _atan2(y, x):
        """arctan2 to about 1e-5 rad (only picks the stored angle index; any index decodes exactly)."""
        ax, ay = abs(x), abs(y)
        if ax == 0.0 and ay == 0.0:
            return 0.0
        swap = ay > ax
        z = ax / ay if swap else ay / ax
        z2 = z * z
        r = z * (0.99997726 + z2 * (-0.33262347 + z2 * (0.19354346 + z2 * (-0.11643287 + z2 * (0.05265332
                                                                                          - z2 * 0.01172120)))))
        if swap:
            r = 1.5707963267948966 - r
        if x < 0.0:
            r = 3.141592653589793 - r
        return -r if y < 0.0 else r

    @_jitn
    def water_stream_forward(q, first, rows, kind, coefs, r1, centre, rho, step, cs, sn, maxOffset, a, extraStart):
        """Fused in-molecule water transform of one group into the W stream ``a`` (F, m, 3) int32: atom
        ``first[i] + k`` (k = 1..size-1) goes to row ``rows[i, k - 1]``; kind 2 raw, 0 linear (residual of the
        linear prediction), 1 rigid geometry for H1/H2 (the slots of :func:`geometry_forward`, its extra value in
        row ``extraStart + i``) and linear for k >= 3. Returns False when a molecule is out of the safe range
        (the caller then codes the chunk without the transform); ``a`` is then partly written."""
        nf, nw, size = q.shape[0], len(first), rows.shape[1] + 1
        kmax = len(cs) - 1
        k0 = 3 if kind == 1 else 1
        invStep = 1.0 / step
        for t in range(nf):
            for i in range(nw):
                f = np.uint64(first[i])  # unsigned indices: no negative-index wraparound tests
                f1, f2 = f + np.uint64(1), f + np.uint64(2)
                ex = np.uint64(extraStart + i)
                if kind == 2:
                    for k in range(1, size):
                        for c in range(3):
                            a[t, np.uint64(rows[i, k - 1]), c] = q[t, f + np.uint64(k), c]
                    continue
                if kind == 1:
                    o0, o1, o2 = np.int64(q[t, f, 0]), np.int64(q[t, f, 1]), np.int64(q[t, f, 2])
                    d0, d1, d2 = q[t, f1, 0] - o0, q[t, f1, 1] - o1, q[t, f1, 2] - o2
                    g0, g1, g2 = q[t, f2, 0] - o0, q[t, f2, 1] - o1, q[t, f2, 2] - o2
                    if max(abs(d0), abs(d1), abs(d2), abs(g0), abs(g1), abs(g2)) > maxOffset:
                        return False
                    x0, x1, x2 = np.float64(d0), np.float64(d1), np.float64(d2)
                    if x0 * x0 + x1 * x1 + x2 * x2 < 0.25 * r1 * r1:  # |H1 - O| < r1 / 2
                        return False
                    code, db, dc = _h1_slots(d0, d1, d2, r1)
                    row1, row2 = np.uint64(rows[i, 0]), np.uint64(rows[i, 1])
                    a[t, row1, 0] = np.int32(code)
                    a[t, row1, 1] = np.int32(db)
                    a[t, row1, 2] = np.int32(dc)
                    u0, u1, u2, w0, w1, w2, v0, v1, v2 = _frame9(x0, x1, x2)
                    r0 = np.float64(g0) - centre * u0
                    rr1 = np.float64(g1) - centre * u1
                    r2 = np.float64(g2) - centre * u2
                    rv = r0 * v0 + rr1 * v1 + r2 * v2
                    rw = r0 * w0 + rr1 * w1 + r2 * w2
                    kk = np.int64(np.rint(_atan2(rv, rw) * invStep))
                    kk = min(max(kk, -kmax), kmax)
                    ak = abs(kk)
                    cc = cs[ak]
                    sk = -sn[ak] if kk < 0 else sn[ak]
                    a[t, row2, 0] = np.int32(kk)
                    a[t, row2, 1] = np.int32(g0 - np.int64(np.rint(centre * u0 + rho * (cc * w0 + sk * v0))))
                    a[t, row2, 2] = np.int32(g1 - np.int64(np.rint(centre * u1 + rho * (cc * w1 + sk * v1))))
                    a[t, ex, 0] = np.int32(g2 - np.int64(np.rint(centre * u2 + rho * (cc * w2 + sk * v2))))
                    a[t, ex, 1] = 0
                    a[t, ex, 2] = 0
                for k in range(k0, size):
                    for c in range(3):
                        r = np.int64(q[t, f + np.uint64(k), c]) - _linear_pred(q, t, f, k, coefs, c)
                        if abs(r) > 268435456:  # 2**28
                            return False
                        a[t, np.uint64(rows[i, k - 1]), c] = np.int32(r)
        return True

    @_jitn
    def water_stream_inverse(q, a, first, rows, kind, coefs, r1, centre, rho, cs, sn, extraStart):
        """Inverse of :func:`water_stream_forward`: writes atoms ``first[i] + k`` of ``q`` (whose atoms
        ``first`` are decoded) from the W stream ``a``; same float64 operations as :func:`geometry_inverse` and
        :func:`water_pred`. Returns False when an angle index is out of range."""
        nf, nw, size = q.shape[0], len(first), rows.shape[1] + 1
        kmax = len(cs) - 1
        k0 = 3 if kind == 1 else 1
        for t in range(nf):
            for i in range(nw):
                f = np.uint64(first[i])  # unsigned indices: no negative-index wraparound tests
                f1, f2 = f + np.uint64(1), f + np.uint64(2)
                ex = np.uint64(extraStart + i)
                if kind == 2:
                    for k in range(1, size):
                        for c in range(3):
                            q[t, f + np.uint64(k), c] = a[t, np.uint64(rows[i, k - 1]), c]
                    continue
                if kind == 1:
                    row1, row2 = np.uint64(rows[i, 0]), np.uint64(rows[i, 1])
                    d0, d1, d2 = _h1_offset(np.int64(a[t, row1, 0]), np.int64(a[t, row1, 1]),
                                            np.int64(a[t, row1, 2]), r1)
                    u0, u1, u2, w0, w1, w2, v0, v1, v2 = _frame9(np.float64(d0), np.float64(d1), np.float64(d2))
                    kk = np.int64(a[t, row2, 0])
                    ak = abs(kk)
                    if ak > kmax:
                        return False
                    cc = cs[ak]
                    sk = -sn[ak] if kk < 0 else sn[ak]
                    o0, o1, o2 = np.int64(q[t, f, 0]), np.int64(q[t, f, 1]), np.int64(q[t, f, 2])
                    q[t, f1, 0] = np.int32(o0 + d0)
                    q[t, f1, 1] = np.int32(o1 + d1)
                    q[t, f1, 2] = np.int32(o2 + d2)
                    q[t, f2, 0] = np.int32(o0 + np.int64(np.rint(centre * u0 + rho * (cc * w0 + sk * v0)))
                                              + a[t, row2, 1])
                    q[t, f2, 1] = np.int32(o1 + np.int64(np.rint(centre * u1 + rho * (cc * w1 + sk * v1)))
                                              + a[t, row2, 2])
                    q[t, f2, 2] = np.int32(o2 + np.int64(np.rint(centre * u2 + rho * (cc * w2 + sk * v2)))
                                              + a[t, ex, 0])
                for k in range(k0, size):
                    for c in range(3):
                        q[t, f + np.uint64(k), c] = np.int32(np.int64(a[t, np.uint64(rows[i, k - 1]), c])
                                                  + _linear_pred(q, t, f, k, coefs, c))
        return True


    @_jit
    def l1_sums(a):
        """Sums of |a|, |first time differences| and |second time differences| of an int array (F, n, 3) of any
        layout, as int64 (for :func:`watertransform.l1_cost`)."""
        s0 = np.int64(0)
        s1 = np.int64(0)
        s2 = np.int64(0)
        for t in range(a.shape[0]):
            for i in range(a.shape[1]):
                for c in range(3):
                    v = np.int64(a[t, i, c])
                    s0 += abs(v)
                    if t >= 1:
                        d = v - np.int64(a[t - 1, i, c])
                        s1 += abs(d)
                        if t >= 2:
                            s2 += abs(d - (np.int64(a[t - 1, i, c]) - np.int64(a[t - 2, i, c])))
        return s0, s1, s2

    @_jit
    def rotation_table(c1, s1, kmax):
        """cos(k step), sin(k step) for k = 0..kmax by the rotation recurrence from (c1, s1) = (cos, sin)(step),
        the operations of :func:`watergeometry._table`."""
        cs = np.empty(kmax + 1)
        sn = np.empty(kmax + 1)
        cs[0], sn[0] = 1.0, 0.0
        for k in range(kmax):
            c, s = cs[k], sn[k]
            cs[k + 1] = c * c1 - s * s1
            sn[k + 1] = s * c1 + c * s1
        return cs, sn

    @_jit
    def ints_text(a):
        """ASCII bytes of ``" ".join(map(str, a))`` for an int64 array (uint8 array)."""
        out = np.empty(a.size * 21, np.uint8)
        digits = np.empty(20, np.uint8)
        pos = 0
        for j in range(a.size):
            if j:
                out[pos] = 32
                pos += 1
            v = a[j]
            if v < 0:
                out[pos] = 45
                pos += 1
            m = np.uint64(-v) if v < 0 else np.uint64(v)
            nd = 0
            while True:
                digits[nd] = np.uint8(48 + m % np.uint64(10))
                nd += 1
                m //= np.uint64(10)
                if m == 0:
                    break
            for k in range(nd - 1, -1, -1):
                out[pos] = digits[k]
                pos += 1
        return out[:pos]


def take_atoms(a, idx, out=None):
    """``a[:, idx]`` as a C-contiguous array; a (F, N, 3), idx int (k,) in 0..N-1 (numpy's result is not
    C-ordered); written into ``out`` when given."""
    idx = np.asarray(idx, np.int64)
    if not HAVE_NUMBA:
        return np.ascontiguousarray(a[:, idx])
    if out is None:
        out = np.empty((a.shape[0], len(idx), 3), a.dtype)
    _take(a, idx, out)
    return out


def put_atoms(dst, idx, src):
    """``dst[:, idx] = src`` in place; dst (F, N, 3), idx int (k,) in 0..N-1, src (F, k, 3)."""
    idx = np.asarray(idx, np.int64)
    if not HAVE_NUMBA:
        dst[:, idx] = src
        return
    _put(dst, idx, src)
