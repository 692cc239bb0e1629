"""The CompactMD container (``.cmdx``): header, checksummed chunks, index and footer.

Layout (all integers little-endian; the full specification is docs/compactmd-format.md)::

    header   MAGIC(8) u32 version u32 metaLen  zstd(JSON metadata)  u32 crc32(meta)
    chunk*   "CMXC" u32 nFrames u64 payloadLen i64 firstStep i64 lastStep u32 crc32(payload) u32 crc32(head)
             payload = u32 infoLen zstd(steps i64[n], times f64[n], hasBox u8[n], boxes f64[n,3,3]) codec-blob
    index    "CMXI" u32 nChunks  (u64 offset u32 nFrames i64 firstStep i64 lastStep)*nChunks  u32 crc32
    footer   u64 indexOffset u32 crc32(indexOffset) "CMXE"

The index and footer are written by ``close()``. A file without them (a crash, a copy cut short) is read by
walking the chunk headers from the start up to the last complete chunk. Checksums are verified on every read; a
mismatch raises :class:`CorruptChunkError` with the byte offset and frame range, never returns data.
"""

import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

MAGIC = b"\x89CMDX\r\n\x1a"
VERSION = 2  # 2: compact topology columns (topology.to_file_dict); 1 is still read
CHUNK_MAGIC = b"CMXC"
INDEX_MAGIC = b"CMXI"
FOOTER_MAGIC = b"CMXE"
_CHUNK_HEAD = struct.Struct("<4sIQqqII")  # 40 bytes
_INDEX_ENTRY = struct.Struct("<QIqq")  # 28 bytes
_FOOTER = struct.Struct("<QI4s")  # 16 bytes
EXTENSION = ".cmdx"


class CorruptChunkError(ValueError):
    """A chunk, the header or the index failed its checksum or structure check."""

    def __init__(self, message, offset=None, chunk=None, frames=None):
        super().__init__(message)
        self.offset, self.chunk, self.frames = offset, chunk, frames


class IncompleteFileWarning(UserWarning):
    """The file was not closed cleanly (no valid index); it is read up to its last complete chunk."""


def crc(data):
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class ChunkInfo:
    """Where one chunk lies: byte ``offset`` of its head, ``nFrames``, first and last MD step."""

    offset: int
    nFrames: int
    firstStep: int
    lastStep: int


def pack_header(meta):
    """Bytes of the file header for the metadata dict ``meta``."""
    body = zstandard.ZstdCompressor(level=9).compress(json.dumps(meta, sort_keys=True).encode())
    return MAGIC + struct.pack("<II", VERSION, len(body)) + body + struct.pack("<I", crc(body))


def read_header(f):
    """Parse the header at the start of ``f``; returns (meta dict, offset of the first chunk)."""
    f.seek(0)
    start = f.read(16)
    if len(start) < 16 or start[:8] != MAGIC:
        raise ValueError(f"{getattr(f, 'name', 'file')} is not a CompactMD file (bad magic number)")
    version, size = struct.unpack("<II", start[8:16])
    if version > VERSION:
        raise ValueError(f"CompactMD format version {version} is newer than this openmmflash reads ({VERSION}); "
                         f"upgrade openmm-flash")
    body = f.read(size)
    tail = f.read(4)
    if len(body) < size or len(tail) < 4:
        raise CorruptChunkError("the file header is cut short", offset=16)
    if struct.unpack("<I", tail)[0] != crc(body):
        raise CorruptChunkError("the file header failed its checksum (offset 16)", offset=16)
    return json.loads(zstandard.ZstdDecompressor().decompress(body)), 16 + size + 4


def pack_chunk(nFrames, steps, times, boxes, blob):
    """Bytes of one chunk. ``boxes`` (n, 3, 3) nm with NaN rows for frames without a box."""
    boxes = np.asarray(boxes, np.float64).reshape(nFrames, 3, 3)
    has = np.isfinite(boxes).all(axis=(1, 2))
    info = b"".join([np.asarray(steps, "<i8").tobytes(), np.asarray(times, "<f8").tobytes(),
                     has.astype(np.uint8).tobytes(), np.where(has[:, None, None], boxes, 0.0).astype("<f8").tobytes()])
    info = zstandard.ZstdCompressor(level=3).compress(info)
    payload = struct.pack("<I", len(info)) + info + blob
    head = _CHUNK_HEAD.pack(CHUNK_MAGIC, nFrames, len(payload), int(steps[0]), int(steps[-1]), crc(payload), 0)
    head = head[:-4] + struct.pack("<I", crc(head[:-4]))
    return head + payload


def unpack_payload(payload, nFrames):
    """Split a verified chunk payload into (steps, times, boxes, codec blob)."""
    (size,) = struct.unpack_from("<I", payload, 0)
    info = zstandard.ZstdDecompressor().decompress(payload[4:4 + size], max_output_size=nFrames * 89)
    if len(info) != nFrames * 89:
        raise ValueError("chunk frame information has the wrong size")
    steps = np.frombuffer(info, "<i8", nFrames, 0).astype(np.int64)
    times = np.frombuffer(info, "<f8", nFrames, 8 * nFrames).astype(np.float64)
    has = np.frombuffer(info, np.uint8, nFrames, 16 * nFrames).astype(bool)
    boxes = np.frombuffer(info, "<f8", 9 * nFrames, 17 * nFrames).reshape(nFrames, 3, 3).copy()
    boxes[~has] = np.nan
    return steps, times, boxes, payload[4 + size:]


def read_chunk_head(f, offset, fileSize):
    """(ChunkInfo, payload crc) of the chunk at ``offset``; None if the file ends inside it (incomplete)."""
    if offset + _CHUNK_HEAD.size > fileSize:
        return None
    f.seek(offset)
    raw = f.read(_CHUNK_HEAD.size)
    magic, n, plen, first, last, pcrc, hcrc = _CHUNK_HEAD.unpack(raw)
    if magic != CHUNK_MAGIC or hcrc != crc(raw[:-4]):
        raise CorruptChunkError(f"chunk head at byte {offset} is corrupt (bad magic or checksum)", offset=offset)
    if offset + _CHUNK_HEAD.size + plen > fileSize:
        return None
    return ChunkInfo(offset, n, first, last), pcrc


def read_payload(f, info, index=None, frameStart=None):
    """Read and verify the payload of chunk ``info``; raises CorruptChunkError on any mismatch."""
    f.seek(info.offset)
    raw = f.read(_CHUNK_HEAD.size)
    where = f"chunk {index} (byte {info.offset}" + (f", frames {frameStart}-{frameStart + info.nFrames - 1})"
                                                      if frameStart is not None else ")")
    frames = (frameStart, frameStart + info.nFrames) if frameStart is not None else None
    if len(raw) < _CHUNK_HEAD.size:
        raise CorruptChunkError(f"{where} is cut short", info.offset, index, frames)
    magic, n, plen, first, last, pcrc, hcrc = _CHUNK_HEAD.unpack(raw)
    if magic != CHUNK_MAGIC or hcrc != crc(raw[:-4]) or (n, first, last) != (info.nFrames, info.firstStep,
                                                                             info.lastStep):
        raise CorruptChunkError(f"{where}: head is corrupt or disagrees with the index", info.offset, index, frames)
    payload = f.read(plen)
    if len(payload) < plen or crc(payload) != pcrc:
        raise CorruptChunkError(f"{where} failed its checksum: the data is corrupt and was not returned",
                                info.offset, index, frames)
    return payload


def pack_index(chunks, indexOffset):
    body = INDEX_MAGIC + struct.pack("<I", len(chunks)) + b"".join(
        _INDEX_ENTRY.pack(c.offset, c.nFrames, c.firstStep, c.lastStep) for c in chunks)
    body += struct.pack("<I", crc(body))
    return body + _FOOTER.pack(indexOffset, crc(struct.pack("<Q", indexOffset)), FOOTER_MAGIC)


def read_index(f, dataStart, fileSize):
    """Chunk list from the index; None when the file has no valid footer (then scan).

    Raises CorruptChunkError when the footer is valid but the index it points to is corrupt.
    """
    if fileSize < dataStart + _FOOTER.size:
        return None
    f.seek(fileSize - _FOOTER.size)
    offset, fcrc, magic = _FOOTER.unpack(f.read(_FOOTER.size))
    if magic != FOOTER_MAGIC or fcrc != crc(struct.pack("<Q", offset)) or not dataStart <= offset < fileSize:
        return None
    f.seek(offset)
    body = f.read(fileSize - _FOOTER.size - offset)
    n = struct.unpack_from("<I", body, 4)[0] if len(body) >= 8 else -1
    if body[:4] != INDEX_MAGIC or len(body) != 12 + n * _INDEX_ENTRY.size or crc(body[:-4]) != struct.unpack(
            "<I", body[-4:])[0]:
        raise CorruptChunkError(f"the chunk index at byte {offset} is corrupt; the chunks may be intact: open "
                                f"with recover=True to rebuild the index from the chunk heads", offset=offset)
    chunks = [ChunkInfo(*_INDEX_ENTRY.unpack_from(body, 8 + k * _INDEX_ENTRY.size)) for k in range(n)]
    end = dataStart
    for k, c in enumerate(chunks):
        if c.offset != end or c.nFrames < 1:
            raise CorruptChunkError(f"the chunk index at byte {offset} is inconsistent (entry {k})", offset=offset)
        f.seek(c.offset + 8)
        (plen,) = struct.unpack("<Q", f.read(8))
        end = c.offset + _CHUNK_HEAD.size + plen
    if end != offset:
        raise CorruptChunkError(f"the chunk index at byte {offset} does not match the chunks", offset=offset)
    return chunks


def scan_chunks(f, dataStart, fileSize, warn=True):
    """Walk chunk heads from ``dataStart``; returns (chunks, end of the last complete chunk)."""
    chunks, pos = [], dataStart
    while True:
        if pos + 4 <= fileSize:
            f.seek(pos)
            if f.read(4) == INDEX_MAGIC:
                break
        got = read_chunk_head(f, pos, fileSize)
        if got is None:
            break
        info, _ = got
        chunks.append(info)
        f.seek(pos + 8)
        pos += _CHUNK_HEAD.size + struct.unpack("<Q", f.read(8))[0]
    if warn and pos != fileSize:
        name = getattr(f, "name", "file")
        nf = sum(c.nFrames for c in chunks)
        warnings.warn(f"{name} was not closed cleanly (no valid index; {fileSize - pos} trailing bytes ignored); "
                      f"read {len(chunks)} complete chunks ({nf} frames)", IncompleteFileWarning, stacklevel=3)
    elif warn:
        warnings.warn(f"{getattr(f, 'name', 'file')} has no index (not closed); read {len(chunks)} chunks by "
                      f"scanning", IncompleteFileWarning, stacklevel=3)
    return chunks, pos


def file_size(f):
    f.seek(0, os.SEEK_END)
    return f.tell()
