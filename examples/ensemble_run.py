"""A replica ensemble from your own OpenMM script on several GPUs, CPU processes or Slurm tasks.

    python examples/ensemble_run.py --replicas 8 --steps 2000                          # one process
    torchrun --standalone --nproc-per-node 4 examples/ensemble_run.py --replicas 64    # 4 GPUs, 16 replicas each
    srun -n 8 --gpus-per-task 1 python examples/ensemble_run.py --replicas 256         # Slurm, 8 tasks

The script is plain OpenMM plus ``openmmflash.distributed.Ensemble``: every process runs the same file, takes its
share of the replicas (``ens.share``), puts them into one System of the bundled chignolin CG model (FlashSchNet
TorchForce + priors) on its own GPU (``ens.platformProperties`` gives the Context its ``DeviceIndex``), with its own
random seed (``ens.seed``), and records the CA radius of gyration of each replica per frame. Rank 0 gathers the
(frames, replicas) array in replica order (``ens.gatherArrays``), writes ``<output>.npz`` and ``<output>.png`` and
prints the ensemble's mean Rg with the standard error over replicas. The same command with more processes runs more
replicas in the same time (weak scaling) or the same replicas sooner (strong scaling).
"""

import argparse
import tempfile
import time

import numpy as np
import torch  # noqa: F401  (before openmm)

import openmm
from openmm import unit

from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.cg.structure import loadProtein
from openmmflash.distributed import Ensemble
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.schnet.model import loadModel


def nativeOf(model):
    """(CG topology, native positions (n, 3) nm) stored in a model file made by `openmmflash cg-train`."""
    with tempfile.NamedTemporaryFile("w", suffix=".pdb") as f:
        f.write(model.metadata["structure"])
        f.flush()
        return loadProtein(f.name, model.metadata.get("mapping") or "5bead")


def radiusOfGyration(frames: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """CA radius of gyration (A) of frames (frames, replicas, n, 3) nm: shape (frames, replicas)."""
    x = frames[:, :, atoms] * 10.0
    return np.sqrt(((x - x.mean(axis=2, keepdims=True)) ** 2).sum(-1).mean(-1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chignolin", help="bundled CG model or model file")
    parser.add_argument("--replicas", type=int, default=8, help="replicas over all processes")
    parser.add_argument("--steps", type=int, default=2000, help="2 fs steps per replica")
    parser.add_argument("--report-interval", type=int, default=100)
    parser.add_argument("--platform", default=None, help="OpenMM platform (default CUDA if torch sees a GPU, else CPU)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="ensemble_rg", help="output prefix (rank 0 writes .npz and .png)")
    args = parser.parse_args()

    with Ensemble() as ens:
        mine = ens.share(args.replicas)
        if len(mine) == 0:
            raise SystemExit(f"rank {ens.rank}: no replicas left for this process; give --replicas >= "
                             f"{ens.worldSize}")
        platformName = args.platform or ("CUDA" if ens.device.type == "cuda" else "CPU")
        model = loadModel(args.model)
        topology, native = nativeOf(model)
        b = len(mine)
        system = createCGSystem(replicateTopology(topology, b), model, replicas=b)
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
        integrator.setRandomNumberSeed(ens.seed(args.seed))
        if platformName == "CPU":
            torch.set_num_threads(1)  # libtorch's threads would spin against OpenMM's
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platformName),
                                 ens.platformProperties(platformName))
        context.setPositions(replicatePositions(native, b))
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
        context.setVelocitiesToTemperature(300 * unit.kelvin, ens.seed(args.seed))
        ca = np.array([a.index for a in topology.atoms() if a.name == "CA"])
        frames, t0 = [], time.time()
        for _ in range(args.steps // args.report_interval):
            integrator.step(args.report_interval)
            xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            frames.append(np.asarray(xyz).reshape(b, -1, 3))
        wall = time.time() - t0
        rg = radiusOfGyration(np.array(frames), ca)                   # (frames, my replicas)
        device = ens.platformProperties(platformName).get("DeviceIndex")
        print(f"rank {ens.rank}/{ens.worldSize}: replicas {mine.start}-{mine.stop - 1} on {platformName}"
              f"{'' if device is None else ' device ' + device}, {wall:.1f} s")
        allRg = ens.gatherArrays(rg, axis=1)                          # rank 0: (frames, all replicas)
        walls = ens.gather(wall)
        if ens.isMain:
            final = allRg[len(allRg) // 2:].mean(axis=0)              # second-half mean per replica
            print(f"{allRg.shape[1]} replicas on {ens.worldSize} processes: Rg {final.mean():.2f} +- "
                  f"{final.std(ddof=1) / np.sqrt(len(final)) if len(final) > 1 else float('nan'):.2f} A "
                  f"(second half, standard error over replicas); slowest rank {max(walls):.1f} s")
            np.savez(f"{args.output}.npz", rg=allRg, wallSeconds=np.array(walls), worldSize=ens.worldSize)
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            t = np.arange(1, len(allRg) + 1) * args.report_interval * 2e-3  # ps
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(t, allRg, lw=0.6, alpha=0.6)
            ax.plot(t, allRg.mean(axis=1), color="k", lw=1.5, label="ensemble mean")
            ax.set_xlabel("time (ps)")
            ax.set_ylabel("CA radius of gyration (A)")
            ax.set_title(f"{args.model}: {allRg.shape[1]} replicas on {ens.worldSize} processes", fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(f"{args.output}.png", dpi=110)


if __name__ == "__main__":
    main()
