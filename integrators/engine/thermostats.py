"""Thermostatted FlashMD integrators: thermostat half steps around the learned step (O - learned step - O).

The energy rescale of :class:`FlashMDIntegrator` is applied to the learned step only: H is taken after the first
half step and restored before the second, as in i-PI's FlashMD NVT stepper. The noise comes from the integrator's
counter-based generator (seed and draw counter in checkpointed global variables), so a run continued from a
checkpoint draws the same noise as the uninterrupted run.

- :class:`FlashMDLangevinIntegrator`: exact Ornstein-Uhlenbeck half step per particle and component,
  v <- a v + sqrt((1 - a^2) kT / m) xi, a = exp(-gamma stride / 2). Same arguments as LangevinMiddleIntegrator
  (temperature, frictionCoeff, stepSize) plus the keyword-only ``model``.
- :class:`FlashMDBussiIntegrator`: stochastic velocity rescaling (Bussi, Donadio, Parrinello, J. Chem. Phys. 126,
  014101 (2007)) half step, one global factor per half step, relaxation time ``tau``.
"""

import math

import numpy as np
from openmm import unit

from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator, _checkModelArgument, _warnModelOrder
from openmmflash.integrators.rescale.species import KB
from openmmflash.units import valueIn


def _legacyModel(cls: str, second: str, model, args):
    """The model of ``cls(temperature, second, stepSize, *args, model=...)``: ``model``, or (deprecated) the fourth
    positional argument."""
    if model is None and len(args) == 1:
        _warnModelOrder(f"{cls}(temperature, {second}, stepSize, model)",
                        f"{cls}(temperature, {second}, stepSize, model=model)", stacklevel=4)
        model, args = args[0], ()
    _checkModelArgument(cls, model, args)
    return model


class _ThermostattedFlashMD(FlashMDIntegrator):
    """A FlashMD integrator with a bath temperature (global variable ``flashmdTemperature``, K)."""

    def __init__(self, temperature, stepSize, model, **kwargs):
        super().__init__(stepSize, model=model, **kwargs)
        self.addGlobalVariable("flashmdTemperature", valueIn(temperature, unit.kelvin))

    @property
    def _hasThermostat(self) -> bool:
        return True

    def getTemperature(self) -> float:
        """Thermostat temperature, K."""
        return self.getGlobalVariableByName("flashmdTemperature")

    def setTemperature(self, temperature) -> None:
        self.setGlobalVariableByName("flashmdTemperature", valueIn(temperature, unit.kelvin))


class FlashMDLangevinIntegrator(_ThermostattedFlashMD):
    """FlashMD learned step between two exact Langevin (Ornstein-Uhlenbeck) half steps.

    Parameters
    ----------
    temperature : K or Quantity
    frictionCoeff : 1/ps or Quantity
    stepSize : ps, Quantity or None (the model's stride; must equal it)
    model : FlashMDModel, path or bundled model name, keyword only
        The older positional call ``FlashMDLangevinIntegrator(temperature, frictionCoeff, stepSize, model)`` still
        works and warns (DeprecationWarning).
    **kwargs : as :class:`FlashMDIntegrator` (rescaleEnergy, randomRotation, randomSeed, ...); here
        ``speciesRescale`` defaults to "auto": on when every species has at least 20 particles per replica (water),
        then the learned step keeps each species' share of the kinetic energy and the per-atom Ornstein-Uhlenbeck
        half steps alone exchange kinetic energy between species, which keeps equipartition (the friction sets how
        fast inter-species exchange happens); off (the plain global rescale) for species of a few particles, such
        as CG bead types, whose shares fluctuate too much within a stride. Pass True or False to choose.

    Example
    -------
    >>> integrator = FlashMDLangevinIntegrator(300*kelvin, 1/picosecond, None, model="water-tip3pfb-8fs")
    >>> simulation = Simulation(topology, system, integrator)
    """

    def __init__(self, temperature, frictionCoeff, stepSize=None, *args, model=None, **kwargs):
        model = _legacyModel("FlashMDLangevinIntegrator", "frictionCoeff", model, args)
        kwargs.setdefault("speciesRescale", "auto" if kwargs.get("rescaleEnergy", True) else False)
        super().__init__(temperature, stepSize, model, **kwargs)
        self.addGlobalVariable("flashmdFriction", valueIn(frictionCoeff, unit.picosecond ** -1))
        if self.getFriction() < 0 or self.getTemperature() <= 0:
            raise ValueError("temperature must be > 0 K and frictionCoeff >= 0 /ps")

    def getFriction(self) -> float:
        """Friction coefficient, 1/ps."""
        return self.getGlobalVariableByName("flashmdFriction")

    def setFriction(self, friction) -> None:
        self.setGlobalVariableByName("flashmdFriction", valueIn(friction, unit.picosecond ** -1))

    def _thermostatParameters(self):
        return self.getFriction(), self.getTemperature()

    def _thermostatHalfStep(self, v: np.ndarray) -> np.ndarray:
        a = math.exp(-0.5 * self.getFriction() * self.getStepSize().value_in_unit(unit.picosecond))
        sigma = np.sqrt((1.0 - a * a) * KB * self.getTemperature() / self._masses)[:, None]
        return a * v + sigma * self._rng().standard_normal(v.shape)


class FlashMDBussiIntegrator(_ThermostattedFlashMD):
    """FlashMD learned step between two stochastic-velocity-rescaling half steps.

    Parameters
    ----------
    temperature : K or Quantity
    tau : ps or Quantity
        Relaxation time of the kinetic energy.
    stepSize, model, **kwargs : as :class:`FlashMDLangevinIntegrator` (``model`` keyword only)
    """

    def __init__(self, temperature, tau, stepSize=None, *args, model=None, **kwargs):
        model = _legacyModel("FlashMDBussiIntegrator", "tau", model, args)
        super().__init__(temperature, stepSize, model, **kwargs)
        self.addGlobalVariable("flashmdTau", valueIn(tau, unit.picosecond))
        if self.getTemperature() <= 0 or self.getGlobalVariableByName("flashmdTau") <= 0:
            raise ValueError("temperature must be > 0 K and tau > 0 ps")

    def _thermostatParameters(self):
        return NotImplemented  # one global factor from a chi-square draw: host only

    def _thermostatHalfStep(self, v: np.ndarray) -> np.ndarray:
        m = self._masses[:, None]
        # Degrees of freedom: the learned step and the rescaling conserve total momentum, so 3N - 3.
        nf = 3 * v.shape[0] - 3
        vcom = (m * v).sum(0) / m.sum()
        u = v - vcom
        K = 0.5 * float((m * u * u).sum())
        if K <= 0:
            return v
        Kt = 0.5 * nf * KB * self.getTemperature()
        c = math.exp(-0.5 * self.getStepSize().value_in_unit(unit.picosecond) / self.getGlobalVariableByName(
            "flashmdTau"))
        rng = self._rng()
        r1 = rng.standard_normal()
        rest = rng.chisquare(nf - 1) if nf > 1 else 0.0
        Knew = (c * K + (1 - c) * Kt / nf * (r1 * r1 + rest) + 2 * r1 * math.sqrt(c * (1 - c) * Kt / nf * K))
        return vcom + u * math.sqrt(max(Knew, 0.0) / K)
