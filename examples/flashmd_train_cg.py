"""The recipe of the shipped models ``chignolin-cg-<stride>fs``: data from the CG protein's own forces, training.

The System is the bundled CG chignolin exactly as the demo builds it (47 beads, 5-bead mapping; CGSchNet priors as
native forces + the FlashSchNet TorchForce), with B replicas in one System so that one force call serves them all
(the TorchForce runs on the CUDA platform). Masses are the bead masses (N 14.007, C 12.011, O 15.999 amu), so the
FlashMD species are the bead elements; with ``data --species bead`` they are the FlashSchNet bead types instead (the
model file then records speciesKind "cgBead" and integrators need ``flashmdcg.useCGBeadTypes``).

1. Data (one GPU): B replicas at 280, 300, 320 and 350 K (round robin), minimized and 2 ps Langevin; then cycles of
   NVE velocity Verlet at 0.5 fs recording (q, p) at 0, 20 and 40 fs, followed by Langevin (friction 5/ps, 2 fs) to
   decorrelate; one pair per replica, cycle and stride (integrators/replicadata.py). On CUDA the FlashSchNet force
   takes the fast path (about 3x the pairs per second of the reference force):
       python examples/flashmd_train_cg.py data --replicas 256 --max-seconds 100 --decorrelation 0.25 --seed 3 \
           --species bead --out-dir cgdata
2. Training (one GPU):
       python examples/flashmd_train_cg.py train cgdata/chignolin_40fs_bead.npz --out first.pt --max-minutes 5
3. Fine-tuning with the energy-conservation term (V of each predicted state from one copy of the CG System, one
   OpenMM call with forces per frame) on fresh data (step 1 with --max-seconds 70 --out-dir cgdata2):
       python examples/flashmd_train_cg.py train cgdata2/chignolin_40fs_bead.npz --out chignolin-cg-40fs.pt \
           --init first.pt --energy-weight 0.1 --lr 2e-4 --batch-size 16 --iterations 20000 --max-minutes 3.5
   This is the shipped chignolin-cg-40fs (integrators/models/README.md: fallbacks 7-49 % against 37-59 % before the fine-tuning).
   The shipped chignolin-cg-20fs is the older recipe: element species, reference force, 90 s of data, 3 minutes.
4. Copy the file to integrators/models/ and validate with examples/benchmarks/bench_flashmd_cg.py.
5. States the learned dynamics visit (DAgger-style): save a FlashMD run's frames (bench_flashmd_cg.py --validate
   --frames-out DIR, positions and, for FlashMD runs, velocities), start the replicas from them (data --starts
   DIR/frames_<model>.npz --decorrelation 0.1: the first cycle's pairs start from exactly the saved states), and
   fine-tune on those pairs together with pairs from the Langevin frames
   (train a.npz b.npz ...). One round: examples/benchmarks/bench_flashmd_cg_gpu.sh dagger.
6. Another stride from a trained model: ``train chignolin_20fs_bead.npz --init chignolin-cg-40fs-stiff --restride``
   keeps the network and records the data's stride. Training resumes from ``<out>.state`` when it exists, so one
   run can span several GPU jobs (fresh data each time, the same --out and --iterations).
"""

import argparse
import os

import numpy as np
import torch  # noqa: F401  (before openmm)

from openmmflash.commands import add_loss_term_args
from openmmflash.workflows.flashmdcg import buildCGSystem
from openmmflash.workflows.flashmdcli import loss_term_kwargs


def _data(args):
    from openmmflash.workflows.flashmdcg import flashMDSpecies
    from openmmflash.integrators.training.data import saveDataset
    from openmmflash.integrators.training.replicadata import generateReplicaPairs

    # On CUDA the FlashSchNet force takes the fast path (fused kernels, padded list, CUDA graphs), as CG MD does.
    full, system, positions, topology, _, net = buildCGSystem(args.replicas, removeCMMotion=False,
                                                              platformName=args.platform)
    types, kind, labels = flashMDSpecies(net, topology, args.species)
    minimize, velocities = True, None
    if args.starts:  # per-replica starts drawn from saved frames (e.g. the states a FlashMD run visits)
        positions, velocities = startStates(args.starts, args.replicas, len(positions) // args.replicas, args.seed)
        minimize = False
    props = {"Precision": "mixed"} if args.platform == "CUDA" else None
    strides = [s / 1000.0 for s in args.strides]
    sets = generateReplicaPairs(system, positions, types, args.replicas, args.temperatures, strides,
                                timestep=args.timestep / 1000.0, cycles=args.cycles, decorrelation=args.decorrelation,
                                equilibration=args.equilibration, platform=args.platform, platformProperties=props,
                                maxSeconds=args.max_seconds, seed=args.seed, speciesKind=kind, speciesLabels=labels,
                                minimize=minimize, startVelocities=velocities)
    os.makedirs(args.out_dir, exist_ok=True)
    for stride, data in sets.items():
        suffix = "_bead" if args.species == "bead" else ""
        path = os.path.join(args.out_dir, f"chignolin_{round(stride * 1000):d}fs{suffix}.npz")
        data["meta"]["system"] = "bundled CG chignolin (createCGSystem, FlashSchNet TorchForce + priors)"
        data["meta"]["starts"] = [os.path.basename(s) for s in args.starts] if args.starts else "native structure"
        data["meta"]["startsWithVelocities"] = velocities is not None
        saveDataset(path, data)
        print(f"wrote {data['q0'].shape[0]} pairs ({data['meta']['cycles']} cycles x {args.replicas} replicas, "
              f"{data['meta']['seconds']} s) to {path}")


def startStates(paths, replicas: int, n: int, seed: int):
    """(positions [replicas, n, 3] nm, velocities [replicas, n, 3] nm/ps or None): frames drawn without replacement
    (with, if there are fewer) from the .npz files of bench_flashmd_cg.py --frames-out. Velocities come along when
    every file has them (a FlashMD run's frames): the pairs then start from exactly those states."""
    frames, vels = [], []
    for path in paths:
        with np.load(path) as f:
            x = np.asarray(f["positions"], dtype=np.float64)
            v = np.asarray(f["velocities"], dtype=np.float64) if "velocities" in f.files else None
        if x.ndim != 3 or x.shape[1:] != (n, 3):
            raise ValueError(f"{path}: positions have shape {x.shape}; expected [frames, {n}, 3] (one chignolin per "
                             "row, as bench_flashmd_cg.py --frames-out writes them)")
        if v is not None and v.shape != x.shape:
            raise ValueError(f"{path}: velocities have shape {v.shape}, positions {x.shape}; they must match")
        frames.append(x)
        vels.append(v)
    x = np.concatenate(frames)
    v = np.concatenate(vels) if all(u is not None for u in vels) else None
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), replicas, replace=len(x) < replicas)
    return x[pick], (v[pick] if v is not None else None)


def _train(args):
    from openmmflash.integrators.training.trainer import train

    system, platform = None, None
    if args.energy_weight > 0 or args.bond_weight > 0 or args.angle_weight > 0:
        # the energy term: V of the predicted state from one copy of the CG System; bond and angle terms: its priors
        platform = args.energy_platform or ("CUDA" if torch.cuda.is_available() else "CPU")
        system = buildCGSystem(1, removeCMMotion=False, platformName=platform)[1]
    model = train(args.dataset, args.out, iterations=args.iterations, batchSize=args.batch_size, lr=args.lr,
                  channels=args.channels, numLayers=args.layers, cutoff=args.cutoff, maxMinutes=args.max_minutes,
                  seed=args.seed, progress=not args.quiet, initialModel=args.init, energyWeight=args.energy_weight,
                  energyTarget=args.energy_target, system=system, energyPlatform=platform,
                  **loss_term_kwargs(args))
    model.provenance["recipe"] = "examples/flashmd_train_cg.py"
    from openmmflash.integrators.network.modelfile import saveModel
    saveModel(model, args.out)
    print(model.describe())
    for key, value in model.validation.items():
        print(f"{key:32s} {value}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="generate pairs on the GPU")
    p.add_argument("--replicas", type=int, default=256)
    p.add_argument("--temperatures", type=float, nargs="+", default=[280.0, 300.0, 320.0, 350.0])
    p.add_argument("--strides", type=float, nargs="+", default=[20.0, 40.0], help="fs")
    p.add_argument("--timestep", type=float, default=0.5, help="NVE reference step, fs")
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--decorrelation", type=float, default=0.5, help="ps")
    p.add_argument("--equilibration", type=float, default=2.0, help="ps")
    p.add_argument("--platform", default="CUDA")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--species", choices=("element", "bead"), default="element",
                   help="FlashMD species: bead elements (the shipped models) or FlashSchNet bead types")
    p.add_argument("--out-dir", default="cgdata")
    p.add_argument("--starts", nargs="+", default=None, metavar="NPZ",
                   help="start each replica from a frame of these files (bench_flashmd_cg.py --frames-out) instead "
                        "of the minimized native structure; use a short --equilibration to stay near them")
    p.set_defaults(func=_data)
    p = sub.add_parser("train", help="train a FlashMD model on one dataset")
    p.add_argument("dataset", nargs="+", help="one or more datasets (merged)")
    p.add_argument("--out", required=True)
    p.add_argument("--max-minutes", type=float, default=4.0)
    p.add_argument("--iterations", type=int, default=200000)
    p.add_argument("--batch-size", type=int, default=64, help="frames (replica snapshots) per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--cutoff", type=float, default=0.6, help="nm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, help="fine-tune this FlashMD model (name or file) instead of a new one")
    p.add_argument("--energy-target", choices=("total", "potential"), default="total",
                   help="the energy term asks for the conserved H (total) or the true end point's V (potential)")
    p.add_argument("--energy-weight", type=float, default=0.0,
                   help="weight of the energy-conservation term (one OpenMM energy + forces per frame)")
    add_loss_term_args(p)  # bonds and angles of the CG System's priors
    p.add_argument("--energy-platform", default=None, help="OpenMM platform of the energy term (default: CUDA if present)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
