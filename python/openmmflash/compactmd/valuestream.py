"""Entropy stage of CompactMD: a flat int32 array of residuals to bytes and back.

Values are zigzag-mapped to unsigned. When nearly all fit in 1, 2 or 4 bits they are packed 8, 4 or 2 per byte
(zstd's Huffman stage spends at least one bit per byte, so packing lets near-constant residuals cost well under a
bit), with the few larger ones as escapes; otherwise they are split into 1-4 byte planes, low byte first. Either
way zstandard codes the result.
"""

import struct

import numpy as np

from openmmflash.compactmd import kernels, limits, workspace

def _zigzag(r):
    return ((r << 1) ^ (r >> 31)).view(np.uint32)


def _unzigzag(u):
    return (u >> np.uint32(1)).view(np.int32) ^ -(u & np.uint32(1)).view(np.int32)


def _byte_planes(u):
    top = int(u.max()) if u.size else 0
    nbytes = max(1, (top.bit_length() + 7) // 8)
    return nbytes, [(u >> np.uint32(8 * k)).astype(np.uint8) if k else u.astype(np.uint8) for k in range(nbytes)]


def _from_byte_planes(p, count, nbytes):
    u = p[:count].astype(np.uint32)
    for k in range(1, nbytes):
        u |= p[k * count:(k + 1) * count].astype(np.uint32) << np.uint32(8 * k)
    return u


def _pack_bits(u, bits):
    per = 8 // bits
    v = np.zeros(-(-u.size // per) * per, np.uint8)
    v[:u.size] = u
    v = v.reshape(-1, per)
    packed = v[:, 0].copy()
    for j in range(1, per):
        packed |= v[:, j] << np.uint8(bits * j)
    return packed


def _unpack_bits(p, count, bits):
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    u = np.empty((len(p), per), np.uint32)
    for j in range(per):
        u[:, j] = (p >> np.uint8(bits * j)) & mask
    return u.reshape(-1)[:count]


def _encode_values(r, zc):
    """Flat int32 residuals -> bytes: ``u8 fmt`` then the body.

    fmt 1-4: ``u64 size`` + zstd of that many byte planes of zigzag(r), low byte first.
    fmt 0x81/0x82/0x84: values packed 8/4/2 per byte (1/2/4 bits; zstd's Huffman stage spends at least one bit per
    byte, so packing lets near-constant residuals cost well under one bit each); the largest code is an escape
    whose excess follows in a byte-plane sub-stream: ``u64 nEscapes, u64 size, zstd(packed), u8 fmt2, u64 size2,
    zstd(planes)``. Chosen when at most 1/256 of the values escape."""
    if kernels.HAVE_NUMBA:
        return _encode_values_fast(r, zc)
    u = _zigzag(r)
    n = u.size
    for bits in (1, 2, 4):
        esc = (1 << bits) - 1
        big = u >= esc
        nesc = int(big.sum())
        if n and nesc * 256 <= n:
            body = zc.compress(_pack_bits(np.minimum(u, esc).astype(np.uint8), bits).tobytes())
            nb, planes = _byte_planes(u[big] - np.uint32(esc))
            extra = zc.compress(b"".join(p.tobytes() for p in planes))
            return b"".join([struct.pack("<BQQ", 0x80 | bits, nesc, len(body)), body,
                             struct.pack("<BQ", nb, len(extra)), extra])
    nbytes, planes = _byte_planes(u)
    cobj = zc.compressobj(size=sum(p.nbytes for p in planes))
    body = b"".join([cobj.compress(p) for p in planes] + [cobj.flush()])
    return struct.pack("<BQ", nbytes, len(body)) + body


def _encode_values_fast(r, zc, zigzagged=None):
    """:func:`_encode_values` with the compiled kernels (same bytes); ``zigzagged``: the (u, stats) of
    :func:`kernels.zigzag_stats` for ``r`` when already computed."""
    u, (top, *ge) = zigzagged or kernels.zigzag_stats(np.ascontiguousarray(r, np.int32))
    n = u.size
    for bits, nesc in zip((1, 2, 4), ge):
        if n and nesc * 256 <= n:
            esc = np.uint32((1 << bits) - 1)
            body = zc.compress(kernels.pack_bits(u, bits))
            big = u[u >= esc] - esc
            nb = max(1, (int(big.max()).bit_length() + 7) // 8) if big.size else 1
            extra = zc.compress(kernels.byte_planes(big, nb))
            return b"".join([struct.pack("<BQQ", 0x80 | bits, nesc, len(body)), body,
                             struct.pack("<BQ", nb, len(extra)), extra])
    nbytes = max(1, (int(top).bit_length() + 7) // 8)
    body = zc.compress(kernels.byte_planes(u, nbytes, workspace.scratch("planes", nbytes * u.size, np.uint8)))
    return struct.pack("<BQ", nbytes, len(body)) + body


def _decode_values(blob, pos, count, dz, out=None):
    """Inverse of :func:`_encode_values` -> (int32 values, new position); with ``out`` (int32, count) the values
    are written there (compiled kernels only)."""
    if out is not None:
        return _decode_values_into(blob, pos, count, out)
    fmt = blob[pos]
    if fmt in (0x81, 0x82, 0x84):
        bits = fmt & 0x7F
        nesc, size = struct.unpack_from("<QQ", blob, pos + 1)
        pos += 17
        raw = limits.decompress(blob[pos:pos + size], size=-(-count // (8 // bits)), what="packed residual stream")
        pos += size
        p = np.frombuffer(raw, np.uint8)
        u = kernels.unpack_bits(p, count, bits) if kernels.HAVE_NUMBA else _unpack_bits(p, count, bits)
        escapes, pos = _read_escapes(blob, pos, count, nesc)
        where = np.flatnonzero(u == np.uint32((1 << bits) - 1))
        if len(where) != nesc:
            raise ValueError("escape count mismatch")
        u[where] += escapes
        return _unzigzag(u), pos
    if fmt not in (1, 2, 3, 4):
        raise ValueError(f"residual stream has an unknown format {fmt:#x}")
    (size,) = struct.unpack_from("<Q", blob, pos + 1)
    pos += 9
    raw = limits.decompress(blob[pos:pos + size], size=count * fmt, what="residual stream")
    p = np.frombuffer(raw, np.uint8)
    if kernels.HAVE_NUMBA:
        return kernels.from_planes_unzigzag(p, count, fmt, True), pos + size
    return _unzigzag(_from_byte_planes(p, count, fmt)), pos + size


def _read_escapes(blob, pos, count, nesc):
    """The escape stream at ``pos`` of a packed residual stream of ``count`` values with ``nesc`` escapes ->
    (excess over the escape code, uint32 [nesc], new position)."""
    nb, size = struct.unpack_from("<BQ", blob, pos)
    pos += 9
    if not 1 <= nb <= 4 or nesc > count:
        raise ValueError("bad escape stream")
    raw = limits.decompress(blob[pos:pos + size], size=nesc * nb, what="escape stream")
    return _from_byte_planes(np.frombuffer(raw, np.uint8), nesc, nb), pos + size


def _decode_values_into(blob, pos, count, out):
    """:func:`_decode_values` into ``out`` with the compiled kernels (one pass from the decompressed bytes)."""
    fmt = blob[pos]
    if fmt in (0x81, 0x82, 0x84):
        bits = fmt & 0x7F
        nesc, size = struct.unpack_from("<QQ", blob, pos + 1)
        pos += 17
        raw = limits.decompress_into(blob[pos:pos + size], workspace.scratch("raw", -(-count // (8 // bits)),
                                                                             np.uint8), "packed residual stream")
        pos += size
        escapes, pos = _read_escapes(blob, pos, count, nesc)
        if kernels.unpack_into(raw, count, bits, escapes, out) != nesc:
            raise ValueError("escape count mismatch")
        return out, pos
    if fmt not in (1, 2, 3, 4):
        raise ValueError(f"residual stream has an unknown format {fmt:#x}")
    (size,) = struct.unpack_from("<Q", blob, pos + 1)
    pos += 9
    raw = limits.decompress_into(blob[pos:pos + size], workspace.scratch("raw", count * fmt, np.uint8),
                                 "residual stream")
    kernels.planes_into(raw, count, fmt, out)
    return out, pos + size
