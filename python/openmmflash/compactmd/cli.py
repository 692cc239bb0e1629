"""``openmmflash compress | decompress | info | verify``: CompactMD files from the command line.

Input trajectories (DCD, XTC, TRR, NetCDF, ... anything MDAnalysis reads) are read through MDAnalysis; a topology
(``--top``) is embedded in the output when given.
"""

import os
import sys
import warnings

import numpy as np


class _Source:
    """A trajectory to read: ``nAtoms``, ``nFrames`` and ``frames()`` yielding (positions (N, 3) nm float64,
    step, time ps, box (3, 3) nm or None). XTC files are read with mdtraj so that their float32 nm values arrive
    unchanged (MDAnalysis converts to Å in float32, which would move them off the XTC grid); everything else
    goes through MDAnalysis."""

    def __init__(self, path, top=None):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        self.path, self.top = path, top
        self.isXTC = path.lower().endswith(".xtc")
        if self.isXTC:
            from mdtraj.formats import XTCTrajectoryFile

            with XTCTrajectoryFile(path) as f:
                self.nFrames = len(f)
                self.nAtoms = f.read(n_frames=1)[0].shape[1]
        else:
            self._reader = self._mda_reader()
            self.nFrames, self.nAtoms = self._reader.n_frames, self._reader.n_atoms

    def _mda_reader(self):
        import MDAnalysis as mda

        if self.top:
            return mda.Universe(self.top, self.path).trajectory
        from MDAnalysis.coordinates.core import reader

        return reader(self.path)

    def frames(self):
        if self.isXTC:
            from mdtraj.formats import XTCTrajectoryFile

            with XTCTrajectoryFile(self.path) as f:
                while True:
                    xyz, time, step, box = f.read(n_frames=100)
                    if not len(xyz):
                        return
                    for k in range(len(xyz)):
                        yield xyz[k].astype(np.float64), int(step[k]), float(time[k]), box[k].astype(np.float64)
        for ts in self._reader:
            box = None if ts.dimensions is None else ts.triclinic_dimensions / 10.0
            yield ts.positions.astype(np.float64) / 10.0, int(ts.data.get("step", ts.frame)), float(ts.time), box


def _open(path, recover):
    """CompactTrajectory of ``path``; OS errors (a directory, no permission) become a one-line ValueError."""
    from openmmflash.compactmd.compacttrajectory import CompactTrajectory

    try:
        return CompactTrajectory(path, recover=recover)
    except (IsADirectoryError, PermissionError) as err:
        raise ValueError(str(err)) from None


def _pick_xtc_precision(x):
    from openmmflash.compactmd.codec import XTCCodec

    for precision in (1000.0, 100.0, 10000.0, 10.0):
        try:
            XTCCodec(precision).quantize(x[None])
            return precision
        except ValueError:
            continue
    return None


def compress(args):
    from tqdm import tqdm

    import MDAnalysis as mda

    from openmmflash.compactmd.compactwriter import CompactWriter
    from openmmflash.compactmd.topology import CompactTopology

    output = args.output or os.path.splitext(args.input)[0] + ".cmdx"
    src = _Source(args.input, args.top)
    topology = CompactTopology.from_mdanalysis(mda.Universe(args.top)) if args.top else None
    if topology is not None and topology.nAtoms != src.nAtoms:
        raise ValueError(f"{args.top} has {topology.nAtoms} atoms but {args.input} has {src.nAtoms}")
    frames = src.frames()
    first = next(frames)
    codec, params = args.codec, {}
    if codec == "auto":
        codec = "xtc" if src.isXTC else "bounded"
    if codec == "xtc":
        precision = _pick_xtc_precision(first[0])
        if precision is None:
            raise ValueError(f"{args.input} is not on an XTC grid (precision 10-10000); use --codec bounded")
        params["precision"] = precision
    else:
        params["maxError"] = args.max_error
    if os.path.exists(output) and os.path.getsize(output) and not args.overwrite:
        raise ValueError(f"{output} exists; pass --overwrite to replace it")
    # a conversion is rerun after a crash: whole chunks only, no per-frame tail (flushInterval=None)
    writer = CompactWriter(output, src.nAtoms, topology=topology, codec=codec, chunkFrames=args.chunk_frames,
                           overwrite=args.overwrite, level=args.level, dt=None, flushInterval=None, **params)
    with writer:
        for x, step, time, box in tqdm(_chain(first, frames), total=src.nFrames, desc="compress", unit="frame"):
            writer.write(x, step=step, time=time, box=box)
    raw = src.nFrames * src.nAtoms * 12
    size = os.path.getsize(output)
    print(f"{output}: {src.nFrames} frames, {src.nAtoms} atoms, codec {codec} "
          f"(max error {writer.codec.maxError:g} nm), {size} bytes, {raw / size:.2f}x smaller than float32")
    return 0


def _chain(first, rest):
    yield first
    yield from rest


def decompress(args):
    from tqdm import tqdm


    ext = os.path.splitext(args.output)[1].lower()
    if ext not in (".dcd", ".xtc"):
        raise ValueError(f"cannot write {ext!r}; decompress writes .dcd or .xtc")
    from mdtraj.formats import DCDTrajectoryFile, XTCTrajectoryFile

    with _open(args.input, args.recover) as traj:
        if os.path.exists(args.output):
            raise ValueError(f"{args.output} exists; remove it first")
        out = XTCTrajectoryFile(args.output, "w") if ext == ".xtc" else DCDTrajectoryFile(args.output, "w")
        with out:
            for k in tqdm(range(len(traj.chunks)), desc="decompress", unit="chunk"):
                q, steps, times, boxes = traj.readChunk(k)
                xyz = traj.codec.dequantize(q)
                has = np.isfinite(boxes).all()
                if ext == ".xtc":
                    out.write(xyz, time=times.astype(np.float32), step=steps.astype(np.int32),
                              box=boxes.astype(np.float32) if has else None)
                else:
                    lengths = angles = None
                    if has:
                        import mdtraj

                        a, b, c, al, be, ga = mdtraj.utils.box_vectors_to_lengths_and_angles(
                            boxes[:, 0], boxes[:, 1], boxes[:, 2])
                        lengths, angles = np.stack([a, b, c], 1) * 10.0, np.stack([al, be, ga], 1)
                    out.write(xyz * 10.0, cell_lengths=lengths, cell_angles=angles)
        print(f"{args.output}: {len(traj)} frames, {traj.nAtoms} atoms")
    return 0


def info(args):

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = _open(args.input, args.recover)
    with traj:
        h = traj.header
        size = os.path.getsize(args.input)
        raw = len(traj) * traj.nAtoms * 12
        steps = traj.steps
        print(f"file        {args.input} ({size} bytes)")
        print(f"format      CompactMD v{h.get('version', '?')} by {h.get('creator', '?')}")
        print(f"atoms       {traj.nAtoms}" + (f" ({len(set(traj.topology.resindices.tolist()))} residues, "
                                              f"{len(traj.topology.bonds)} bonds embedded)" if traj.topology else
                                              " (no topology embedded)"))
        print(f"frames      {len(traj)} in {len(traj.chunks)} chunks" +
              (f", steps {steps[0]}..{steps[-1]}, time {traj.times[0]:g}..{traj.times[-1]:g} ps" if len(traj)
               else ""))
        print(f"codec       {h['codec']['name']} {h['codec']['params']}")
        print(f"max error   {traj.maxError:g} nm per coordinate (guaranteed)")
        print(f"box         {'yes' if len(traj) and np.isfinite(traj.boxes).all() else 'no'}")
        print(f"ratio       {raw / size:.2f}x smaller than float32" if raw else "ratio       -")
        for w in caught:
            print(f"warning     {w.message}")
    return 0


def verify(args):
    from openmmflash.compactmd.compactfile import CorruptChunkError

    try:
        traj = _open(args.input, args.recover)
    except CorruptChunkError as err:
        hint = "" if args.recover else " (try --recover to read the intact chunks)"
        print(f"{args.input}: CORRUPT: {err}{hint}", file=sys.stderr)
        return 1
    with traj:
        bad = []
        for k in range(len(traj.chunks)):
            try:
                traj.readChunk(k)
            except CorruptChunkError as err:
                bad.append(str(err))
        for message in bad:
            print(f"{args.input}: CORRUPT: {message}", file=sys.stderr)
        print(f"{args.input}: {len(traj.chunks) - len(bad)}/{len(traj.chunks)} chunks intact, {len(traj)} frames"
              + (" (recovered without index)" if traj.recovered else ""))
        if bad:
            return 1
        if not args.source:
            return 0
        src = _Source(args.source, args.top)
        if src.nAtoms != traj.nAtoms or src.nFrames != len(traj):
            raise ValueError(f"{args.source} has {src.nFrames} frames of {src.nAtoms} atoms; {args.input} has "
                             f"{len(traj)} of {traj.nAtoms}")
        worst, sq = 0.0, 0.0
        for i, (x, *_rest) in enumerate(src.frames()):
            d = traj.frame(i, np.float64).positions - x
            worst = max(worst, float(np.abs(d).max()))
            sq += float((d * d).sum(axis=1).mean())
        rmsd = (sq / max(len(traj), 1)) ** 0.5
        ok = worst <= traj.maxError * (1 + 1e-6) + 1e-7  # the source itself is float32 (half an ulp)
        print(f"max |error| {worst:.6g} nm (bound {traj.maxError:g} nm): {'OK' if ok else 'EXCEEDED'}; "
              f"RMSD {rmsd:.6g} nm")
        return 0 if ok else 1
