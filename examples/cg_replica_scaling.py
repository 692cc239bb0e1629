"""How CG MD throughput of a bundled model scales with the number of replicas in one OpenMM System.

    python examples/cg_replica_scaling.py --models chignolin 3a4r --replicas 1 16 64 128 256 --platform CUDA

For each model and replica count B: one System of B copies (priors as native forces, FlashSchNet as a TorchForce),
LangevinMiddleIntegrator 2 fs, started from the native structure; ``--warmup`` steps (Triton compilation, CUDA-graph
capture), then ``--steps`` timed steps (ended by a getState, which waits for the GPU). The fast path (CUDA: fused
kernels, float32, padded neighbor list; ``--fast-path '{"useCUDAGraphs": true}'`` adds CUDA graphs, see
``openmmflash.plugin.fastpath.fastPathOptions`` for why they are off by default) is compared, in the same run, with
the plain
path (reference CFConv, exact neighbor list, no graphs) at ``--baseline-replicas``. The timing is of the per-step
work only: the energies are checked to be finite, not the physics.
Prints a table and writes examples/benchmarks/results/cg_replica_scaling.json (or ``--output``).
"""

import argparse
import json
import os
import platform as host
import sys
import tempfile
import time

import numpy as np
import torch  # noqa: F401  (before openmm)

from openmmflash.cg.structure import nativeStructure

from openmmflash.plugin.fastpath import fastPathOptions
from openmmflash.schnet.model import loadModel
from openmmflash.stack import import_openmm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks"))
from benchprovenance import provenance  # noqa: E402


def timeSteps(model, topology, native, replicas, platformName, fast, steps, warmup, choice=None):
    """(ms per step, force options) of B replicas of ``model``."""
    openmm = import_openmm()
    unit = openmm.unit
    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.plugin.replicas import replicatePositions, replicateTopology

    full = replicateTopology(topology, replicas)
    net, options = fastPathOptions(model, native, replicas, platformName, choice or True) if fast else (model, {})
    system = createCGSystem(full, net, replicas=replicas, **options)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platformName))
    context.setPositions(replicatePositions(native, replicas))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(warmup)
    context.getState(getEnergy=True)
    t0 = time.perf_counter()
    integrator.step(steps)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    ms = (time.perf_counter() - t0) / steps * 1e3
    if not np.isfinite(energy):
        raise RuntimeError(f"{replicas} replicas: NaN energy")
    return ms, dict(options, backend=getattr(net, "backend", None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["chignolin"])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 16, 64, 128, 256])
    parser.add_argument("--baseline-replicas", type=int, nargs="*", default=[64])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--platform", default="CUDA")
    parser.add_argument("--fast-path", default="{}", help="JSON dict of openmmflash.plugin.fastpath.FAST_PATH keys to change")
    parser.add_argument("--output", default="examples/benchmarks/results/cg_replica_scaling.json")
    args = parser.parse_args()
    openmm = import_openmm()
    choice = json.loads(args.fast_path)
    rows = []
    for name in args.models:
        model = loadModel(name)
        with tempfile.TemporaryDirectory() as tmp:
            topology, native, _ = nativeStructure(model, tmp)
        runs = [(b, True) for b in args.replicas] + [(b, False) for b in args.baseline_replicas]
        for replicas, fast in runs:
            row = {"model": name, "beads": topology.getNumAtoms(), "replicas": replicas, "fastPath": fast}
            try:
                ms, options = timeSteps(model, topology, native, replicas, args.platform, fast, args.steps,
                                        args.warmup, choice)
                row.update(msPerStep=ms, stepsPerSecond=1e3 / ms,
                           aggregateNsPerDay=replicas * 2e-6 / (ms * 1e-3) * 86400.0, forceOptions=options)
            except Exception as err:  # record and go on: one failing size must not lose the others
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            rows.append(row)
            shown = (f"{row['msPerStep']:8.3f} ms/step {row['aggregateNsPerDay']:9.1f} ns/day aggregate"
                     if "error" not in row else row["error"])
            print(f"{name:10s} B={replicas:4d} fast={str(fast):5s} {shown}", flush=True)
    ratios = []
    for r in rows:
        if r["fastPath"] or "error" in r:
            continue
        fast = next((f for f in rows if f["model"] == r["model"] and f["replicas"] == r["replicas"]
                     and f["fastPath"] and "error" not in f), None)
        if fast:
            ratios.append({"model": r["model"], "replicas": r["replicas"],
                           "speedupFastOverPlain": r["msPerStep"] / fast["msPerStep"]})
    result = {"machine": {"host": host.node(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else None, "torch": torch.__version__, "openmm": openmm.__version__},
              "settings": {"platform": args.platform, "timestep_fs": 2.0, "integrator": "LangevinMiddleIntegrator",
                           "temperature_K": 300.0, "steps": args.steps, "warmup": args.warmup,
                           "start": "native structure of the model file", "fastPathChoice": choice},
              "rows": rows, "ratios": ratios}
    result["provenance"] = provenance()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    for r in ratios:
        print(f"{r['model']} B={r['replicas']}: fast path {r['speedupFastOverPlain']:.2f}x the plain path")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
