"""An ordinary OpenMM run script with LangevinMiddleIntegrator swapped for FlashMDLangevinIntegrator.

Flexible TIP3P-FB water in a 1.6 nm box, NpT with MonteCarloBarostat, StateDataReporter + DCDReporter +
CheckpointReporter, then a restart from the checkpoint. Everything except the integrator line is what one writes
for any OpenMM simulation. The learned step is 8 fs; ordinary MD of flexible water needs 0.5 fs.

    python examples/flashmd_langevin.py --steps 200 --platform CPU --output flashmd_out
"""

import argparse
import os
import sys

import torch  # noqa: F401  (import torch before openmm)
from openmm import MonteCarloBarostat, Platform, app, unit

from openmmflash.integrators.training.data import flexibleWaterBox
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="water-tip3pfb-8fs-npt", help="shipped model name or model file")
    ap.add_argument("--steps", type=int, default=200, help="strides to run (each 8 fs with the shipped model)")
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--output", default="flashmd_out", help="folder for the trajectory, log and checkpoint")
    args = ap.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)

    # The System: flexible water (FlashMD moves every degree of freedom, so no constraints).
    topology, system, positions = flexibleWaterBox(1.6, 0.7)
    system.addForce(MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin, 25))

    # The only changed line: was LangevinMiddleIntegrator(300*kelvin, 10/picosecond, 0.0005*picoseconds).
    integrator = FlashMDLangevinIntegrator(300 * unit.kelvin, 10 / unit.picosecond, None, model=args.model)

    simulation = app.Simulation(topology, system, integrator, Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=500)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
    log = os.path.join(args.output, "log.csv")
    simulation.reporters.append(app.StateDataReporter(log, 10, step=True, time=True, potentialEnergy=True,
                                                      temperature=True, volume=True, density=True, speed=True))
    simulation.reporters.append(app.StateDataReporter(sys.stdout, 25, step=True, time=True, temperature=True,
                                                      density=True, speed=True))
    simulation.reporters.append(app.DCDReporter(os.path.join(args.output, "traj.dcd"), 10))
    checkpoint = os.path.join(args.output, "state.chk")
    simulation.reporters.append(app.CheckpointReporter(checkpoint, 50))
    simulation.step(args.steps)

    print(f"time {simulation.context.getState().getTime()}, learned strides {integrator.getNumLearnedSteps()}, "
          f"fallbacks {integrator.getNumFallbacks()}, per-species T {integrator.computeSpeciesTemperatures()}")

    # Restart from the checkpoint, as with any integrator (the random state travels in the checkpoint).
    restart = app.Simulation(topology, system, FlashMDLangevinIntegrator(300 * unit.kelvin, 10 / unit.picosecond,
                                                                         None, model=args.model),
                             Platform.getPlatformByName(args.platform))
    restart.loadCheckpoint(checkpoint)
    print(f"restarted at step {restart.currentStep}, time {restart.context.getState().getTime()}")
    restart.step(25)
    print(f"continued to step {restart.currentStep}")


if __name__ == "__main__":
    main()
