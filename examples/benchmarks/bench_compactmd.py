"""Benchmark CompactMD against XTC (written by mdtraj) on the MDAnalysisTests trajectories and on 1,000-frame
trajectories made by OpenMM simulations.

For every float trajectory: size ratio against raw float32 (12 bytes per atom per frame) and against XTC
(precision 1000, mdtraj's C writer), max |error| per coordinate, conventional per-atom RMSD (no fitting), and
encode/decode speed as a ratio to XTC: CompactMD and XTC are timed alternately in the same loop (best CPU time of
``--repeats`` each, so that waiting for the shared core does not count), one CPU core, file I/O included on both sides (a bulk CompactWriter.write of all frames,
whole chunks only, vs XTCTrajectoryFile.write; CompactTrajectory.read vs XTCTrajectoryFile.read). The CPU is
shared, so only the ratios are meaningful. Per-frame writing as a reporter does it (one ``write`` per frame):
the cost of the durable tail (every frame in the file when ``write`` returns, ``flushInterval=0``) against
whole-chunk writing and against one XTC frame write. For XTC inputs: the lossless
``xtc`` codec's size against the source XTC, with a bit-exactness check. On the 1,000-frame OpenMM peptide: the
learned codec at 0.05 and 0.1 nm (model bytes counted, training time) against the bounded codec.

    python examples/benchmarks/bench_compactmd.py                     # everything (OpenMM runs are cached)
    python examples/benchmarks/bench_compactmd.py --quick             # MDAnalysisTests files only

Writes examples/benchmarks/results/compactmd.json and compactmd.png.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: no BLAS/OpenMP/numba thread pools
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # pin to one core

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

# name, topology, trajectory (relative to MDAnalysisTests/data), kind
FLOAT_SETS = [
    ("adk_dims", "adk.psf", "adk_dims.dcd", "protein"),
    ("adk_gbis_tmd", "adk_closed_NAMD.psf", "adk_gbis_tmd-fast1_NAMD.dcd", "protein"),
    ("adk_oplsaa.trr", "adk_oplsaa.gro", "adk_oplsaa.trr", "solvated"),
    ("cobrotoxin.trr", "cobrotoxin.tpr", "cobrotoxin.trr", "solvated"),
    ("bala", "Amber/bala.prmtop", "Amber/bala.ncdf", "solvated"),
    ("ifabp_apo_100mM", "lammps/ifabp_apo_100mM.data.bz2", "lammps/ifabp_apo_100mM.dcd", "solvated"),
]
XTC_SETS = [
    ("YiiP_lipids.xtc", "analysis/YiiP_lipids.gro.gz", "analysis/YiiP_lipids.xtc", "solvated"),
    ("adk_oplsaa.xtc", "adk_oplsaa.gro", "adk_oplsaa.xtc", "solvated"),
    ("cobrotoxin.xtc", "cobrotoxin.tpr", "cobrotoxin.xtc", "solvated"),
]


def mdatests_dir():
    import MDAnalysisTests

    return os.path.join(os.path.dirname(MDAnalysisTests.__file__), "data")


def load_mda(top, traj):
    """(positions (F, N, 3) float32 nm, CompactTopology) through MDAnalysis."""
    import MDAnalysis as mda

    from openmmflash.compactmd import CompactTopology

    kwargs = {"atom_style": "id resid type charge x y z"} if top.endswith(".data.bz2") else {}
    u = mda.Universe(top, traj, **kwargs)
    x = np.array([u.atoms.positions / 10.0 for _ in u.trajectory], np.float32)
    return x, CompactTopology.from_mdanalysis(u)


# ----------------------------------------------------------------------------------------------- OpenMM data
def openmm_trajectory(kind, cache, nFrames=1000, interval=50):
    """Run (or load from ``cache``) an OpenMM simulation of ``kind`` ('peptide' in OBC2 implicit solvent or
    'water' TIP3P box with PME), saving ``nFrames`` frames every ``interval`` steps of 2 fs."""
    import torch  # noqa: F401  (before openmm)
    from openmm import LangevinMiddleIntegrator, Platform, Vec3, app, unit
    from tqdm import tqdm

    from openmmflash.compactmd import CompactTopology

    os.makedirs(cache, exist_ok=True)
    npy = os.path.join(cache, f"{kind}_{nFrames}x{interval}.npy")
    pdbPath = os.path.join(cache, f"{kind}.pdb")
    if os.path.exists(npy) and os.path.exists(pdbPath):
        return np.load(npy), CompactTopology.from_openmm(app.PDBFile(pdbPath).topology)
    if kind == "peptide":
        import PeptideBuilder
        from Bio.PDB import PDBIO

        s = PeptideBuilder.make_extended_structure("AKAEAKA")
        PeptideBuilder.add_terminal_OXT(s)
        io = PDBIO()
        io.set_structure(s)
        io.save(pdbPath)
        pdb = app.PDBFile(pdbPath)
        ff = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
        modeller = app.Modeller(pdb.topology, pdb.positions)
        modeller.addHydrogens(ff)
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    else:
        ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        modeller = app.Modeller(app.Topology(), [])
        modeller.addSolvent(ff, boxSize=Vec3(1.6, 1.6, 1.6) * unit.nanometer)
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * unit.nanometer,
                                 constraints=app.HBonds)
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(7)
    sim = app.Simulation(modeller.topology, system, integrator, Platform.getPlatformByName("CPU"))
    sim.context.setPositions(modeller.positions)
    sim.minimizeEnergy(maxIterations=500)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    sim.step(20 * interval)  # short equilibration
    frames = []
    for _ in tqdm(range(nFrames), desc=f"OpenMM {kind}", unit="frame"):
        sim.step(interval)
        frames.append(sim.context.getState(getPositions=True, enforcePeriodicBox=kind == "water")
                      .getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    x = np.array(frames, np.float32)
    with open(pdbPath, "w") as f:
        app.PDBFile.writeFile(sim.topology, modeller.positions, f)
    np.save(npy, x)
    return x, CompactTopology.from_openmm(sim.topology)


# ----------------------------------------------------------------------------------------------- measurements
def _xtc_funcs(x, path):
    from mdtraj.formats import XTCTrajectoryFile

    nf = len(x)
    box = np.tile(np.eye(3, dtype=np.float32) * 10, (nf, 1, 1))

    def enc():
        if os.path.exists(path):
            os.remove(path)
        with XTCTrajectoryFile(path, "w") as f:
            f.write(x, time=np.arange(nf, dtype=np.float32), step=np.arange(nf, dtype=np.int32), box=box)

    def dec():
        with XTCTrajectoryFile(path) as f:
            return f.read()[0]

    return enc, dec


def _cmdx_funcs(x, topology, path, codec="bounded", **params):
    from openmmflash.compactmd import CompactTrajectory, CompactWriter

    nf = len(x)
    params.setdefault("flushInterval", None)  # bulk conversion: whole chunks (the tail is measured separately)

    def enc():
        with CompactWriter(path, x.shape[1], topology=topology, codec=codec, overwrite=True, **params) as w:
            w.write(x, step=np.arange(nf), time=np.arange(nf, dtype=np.float64))

    def dec():
        with CompactTrajectory(path) as t:
            return t.read()

    return enc, dec


def interleaved(funcs, repeats):
    """Best CPU time (user + system of this single-threaded, pinned process: time spent waiting for the shared
    core does not count) of each function, the functions called alternately ``repeats`` times so that a load
    change hits all of them alike; returns (times, last outputs)."""
    best, outs = [np.inf] * len(funcs), [None] * len(funcs)
    for _ in range(repeats):
        for k, fn in enumerate(funcs):
            t = time.process_time()
            outs[k] = fn()
            best[k] = min(best[k], time.process_time() - t)
    return best, outs


def bench_pair(x, topology, tmp, repeats, codec="bounded", **params):
    """XTC and CompactMD encode/decode timed alternately; returns (xtc result, cmdx result, cmdx decoded)."""
    xp, cp = os.path.join(tmp, "ref.xtc"), os.path.join(tmp, "ref.cmdx")
    xenc, xdec = _xtc_funcs(x, xp)
    cenc, cdec = _cmdx_funcs(x, topology, cp, codec, **params)
    (txe, tce), _ = interleaved([xenc, cenc], repeats)
    (txd, tcd), (y_xtc, y) = interleaved([xdec, cdec], repeats)
    xtc = {"bytes": os.path.getsize(xp), "encode_s": txe, "decode_s": txd, **errors(x, y_xtc)}
    cmdx = {"bytes": os.path.getsize(cp), "encode_s": tce, "decode_s": tcd, **errors(x, y),
            "encode_vs_xtc": txe / tce, "decode_vs_xtc": txd / tcd}
    return xtc, cmdx, y


def bench_cmdx(x, topology, tmp, repeats, codec="bounded", **params):
    """CompactMD alone (sizes and errors at other bounds; the learned-codec baseline)."""
    enc, dec = _cmdx_funcs(x, topology, os.path.join(tmp, "ref.cmdx"), codec, **params)
    (te,), _ = interleaved([enc], repeats)
    (td,), (y,) = interleaved([dec], repeats)
    return {"bytes": os.path.getsize(os.path.join(tmp, "ref.cmdx")), "encode_s": te, "decode_s": td,
            **errors(x, y)}, y


def bench_per_frame(x, topology, tmp, repeats, frames=60):
    """Per-frame writing (as CompactReporter does): mean seconds per ``write`` of one frame with the durable tail
    (flushInterval=0), with whole chunks only (flushInterval=None), and per XTC frame write (flushed)."""
    from mdtraj.formats import XTCTrajectoryFile

    from openmmflash.compactmd import CompactWriter

    x = x[:frames]
    nf = len(x)
    box = np.eye(3, dtype=np.float32)[None] * 10

    def cmdx(interval):
        def run():
            with CompactWriter(os.path.join(tmp, "pf.cmdx"), x.shape[1], topology=topology, overwrite=True,
                               flushInterval=interval) as w:
                for i in range(nf):
                    w.write(x[i], step=i)
        return run

    def xtc():
        path = os.path.join(tmp, "pf.xtc")
        if os.path.exists(path):
            os.remove(path)
        with XTCTrajectoryFile(path, "w") as f:
            for i in range(nf):
                f.write(x[i:i + 1], time=np.float32([i]), step=np.int32([i]), box=box)
                f.flush()

    (td, tn, tx), _ = interleaved([cmdx(0.0), cmdx(None), xtc], repeats)
    return {"frames": nf, "durable_s_per_frame": td / nf, "chunks_only_s_per_frame": tn / nf,
            "xtc_s_per_frame": tx / nf, "tail_cost_s_per_frame": (td - tn) / nf, "durable_vs_xtc": td / tx,
            "tail_cost_us_per_frame": 1e6 * (td - tn) / nf, "tail_vs_xtc_frame": (td - tn) / tx}


def errors(x, y):
    d = y.astype(np.float64) - x.astype(np.float64)
    return {"max_error_nm": float(np.abs(d).max()), "rmsd_nm": float(np.sqrt((d * d).sum(-1).mean()))}


def run_float_set(name, kind, x, topology, tmp, repeats):
    raw = x.nbytes
    mb = raw / 1e6
    row = {"name": name, "kind": kind, "atoms": int(x.shape[1]), "frames": int(x.shape[0]), "raw_bytes": raw}
    xtc, res, _ = bench_pair(x, topology, tmp, repeats, maxError=0.0005)
    row["xtc"] = dict(xtc, ratio=raw / xtc["bytes"], encode_MBps=mb / xtc["encode_s"], decode_MBps=mb / xtc["decode_s"])
    for bound in (0.0005, 0.001, 0.01, 0.05, 0.1):
        if bound != 0.0005:
            res, _ = bench_cmdx(x, topology, tmp, 1, maxError=bound)
        assert res["max_error_nm"] <= bound, (name, bound, res)
        row[f"cmdx_{bound:g}"] = dict(res, ratio=raw / res["bytes"], vs_xtc=xtc["bytes"] / res["bytes"],
                                      encode_MBps=mb / res["encode_s"], decode_MBps=mb / res["decode_s"])
    row["per_frame"] = bench_per_frame(x, topology, tmp, repeats)
    return row


def run_xtc_set(name, kind, xtcPath, topology, tmp, repeats):
    from mdtraj.formats import XTCTrajectoryFile

    with XTCTrajectoryFile(xtcPath) as f:
        x = f.read()[0]
    raw = x.nbytes
    xtc, res, y = bench_pair(x, topology, tmp, repeats, codec="xtc", precision=1000.0)
    exact = bool(np.array_equal(x.view(np.int32), y.view(np.int32)))
    src = os.path.getsize(xtcPath)
    return {"name": name, "kind": kind, "atoms": int(x.shape[1]), "frames": int(x.shape[0]), "raw_bytes": raw,
            "xtc_bytes": src, "xtc_ratio": raw / src, "lossless_bytes": res["bytes"], "lossless_vs_xtc": res["bytes"] / src,
            "bit_exact": exact, "encode_MBps": raw / 1e6 / res["encode_s"], "decode_MBps": raw / 1e6 / res["decode_s"],
            "encode_vs_xtc": res["encode_vs_xtc"], "decode_vs_xtc": res["decode_vs_xtc"]}


def run_learned(name, x, topology, tmp, bounds=(0.05, 0.1), latent=4, steps=100):
    """Learned codec (whole trajectory as one chunk, so the model is stored once) against the bounded codec with
    the same bound and chunking; model bytes are inside every size."""
    from openmmflash.compactmd import CompactTrajectory, CompactWriter

    raw = x.nbytes
    rows = []
    for bound in bounds:
        path = os.path.join(tmp, "learned.cmdx")
        t = time.perf_counter()
        with CompactWriter(path, x.shape[1], topology=topology, codec="learned", maxError=bound, overwrite=True,
                           chunkFrames=len(x), latent=latent, steps=steps) as w:
            w.write(x, step=np.arange(len(x)))
            w.flush()
            stats = dict(w.codec.lastStats)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        with CompactTrajectory(path) as traj:
            y = traj.read()
        dec = time.perf_counter() - t
        size = os.path.getsize(path)
        base, _ = bench_cmdx(x, topology, tmp, 1, maxError=bound, chunkFrames=len(x))
        row = {"name": name, "maxError_nm": bound, "latent": latent, "train_steps": steps, "bytes": size,
               "ratio": raw / size, "model_bytes": stats["modelBytes"], "side_bytes": stats["sideBytes"],
               "residual_bytes": stats["residualBytes"], "train_s": stats["train_s"], "device": stats["device"],
               "encode_s": enc, "decode_s": dec, **errors(x, y), "bounded_same_bound_ratio": raw / base["bytes"]}
        assert row["max_error_nm"] <= bound
        rows.append(row)
        print(f"learned {name} <= {bound} nm: {row['ratio']:.1f}x incl. model ({row['model_bytes']} B), RMSD "
              f"{row['rmsd_nm']:.4f} nm, max {row['max_error_nm']:.4f}, train {row['train_s']:.1f} s "
              f"({row['device']}); bounded codec: {row['bounded_same_bound_ratio']:.1f}x")
    return rows


def learned_gpu_timing(npy, out, record, steps_list=(100, 1000), latent=4, bound=0.05):
    """Learned codec on a saved trajectory (F, N, 3) nm on this machine's GPU: training time, and, where
    zstandard is installed, the full encode/decode with sizes. Writes ``out`` (JSON) with ``record`` (the run's
    provenance)."""
    import importlib.util
    import sys
    import types

    import torch

    have_zstd = importlib.util.find_spec("zstandard") is not None
    if not have_zstd:  # GPU host without zstandard: time the training only (the coding runs on the CPU anyway)
        sys.modules["zstandard"] = types.ModuleType("zstandard")
    from openmmflash.compactmd.learned import LearnedCodec, _kabsch

    x = np.load(npy).astype(np.float64)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for steps in steps_list:
        codec = LearnedCodec(bound, latent=latent, steps=steps, device=device)
        if have_zstd:
            from openmmflash.compactmd.residualcoder import Layout

            layout = Layout(np.ones(x.shape[1], bool))
            t = time.perf_counter()
            blob = codec.encode(x, layout)
            enc = time.perf_counter() - t
            t = time.perf_counter()
            y = codec.decode(blob, *x.shape[:2], layout)
            row = {"encode_s": enc, "decode_s": time.perf_counter() - t, "ratio_model_counted": x.size * 4 / len(blob),
                   **errors(x, y), **codec.lastStats}
        else:
            c = x.mean(axis=1, keepdims=True)
            y = np.stack([(x[t] - c[t]) @ _kabsch(x[t] - c[t], x[0] - c[0]) for t in range(len(x))]).reshape(len(x), -1)
            yn = ((y - y.mean(0)) / y.std()).astype(np.float32)
            codec._train(yn[:8])  # warm-up (CUDA context, kernels)
            codec._train(yn)
            row = dict(codec.lastStats)
        row.update(steps=steps, latent=latent, maxError_nm=bound, frames=int(x.shape[0]), atoms=int(x.shape[1]))
        rows.append(row)
        print(row)
    result = {"benchmark": "compactmd learned codec, GPU timing", "gpu": torch.cuda.get_device_name() if
              device == "cuda" else None, "torch": torch.__version__, "zstandard_available": have_zstd, "runs": rows}
    result["provenance"] = record
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


def machine():
    import zstandard

    import openmmflash

    try:
        import MDAnalysis
        import mdtraj
    except ImportError:  # noqa: BLE001
        MDAnalysis = mdtraj = None
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import openmm

        omm = openmm.__version__
    except Exception:  # noqa: BLE001
        omm = None
    from openmmflash.compactmd import kernels

    numba = __import__("numba").__version__ if kernels.HAVE_NUMBA else None
    return {"cpu": cpu, "cores_used": 1, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba, "compiled_kernels": kernels.HAVE_NUMBA,
            "zstandard": zstandard.__version__, "mdtraj": getattr(mdtraj, "__version__", None),
            "MDAnalysis": getattr(MDAnalysis, "__version__", None),
            "openmm": omm, "openmmflash": openmmflash.__version__}


def plot(rows, xrows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    names = [r["name"] for r in rows]
    k = np.arange(len(rows))
    w = 0.2
    ax = axes[0]
    ax.bar(k - 1.5 * w, [r["xtc"]["ratio"] for r in rows], w, label="XTC (mdtraj, 0.0005 nm)")
    for j, b in enumerate(("0.0005", "0.001", "0.01")):
        ax.bar(k + (j - 0.5) * w, [r[f"cmdx_{b}"]["ratio"] for r in rows], w, label=f"CompactMD ≤ {b} nm")
    ax.set_xticks(k, names, rotation=35, ha="right")
    ax.set_ylabel("size ratio vs float32")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("compression (higher is better)")
    ax = axes[1]
    ax.bar(k - 0.5 * w, [r["cmdx_0.0005"]["encode_vs_xtc"] for r in rows], w, label="encode")
    ax.bar(k + 0.5 * w, [r["cmdx_0.0005"]["decode_vs_xtc"] for r in rows], w, label="decode")
    ax.bar(k + 1.5 * w, [r["per_frame"]["xtc_s_per_frame"] / r["per_frame"]["durable_s_per_frame"] for r in rows],
           w, label="per-frame write (durable)")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="XTC")
    ax.set_xticks(k, names, rotation=35, ha="right")
    ax.set_ylabel("speed / XTC speed (one core, same run)")
    ax.legend(fontsize=8)
    ax.set_title("speed at 0.0005 nm (higher is better)")
    ax = axes[2]
    kx = np.arange(len(xrows))
    ax.bar(kx, [r["lossless_vs_xtc"] for r in xrows], 0.5, color="tab:purple")
    ax.axhline(0.75, color="k", ls="--", lw=1, label="target 0.75")
    ax.axhline(1.0, color="gray", ls=":", lw=1)
    ax.set_xticks(kx, [r["name"] for r in xrows], rotation=35, ha="right")
    ax.set_ylabel("lossless size / XTC size")
    ax.legend(fontsize=8)
    ax.set_title("bit-exact XTC re-encoding (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the OpenMM trajectories")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "openmmflash-bench"))
    parser.add_argument("--out", default=os.path.join(RESULTS, "compactmd.json"))
    parser.add_argument("--learned-gpu", metavar="NPY", help="only time the learned codec on this trajectory "
                        "(F, N, 3 nm .npy) on the GPU; writes --out")
    args = parser.parse_args(argv)
    import sys

    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    record = provenance()  # at the start: the commit the run starts from
    commit = record["commit"]
    if args.learned_gpu:
        return learned_gpu_timing(args.learned_gpu, args.out, record)
    data = mdatests_dir()
    rows, xrows, lrows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:  # load/compile the numba kernels outside the timings
        from openmmflash.compactmd import CompactTopology

        warm = np.random.default_rng(0).integers(0, 2000, (6, 9, 3)).astype(np.float32) * (np.float32(1) / np.float32(1000))
        for codec in ("bounded", "xtc"):
            bench_cmdx(warm, CompactTopology.generic(9), tmp, 1, codec=codec)
    with tempfile.TemporaryDirectory() as tmp:
        sets = [(n, k, lambda t=t, x=x: load_mda(os.path.join(data, t), os.path.join(data, x)))
                for n, t, x, k in FLOAT_SETS]
        if not args.quick:
            sets += [("openmm_peptide_1000", "protein", lambda: openmm_trajectory("peptide", args.cache)),
                     ("openmm_water_1000", "solvated", lambda: openmm_trajectory("water", args.cache))]
        for name, kind, load in sets:
            try:
                x, topology = load()
            except Exception as err:  # noqa: BLE001  (a reader that cannot parse a file is reported, not fatal)
                print(f"skip {name}: {err}")
                continue
            rows.append(run_float_set(name, kind, x, topology, tmp, args.repeats))
            if name == "openmm_peptide_1000":
                lrows = run_learned(name, x, topology, tmp)
            r = rows[-1]
            print(f"{name:20s} {kind:9s} {r['atoms']:6d}x{r['frames']:<5d} XTC {r['xtc']['ratio']:5.2f}x "
                  f"({r['xtc']['encode_MBps']:4.0f}/{r['xtc']['decode_MBps']:4.0f} MB/s) | CompactMD 0.0005: "
                  f"{r['cmdx_0.0005']['ratio']:5.2f}x = {r['cmdx_0.0005']['vs_xtc']:4.2f}x XTC "
                  f"(speed vs XTC enc {r['cmdx_0.0005']['encode_vs_xtc']:.2f} dec {r['cmdx_0.0005']['decode_vs_xtc']:.2f}; "
                  f"per-frame tail {1e6 * r['per_frame']['tail_cost_s_per_frame']:.0f} us, durable write "
                  f"{r['per_frame']['durable_vs_xtc']:.1f}x XTC time) "
                  f"max {r['cmdx_0.0005']['max_error_nm']:.2e} | 0.01: {r['cmdx_0.01']['ratio']:5.2f}x "
                  f"| 0.05: {r['cmdx_0.05']['ratio']:5.1f}x | 0.1: {r['cmdx_0.1']['ratio']:5.1f}x")
        import MDAnalysis as mda

        from openmmflash.compactmd import CompactTopology

        for name, top, xtc, kind in XTC_SETS:
            topology = CompactTopology.from_mdanalysis(mda.Universe(os.path.join(data, top)))
            xrows.append(run_xtc_set(name, kind, os.path.join(data, xtc), topology, tmp, args.repeats))
            r = xrows[-1]
            print(f"{name:20s} lossless: {r['lossless_vs_xtc']:.3f}x the XTC size, bit-exact {r['bit_exact']}, "
                  f"speed vs XTC enc {r['encode_vs_xtc']:.2f} dec {r['decode_vs_xtc']:.2f}")
    from openmmflash.compactmd.codec import GridCodec

    result = {"benchmark": "compactmd", "machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": " ".join(["python"] + sys.argv), "commit": commit,
              "settings": {"repeats": args.repeats, "chunkFrames": 100, "zstd_level": GridCodec().level,
                           "throughput": "MB of float32 xyz per CPU second (process_time, user + system) incl. file I/O, best of "
                                        "repeats, one core "
                                        "(process pinned; numba kernels loaded from cache before timing); "
                                        "CompactMD and XTC timed alternately in the same loop, so the *_vs_xtc "
                                        "ratios are the figures to quote (the CPU is shared)",
                           "encode_mode": "bulk write of all frames, whole chunks only (flushInterval=None); "
                                          "per_frame: one write per frame, durable tail (flushInterval=0)"},
              "float_trajectories": rows, "xtc_reencoding": xrows, "learned": lrows, "provenance": record}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, xrows, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
