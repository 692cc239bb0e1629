"""The recipe of the shipped model ``water-tip3pfb-8fs``: data, training, and where the file goes.

1. Data (CPU, ~10 min on 2 cores): flexible TIP3P-FB water, 1.6 nm cubic box (129 molecules, 387 atoms), PME
   0.7 nm; 4 temperatures (270, 300, 330, 360 K) x 8 independent starts (minimize, 2 ps Langevin at 0.5 fs), then
   NVE velocity Verlet at 0.5 fs; 50 pairs per start, 0.1 ps apart, each pair (q, p)(t) -> (q, p)(t + 8 fs):
       openmmflash flashmd-data --water-box 1.6 --stride 8 --temperatures 270 300 330 360 --starts 8 \
           --pairs 50 --seed 1 --platform CPU -o water_8fs.npz
2. Training (one GPU, time-limited): PaiNN, 64 channels, 3 layers, cutoff 0.5 nm, batch 16 frames, AdamW lr 1e-3
   with warm-up and cosine decay, time reversal and O(3) rotation augmentation, energy term (weight 0.1, OpenMM
   CUDA platform for V and forces) switched on after 20 % of the time:
       python examples/flashmd_train_water.py water_8fs.npz --out water-tip3pfb-8fs.pt --max-minutes 6
3. Copy the file to integrators/models/ and validate with examples/benchmarks/bench_flashmd_water.py.
"""

import argparse

import torch  # noqa: F401  (before openmm)

from openmmflash.integrators.training.data import flexibleWaterBox
from openmmflash.integrators.training.trainer import train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="+", help="one or more datasets of the same box (merged), e.g. several densities")
    ap.add_argument("--init", default=None, help="fine-tune this model (shipped name or file) instead of a new one")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default="water-tip3pfb-8fs.pt")
    ap.add_argument("--max-minutes", type=float, default=6.0)
    ap.add_argument("--iterations", type=int, default=200000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--energy-weight", type=float, default=0.1)
    ap.add_argument("--platform", default="CUDA", help="OpenMM platform of the energy term")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--kinetic-weight", type=float, default=0.0,
                    help="weight of the per-species kinetic-energy term (0: off, as for the shipped model)")
    args = ap.parse_args(argv)
    _, system, _ = flexibleWaterBox(1.6, 0.7)
    model = train(args.dataset, args.out, iterations=args.iterations, batchSize=args.batch_size, lr=args.lr,
                  channels=args.channels, numLayers=3, cutoff=0.5, energyWeight=args.energy_weight, system=system,
                  energyPlatform=args.platform, maxMinutes=args.max_minutes, kineticWeight=args.kinetic_weight,
                  initialModel=args.init)
    model.provenance["recipe"] = "examples/flashmd_train_water.py"
    print(model.describe())
    for key, value in model.validation.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
