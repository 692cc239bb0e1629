"""The CG protein with its FlashSchNet force, run by FlashMDLangevinIntegrator in an ordinary OpenMM run script.

The System is the bundled CG chignolin as the demo builds it (priors as native forces + the FlashSchNet TorchForce;
TorchForce needs the CUDA platform with recent PyTorch builds, the CPU platform works with others). The only
FlashMD-specific lines are the integrator, the bead types for models trained with bead-type species (the shipped
chignolin-cg-40fs), and the energy evaluation for the rescale: the priors and a FlashSchNet forward pass in PyTorch
instead of OpenMM's forces. With it, on CUDA, the integrator runs each step() call's strides device-resident
(integrators/residentloop.py: learned step, guard, rescale, thermostat and fallback substeps as compiled CUDA
graphs; checked against OpenMM's energy and forces first). Friction 10/ps. Two models, measured on an H100 against
LangevinMiddleIntegrator at 2 fs with the same friction (integrators/models/README.md):
- chignolin-cg-40fs (the default): distributions closer to Langevin's, but 17-92 % of its strides fall back to
  ordinary substeps, so 2.8-7.5x;
- ``--model chignolin-cg-40fs-stiff``: 21.7-24.0x with 1-2 % fallbacks, but its ensemble is more compact than
  Langevin's (CA Rg 7.0 against 7.7 A).
Both are for fast exploration: take equilibrium distributions from ordinary MD (README, "Known limitation").

    python examples/flashmd_cg.py --steps 100 --platform CUDA --output flashmd_cg_out
"""

import argparse
import os
import sys

import torch  # noqa: F401  (import torch before openmm)
from openmm import Platform, app, unit

from openmmflash.workflows.flashmdcg import (buildCGSystem, cgFallbackSubsteps, flashSchNetEnergyEvaluator,
                                               useCGBeadTypes)
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-40fs", help="shipped FlashMD model name or model file")
    ap.add_argument("--steps", type=int, default=100, help="strides to run")
    ap.add_argument("--platform", default="CUDA")
    ap.add_argument("--device", default=None, help="torch device of the FlashMD network (default: cuda if present)")
    ap.add_argument("--output", default="flashmd_cg_out")
    args = ap.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    topology, system, positions, _, _, net = buildCGSystem(1, platformName=args.platform)
    # was: LangevinMiddleIntegrator(300*kelvin, 10/picosecond, 2*femtoseconds)
    model = loadModel(args.model)
    integrator = FlashMDLangevinIntegrator(300 * unit.kelvin, 10 / unit.picosecond, None, model=model,
                                           speciesRescale=False, fallbackSubsteps=cgFallbackSubsteps(model),
                                           device=args.device)
    useCGBeadTypes(integrator, net, topology)  # only acts for models trained with bead-type species
    integrator.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, topology, 1, device=args.device,
                                                              positions=positions, priors="torch"))

    simulation = app.Simulation(topology, system, integrator, Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=50)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
    simulation.reporters.append(app.StateDataReporter(sys.stdout, max(1, args.steps // 5), step=True, time=True,
                                                      potentialEnergy=True, temperature=True, speed=True))
    simulation.reporters.append(app.DCDReporter(os.path.join(args.output, "traj.dcd"), 10))
    simulation.step(args.steps)
    print(f"time {simulation.context.getState().getTime()}, learned strides {integrator.getNumLearnedSteps()}, "
          f"fallbacks {integrator.getNumFallbacks()} (last reason: {integrator.lastRejection}), device-resident "
          f"strides: {integrator.isDeviceResident()}")


if __name__ == "__main__":
    main()
