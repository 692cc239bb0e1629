"""Device-resident strides of the FlashMD integrators: when they apply, and one ``step(n)`` call run by
:class:`residentloop.ResidentLoop` with one getState before and one write-back after.

A call reads (q, v) once, runs the n strides on the network's device (learned step, guard, rescale, thermostat
half steps and fallback substeps from the PyTorch forces), writes (q, v) back and lets ``CustomIntegrator.step(n)``
advance the step count and time by n strides (its program does no work with the fallback flag off). The functions
take what they need as arguments; the integrator is touched through OpenMM's public API only (global variables and
``CustomIntegrator.step``).
"""

from typing import List, Optional

import numpy as np

import openmm as mm
from openmm import unit

from openmmflash.integrators.engine.densestep import DenseReplicaStep
from openmmflash.integrators.engine.diagnostics import StrideLog
from openmmflash.integrators.engine.energyeval import EnergyEvaluator
from openmmflash.integrators.engine.replicaresident import ReplicaResidentLoop
from openmmflash.integrators.engine.residentloop import CODES, ResidentLoop, rejectionReason
from openmmflash.integrators.engine.statecheck import checkFiniteState


def residentObstacles(energy: EnergyEvaluator, stepperDevice, periodic: bool, passive: bool, rescaleEnergy: bool,
                      speciesRescale: bool, modeRescale: bool, randomRotation: bool, thermostat,
                      integratorName: str) -> List[str]:
    """Why the strides cannot run device-resident (empty: they can). ``thermostat``: the integrator's
    (friction, temperature) of Ornstein-Uhlenbeck half steps, None (NVE) or NotImplemented (no resident form)."""
    out = []
    torch_energy = energy.torchEnergy
    if energy.groups != set() or torch_energy is None:
        out.append("the rescale's energy is not all computed in PyTorch: call setEnergyEvaluator(set(), "
                   "TorchEnergy(...)), e.g. with flashmdcg.flashSchNetEnergyEvaluator(..., priors='torch')")
    elif torch_energy.device != stepperDevice:
        out.append(f"the PyTorch energy is on {torch_energy.device}, the network on {stepperDevice}")
    if periodic:
        out.append("the System is periodic (resident strides use the all-pairs step of non-periodic molecules)")
    if not passive:
        out.append("a barostat or Andersen thermostat acts between steps")
    if not rescaleEnergy or speciesRescale or modeRescale:
        out.append("resident strides do the plain energy rescale only (rescaleEnergy=True, speciesRescale=False, "
                   "modeRescale=False)")
    if randomRotation:
        out.append("randomRotation=True")
    if thermostat is NotImplemented:
        out.append(f"{integratorName} has no resident thermostat half step (FlashMDIntegrator and "
                   "FlashMDLangevinIntegrator have)")
    return out


def buildResidentLoop(stepper, replicas: int, energy: EnergyEvaluator, masses, substeps: int, maxDisplacement: float,
                      maxRescale: float, removeCOM: bool, useCUDAGraph: bool, compile: bool,
                      replicaEnergy=None) -> ResidentLoop:
    """The loop that runs the strides on the network's device (all-pairs step of ``replicas`` molecules); with
    ``replicaEnergy`` (replicaenergy.ReplicaEnergy) the guard and the fallback act per replica
    (replicaresident.py)."""
    dense = DenseReplicaStep(stepper, replicas, useCUDAGraph=False)
    if replicaEnergy is not None:
        return ReplicaResidentLoop(dense, energy.torchEnergy, replicaEnergy, masses, stepper.stride, substeps,
                                   maxDisplacement, maxRescale, removeCOM, useCUDAGraph=useCUDAGraph, compile=compile)
    return ResidentLoop(dense, energy.torchEnergy, masses, stepper.stride, substeps, maxDisplacement, maxRescale,
                        removeCOM, useCUDAGraph=useCUDAGraph, compile=compile)


def runResidentStrides(integrator: mm.CustomIntegrator, context, loop: ResidentLoop, n: int, thermostat,
                       log: StrideLog, maxDisplacement: float, maxRescale: float,
                       replicaFallbacks: Optional[np.ndarray] = None) -> int:
    """Advance ``context`` by ``n`` strides on the device; the integrator's counters (global variables flashmdDraws,
    flashmdSeed, flashmdNumLearned, flashmdNumFallbacks) and step count are updated as the host path does. With a
    per-replica loop (ReplicaResidentLoop) ``replicaFallbacks`` [B] counts each replica's fallbacks. Returns the
    number of strides with a fallback."""
    log.start()
    check = not loop.checked
    st = context.getState(getPositions=True, getVelocities=True)
    q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    checkFiniteState(q, v, st.getStepCount())  # before any energy is asked for
    if check:
        st = context.getState(getEnergy=True, getForces=True)
    loop.setThermostat(*(thermostat or (None, None)))
    draws = int(integrator.getGlobalVariableByName("flashmdDraws"))
    loop.load(q, v, draws, int(integrator.getGlobalVariableByName("flashmdSeed")))
    if check:
        loop.checkAgainst(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                          st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    log.tick("readState")
    learned = 0
    fallbacks0 = int(integrator.getGlobalVariableByName("flashmdNumFallbacks"))
    substeps = int(integrator.getGlobalVariableByName("flashmdSubsteps"))
    nfb = fallbacks0
    perReplica = isinstance(loop, ReplicaResidentLoop)
    for _ in range(n):
        if perReplica:
            status = loop.learnedStride()
            log.tick("network")
            rejected = np.nonzero(status[:, 0])[0]
            for alpha in status[status[:, 0] == 0, 1]:
                log.noteRescale(float(alpha))
            if len(rejected) == 0:
                learned += 1
                continue
            nfb += 1
            if replicaFallbacks is not None:
                replicaFallbacks[rejected] += 1
            for b in rejected:
                code, alpha, disp, E = status[b]
                log.noteRejection(f"replica {b}: " + rejectionReason(int(code), alpha, disp, E, maxDisplacement,
                                                                     maxRescale), CODES[int(code) - 1],
                                  context.getStepCount() + learned + nfb - fallbacks0 - 1, nfb, substeps)
            loop.fallbackStride()
            log.tick("fallback")
            continue
        code, alpha, disp, E = loop.learnedStride()
        log.tick("network")
        if code == 0:
            learned += 1
            log.noteRescale(alpha)
            continue
        nfb += 1
        log.noteRejection(rejectionReason(code, alpha, disp, E, maxDisplacement, maxRescale), CODES[code - 1],
                          context.getStepCount() + learned + nfb - fallbacks0 - 1, nfb, substeps)
        loop.fallbackStride()  # raises on a non-finite result: nothing has been written to the Context yet
        log.tick("fallback")
    q1, v1 = loop.state()
    context.setPositions(q1)
    context.setVelocities(v1)
    integrator.setGlobalVariableByName("flashmdDraws", draws + n)
    integrator.setGlobalVariableByName("flashmdNumLearned",
                                       integrator.getGlobalVariableByName("flashmdNumLearned") + learned)
    integrator.setGlobalVariableByName("flashmdNumFallbacks", nfb)
    mm.CustomIntegrator.step(integrator, n)
    log.tick("writeAndStep")
    return nfb - fallbacks0
