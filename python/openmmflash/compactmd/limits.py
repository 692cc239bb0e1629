"""Sanity limits applied to every field read from a CompactMD file before memory is allocated for it, and a
zstandard decompression that never trusts the size a frame declares.

A damaged or hostile file can claim any atom count, frame count or decompressed size; these checks turn such
claims into a clear ``ValueError`` (``CorruptChunkError`` at the container level) instead of an allocation that
exhausts memory. The limits are far above any real trajectory (a chunk may decode to at most
``max(MIN_DECODE_BYTES, DECODE_RATIO * its stored size)`` bytes of int32 grid coordinates).
"""

import threading

import zstandard

_local = threading.local()  # zstd contexts are reused per thread (creating one costs tens of microseconds)


def compressor(level):
    """A ``zstandard.ZstdCompressor`` at ``level`` for this thread (content size written, as
    :func:`decompress` requires)."""
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor():
    dz = getattr(_local, "decompressor", None)
    if dz is None:
        dz = _local.decompressor = zstandard.ZstdDecompressor()
    return dz

MAX_ATOMS = 2**26                 # atoms per file (67 million)
MAX_CHUNK_FRAMES = 2**24          # frames per chunk
MAX_META_BYTES = 2**28            # decompressed header (JSON with the topology)
MIN_DECODE_BYTES = 2**28          # 256 MiB: a chunk may always decode to this much
DECODE_RATIO = 1024               # ... or to this many times its stored size
ZSTD_MAX_RATIO = 32768            # a zstd frame expands at most ~32768x (128 KiB RLE blocks of 4 bytes each)


def check_chunk_size(nFrames, nAtoms, storedBytes, where="chunk"):
    """Raise ValueError unless a chunk of ``nFrames`` x ``nAtoms`` stored in ``storedBytes`` is plausible."""
    if not 1 <= nFrames <= MAX_CHUNK_FRAMES:
        raise ValueError(f"{where} claims {nFrames} frames (allowed 1..{MAX_CHUNK_FRAMES}); the file is damaged")
    decoded = nFrames * nAtoms * 12
    if decoded > max(MIN_DECODE_BYTES, DECODE_RATIO * storedBytes):
        raise ValueError(f"{where} claims {nFrames} frames of {nAtoms} atoms ({decoded / 2**30:.3g} GiB decoded) "
                         f"from only {storedBytes} stored bytes; refusing to allocate (the file is damaged or "
                         f"not a real trajectory)")


def decompress_into(data, out, what="compressed block"):
    """zstd-decompress ``data`` (bytes-like) into the writable buffer ``out`` (e.g. a uint8 array), which it must
    fill exactly; the declared size is checked first, as in :func:`decompress`. Returns ``out``."""
    size = out.nbytes
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as err:
        raise ValueError(f"{what} is not valid zstd data ({err})") from None
    if declared < 0:
        raise ValueError(f"{what} does not record its decompressed size; the file is damaged")
    if declared != size:
        raise ValueError(f"{what} declares {declared} bytes, expected exactly {size}")
    view = memoryview(out).cast("B")
    got = 0
    try:
        reader = _decompressor().stream_reader(data)
        while got < size:
            n = reader.readinto(view[got:])
            if not n:
                break
            got += n
    except zstandard.ZstdError as err:
        raise ValueError(f"{what} could not be decompressed ({err})") from None
    if got != size:
        raise ValueError(f"{what} holds {got} bytes, expected exactly {size}")
    return out


def decompress(data, size=None, limit=None, what="compressed block"):
    """zstd-decompress ``data``: exactly ``size`` bytes, or at most ``limit`` bytes; ValueError otherwise.

    The content size written in the zstd frame header is checked before anything is allocated (python-zstandard
    would otherwise allocate whatever the header declares)."""
    data = bytes(data)
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as err:
        raise ValueError(f"{what} is not valid zstd data ({err})") from None
    cap = size if size is not None else limit
    if declared < 0:
        raise ValueError(f"{what} does not record its decompressed size; the file is damaged")
    if declared > ZSTD_MAX_RATIO * len(data) + 2**17:
        raise ValueError(f"{what} declares {declared} bytes from {len(data)} stored bytes, more than zstd can "
                         f"expand; the file is damaged")
    if declared > cap or (size is not None and declared != size):
        raise ValueError(f"{what} declares {declared} bytes, expected {'exactly ' if size is not None else 'at most '}"
                         f"{cap}")
    try:
        out = _decompressor().decompress(data, max_output_size=max(int(cap), 1))
    except zstandard.ZstdError as err:
        raise ValueError(f"{what} could not be decompressed ({err})") from None
    if (size is not None and len(out) != size) or len(out) > cap:
        raise ValueError(f"{what} holds {len(out)} bytes, expected {'exactly ' if size is not None else 'at most '}"
                         f"{cap}")
    return out
