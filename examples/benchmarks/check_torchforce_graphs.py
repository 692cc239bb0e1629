"""Do CG runs with TorchForce CUDA graphs keep the right forces? With and without the module's output buffers.

openmm-torch 1.5 captures one CUDA graph per ``includeForces`` value but keeps a single pair of output tensors (those
of the graph captured last). After an energy-only evaluation (``getState(getEnergy=True)``, a reporter, the
minimizer) has been captured, a module that returns fresh tensors from each graph leaves the force graph's results
unread: every step adds the forces of the last energy-only evaluation. ``FlashSchNetForceModule(outputBuffers=True)``
(what ``createFlashSchNetForce`` builds) returns the same two buffers from every call.

For the bundled chignolin model (fast path: fused kernels, padded neighbor list, CUDA graphs), with output buffers
off and on, this script measures (1) the force error at moved positions after an energy-only evaluation, against the
same force without graphs (in this order both graphs are captured in the same call, the force graph last, so its
outputs are the ones read: this check passes either way; tests/test_flashschnet_force.py checks energies, which go
stale in that order), and (2) the mean temperature of a short LangevinMiddleIntegrator run (300 K, 2 fs,
energy minimization first, getState(getEnergy=True) every 100 steps). Writes
``results/torchforce_graphs_check.json``. Needs a CUDA GPU.
"""

import argparse
import json
import os

import numpy as np
import torch

from openmmflash.stack import import_openmm

HERE = os.path.dirname(os.path.abspath(__file__))


def build(model, topology, native, replicas: int, outputBuffers: bool, graphs: bool, priors: bool = True):
    """CG System of ``replicas`` copies: priors + the FlashSchNet TorchForce on the fast path."""
    openmm = import_openmm()
    import openmmtorch

    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.plugin.fastpath import fastPathOptions
    from openmmflash.plugin.replicas import replicatePositions, replicateTopology
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    net, options = fastPathOptions(model, native, replicas, "CUDA")
    full = replicateTopology(topology, replicas)
    system = createCGSystem(full, net, replicas=replicas, addModelForce=False) if priors else openmm.System()
    if not priors:
        for _ in range(full.getNumAtoms()):
            system.addParticle(12.0)
    module = createFlashSchNetModule(net, full, replicas=replicas, precision="single",
                                     neighborCapacity=options["neighborCapacity"], outputBuffers=outputBuffers)
    force = openmmtorch.TorchForce(torch.jit.script(module), {"useCUDAGraphs": "true" if graphs else "false"})
    force.setOutputsForces(True)
    system.addForce(force)
    return system, replicatePositions(native, replicas)


def forceError(model, topology, native, outputBuffers: bool) -> float:
    """Max relative force error (vs no graphs) at moved positions, after an energy-only evaluation."""
    openmm = import_openmm()
    unit = openmm.unit
    rng = np.random.default_rng(1)
    contexts = []
    for graphs in (True, False):
        system, x0 = build(model, topology, native, 4, outputBuffers, graphs, priors=False)
        contexts.append(openmm.Context(system, openmm.VerletIntegrator(0.001),
                                       openmm.Platform.getPlatformByName("CUDA")))
    worst = 0.0
    for call in range(15):
        x = x0 + 0.02 * rng.standard_normal(x0.shape)
        out = []
        for context in contexts:
            context.setPositions(x)
            context.getState(getEnergy=True)  # energy-only evaluation at x
            context.setPositions(x * 1.01)    # then forces at other positions: stale ones would be those at x
            out.append(context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer))
        if call >= 12:  # after both graphs have been captured (10 warm-up calls each)
            worst = max(worst, float(np.abs(out[0] - out[1]).max() / np.abs(out[1]).max()))
    return worst


def temperatureRun(model, topology, native, outputBuffers: bool, steps: int) -> dict:
    openmm = import_openmm()
    unit = openmm.unit
    replicas = 4
    system, x0 = build(model, topology, native, replicas, outputBuffers, True)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CUDA"))
    context.setPositions(x0)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    dof = 3 * system.getNumParticles() - 3
    temps = []
    for _ in range(steps // 100):
        integrator.step(100)
        kinetic = context.getState(getEnergy=True).getKineticEnergy()
        temps.append((2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R)).value_in_unit(unit.kelvin))
    temps = np.array(temps)
    second = temps[len(temps) // 3:]
    return {"steps": steps, "meanTemperature_K": float(np.nanmean(second)), "maxTemperature_K": float(np.nanmax(temps)),
            "finite": bool(np.isfinite(temps).all())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--output", default=os.path.join(HERE, "results", "torchforce_graphs_check.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this check needs a CUDA GPU")
    import tempfile

    from openmmflash.cg.structure import nativeStructure
    from openmmflash.schnet.model import loadModel

    model = loadModel("chignolin")
    topology, native, _ = nativeStructure(model, tempfile.mkdtemp())
    rows = []
    for buffers in (False, True):
        row = {"outputBuffers": buffers, "forceRelErrorAfterEnergyOnly": forceError(model, topology, native, buffers)}
        row.update(temperatureRun(model, topology, native, buffers, args.steps))
        rows.append(row)
        print(json.dumps(row))
    openmm = import_openmm()
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "openmm": openmm.__version__,
              "what": " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "), "rows": rows}
    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    result["provenance"] = provenance()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
