"""The demo's simulation as an OpenMM user writes it: a ``Simulation`` of B replicas of a CG protein (FlashSchNet
TorchForce + priors, ``createCGSystem``), a ``CompactReporter`` writing the ``.cmdx`` trajectory and a reporter that
records energies, per-replica temperatures and frames for the summary. The integrator is either
LangevinMiddleIntegrator or FlashMDLangevinIntegrator with a shipped CG FlashMD model (same bath and friction)."""

import os
import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from openmmflash.cg.refdata import fastestPlatform
from openmmflash.compactmd.compactreporter import CompactReporter
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
from openmmflash.integrators.network.modelfile import availableModels, loadModel as loadFlashMDModel
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.plugin.fastpath import fastPathOptions
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.stack import import_openmm
from openmmflash.units import BOLTZMANN_KJ
from openmmflash.workflows.flashmdcg import (cgFallbackSubsteps, flashSchNetEnergyEvaluator, flashSchNetReplicaEnergy,
                                             useCGBeadTypes)

# The shipped FlashMD model for each bundled FlashSchNet model it was trained on (integrators/models/README.md):
# chignolin-cg-40fs-stiff falls back on about 1 % of its strides (chignolin-cg-40fs on 17-92 %).
FLASHMD_FOR_CG = {"chignolin": "chignolin-cg-40fs-stiff"}


def flashMDModelFor(cgModel: str, flashmdModel: Optional[str] = None, quantized: bool = False) -> str:
    """The FlashMD model (name or file) to run the bundled FlashSchNet model ``cgModel`` with: ``flashmdModel`` if
    given, else the shipped one trained on that CG System; with ``quantized`` its GAQ-quantized variant
    (``<name>-gaq-*``). Raises ValueError naming what is shipped when there is none."""
    name = flashmdModel or FLASHMD_FOR_CG.get(os.path.basename(str(cgModel)).removesuffix(".pt"))
    shipped = availableModels()
    if name is None:
        raise ValueError(f"no shipped FlashMD model was trained on the CG model {cgModel!r} (shipped FlashMD models "
                         f"for CG proteins: {sorted(FLASHMD_FOR_CG.values())}, for {sorted(FLASHMD_FOR_CG)}); pass "
                         "--flashmd-model FILE with one trained on this System (openmmflash flashmd-train)")
    if not quantized:
        return name
    variants = [m for m in shipped if m.startswith(f"{name}-gaq-")]
    if not variants:
        gaq = [m for m in shipped if "-gaq-" in m]
        raise ValueError(f"--quantized: no quantized model is shipped for {name!r} (quantized models shipped: "
                         f"{gaq or 'none'}); run without --quantized, or quantize one with openmmflash gaq")
    return variants[0]


class DemoRecorder:
    """An OpenMM reporter that keeps every ``reportInterval`` steps: positions (B, n, 3) nm, the potential energy of
    the System (kJ/mol), each replica's temperature (K) and the time (ps). Refuses NaN positions."""

    def __init__(self, reportInterval: int, replicas: int, masses: np.ndarray, removesCMMotion: bool):
        self._interval = int(reportInterval)
        self._replicas = replicas
        self._masses = masses.reshape(replicas, -1)  # amu
        n = self._masses.shape[1]
        self._dof = 3 * n - (3.0 / replicas if removesCMMotion else 0.0)  # the CM motion remover's 3 shared out
        self.positions, self.time, self.potentialEnergy, self.temperature = [], [], [], []

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions", "velocities", "energy"]}

    def report(self, simulation, state):
        unit = import_openmm().unit
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.all(np.isfinite(xyz)):
            raise RuntimeError(f"the simulation blew up (NaN positions) at step {simulation.currentStep}; try a "
                               "smaller --timestep")
        v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        kinetic = 0.5 * (self._masses * (v.reshape(self._replicas, -1, 3) ** 2).sum(-1)).sum(1)  # (B,) kJ/mol
        self.positions.append(xyz.reshape(self._replicas, -1, 3).astype(np.float32))
        self.time.append(state.getTime().value_in_unit(unit.picosecond))
        self.potentialEnergy.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        self.temperature.append(2.0 * kinetic / (self._dof * BOLTZMANN_KJ))


def runDemoSimulation(net, topology, positions, replicas: int, time_ps: float, reportEvery_ps: float,
                      timestep: float = 2.0, friction: float = 10.0, temperature: float = 300.0,
                      platform: Optional[str] = None, seed: int = 1, integrator: str = "langevin",
                      flashmdModel: Optional[str] = None, trajectory: Optional[str] = None, progress: bool = True,
                      fastPath=True, platformProperties: Optional[dict] = None) -> dict:
    """Simulate ``replicas`` copies of the CG protein (``topology``, ``positions`` (n, 3) nm) with the FlashSchNet
    model ``net`` for ``time_ps`` per replica, a frame every ``reportEvery_ps``, writing ``trajectory`` (.cmdx).

    integrator : "langevin" (LangevinMiddleIntegrator, ``timestep`` fs) or "flashmd" (FlashMDLangevinIntegrator with
    ``flashmdModel``, one stride per step); both at ``temperature`` (K) with ``friction`` (1/ps).
    ``platformProperties`` (e.g. ``{"DeviceIndex": "1"}``) go to the Context where the platform knows them.
    Returns positions (F, B, n, 3) nm, time (F,) ps, potentialEnergy (F,) kJ/mol, temperature (F, B) K, the
    platform, steps, stepSize_fs, wallSeconds (the step loop) and, for FlashMD, learnedSteps and fallbacks.
    """
    openmm = import_openmm()
    app, unit = openmm.app, openmm.unit
    if integrator not in ("langevin", "flashmd"):
        raise ValueError(f"integrator must be 'langevin' or 'flashmd', got {integrator!r}")
    full_topology = replicateTopology(topology, replicas)
    start = replicatePositions(positions, replicas)
    plat = fastestPlatform(platform)
    fast_net, options = fastPathOptions(net, positions, replicas, plat.getName(), fastPath)
    system = createCGSystem(full_topology, fast_net, replicas=replicas, **options)
    flashmd = None
    if integrator == "flashmd":
        flashmd = loadFlashMDModel(flashmdModel)
        device = "cuda" if plat.getName() == "CUDA" else "cpu"
        stepper = FlashMDLangevinIntegrator(temperature * unit.kelvin, friction / unit.picosecond, None,
                                            model=flashmd, speciesRescale=False, replicas=replicas,
                                            fallbackSubsteps=cgFallbackSubsteps(flashmd), device=device,
                                            randomSeed=seed)
        useCGBeadTypes(stepper, net, full_topology)
        stepper.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, fast_net, full_topology, replicas,
                                                               device=device, positions=start, priors="torch"))
        if replicas > 1:  # each replica's stride accepted or rejected on its own energy
            stepper.setReplicaEnergy(flashSchNetReplicaEnergy(system, fast_net, full_topology, replicas,
                                                              device=device))
        step_fs = flashmd.stride * 1000.0
    else:
        stepper = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                  timestep * unit.femtosecond)
        stepper.setRandomNumberSeed(seed)
        step_fs = float(timestep)
    if plat.getName() in ("CPU", "Reference"):
        # libtorch's OpenMP threads spin against OpenMM's own CPU threads: one torch thread is ~10x faster here.
        torch.set_num_threads(1)
    properties = {k: v for k, v in (platformProperties or {}).items() if k in plat.getPropertyNames()}
    simulation = app.Simulation(full_topology, system, stepper, plat, properties or None)
    simulation.context.setPositions(start)
    simulation.minimizeEnergy(tolerance=10.0 * unit.kilojoule_per_mole / unit.nanometer, maxIterations=50)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    steps = max(1, int(round(time_ps * 1000.0 / step_fs)))
    interval = max(1, min(steps, int(round(reportEvery_ps * 1000.0 / step_fs))))
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
    removes_cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    recorder = DemoRecorder(interval, replicas, masses, removes_cm)
    simulation.reporters.append(recorder)
    compact = None
    if trajectory:
        compact = CompactReporter(trajectory, interval)
        simulation.reporters.append(compact)
    done = 0
    t0 = time.time()
    try:
        with tqdm(total=steps, desc=f"CG MD, {integrator} ({replicas} replicas, {plat.getName()})",
                  unit="step", disable=not progress) as bar:
            while done < steps:
                chunk = min(interval, steps - done)
                simulation.step(chunk)
                done += chunk
                bar.update(chunk)
    finally:
        if compact is not None:
            compact.close()
    wall = time.time() - t0
    result = {"positions": np.array(recorder.positions), "time": np.array(recorder.time),
              "potentialEnergy": np.array(recorder.potentialEnergy), "temperature": np.array(recorder.temperature),
              "platform": plat.getName(), "steps": done, "stepSize_fs": step_fs, "reportInterval": interval,
              "wallSeconds": wall, "topology": full_topology, "targetTemperature": float(temperature),
              "forceOptions": dict(options, backend=getattr(fast_net, "backend", None))}
    if flashmd is not None:
        result.update(learnedSteps=stepper.getNumLearnedSteps(), fallbacks=stepper.getNumFallbacks(),
                      deviceResident=bool(stepper.isDeviceResident()),
                      replicaFallbackFractions=[float(f) for f in stepper.getReplicaFallbackFractions()])
    return result
