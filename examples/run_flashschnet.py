"""Run a CG protein with a FlashSchNet force in OpenMM: B replicas in one System, Langevin dynamics, reporters.

Usage::

    python examples/run_flashschnet.py [--model MODEL] [--pdb PDB] [--replicas 4] [--steps 2000] [--platform CPU]

MODEL is a FlashSchNet model file or a bundled model name; without one, a randomly initialised model (with its
energy scaled down and weak restraints to the start) is used, which shows the mechanics, not physics.
"""

import argparse
import os
import sys

import openmmflash  # noqa: F401  (imports torch before openmm)
import torch
from openmm import CustomExternalForce, LangevinMiddleIntegrator, Platform, app, unit
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.structure import loadProtein
from openmmflash.plugin.replicas import replicate
from openmmflash.plugin.torchforce import addFlashSchNetForce
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet

HERE = os.path.dirname(os.path.abspath(__file__))


def random_model():
    table = CGMapping("5bead").defaultBeadTypes()
    model = FlashSchNet(FlashSchNetConfig(numBeadTypes=len(table), hiddenChannels=64, numFilters=64, numRbf=32,
                                          numInteractions=2, cutoff=10.0))
    model.reset_parameters(seed=0)
    model.readout[-1].weight.data *= 0.01
    model.metadata = {"beadTypes": table, "mapping": "5bead"}
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file or bundled model name (default: random weights)")
    parser.add_argument("--pdb", default=os.path.join(HERE, "data", "cg_1enh_like_folded.pdb"))
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: fastest)")
    parser.add_argument("--output", default="flashschnet-run")
    args = parser.parse_args()

    model = FlashSchNet.load(args.model) if args.model else random_model()
    topology, positions = loadProtein(args.pdb)
    topology, _, positions = replicate(topology, None, positions, args.replicas)
    system = createCGSystem(topology, model, addModelForce=False)
    addFlashSchNetForce(system, model, topology, replicas=args.replicas)
    if not args.model:
        restraint = CustomExternalForce("0.5*100*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        for name in ("x0", "y0", "z0"):
            restraint.addPerParticleParameter(name)
        for i, p in enumerate(positions):
            restraint.addParticle(i, list(p))
        system.addForce(restraint)

    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 4 * unit.femtoseconds)
    platform = Platform.getPlatformByName(args.platform) if args.platform else None
    simulation = app.Simulation(topology, system, integrator, platform)
    if simulation.context.getPlatform().getName() in ("CPU", "Reference"):
        torch.set_num_threads(1)  # libtorch's threads would spin against OpenMM's CPU threads
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=100)
    os.makedirs(args.output, exist_ok=True)
    simulation.reporters.append(app.DCDReporter(os.path.join(args.output, "trajectory.dcd"), 100))
    simulation.reporters.append(app.StateDataReporter(os.path.join(args.output, "state.csv"), 100, step=True,
                                                      potentialEnergy=True, temperature=True, speed=True))
    simulation.reporters.append(app.StateDataReporter(sys.stdout, max(args.steps // 10, 1),
                                                      step=True, potentialEnergy=True, temperature=True, speed=True,
                                                      totalSteps=args.steps, remainingTime=True))
    simulation.step(args.steps)
    print(f"{args.replicas} replicas x {topology.getNumAtoms() // args.replicas} beads on "
          f"{simulation.context.getPlatform().getName()}; wrote {args.output}/")


if __name__ == "__main__":
    main()
