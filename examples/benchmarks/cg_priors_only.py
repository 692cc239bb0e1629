"""How much of a bundled CG model's structure comes from its priors: Langevin MD with the priors alone (no
FlashSchNet force), compared by the same observables as ``cg-validate``.

B replicas, LangevinMiddleIntegrator 2 fs, 300 K, 1/ps, CPU platform, minimized native start, a frame every 0.5 ps
after the first 10 ps. Prints the CA-RMSD, Q and Rg statistics and writes
``results/cg_<model>_priors_only.json``; compare with ``results/cg_<model>_validation_*.json`` (priors + network).

    python examples/benchmarks/cg_priors_only.py [--model chignolin] [--replicas 8] [--time 100]
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

from openmmflash.stack import import_openmm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchprovenance import provenance  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="chignolin")
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--time", type=float, default=100.0, help="ps per replica")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    openmm = import_openmm()
    unit = openmm.unit
    from tqdm import tqdm

    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.cg.observables import observables
    from openmmflash.cg.structure import caIndices, nativeStructure
    from openmmflash.plugin.replicas import replicatePositions, replicateTopology
    from openmmflash.schnet.model import loadModel

    model = loadModel(args.model)
    topology, native, _ = nativeStructure(model, tempfile.mkdtemp())
    b = args.replicas
    system = createCGSystem(replicateTopology(topology, b), model, replicas=b, addModelForce=False)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(replicatePositions(native, b))
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed)
    frames = []
    chunks = int(round(args.time / 0.5))
    for k in tqdm(range(chunks), desc="priors-only CG MD", unit="frame"):
        integrator.step(250)
        if k >= 20:
            xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            frames.append(xyz.reshape(b, -1, 3))
    x = np.concatenate(frames).astype(np.float64)
    obs = observables(x, native, caIndices(topology))
    stats = {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in obs.items()}
    for k, v in stats.items():
        print(f"{k:8s} {v['mean']:.3f} +- {v['std']:.3f}")
    result = {"model": args.model, "forces": "priors only (no FlashSchNet)", "replicas": b,
              "timePerReplica_ps": args.time, "discarded_ps": 10.0, "frames": int(x.shape[0]),
              "integrator": "LangevinMiddleIntegrator 2 fs, 300 K, 1/ps", "platform": "CPU",
              "openmm": openmm.__version__, "observables": stats, "provenance": provenance()}
    out = os.path.join(HERE, "results", f"cg_{args.model}_priors_only.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
