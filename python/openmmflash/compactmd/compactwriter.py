"""``CompactWriter``: write, append to and truncate CompactMD (``.cmdx``) files."""

import os
import warnings

import numpy as np

import openmmflash
from openmmflash.compactmd import compactfile as cf
from openmmflash.compactmd.codecregistry import make_codec
from openmmflash.compactmd.compacttrajectory import CompactTrajectory
from openmmflash.compactmd.topology import CompactTopology



def _mask_string(mask):
    """Boolean array -> string of '0'/'1' (header form)."""
    return (np.asarray(mask, bool).astype(np.uint8) + ord("0")).tobytes().decode("ascii")

class CompactWriter:
    """Stream frames into a CompactMD file, one checksummed chunk every ``chunkFrames`` frames.

    Parameters
    ----------
    path : str
    nAtoms : int
    topology : CompactTopology, openmm.app.Topology, mdtraj.Topology or MDAnalysis AtomGroup, optional
        Embedded in the file and used for spatial prediction (sequence neighbours within a residue).
    codec : str or codec instance
        ``"bounded"`` (default, error-bounded), ``"xtc"`` (lossless re-encoding of XTC data).
    maxError : float
        Bound on |decoded - original| per coordinate, nm (default 0.0005 for ``"bounded"``).
    chunkFrames : int
        Frames per chunk: memory held is ``chunkFrames * nAtoms * 12`` bytes; a crash loses at most this many.
    append : bool
        Continue an existing file (atom count and topology must match; the file's codec is kept).
    truncateAfterStep : int, optional
        With ``append``, first drop frames whose step is greater than this. With ``append`` and no value, frames
        whose step is >= the first new frame's step are dropped when it arrives (restart from a checkpoint).
    overwrite : bool
        Replace an existing non-empty file (otherwise FileExistsError).
    dt : float, optional
        Time step in ps, recorded in the header.
    """

    def __init__(self, path, nAtoms, topology=None, codec="bounded", maxError=None, chunkFrames=100,
                 append=False, truncateAfterStep=None, overwrite=False, dt=None, **codecParams):
        self.path = str(path)
        self.nAtoms = int(nAtoms)
        if self.nAtoms < 1:
            raise ValueError(f"nAtoms must be at least 1, got {nAtoms}")
        if int(chunkFrames) < 1:
            raise ValueError(f"chunkFrames must be at least 1, got {chunkFrames}")
        self.chunkFrames = int(chunkFrames)
        self.topology = _as_topology(topology)
        if self.topology is not None and self.topology.nAtoms != self.nAtoms:
            raise ValueError(f"the topology has {self.topology.nAtoms} atoms but nAtoms is {self.nAtoms}")
        self._pendingTruncate = None
        self._lastStep = None
        self.dt = dt
        self._f = None
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if append and exists:
            self._open_append(truncateAfterStep)
        else:
            if exists and not overwrite:
                raise FileExistsError(f"{self.path} exists and is not empty; pass append=True to continue it or "
                                      f"overwrite=True to replace it")
            self.codec = make_codec(codec, maxError, **codecParams)
            self._seq = self.topology.sequenceMask() if self.topology is not None else _default_seq(self.nAtoms)
            water = self.topology.waterMask() if self.topology is not None else np.zeros(self.nAtoms, bool)
            self._layout = self.codec.layout(self._seq, water)
            meta = {
                "format": "CompactMD", "version": cf.VERSION, "nAtoms": self.nAtoms,
                "units": {"length": "nm", "time": "ps"}, "maxError": self.codec.maxError,
                "gridStep": getattr(self.codec, "gridStep", None),
                "codec": {"name": self.codec.name, "params": self.codec.params()},
                "topology": self.topology.to_file_dict() if self.topology is not None else None,
                "sequenceMask": _mask_string(self._seq), "waterMask": _mask_string(water), "dt": dt,
                "chunkFrames": self.chunkFrames, "creator": f"openmm-flash {openmmflash.__version__}",
            }
            self._f = open(self.path, "wb")
            self._f.write(cf.pack_header(meta))
            self._f.flush()
            self.chunks = []
        self._buf = np.empty((self.chunkFrames, self.nAtoms, 3), getattr(self.codec, "bufferDtype", np.int32))
        self._steps, self._times, self._boxes = [], [], []

    # ------------------------------------------------------------------ append / truncate
    def _open_append(self, truncateAfterStep):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cf.IncompleteFileWarning)
            old = CompactTrajectory(self.path)
        try:
            if old.nAtoms != self.nAtoms:
                raise ValueError(f"cannot append {self.nAtoms}-atom frames to {self.path}, which holds "
                                 f"{old.nAtoms} atoms")
            if self.topology is not None and old.topology is not None and \
                    self.topology.digest() != old.topology.digest():
                raise ValueError(f"cannot append to {self.path}: its embedded topology differs from the one given "
                                 f"(same atom count, different atoms/residues/bonds)")
            self.codec, self._layout, self.chunks = old.codec, old._layout, list(old.chunks)
            dataEnd = old._dataEnd
            starts = old._starts
            reader = old
            self._f = open(self.path, "r+b")
            self._f.truncate(dataEnd)  # drops the index/footer and any incomplete chunk
            self._f.seek(dataEnd)
            if truncateAfterStep is not None:
                self._truncate(reader, starts, lambda s: s > int(truncateAfterStep))
            elif self.chunks:
                self._pendingTruncate = (reader, starts)
                return
        except BaseException:
            old.close()
            raise
        old.close()
        self._lastStep = self.chunks[-1].lastStep if self.chunks else None

    def _truncate(self, reader, starts, drop):
        """Remove every frame whose step satisfies ``drop``; frames after the first dropped one go too."""
        keep_chunks = len(self.chunks)
        for k, c in enumerate(self.chunks):
            if drop(c.lastStep) or drop(c.firstStep):
                keep_chunks = k
                break
        if keep_chunks == len(self.chunks):
            return
        c = self.chunks[keep_chunks]
        q, steps, times, boxes = reader.readChunk(keep_chunks)
        bad = np.flatnonzero([drop(int(s)) for s in steps])
        n = int(bad[0]) if len(bad) else len(steps)
        self.chunks = self.chunks[:keep_chunks]
        blob = None
        if n and hasattr(self.codec, "reencodePrefix"):  # re-encoding decoded frames would add a second error
            payload = cf.read_payload(reader._f, c, keep_chunks)
            blob = self.codec.reencodePrefix(cf.unpack_payload(payload, c.nFrames)[3], n, self.nAtoms,
                                             self._layout)
        self._f.truncate(c.offset)
        self._f.seek(c.offset)
        if n:
            self._write_chunk(q[:n], steps[:n], times[:n], boxes[:n], blob)
        self._f.flush()

    # ------------------------------------------------------------------ writing
    def write(self, positions, step=None, time=None, box=None):
        """Add one frame (positions (N, 3) nm) or several ((F, N, 3)); ``step``/``time``/``box`` per frame.

        Positions are checked (NaN, Inf, range) and quantized at once, so a bad frame raises here and nothing of
        it reaches the file. ``box``: (3, 3) or (F, 3, 3) nm, or None.
        """
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        x = np.asarray(positions, np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (self.nAtoms, 3):
            raise ValueError(f"positions must have shape ({self.nAtoms}, 3) or (frames, {self.nAtoms}, 3), "
                             f"got {np.shape(positions)}")
        nf = x.shape[0]
        steps = self._per_frame(step, nf, np.int64, "step")
        times = self._per_frame(time, nf, np.float64, "time")
        if box is None:
            boxes = np.full((nf, 3, 3), np.nan)
        else:
            boxes = np.broadcast_to(np.asarray(box, np.float64).reshape(-1, 3, 3), (nf, 3, 3))
        q = self.codec.quantize(x)
        if self._pendingTruncate is not None:
            reader, starts = self._pendingTruncate
            self._pendingTruncate = None
            self._truncate(reader, starts, lambda s: s >= int(steps[0]))
            reader.close()
            self._lastStep = self.chunks[-1].lastStep if self.chunks else None
        for k in range(nf):
            n = len(self._steps)
            self._buf[n] = q[k]
            self._steps.append(int(steps[k]))
            self._times.append(float(times[k]))
            self._boxes.append(boxes[k])
            if n + 1 == self.chunkFrames:
                self.flush()

    def _per_frame(self, value, nf, dtype, what):
        if value is None:
            last = self._steps[-1] if self._steps else self._lastStep
            start = 0 if last is None else last + 1
            steps = np.arange(start, start + nf, dtype=np.int64)
            if what == "step":
                return steps
            return steps * self.dt if self.dt else np.zeros(nf, dtype)
        out = np.asarray(value, dtype).reshape(-1)
        if out.size != nf:
            raise ValueError(f"give one {what} per frame ({nf} frames, got {out.size})")
        return out

    def flush(self):
        """Write the buffered frames as one chunk (a partial chunk if fewer than ``chunkFrames``)."""
        n = len(self._steps)
        if not n or self._f is None:
            return
        self._write_chunk(self._buf[:n], np.array(self._steps), np.array(self._times), np.array(self._boxes))
        self._steps, self._times, self._boxes = [], [], []
        self._f.flush()

    def _write_chunk(self, q, steps, times, boxes, blob=None):
        if blob is None:
            blob = self.codec.encode(q, self._layout)
        offset = self._f.tell()
        self._f.write(cf.pack_chunk(len(steps), steps, times, boxes, blob))
        self.chunks.append(cf.ChunkInfo(offset, len(steps), int(steps[0]), int(steps[-1])))
        self._lastStep = int(steps[-1])

    def close(self):
        """Flush, write the index and footer, close. Safe to call twice."""
        if self._f is None:
            return
        if self._pendingTruncate is not None:
            self._pendingTruncate[0].close()
            self._pendingTruncate = None
        self.flush()
        offset = self._f.tell()
        self._f.write(cf.pack_index(self.chunks, offset))
        self._f.close()
        self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _default_seq(n):
    seq = np.ones(n, bool)
    seq[0] = False
    return seq


def _as_topology(topology):
    if topology is None or isinstance(topology, CompactTopology):
        return topology
    mod = type(topology).__module__
    if mod.startswith("openmm"):
        return CompactTopology.from_openmm(topology)
    if mod.startswith("mdtraj"):
        return CompactTopology.from_mdtraj(topology)
    if mod.startswith("MDAnalysis"):
        return CompactTopology.from_mdanalysis(topology)
    raise TypeError(f"unsupported topology type {type(topology).__name__}; give an OpenMM, mdtraj or MDAnalysis "
                    f"topology or a CompactTopology")
