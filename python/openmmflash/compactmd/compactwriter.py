"""``CompactWriter``: write, append to and truncate CompactMD (``.cmdx``) files."""

import atexit
import os
import time as _time
import warnings
import weakref

import numpy as np

import openmmflash
from openmmflash.compactmd import compactfile as cf
from openmmflash.compactmd import residualcoder, workspace
from openmmflash.compactmd.codec import BoundedCodec, XTCCodec
from openmmflash.compactmd.codecregistry import make_codec
from openmmflash.compactmd.compacttrajectory import CompactTrajectory
from openmmflash.compactmd.topology import CompactTopology



def _mask_string(mask):
    """Boolean array -> string of '0'/'1' (header form)."""
    return (np.asarray(mask, bool).astype(np.uint8) + ord("0")).tobytes().decode("ascii")

class CompactWriter:
    """Stream frames into a CompactMD file: each frame reaches the file as it is written (a small "tail" chunk)
    and every ``chunkFrames`` frames the tail is folded into one compressed chunk.

    Parameters
    ----------
    path : str
    nAtoms : int
    topology : CompactTopology, openmm.app.Topology, mdtraj.Topology or MDAnalysis AtomGroup, optional
        Embedded in the file and used for spatial prediction (sequence neighbours within a residue).
    codec : str or codec instance, optional
        ``"bounded"`` (default for a new file, error-bounded) or ``"xtc"`` (lossless re-encoding of XTC data).
        With ``append``, None keeps the file's codec and any other value must match it.
    maxError : float, optional
        Bound on |decoded - original| per coordinate, nm (default 0.0005 for ``"bounded"``). With ``append``,
        None keeps the file's bound and any other value must match it.
    chunkFrames : int
        Frames per compressed chunk (memory held: ``chunkFrames * nAtoms * 12`` bytes).
    flushInterval : float or None
        Seconds a written frame may stay in memory only. 0 (default): every frame is in the file (flushed to the
        operating system) when ``write`` returns, so a crash or kill -9 loses at most the frame being written.
        > 0: pending frames are written at the first ``write`` after that many seconds. None: frames reach the
        file only as whole chunks (a crash loses up to ``chunkFrames`` frames; no tail overhead).
    append : bool
        Continue an existing file (atom count, topology, codec and bound must match).
    truncateAfterStep : int, optional
        With ``append``, first drop the frames whose step is greater than this. Without it, frames whose step is
        >= the first new frame's step are dropped when it arrives, with a warning naming them (a restart from a
        checkpoint); an append that would drop every frame of the file is refused.
    stepInterval : int, optional
        Steps between frames, used to warn when appended frames leave a gap (default: from the file's last
        frames).
    overwrite : bool
        Replace an existing non-empty file (otherwise FileExistsError).
    dt : float, optional
        Time step in ps, recorded in the header.

    The file is closed (index written) by :meth:`close`, a ``with`` block, garbage collection or interpreter
    exit; a file that was never closed is still readable with every frame that reached it.
    """

    def __init__(self, path, nAtoms, topology=None, codec=None, maxError=None, chunkFrames=100,
                 append=False, truncateAfterStep=None, overwrite=False, dt=None, flushInterval=0.0,
                 stepInterval=None, **codecParams):
        self.path = str(path)
        self.nAtoms = int(nAtoms)
        if self.nAtoms < 1:
            raise ValueError(f"nAtoms must be at least 1, got {nAtoms}")
        if int(chunkFrames) < 1:
            raise ValueError(f"chunkFrames must be at least 1, got {chunkFrames}")
        if flushInterval is not None and not float(flushInterval) >= 0:
            raise ValueError(f"flushInterval must be >= 0 seconds or None, got {flushInterval}")
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path} is a directory; give a file name such as traj.cmdx")
        self.chunkFrames = int(chunkFrames)
        self.flushInterval = None if flushInterval is None else float(flushInterval)
        self.stepInterval = None if stepInterval is None else int(stepInterval)
        self.topology = _as_topology(topology)
        if self.topology is not None and self.topology.nAtoms != self.nAtoms:
            raise ValueError(f"the topology has {self.topology.nAtoms} atoms but nAtoms is {self.nAtoms}")
        self._pendingTruncate = None
        self._adoptPending = False
        self._lastStep = None
        self.dt = dt
        self._f = None
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if append and exists:
            self._open_append(truncateAfterStep, codec, maxError)
        else:
            if exists and not overwrite:
                raise FileExistsError(f"{self.path} exists and is not empty; pass append=True to continue it or "
                                      f"overwrite=True to replace it")
            self.codec = make_codec(codec or "bounded", maxError, **codecParams)
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
            self._f = open(self.path, "w+b")
            self._f.write(cf.pack_header(meta))
            self._f.flush()
            self.chunks = []
        self._buf = workspace.borrow((self.chunkFrames, self.nAtoms, 3), getattr(self.codec, "bufferDtype", np.int32))
        self._steps, self._times, self._boxes = [], [], []
        self._written = 0          # buffered frames already in the file as tail chunks
        self._tailStart = None     # byte offset of the first tail chunk
        self._nTail = 0            # tail chunks at the end of self.chunks
        self._lastTail = _time.monotonic()
        # codecs without a fast tail coding (the learned codec trains per chunk) write whole chunks only
        self._durable = self.flushInterval is not None and getattr(self.codec, "encode_tail", None) is not None
        self._pid = os.getpid()
        _OPEN.add(self)
        if self._adoptPending:
            self._adopt_tail()

    # ------------------------------------------------------------------ append / truncate
    def _open_append(self, truncateAfterStep, codec, maxError):
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
            name = codec if isinstance(codec, str) or codec is None else getattr(codec, "name", None)
            if name is not None and name != old.codec.name:
                raise ValueError(f"cannot append to {self.path} with codec {name!r}: the file uses codec "
                                 f"{old.codec.name!r}; pass codec={old.codec.name!r} (or leave it out)")
            if maxError is not None and not np.isclose(float(maxError), old.codec.maxError, rtol=1e-9, atol=0):
                raise ValueError(f"cannot append to {self.path} with maxError={maxError} nm: the file's bound is "
                                 f"maxError={old.codec.maxError:g} nm; pass maxError={old.codec.maxError:g} (or "
                                 f"leave it out)")
            self.codec, self._layout, self.chunks = old.codec, old._layout, list(old.chunks)
            dataEnd = old._dataEnd
            starts = old._starts
            reader = old
            self._f = open(self.path, "r+b")
            if old._fold is not None:  # finish a fold that a crash cut short
                dataEnd = cf.finish_fold(self._f, old._fold, self.chunks)
                old.chunks = self.chunks
            self._f.truncate(dataEnd)  # drops the index/footer and any incomplete chunk
            self._f.seek(dataEnd)
            if truncateAfterStep is not None:
                self._truncate(reader, starts, lambda s: s > int(truncateAfterStep))
            elif self.chunks:
                self._pendingTruncate = (reader, starts)
                return
        except BaseException:
            old.close()
            if self._f is not None:
                self._f.close()
                self._f = None
            raise
        old.close()
        self._lastStep = self.chunks[-1].lastStep if self.chunks else None
        self._adoptPending = True

    def _truncate(self, reader, starts, drop):
        """Remove every frame whose step satisfies ``drop``; frames after the first dropped one go too.
        Returns the steps removed (int64 array)."""
        keep_chunks = len(self.chunks)
        for k, c in enumerate(self.chunks):
            if drop(c.lastStep) or drop(c.firstStep):
                keep_chunks = k
                break
        if keep_chunks == len(self.chunks):
            return np.zeros(0, np.int64)
        c = self.chunks[keep_chunks]
        q, steps, times, boxes = reader.readChunk(keep_chunks)
        bad = np.flatnonzero([drop(int(s)) for s in steps])
        n = int(bad[0]) if len(bad) else len(steps)
        removed = [steps[n:]] + [_chunk_steps(reader, k) for k in range(keep_chunks + 1, len(self.chunks))]
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
        return np.concatenate(removed).astype(np.int64)

    def _restart_at(self, step):
        """First frame of an append arrives at ``step``: drop overlapping frames (warning), refuse to drop all,
        warn about a gap."""
        reader, starts = self._pendingTruncate
        self._pendingTruncate = None
        try:
            first = self.chunks[0].firstStep
            last = self.chunks[-1].lastStep
            nOld = starts[-1]
            if step <= first:
                raise ValueError(f"appending frames that start at step {step} would remove all {nOld} frames of "
                                 f"{self.path} (steps {first}..{last}). To continue it, start at a later step "
                                 f"(simulation.currentStep = {last} + interval, or load the checkpoint); to replace "
                                 f"it, pass append=False, overwrite=True; to cut it explicitly, pass "
                                 f"truncateAfterStep=")
            if step <= last:
                removed = self._truncate(reader, starts, lambda s: s >= step)
                warnings.warn(f"{self.path}: removed {len(removed)} frames at steps {_steps_text(removed)} that the "
                              f"new frames (from step {step}) replace, as after a restart from a checkpoint; pass "
                              f"truncateAfterStep={step - 1} to do this without a warning", RestartWarning,
                              stacklevel=4)
            else:
                tail = _chunk_steps(reader, len(self.chunks) - 1)
                interval = self.stepInterval or (int(tail[-1] - tail[-2]) if len(tail) >= 2 else None)
                if interval and interval > 0 and step > last + interval:
                    missing = (step - last) // interval - 1
                    warnings.warn(f"{self.path} ends at step {last} but the appended frames start at step {step}: "
                                  f"a gap of {step - last} steps (about {missing} frames at an interval of "
                                  f"{interval} steps are missing); was the simulation restarted from an older "
                                  f"checkpoint?", RestartWarning, stacklevel=4)
        finally:
            reader.close()
        self._lastStep = self.chunks[-1].lastStep if self.chunks else None
        self._adopt_tail()

    def _adopt_tail(self):
        """Take the tail chunks at the end of an appended file (left by a writer that was killed) back into the
        buffer, so that the next fold compresses them with the new frames."""
        self._adoptPending = False
        if not self._durable or not self.chunks:
            return
        k, total, parts = len(self.chunks), 0, []
        while k > 0:
            info = self.chunks[k - 1]
            steps, times, boxes, blob = cf.unpack_payload(cf.read_payload(self._f, info, k - 1), info.nFrames)
            if not residualcoder.is_plain(blob) or total + info.nFrames >= self.chunkFrames:
                break
            parts.append((self.codec.decode(blob, info.nFrames, self.nAtoms, self._layout), steps, times, boxes))
            k, total = k - 1, total + info.nFrames
        if not parts:
            return
        n = 0
        for q, steps, times, boxes in reversed(parts):
            self._buf[n:n + len(steps)] = q
            n += len(steps)
            self._steps += steps.tolist()
            self._times += times.tolist()
            self._boxes += list(boxes)
        self._written, self._tailStart, self._nTail = n, self.chunks[k].offset, len(self.chunks) - k
        self._f.seek(0, os.SEEK_END)

    # ------------------------------------------------------------------ writing
    def write(self, positions, step=None, time=None, box=None):
        """Add one frame (positions (N, 3) nm) or several ((F, N, 3)); ``step``/``time``/``box`` per frame.

        Positions are checked (NaN, Inf, range) and quantized at once, so a bad frame raises here and nothing of
        it reaches the file. ``box``: (3, 3) or (F, 3, 3) nm, or None.
        """
        if self._f is None:
            raise ValueError(f"{self.path} is closed")
        x = positions if type(positions) is np.ndarray and positions.dtype in (np.float32, np.float64) \
            else np.asarray(positions, np.float64)  # float32 input is quantized as is (no float64 copy)
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
        n = len(self._steps)
        # straight into the chunk buffer when the frames fit (an append's restart may still refill the buffer)
        direct = n + nf <= self.chunkFrames and isinstance(self.codec, (BoundedCodec, XTCCodec)) \
            and self._pendingTruncate is None
        q = self.codec.quantize(x, out=self._buf[n:n + nf]) if direct else self.codec.quantize(x)
        if self._pendingTruncate is not None:
            self._restart_at(int(steps[0]))
        k = 0
        while k < nf:  # fill the chunk buffer a run of frames at a time
            n = len(self._steps)
            m = min(nf - k, self.chunkFrames - n)
            if not direct:
                self._buf[n:n + m] = q[k:k + m]
            self._steps += steps[k:k + m].tolist()
            self._times += times[k:k + m].tolist()
            self._boxes += list(boxes[k:k + m])
            k += m
            if n + m == self.chunkFrames:
                self._fold()
        if self._written < len(self._steps) and self._durable and (
                self.flushInterval == 0 or _time.monotonic() - self._lastTail >= self.flushInterval):
            self._write_tail()

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

    def _pending(self, lo):
        hi = len(self._steps)
        return self._buf[lo:hi], np.array(self._steps[lo:]), np.array(self._times[lo:]), np.array(self._boxes[lo:])

    def _write_tail(self):
        """Write the frames not yet in the file as one tail chunk (fast coding) and flush."""
        q, steps, times, boxes = self._pending(self._written)
        if self._tailStart is None:
            self._tailStart = self._f.tell()
        self._write_chunk(q, steps, times, boxes, self.codec.encode_tail(q))
        self._nTail += 1
        self._written = len(self._steps)
        self._f.flush()
        self._lastTail = _time.monotonic()

    def _fold(self):
        """Write the buffered frames as one compressed chunk in place of their tail chunks; empty the buffer."""
        n = len(self._steps)
        if not n:
            return
        q, steps, times, boxes = self._pending(0)
        blob = self.codec.encode(q, self._layout)
        if self._tailStart is None:
            self._write_chunk(q, steps, times, boxes, blob)
        else:
            chunk = cf.pack_chunk(n, steps, times, boxes, blob)
            end = self._f.tell()
            if self._tailStart + len(chunk) <= end:
                cf.fold_chunk(self._f, self._tailStart, chunk)
                del self.chunks[len(self.chunks) - self._nTail:]
                self.chunks.append(cf.ChunkInfo(self._tailStart, n, int(steps[0]), int(steps[-1])))
                self._lastStep = int(steps[-1])
            elif self._written < n:  # the tail codes these frames better: keep it and add the rest
                self._write_tail()
        self._f.flush()
        self._steps, self._times, self._boxes = [], [], []
        self._written, self._tailStart, self._nTail = 0, None, 0
        self._lastTail = _time.monotonic()

    def flush(self, fsync=False):
        """Make every frame written so far part of the file (a tail chunk for the pending frames), and with
        ``fsync`` force it to the disk (survives a power loss, not only a crash)."""
        if self._f is None:
            return
        if self._written < len(self._steps):
            if self._durable:
                self._write_tail()
            else:
                self._fold()
        self._f.flush()
        if fsync:
            os.fsync(self._f.fileno())

    def _write_chunk(self, q, steps, times, boxes, blob=None):
        if blob is None:
            blob = self.codec.encode(q, self._layout)
        offset = self._f.tell()
        self._f.write(cf.pack_chunk(len(steps), steps, times, boxes, blob))
        self.chunks.append(cf.ChunkInfo(offset, len(steps), int(steps[0]), int(steps[-1])))
        self._lastStep = int(steps[-1])

    def close(self):
        """Fold the last frames into a chunk, write the index and footer, close. Safe to call twice."""
        if self._f is None:
            return
        _OPEN.discard(self)
        try:
            if self._pendingTruncate is not None:
                self._pendingTruncate[0].close()
                self._pendingTruncate = None
            self._fold()
            offset = self._f.tell()
            self._f.write(cf.pack_index(self.chunks, offset))
        finally:
            self._f.close()
            self._f = None
            if getattr(self, "_buf", None) is not None:
                workspace.give_back(self._buf)  # for the next writer of this thread
                self._buf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_f", None) is not None and getattr(self, "_pid", None) == os.getpid():
            try:
                self.close()
            except Exception:  # noqa: BLE001  (nothing can be raised from a finalizer; the tail is in the file)
                pass


class RestartWarning(UserWarning):
    """An append removed frames (a restart from a checkpoint) or left a gap of steps."""


_OPEN = weakref.WeakSet()


@atexit.register
def _close_open_writers():
    """Close writers left open when the interpreter exits (a script without ``close()``, an exception)."""
    for writer in list(_OPEN):
        if writer._pid != os.getpid():
            continue
        try:
            writer.close()
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"could not close {writer.path} at exit ({err}); its frames are in the file and it "
                          f"reads as not closed", RuntimeWarning)


def _chunk_steps(reader, k):
    """MD steps of chunk ``k`` of an open CompactTrajectory (reads only that chunk's frame information)."""
    info = reader.chunks[k]
    return cf.unpack_payload(cf.read_payload(reader._f, info, k), info.nFrames)[0]


def _steps_text(steps):
    steps = np.asarray(steps)
    if len(steps) <= 4:
        return ", ".join(map(str, steps.tolist()))
    return f"{steps[0]}..{steps[-1]}"


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
