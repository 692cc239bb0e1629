"""``CompactTrajectory``: read a CompactMD (``.cmdx``) file with random access."""

import bisect
import os
from collections import namedtuple

import numpy as np
import zstandard  # noqa: F401  (a clear ImportError here rather than deep in a read)

from openmmflash.compactmd import compactfile as cf
from openmmflash.compactmd import limits, workspace
from openmmflash.compactmd.codec import BoundedCodec, XTCCodec
from openmmflash.compactmd.codecregistry import codec_from_header
from openmmflash.compactmd.topology import CompactTopology

Frame = namedtuple("Frame", "positions step time box")
Frame.__doc__ = "One frame: positions (N, 3) float32 nm, MD step, time in ps, box (3, 3) nm or None."


class CompactTrajectory:
    """A CompactMD trajectory opened for reading.

    Parameters
    ----------
    path : str
        A ``.cmdx`` file.
    recover : bool
        Ignore a corrupt index and rebuild the chunk list from the chunk heads.

    A file that was not closed (a crash, kill -9, a script that ended early) opens with every frame that reached
    it and an :class:`~openmmflash.compactmd.compactfile.IncompleteFileWarning`; damaged data raises
    :class:`~openmmflash.compactmd.compactfile.CorruptChunkError` (a ``ValueError``) and is never returned.

    ``len(traj)`` frames; ``traj[i]`` is a :class:`Frame`; ``traj[a:b:c]`` or ``traj[[i, j]]`` gives positions
    of shape (F, N, 3) float32 in nm via :meth:`read`. ``steps``, ``times`` (ps) and ``boxes`` (F, 3, 3) nm (NaN
    where a frame has no box) cover all frames. A frame lookup reads one chunk (the last one is cached).

    >>> with CompactTrajectory("traj.cmdx") as traj:          # doctest: +SKIP
    ...     xyz = traj[10:20]                                  # (10, N, 3) nm
    """

    def __init__(self, path, recover=False):
        self.path = str(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path} is a directory, not a CompactMD (.cmdx) trajectory file")
        self._f = open(self.path, "rb")
        try:
            self._open(recover)
        except BaseException:
            self._f.close()
            raise

    def _open(self, recover):
        f = self._f
        self.header, self._dataStart = cf.read_header(f)
        size = cf.file_size(f)
        chunks = None if recover else cf.read_index(f, self._dataStart, size)
        self.recovered = chunks is None
        self._fold = None
        if chunks is None:
            chunks, self._dataEnd, self._fold = cf.scan_chunks(f, self._dataStart, size, warn=True)
        else:
            self._dataEnd = chunks[-1].offset + cf._CHUNK_HEAD.size + self._payload_len(chunks[-1]) if chunks \
                else self._dataStart
        self.chunks = chunks
        self._starts = np.cumsum([0] + [c.nFrames for c in chunks]).tolist()
        self.nAtoms = int(self.header["nAtoms"])
        try:
            self.codec = codec_from_header(self.header["codec"]["name"], self.header["codec"]["params"])
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as err:
            if "newer" in str(err) or "does not know" in str(err):
                raise
            raise cf.CorruptChunkError(f"{self.path}: the file header is unreadable: {err}", offset=16) from None
        self._topology = False  # parsed on first use: reading positions does not need it
        for k, c in enumerate(chunks):  # every chunk must be plausible before anything is sized by nAtoms
            end = chunks[k + 1].offset if k + 1 < len(chunks) else self._dataEnd
            try:
                limits.check_chunk_size(c.nFrames, self.nAtoms, max(end - c.offset, 0), f"chunk {k}")
            except ValueError as err:
                raise cf.CorruptChunkError(f"{self.path}: {err}", c.offset, k) from None
        self._layoutCache = None
        self._cache = (None, None)
        self._meta = None

    @property
    def topology(self):
        """The embedded :class:`CompactTopology`, or None (parsed on first access)."""
        if self._topology is False:
            top = self.header.get("topology")
            try:
                topology = CompactTopology.from_dict(top) if top else None
                if topology is not None and topology.nAtoms != self.nAtoms:
                    raise ValueError(f"it has {topology.nAtoms} atoms, the file {self.nAtoms}")
            except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as err:
                raise cf.CorruptChunkError(f"{self.path}: the embedded topology is unreadable: {err}",
                                           offset=16) from None
            self._topology = topology
        return self._topology

    @property
    def _layout(self):
        """Atom classes of the codec, built on first use (from the header's masks)."""
        if self._layoutCache is None:
            seq = self.header.get("sequenceMask")
            seq = np.frombuffer(seq.encode(), np.uint8) == ord("1") if seq else np.ones(self.nAtoms, bool)
            water = self.header.get("waterMask")
            water = np.frombuffer(water.encode(), np.uint8) == ord("1") if water else None
            self._layoutCache = self.codec.layout(seq, water)
        return self._layoutCache

    def _payload_len(self, info):
        self._f.seek(info.offset + 8)
        return int(np.frombuffer(self._f.read(8), "<u8")[0])

    # ------------------------------------------------------------------ basic properties
    @property
    def maxError(self):
        """The guaranteed bound on |decoded - original| per coordinate, nm."""
        return float(self.header["maxError"])

    @property
    def nFrames(self):
        return self._starts[-1]

    def __len__(self):
        return self.nFrames

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<CompactTrajectory {self.path!r}: {self.nFrames} frames, {self.nAtoms} atoms, codec "
                f"{self.header['codec']['name']}, maxError {self.maxError} nm>")

    # ------------------------------------------------------------------ chunk access
    def _locate(self, frame):
        if frame < 0:
            frame += self.nFrames
        if not 0 <= frame < self.nFrames:
            raise IndexError(f"frame {frame} out of range for a trajectory of {self.nFrames} frames")
        k = bisect.bisect_right(self._starts, frame) - 1
        return k, frame - self._starts[k]

    def readChunk(self, k):
        """(grid ints (F, N, 3) int32, steps, times, boxes) of chunk ``k``, verified against its checksums."""
        if self._cache[0] == k:
            return self._cache[1]
        self._cache = (k, self._decode_chunk(k))
        return self._cache[1]

    def _decode_chunk(self, k, out=None):
        """(grid ints, steps, times, boxes) of chunk ``k``; the grid ints go to ``out`` (grid codecs) when given."""
        info = self.chunks[k]
        payload = cf.read_payload(self._f, info, k, self._starts[k])
        try:
            limits.check_chunk_size(info.nFrames, self.nAtoms, len(payload), f"chunk {k}")
            steps, times, boxes, blob = cf.unpack_payload(payload, info.nFrames)
            if out is not None:
                q = self.codec.decode(blob, info.nFrames, self.nAtoms, self._layout, out=out)
            else:
                q = self.codec.decode(blob, info.nFrames, self.nAtoms, self._layout)
        except Exception as err:  # noqa: BLE001  (checksum passed but content unreadable: report the location)
            raise cf.CorruptChunkError(f"chunk {k} (byte {info.offset}) could not be decoded: {err}",
                                       info.offset, k) from err
        return q, steps, times, boxes

    def _chunk_meta(self):
        if self._meta is None:
            parts = []
            for k, info in enumerate(self.chunks):
                payload = cf.read_payload(self._f, info, k, self._starts[k])
                try:
                    parts.append(cf.unpack_payload(payload, info.nFrames)[:3])
                except ValueError as err:
                    raise cf.CorruptChunkError(f"chunk {k} (byte {info.offset}): {err}", info.offset, k) from None
            if parts:
                self._meta = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
            else:
                self._meta = (np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3, 3)))
        return self._meta

    @property
    def steps(self):
        """MD step of every frame, int64 (F,)."""
        return self._chunk_meta()[0]

    @property
    def times(self):
        """Simulation time of every frame in ps, (F,)."""
        return self._chunk_meta()[1]

    @property
    def boxes(self):
        """Box vectors of every frame in nm, (F, 3, 3); NaN for frames written without a box."""
        return self._chunk_meta()[2]

    # ------------------------------------------------------------------ frames
    def frame(self, i, dtype=np.float32):
        """Frame ``i`` as a :class:`Frame` (positions in nm)."""
        k, j = self._locate(int(i))
        q, steps, times, boxes = self.readChunk(k)
        box = None if np.isnan(boxes[j]).any() else boxes[j]
        return Frame(self.codec.dequantize(q[j:j + 1], dtype)[0], int(steps[j]), float(times[j]), box)

    def readGrid(self, frames=None):
        """Grid integers (F, N, 3) int32 of ``frames`` (all by default), in order (float32 nm for the learned
        codec, which has no global grid)."""
        idx = self._indices(frames)
        out = np.empty((len(idx), self.nAtoms, 3), getattr(self.codec, "bufferDtype", np.int32))
        for pos, k, rows in self._group(idx):
            out[pos] = _rows(self.readChunk(k)[0], rows)
        return out

    def read(self, frames=None, dtype=np.float32):
        """Positions (F, N, 3) in nm of ``frames`` (an int sequence or slice; all by default)."""
        idx = self._indices(frames)
        groups = list(self._group(idx))
        if isinstance(self.codec, (BoundedCodec, XTCCodec)):
            # each chunk decoded into a reused buffer (not cached) and dequantized into its rows of the output
            out = np.empty((len(idx), self.nAtoms, 3), dtype)
            for pos, k, rows in groups:
                if self._cache[0] == k:
                    q = self._cache[1][0]
                else:
                    q = self._decode_chunk(k, workspace.scratch("chunk", (self.chunks[k].nFrames, self.nAtoms, 3),
                                                                np.int32))[0]
                self.codec.dequantize(_rows(q, rows), dtype, out=out[pos])
            return out
        parts = [self.codec.dequantize(_rows(self.readChunk(k)[0], rows), dtype) for _, k, rows in groups]
        if not parts:
            return np.empty((0, self.nAtoms, 3), dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _indices(self, frames):
        if frames is None:
            return np.arange(self.nFrames)
        if isinstance(frames, slice):
            return np.arange(self.nFrames)[frames]
        idx = np.asarray(frames, np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + self.nFrames, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.nFrames):
            raise IndexError(f"frame indices out of range for a trajectory of {self.nFrames} frames")
        return idx

    def _group(self, idx):
        """Yield (positions in output, chunk, rows in chunk) for consecutive runs of frames in one chunk."""
        if not len(idx):
            return
        ks = np.searchsorted(self._starts, idx, side="right") - 1
        bounds = [0] + (np.flatnonzero(np.diff(ks)) + 1).tolist() + [len(idx)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            k = int(ks[a])
            yield slice(a, b), k, idx[a:b] - self._starts[k]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.frame(key)
        return self.read(key)

    def __iter__(self):
        for i in range(self.nFrames):
            yield self.frame(i)

    def verify(self):
        """Read and decode every chunk; returns the number of frames checked, raises CorruptChunkError."""
        for k in range(len(self.chunks)):
            self._cache = (None, None)
            self.readChunk(k)
        return self.nFrames

    def toMdtraj(self, frames=None):
        """An ``mdtraj.Trajectory`` of ``frames`` (needs the embedded topology)."""
        import mdtraj

        if self.topology is None:
            raise ValueError(f"{self.path} has no embedded topology; use mdtraj.load(path, top=...) instead")
        idx = self._indices(frames)
        boxes = self.boxes[idx]
        ok = np.isfinite(boxes).all()
        traj = mdtraj.Trajectory(self.read(idx), self.topology.to_mdtraj(), time=self.times[idx])
        if ok and len(idx):
            traj.unitcell_vectors = boxes.astype(np.float32)
        return traj


def _rows(a, rows):
    """``a[rows]``, as a view when ``rows`` is a run of consecutive indices (no copy of the chunk)."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (len(rows) < 2 or (np.diff(rows) == 1).all()):
        return a[rows[0]:rows[-1] + 1]
    return a[rows]
