"""Diagnostics of the FlashMD integrators (a mixin of FlashMDIntegrator): counters, rejection kinds, rescale
factors, per-species temperatures, per-phase wall times, and the checkpointed Python-side state. Reads the integrator's global variables and the Python
state its strides leave (``_rejections``, ``_alphas``, ``timings``), which both stride paths (host and device-resident)
record through ``_noteRescale`` and ``_noteRejection``."""

import logging
import time
from typing import Dict

import numpy as np
from openmm import unit

from openmmflash.integrators.rescale.modes import moleculeGroups, modeTemperatures
from openmmflash.integrators.rescale.species import speciesTemperatures

logger = logging.getLogger("openmmflash.flashmd")
MAX_RESCALE_FACTORS = 10000  # getRescaleFactors keeps the latest 5,000 to 10,000


class FlashMDDiagnostics:
    """Methods shared by all FlashMD integrators for monitoring a run."""

    @property
    def _modeGroups(self):
        """OpenMM's molecules of the bound Context grouped by size (modes.moleculeGroups), built on first use."""
        if self._moleculeGroups is None:
            self._moleculeGroups = moleculeGroups(self._findContext().getMolecules())
        return self._moleculeGroups

    def getNumFallbacks(self) -> int:
        """Number of strides advanced by velocity-Verlet substeps because the learned step was rejected."""
        return int(self.getGlobalVariableByName("flashmdNumFallbacks"))

    def computeRescaleEnergy(self, context=None) -> float:
        """The potential energy at the Context's positions as the rescale evaluates it (see setEnergyEvaluator),
        kJ/mol."""
        return self._energy(context or self._findContext())[0]

    def getRejectionCounts(self) -> Dict[str, int]:
        """Rejected learned steps since the integrator was created, by kind: "nonFinite",
        "displacement", "energyAbove" (H - V' <= 0), "rescaleLow" / "rescaleHigh" (alpha below / above the bounds:
        the network's V' too high / too low), "species" (per-species shares). Not stored in checkpoints."""
        return dict(self._rejections)

    def getNumLearnedSteps(self) -> int:
        """Number of accepted learned strides."""
        return int(self.getGlobalVariableByName("flashmdNumLearned"))

    def _noteRescale(self, alpha: float) -> None:
        """Record the rescale factor of an accepted stride."""
        self._alphas.append(alpha)
        if len(self._alphas) > MAX_RESCALE_FACTORS:
            del self._alphas[:MAX_RESCALE_FACTORS // 2]

    def _noteRejection(self, reason: str, kind: str, step: int, numFallbacks: int) -> None:
        """Record a rejected stride (its kind, the reason as lastRejection) and log the first ten and every 100th;
        ``step``: the step it was rejected at, ``numFallbacks``: fallbacks so far, this one included."""
        self._rejections[kind] = self._rejections.get(kind, 0) + 1
        self.lastRejection = reason
        if numFallbacks <= 10 or numFallbacks % 100 == 0:
            logger.warning("FlashMD step %d rejected (%s); advanced with %d velocity-Verlet substeps instead "
                           "(%d fallbacks so far)", step, reason, int(self.getGlobalVariableByName("flashmdSubsteps")),
                           numFallbacks)

    def getRescaleFactors(self) -> np.ndarray:
        """Recent energy rescale factors alpha of accepted steps (diagnostic of the model's energy error)."""
        return np.asarray(self._alphas)

    def getModel(self):
        return self._model

    def computeSpeciesTemperatures(self, context=None) -> Dict[str, float]:
        """Kinetic temperature of each species, K: sum(m v^2) / (3 N_s k_B) (for equipartition checks), keyed by the
        species' label (element symbol, or the bead name such as "TYR:CA" for a bead-species model)."""
        context = context or self._findContext()
        v = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond)
        return speciesTemperatures(v, self._masses, self._types, self._model.speciesLabel)

    def _tick(self, phase: str) -> None:
        """Add the wall time since the previous tick to ``timings[phase]`` (only when profiling is on)."""
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self._last
        self._last = now

    def enableProfiling(self, on: bool = True) -> None:
        """Accumulate the wall time per stride phase in ``timings`` (s): readState (getState of q, v), thermostat,
        network (learned step incl. host <-> device copies), energy (setPositions + V'), rescale (energy rescale and the
        second thermostat half step), writeAndStep (setVelocities, counters, CustomIntegrator.step), fallback (the
        substeps of rejected strides)."""
        self.timings = {} if on else None

    def computeModeTemperatures(self, context=None) -> Dict[str, float]:
        """Kinetic temperature of the molecules' translation, rotation and vibration, K (see modes.py)."""
        context = context or self._findContext()
        st = context.getState(getPositions=True, getVelocities=True)
        q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        box = np.asarray(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        return modeTemperatures(np.asarray(q), np.asarray(v), self._masses, self._modeGroups,
                                box if self._periodic else None)

    def getCheckpointState(self) -> dict:
        """The Python-side state (also held in global variables, so Simulation.saveCheckpoint carries it)."""
        return {name: self.getGlobalVariableByName(name) for name in
                ("flashmdSeed", "flashmdDraws", "flashmdNumLearned", "flashmdNumFallbacks")}

    def setCheckpointState(self, state: dict) -> None:
        """Restore what :meth:`getCheckpointState` returned (only needed with XML states, not checkpoints)."""
        for name, value in state.items():
            self.setGlobalVariableByName(name, value)
