"""The CompactMD container (``.cmdx``): header, checksummed chunks, index and footer.

Layout (all integers little-endian; the full specification is docs/compactmd-format.md)::

    header   MAGIC(8) u32 version u32 metaLen  zstd(JSON metadata)  u32 crc32(meta)
    chunk*   "CMXC" u32 nFrames u64 payloadLen i64 firstStep i64 lastStep u32 crc32(payload) u32 crc32(head)
             payload = u32 infoLen zstd(steps i64[n], times f64[n], hasBox u8[n], boxes f64[n,3,3]) codec-blob
    index    "CMXI" u32 nChunks  (u64 offset u32 nFrames i64 firstStep i64 lastStep)*nChunks  u32 crc32
    footer   u64 indexOffset u32 crc32(indexOffset) "CMXE"
    fold     "CMXJ" chunk  u64 tailStart u64 chunkStart u32 crc32(both) "CMXJ"   (only in a file cut during a fold)

The index and footer are written by ``close()``. A file without them (a crash, a copy cut short) is read by
walking the chunk headers from the start up to the last complete chunk. Writers keep the frames of the chunk
being filled as small "tail" chunks and fold them into one chunk when it is full; a fold cut short leaves a
journal at the end of the file that names the tail it replaces (see :func:`scan_chunks`). Checksums are verified on every read; a
mismatch raises :class:`CorruptChunkError` with the byte offset and frame range, never returns data.
"""

import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from openmmflash.compactmd import limits

MAGIC = b"\x89CMDX\r\n\x1a"
VERSION = 4  # 4: topology after the metadata (parsed on use); 3: tail chunks (blob version 4) and the fold journal;
# 2: compact topology columns; 1-3 are still read
CHUNK_MAGIC = b"CMXC"
INDEX_MAGIC = b"CMXI"
FOOTER_MAGIC = b"CMXE"
JOURNAL_MAGIC = b"CMXJ"
_CHUNK_HEAD = struct.Struct("<4sIQqqII")  # 40 bytes
_INDEX_ENTRY = struct.Struct("<QIqq")  # 28 bytes
_FOOTER = struct.Struct("<QI4s")  # 16 bytes
_JOURNAL = struct.Struct("<QQI4s")  # 24 bytes
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


class Header(dict):
    """Header metadata. From format version 4 the embedded topology is a second JSON text after the metadata,
    parsed on the first ``header["topology"]`` / ``header.get("topology")`` (reading positions never needs it)."""

    def __init__(self, meta, topologyText=None):
        super().__init__(meta)
        self._topologyText = topologyText

    def _load(self, key):
        if key == "topology" and self._topologyText is not None:
            text, self._topologyText = self._topologyText, None
            dict.__setitem__(self, "topology", json.loads(text))

    def __getitem__(self, key):
        self._load(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._load(key)
        return super().get(key, default)

    def __contains__(self, key):
        return (key == "topology" and self._topologyText is not None) or super().__contains__(key)


def pack_header(meta):
    """Bytes of the file header for the metadata dict ``meta``: zstd of its JSON and, from version 4, a newline and
    the JSON of ``meta["topology"]`` (JSON text never holds a raw newline)."""
    if VERSION >= 4:
        rest = {k: v for k, v in meta.items() if k != "topology"}
        text = json.dumps(rest, sort_keys=True) + "\n" + json.dumps(meta.get("topology"))
    else:
        text = json.dumps(meta, sort_keys=True)
    body = limits.compressor(6).compress(text.encode())
    return MAGIC + struct.pack("<II", VERSION, len(body)) + body + struct.pack("<I", crc(body))


def read_header(f):
    """Parse the header at the start of ``f``; returns (meta dict, offset of the first chunk)."""
    f.seek(0)
    start = f.read(16)
    if len(start) < 16 or start[:8] != MAGIC:
        raise ValueError(f"{getattr(f, 'name', 'file')} is not a CompactMD file (bad magic number)")
    version, size = struct.unpack("<II", start[8:16])
    if version < 1:
        raise CorruptChunkError(f"the file header names format version {version}; the file is damaged", offset=8)
    if version > VERSION:
        raise ValueError(f"CompactMD format version {version} is newer than this openmmflash reads ({VERSION}); "
                         f"upgrade openmm-flash")
    fileSize = file_size(f)
    if size > fileSize - 20:
        raise CorruptChunkError(f"the file header claims {size} bytes of metadata but the file has only {fileSize}; "
                                f"the file is damaged or cut short", offset=12)
    f.seek(16)
    body = f.read(size)
    tail = f.read(4)
    if len(body) < size or len(tail) < 4:
        raise CorruptChunkError("the file header is cut short", offset=16)
    if struct.unpack("<I", tail)[0] != crc(body):
        raise CorruptChunkError("the file header failed its checksum (offset 16)", offset=16)
    try:
        text = limits.decompress(body, limit=limits.MAX_META_BYTES, what="the file header")
        topologyText = None
        if version >= 4:
            cut = text.find(b"\n")
            if cut < 0:
                raise ValueError("the topology section is missing")
            text, topologyText = text[:cut], text[cut + 1:]
        meta = json.loads(text)
        check_meta(meta)
        meta = Header(meta, topologyText)
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise CorruptChunkError(f"the file header is unreadable: {err}", offset=16) from None
    return meta, 16 + size + 4


def check_meta(meta):
    """Raise ValueError unless the header dict has sane types and sizes (before anything is allocated)."""
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a JSON object")
    n = meta.get("nAtoms")
    if not isinstance(n, int) or not 1 <= n <= limits.MAX_ATOMS:
        raise ValueError(f"nAtoms {n!r} is not an integer in 1..{limits.MAX_ATOMS}")
    codec = meta.get("codec")
    if not isinstance(codec, dict) or not isinstance(codec.get("name"), str) or \
            not isinstance(codec.get("params"), dict):
        raise ValueError("codec description missing or malformed")
    for key in ("sequenceMask", "waterMask"):
        mask = meta.get(key)
        if mask is not None and (not isinstance(mask, str) or len(mask) != n or not mask.isascii()
                                 or mask.encode("ascii").translate(None, b"01")):
            raise ValueError(f"{key} is not a string of {n} characters 0/1")
    if not isinstance(meta.get("maxError"), (int, float)):
        raise ValueError("maxError missing")


def pack_chunk(nFrames, steps, times, boxes, blob):
    """Bytes of one chunk. ``boxes`` (n, 3, 3) nm with NaN rows for frames without a box."""
    boxes = np.asarray(boxes, np.float64).reshape(nFrames, 3, 3)
    has = np.isfinite(boxes).all(axis=(1, 2))
    info = b"".join([np.asarray(steps, "<i8").tobytes(), np.asarray(times, "<f8").tobytes(),
                     has.astype(np.uint8).tobytes(), np.where(has[:, None, None], boxes, 0.0).astype("<f8").tobytes()])
    info = limits.compressor(3).compress(info)
    payload = struct.pack("<I", len(info)) + info + blob
    head = _CHUNK_HEAD.pack(CHUNK_MAGIC, nFrames, len(payload), int(steps[0]), int(steps[-1]), crc(payload), 0)
    head = head[:-4] + struct.pack("<I", crc(head[:-4]))
    return head + payload


def unpack_payload(payload, nFrames):
    """Split a verified chunk payload into (steps, times, boxes, codec blob)."""
    if len(payload) < 4:
        raise ValueError("chunk payload is too short")
    (size,) = struct.unpack_from("<I", payload, 0)
    if 4 + size > len(payload):
        raise ValueError("chunk frame information runs past the payload")
    info = limits.decompress(payload[4:4 + size], size=nFrames * 89, what="chunk frame information")
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
    if not 1 <= n <= limits.MAX_CHUNK_FRAMES:
        raise CorruptChunkError(f"chunk head at byte {offset} claims {n} frames; the file is damaged", offset=offset)
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
    if plen > file_size(f) - info.offset - _CHUNK_HEAD.size:
        raise CorruptChunkError(f"{where} is cut short (its head claims {plen} bytes)", info.offset, index, frames)
    f.seek(info.offset + _CHUNK_HEAD.size)
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
    if offset + 12 + _FOOTER.size > fileSize:
        raise CorruptChunkError(f"the footer points to an index at byte {offset} past the end of the file; open "
                                f"with recover=True to rebuild the index from the chunk heads", offset=offset)
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
        if c.offset != end or not 1 <= c.nFrames <= limits.MAX_CHUNK_FRAMES or c.offset + _CHUNK_HEAD.size > offset:
            raise CorruptChunkError(f"the chunk index at byte {offset} is inconsistent (entry {k})", offset=offset)
        f.seek(c.offset + 8)
        (plen,) = struct.unpack("<Q", f.read(8))
        end = c.offset + _CHUNK_HEAD.size + plen
    if end != offset:
        raise CorruptChunkError(f"the chunk index at byte {offset} does not match the chunks", offset=offset)
    return chunks


def pack_journal(tailStart, chunkStart):
    """The 24-byte journal written after a folded chunk at ``chunkStart`` that replaces the tail from
    ``tailStart``."""
    both = struct.pack("<QQ", tailStart, chunkStart)
    return _JOURNAL.pack(tailStart, chunkStart, crc(both), JOURNAL_MAGIC)


def read_journal(f, dataStart, fileSize):
    """(tailStart, chunkStart) when the file ends with a valid journal after a complete chunk, else None."""
    if fileSize < dataStart + _JOURNAL.size + _CHUNK_HEAD.size:
        return None
    f.seek(fileSize - _JOURNAL.size)
    tailStart, chunkStart, jcrc, magic = _JOURNAL.unpack(f.read(_JOURNAL.size))
    if magic != JOURNAL_MAGIC or jcrc != crc(struct.pack("<QQ", tailStart, chunkStart)):
        return None
    end = fileSize - _JOURNAL.size
    if not dataStart <= tailStart < chunkStart <= end - _CHUNK_HEAD.size:
        return None
    try:
        got = read_chunk_head(f, chunkStart, end)
    except CorruptChunkError:
        return None
    f.seek(chunkStart + 8)
    if got is None or chunkStart + _CHUNK_HEAD.size + struct.unpack("<Q", f.read(8))[0] != end:
        return None
    return tailStart, chunkStart


def _walk(f, pos, limit):
    """Chunk heads from ``pos`` up to ``limit``; returns (chunks, end of the last complete chunk)."""
    chunks = []
    while True:
        if pos + 4 <= limit:
            f.seek(pos)
            if f.read(4) in (INDEX_MAGIC, JOURNAL_MAGIC):  # the index, or a fold cut short before its journal
                break
        got = read_chunk_head(f, pos, limit)
        if got is None:
            break
        info, _ = got
        chunks.append(info)
        f.seek(pos + 8)
        pos += _CHUNK_HEAD.size + struct.unpack("<Q", f.read(8))[0]
    return chunks, pos


def scan_chunks(f, dataStart, fileSize, warn=True):
    """Walk chunk heads from ``dataStart``; returns (chunks, end of the last complete chunk, fold).

    ``fold`` is None, or (tailStart, chunkStart) when the file ends in a fold cut short: the chunk at
    ``chunkStart`` (followed by the journal) holds every frame of the tail chunks from ``tailStart``, whose bytes
    may be partly overwritten. The chunks before ``tailStart`` and that chunk are returned."""
    fold = read_journal(f, dataStart, fileSize)
    name = getattr(f, "name", "file")
    if fold is not None:
        chunks, pos = _walk(f, dataStart, fold[0])
        if pos != fold[0]:
            raise CorruptChunkError(f"{name}: the fold journal names a tail at byte {fold[0]} but the chunks end at "
                                    f"byte {pos}; the file is damaged", offset=pos)
        info, _ = read_chunk_head(f, fold[1], fileSize - _JOURNAL.size)
        chunks.append(info)
        if warn:
            warnings.warn(f"{name} was not closed cleanly (a chunk fold was cut short); read {len(chunks)} chunks "
                          f"({sum(c.nFrames for c in chunks)} frames)", IncompleteFileWarning, stacklevel=3)
        return chunks, fileSize - _JOURNAL.size, fold
    chunks, pos = _walk(f, dataStart, fileSize)
    if warn and pos != fileSize:
        nf = sum(c.nFrames for c in chunks)
        warnings.warn(f"{name} was not closed cleanly (no valid index; {fileSize - pos} trailing bytes ignored); "
                      f"read {len(chunks)} complete chunks ({nf} frames)", IncompleteFileWarning, stacklevel=3)
    elif warn:
        warnings.warn(f"{name} has no index (not closed); read {len(chunks)} chunks by scanning",
                      IncompleteFileWarning, stacklevel=3)
    return chunks, pos, None


def fold_chunk(f, tailStart, chunk):
    """Replace everything from ``tailStart`` to the end of ``f`` by the chunk bytes ``chunk``, so that a crash at
    any moment leaves either the old tail or the new chunk readable: append "CMXJ" + chunk + journal, flush,
    copy the chunk over the tail, flush, cut the file after it. Needs ``tailStart + len(chunk) <= end of file``. The
    file position ends after the chunk."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    if tailStart + len(chunk) > end:
        raise ValueError("the folded chunk is larger than the tail it replaces")
    # the marker stops readers at the copy until the journal after it is complete
    f.write(JOURNAL_MAGIC + chunk + pack_journal(tailStart, end + 4))
    f.flush()
    f.seek(tailStart)
    f.write(chunk)
    f.flush()
    f.truncate(tailStart + len(chunk))
    f.seek(tailStart + len(chunk))


def finish_fold(f, fold, chunks):
    """Complete a fold cut short (see :func:`scan_chunks`) in the writable file ``f``; fixes the last chunk's
    offset in ``chunks``; returns the new end of the data."""
    tailStart, chunkStart = fold
    end = file_size(f) - _JOURNAL.size
    f.seek(chunkStart)
    chunk = f.read(end - chunkStart)
    f.seek(tailStart)
    f.write(chunk)
    f.flush()
    f.truncate(tailStart + len(chunk))
    chunks[-1] = ChunkInfo(tailStart, chunks[-1].nFrames, chunks[-1].firstStep, chunks[-1].lastStep)
    return tailStart + len(chunk)


def file_size(f):
    f.seek(0, os.SEEK_END)
    return f.tell()
