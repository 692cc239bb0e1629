"""Device-resident strides of the FlashMD integrators (a mixin of FlashMDIntegrator): when they apply, and one
``step(n)`` call run by :class:`residentloop.ResidentLoop` with one getState before and one write-back after.

A call reads (q, v) once, runs the n strides on the network's device (learned step, guard, rescale, thermostat
half steps and fallback substeps from the PyTorch forces), writes (q, v) back and lets ``CustomIntegrator.step(n)``
advance the step count and time by n strides (its program does no work with the fallback flag off).
"""

import time
from typing import List, Optional

import openmm as mm
from openmm import unit

from .densestep import DenseReplicaStep
from .residentloop import CODES, ResidentLoop, rejectionReason
from .statecheck import checkFiniteState

class FlashMDResident:
    """Methods of the FlashMD integrators for device-resident strides (option ``deviceResident``)."""

    residentCompile = True  # compile the resident strides with torch.compile on CUDA (set False before the first step)

    def _thermostatParameters(self):
        """(friction 1/ps, temperature K) of Ornstein-Uhlenbeck half steps, None for none (NVE); the Bussi variant
        has no resident form (NotImplemented)."""
        return None

    def _residentObstacles(self) -> List[str]:
        """Why the strides cannot run device-resident on the bound Context (empty: they can)."""
        out = []
        torch_energy = self._energy.torchEnergy
        if self._energy.groups != set() or torch_energy is None:
            out.append("the rescale's energy is not all computed in PyTorch: call setEnergyEvaluator(set(), "
                       "TorchEnergy(...)), e.g. with cgprotein.flashSchNetEnergyEvaluator(..., priors='torch')")
        elif torch_energy.device != self._stepper.device:
            out.append(f"the PyTorch energy is on {torch_energy.device}, the network on {self._stepper.device}")
        if self._periodic:
            out.append("the System is periodic (resident strides use the all-pairs step of non-periodic molecules)")
        if not self._passive:
            out.append("a barostat or Andersen thermostat acts between steps")
        if not self.rescaleEnergy or self.speciesRescale or self.modeRescale:
            out.append("resident strides do the plain energy rescale only (rescaleEnergy=True, speciesRescale=False, "
                       "modeRescale=False)")
        if self.randomRotation:
            out.append("randomRotation=True")
        if self._thermostatParameters() is NotImplemented:
            out.append(f"{type(self).__name__} has no resident thermostat half step (FlashMDIntegrator and "
                       "FlashMDLangevinIntegrator have)")
        return out

    def _residentLoop(self) -> Optional[ResidentLoop]:
        """The bound Context's loop, built on first use; None when the strides run on the host. deviceResident
        None: resident on a CUDA device when nothing stands in the way; True: required (ValueError says why not)."""
        if self._residentDecided:
            return self._resident
        self._residentDecided = True
        self._resident = None
        want = self.deviceResident
        if want is False or (want is None and self._stepper.device.type != "cuda"):
            return None
        obstacles = self._residentObstacles()
        if obstacles:
            if want:
                raise ValueError("deviceResident=True, but the strides cannot run on the device: "
                                 + "; ".join(obstacles))
            return None
        dense = DenseReplicaStep(self._stepper, self.replicas, useCUDAGraph=False)
        self._resident = ResidentLoop(dense, self._energy.torchEnergy, self._masses, self._stepper.stride,
                                      int(self.getGlobalVariableByName("flashmdSubsteps")), self.maxDisplacement,
                                      self.maxRescale, self._removeCOM,
                                      useCUDAGraph=self.useCUDAGraph is not False, compile=self.residentCompile)
        return self._resident

    def isDeviceResident(self) -> bool:
        """Whether the strides run device-resident on the bound Context (decided at the first step)."""
        self._findContext()
        return self._residentLoop() is not None

    def _residentStrides(self, context, loop: ResidentLoop, n: int) -> None:
        prof = self.timings is not None
        if prof:
            self._last = time.perf_counter()
        check = not loop.checked
        st = context.getState(getPositions=True, getVelocities=True)
        q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        checkFiniteState(q, v, st.getStepCount())  # before any energy is asked for
        if check:
            st = context.getState(getEnergy=True, getForces=True)
        loop.setThermostat(*(self._thermostatParameters() or (None, None)))
        draws = int(self.getGlobalVariableByName("flashmdDraws"))
        loop.load(q, v, draws, int(self.getGlobalVariableByName("flashmdSeed")))
        if check:
            loop.checkAgainst(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                              st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        if prof:
            self._tick("readState")
        learned = 0
        fallbacks0 = int(self.getGlobalVariableByName("flashmdNumFallbacks"))
        nfb = fallbacks0
        for _ in range(n):
            code, alpha, disp, E = loop.learnedStride()
            if prof:
                self._tick("network")
            if code == 0:
                learned += 1
                self._noteRescale(alpha)
                continue
            nfb += 1
            self._noteRejection(rejectionReason(code, alpha, disp, E, self.maxDisplacement, self.maxRescale),
                                CODES[code - 1], context.getStepCount() + learned + nfb - fallbacks0 - 1, nfb)
            loop.fallbackStride()  # raises on a non-finite result: nothing has been written to the Context yet
            if prof:
                self._tick("fallback")
        q1, v1 = loop.state()
        context.setPositions(q1)
        context.setVelocities(v1)
        self.setGlobalVariableByName("flashmdDraws", draws + n)
        self.setGlobalVariableByName("flashmdNumLearned", self.getGlobalVariableByName("flashmdNumLearned") + learned)
        self.setGlobalVariableByName("flashmdNumFallbacks", nfb)
        mm.CustomIntegrator.step(self, n)
        if prof:
            self._tick("writeAndStep")
