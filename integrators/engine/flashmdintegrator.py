"""FlashMDIntegrator: a learned long-stride NVE integrator that ``app.Simulation`` drives like any OpenMM integrator.

A Python subclass of ``openmm.CustomIntegrator`` whose step size is the model's stride. Each of the n strides of
``step(n)`` applies the learned map (stepper.py) to the Context's state, writes it back and calls
``CustomIntegrator.step(1)``: ``updateContextState`` runs (barostats and CMMotionRemover act as usual, ``frequency``
in strides), and the step count and time advance by one stride, as reporters and checkpoints expect.

Energy conservation with a guard (guard.py): after each learned step the momenta are rescaled so that V' + K'
equals the energy before the step; a step that is not finite, moves a particle too far, or needs a rescale outside
[1/maxRescale, maxRescale] is rejected: the state is restored and the same stride advanced with ``fallbackSubsteps``
velocity-Verlet substeps of the System's forces (inside the C++ integrator program). A run never produces NaN from
the network; rejections are counted (``getNumFallbacks``, ``getRejectionCounts``) and logged.

Checkpointed state (random seed and draw counter, counters) lives in integrator global variables; the model does
not: construct the integrator with the same model before ``loadCheckpoint``.

Per stride: getState (q, v) (skipped after an accepted stride unless a barostat or Andersen thermostat acts between
steps), the learned step (a CUDA graph on CUDA: densestep.py / paddedstep.py), setPositions + one energy evaluation
(energyeval.py), setVelocities, ``CustomIntegrator.step(1)``; ``enableProfiling`` times them. With the whole
energy in PyTorch on a CUDA device the strides of a call run device-resident instead (residentstrides.py: one getState
and one write-back per call). With B replicas and setReplicaEnergy, each replica is guarded and falls back alone
(rescale.replicaguard, replicaenergy.py; resident: replicaresident.py). Constraints and virtual sites are refused;
velocities are at the same time as positions (not leap-frog).
"""

import logging
import os
import warnings
from typing import Dict, Optional

import numpy as np
import torch
import openmm as mm
from openmm import unit

from openmmflash.integrators.engine.densestep import DenseReplicaStep
from openmmflash.integrators.engine.diagnostics import StrideLog
from openmmflash.integrators.engine.energyeval import EnergyEvaluator
from openmmflash.integrators.engine.paddedstep import PaddedReplicaStep
from openmmflash.integrators.engine.replicaenergy import ReplicaEnergy
from openmmflash.integrators.engine.residentloop import ResidentLoop
from openmmflash.integrators.engine.residentstrides import buildResidentLoop, residentObstacles, runResidentStrides
from openmmflash.integrators.engine.statecheck import checkFiniteState
from openmmflash.integrators.engine.stepper import FlashMDStepper, check_stride, random_rotation
from openmmflash.integrators.network.modelfile import ensembleNote, loadModel, shippedName
from openmmflash.integrators.rescale.guard import checkPrediction, energyRescale, rejectionKind
from openmmflash.integrators.rescale.replicaguard import replicaGuard
from openmmflash.integrators.rescale.modes import modeShareRescale, moleculeGroups, modeTemperatures
from openmmflash.integrators.rescale.species import checkSystem, speciesShareRescale, speciesTemperatures
from openmmflash.units import valueIn

MIN_SPECIES_PARTICLES = 20  # speciesRescale="auto" turns the per-species rescale on at this many per species


def _isModel(x) -> bool:
    """True for what can only be a model (a FlashMDModel, a file path, a bundled name), never a step size."""
    return isinstance(x, (str, os.PathLike, torch.nn.Module))


def _warnModelOrder(old: str, new: str, stacklevel: int = 3) -> None:
    """DeprecationWarning for the positional model; ``stacklevel`` counts from this function to the user's call."""
    warnings.warn(f"{old} is deprecated: pass the model as a keyword argument, {new}", DeprecationWarning,
                  stacklevel=stacklevel)


def _checkModelArgument(cls: str, model, extra) -> None:
    """Clear errors for a missing ``model=`` or surplus positional arguments."""
    if extra:
        raise TypeError(f"{cls} got {len(extra)} positional argument(s) too many; give the model as model=... and "
                        "the options (rescaleEnergy, device, ...) as keywords")
    if model is None:
        raise TypeError(f"{cls} needs model=: a FlashMDModel, a model file or a bundled FlashMD model name "
                        "(openmmflash.bundledModels('FlashMD') lists them)")


_warned_models = set()


def _warnEnsemble(model) -> None:
    """Log, once per process and model, what a shipped model's closed-loop validation found wrong with its ensemble."""
    name = shippedName(model)
    if name is None or name in _warned_models:
        return
    _warned_models.add(name)
    note = ensembleNote(name)
    if note:
        logging.getLogger("openmmflash.flashmd").warning("FlashMD model %s: %s", name, note)


class FlashMDIntegrator(mm.CustomIntegrator):
    """Learned long-stride NVE integrator (FlashMD) with guarded energy rescaling.

    ``FlashMDIntegrator(stepSize=None, *, model, **options)``, as ``VerletIntegrator(stepSize)`` plus the model:

    >>> integrator = FlashMDIntegrator(model="water-tip3pfb-8fs")            # doctest: +SKIP

    Parameters
    ----------
    stepSize : ps or Quantity, optional
        Must equal the model's stride; default the model's stride.
    model : FlashMDModel, file path or bundled model name, keyword only
        ``openmmflash.bundledModels("FlashMD")`` lists the bundled ones. The older call ``FlashMDIntegrator(model,
        stepSize)`` still works and warns (DeprecationWarning).
    rescaleEnergy : bool
        Rescale momenta after each learned step so that the total energy is unchanged (one energy evaluation).
    randomRotation : bool
        Random O(3) rotation around every network call.
    maxDisplacement : nm, optional
        Largest accepted displacement of any particle in one stride; default 12.5 nm/ps * stride (0.1 nm at 8 fs).
    maxRescale : float
        Accept only 1/maxRescale <= alpha <= maxRescale.
    fallbackSubsteps : int, optional
        Velocity-Verlet substeps for a rejected stride; default stride / 0.5 fs.
    speciesRescale : bool or "auto"
        Energy rescale per species (needs rescaleEnergy): each species keeps its share of the kinetic energy across
        the learned step (species.py); the thermostat does the exchange. "auto" (thermostatted integrators' default):
        on when every species has >= 20 particles per replica (water, not CG).
    modeRescale : bool, optional
        Energy rescale per molecular motion (needs rescaleEnergy; precedes speciesRescale): translation, rotation and
        vibration of OpenMM's molecules each keep their share (modes.py). None (default): as the model file
        recommends (``integratorDefaults``; on for water-tip3pfb-8fs-npt), else off.
    device : torch device for the network (default: cuda when torch sees a GPU, else cpu).
    replicas : int
        The System holds this many identical, contiguous, non-interacting copies of one molecule
        (``openmmflash.plugin.replicas``); COM is kept per copy. The rescale and fallback act on the whole System
        (one rejected replica sends all to the fallback substeps) unless :meth:`setReplicaEnergy` gives the energy
        of each replica: then every replica is guarded alone and only rejected ones run the fallback substeps.
    useCUDAGraph : bool, optional
        Fixed-shape learned step replayed as one CUDA graph (all pairs per replica without a box, densestep.py; a
        padded neighbor list with one, paddedstep.py). None: on for a CUDA device (eager if capture fails).
    randomSeed : int
        Seed of the integrator's random numbers (rotations, thermostat noise); 0 picks one at random.
    deviceResident : bool, optional
        Run all strides of a ``step(n)`` call on the network's device, fallback substeps included, touching the
        Context once per call (residentloop.py). Needs the whole potential energy in PyTorch (setEnergyEvaluator with
        no OpenMM groups, e.g. flashmdcg.flashSchNetEnergyEvaluator(..., priors="torch")), which is checked against
        OpenMM's energy and forces before the first stride; a non-periodic System without barostat; the plain
        rescale; NVE or Langevin. None (default): on for a CUDA device when all of that holds and no replica energy
        is set (setReplicaEnergy: host strides); True: required (with a replica energy the resident strides guard
        per replica too, replicaresident.py).
        On CUDA both strides are compiled with torch.compile at the first step, which then takes longer; set
        ``integrator.residentCompile = False`` before it to capture them uncompiled (2.4x slower per accepted
        stride on an H100, results/flashmd_cg_speed_gpu_s8_compiled.json).
    """

    def __init__(self, *args, model=None, stepSize=None, rescaleEnergy: bool = True, randomRotation: bool = False,
                 maxDisplacement=None, maxRescale: float = 1.25, fallbackSubsteps: Optional[int] = None,
                 device=None, randomSeed: int = 0, speciesRescale: bool = False, replicas: int = 1,
                 useCUDAGraph: Optional[bool] = None, modeRescale: Optional[bool] = None,
                 deviceResident: Optional[bool] = None):
        # FlashMDIntegrator(stepSize=None, *, model, ...); deprecated: FlashMDIntegrator(model, stepSize=None, ...)
        if model is None and args and _isModel(args[0]):
            _warnModelOrder("FlashMDIntegrator(model, stepSize)", "FlashMDIntegrator(stepSize, model=model)")
            model, args = args[0], args[1:]
        if args and stepSize is not None:
            raise TypeError("FlashMDIntegrator got the step size twice (positional and stepSize=)")
        stepSize, args = (args[0], args[1:]) if args else (stepSize, args)
        _checkModelArgument(type(self).__name__, model, args)
        flashmd = loadModel(model)
        _warnEnsemble(flashmd)
        stride = flashmd.stride if stepSize is None else valueIn(stepSize, unit.picosecond)
        check_stride(flashmd, stride)
        super().__init__(stride)
        self._model = flashmd
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = device
        if int(replicas) != replicas or replicas < 1:
            raise ValueError(f"replicas must be a whole number >= 1, got {replicas}")
        self.replicas = int(replicas)
        self.useCUDAGraph = useCUDAGraph
        self.deviceResident = deviceResident
        self._resident, self._residentDecided = None, False
        self._dense = None
        self._padded = None
        self.rescaleEnergy = bool(rescaleEnergy)
        # "auto" (the Langevin and Bussi default): decided in setContext from the species sizes
        self._speciesRescaleAuto = speciesRescale == "auto"
        self.speciesRescale = self.rescaleEnergy if self._speciesRescaleAuto else bool(speciesRescale)
        if self.speciesRescale and not self.rescaleEnergy:
            raise ValueError("speciesRescale=True needs rescaleEnergy=True (it is a way of doing the energy rescale)")
        if modeRescale is None:
            modeRescale = getattr(flashmd, "integratorDefaults", {}).get("modeRescale", False) and self.rescaleEnergy
        self.modeRescale = bool(modeRescale)
        if self.modeRescale and not self.rescaleEnergy:
            raise ValueError("modeRescale=True needs rescaleEnergy=True (it is a way of doing the energy rescale)")
        self.randomRotation = bool(randomRotation)
        self.maxDisplacement = 12.5 * stride if maxDisplacement is None else valueIn(maxDisplacement, unit.nanometer)
        if maxRescale <= 1.0:
            raise ValueError(f"maxRescale must be > 1, got {maxRescale}")
        self.maxRescale = float(maxRescale)
        self._energy = EnergyEvaluator()
        nsub = int(fallbackSubsteps) if fallbackSubsteps else max(1, int(round(stride / 0.0005)))
        if randomSeed == 0:
            randomSeed = int(np.random.SeedSequence().entropy % (2 ** 31 - 1)) + 1
        # Checkpointed state lives in global variables.
        self.addGlobalVariable("flashmdFallback", 0)
        self.addGlobalVariable("flashmdSubsteps", nsub)
        self.addGlobalVariable("flashmdSubstep", 0)
        self.addGlobalVariable("flashmdH", stride / nsub)
        self.addGlobalVariable("flashmdSeed", randomSeed)
        self.addGlobalVariable("flashmdDraws", 0)
        self.addGlobalVariable("flashmdNumLearned", 0)
        self.addGlobalVariable("flashmdNumFallbacks", 0)
        self.addPerDofVariable("flashmdX1", 0)
        self.addUpdateContextState()
        # Fallback: velocity Verlet substeps of the System's forces, only when flashmdFallback is set.
        self.beginIfBlock("flashmdFallback > 0")
        self.addComputeGlobal("flashmdSubstep", "0")
        self.beginWhileBlock("flashmdSubstep < flashmdSubsteps")
        self.addComputePerDof("v", "v + 0.5*flashmdH*f/m")
        self.addComputePerDof("x", "x + flashmdH*v")
        self.addComputePerDof("v", "v + 0.5*flashmdH*f/m")
        self.addComputeGlobal("flashmdSubstep", "flashmdSubstep + 1")
        self.endBlock()
        self.endBlock()
        self._context = None
        self._stepper = None
        self._cache = None
        self._carry = None  # (q, v, box, V, params) set by an accepted stride for the next one in the same step()
        self._log = StrideLog()  # rescale factors, rejections, per-phase wall times (diagnostics.py)
        self._moleculeGroups = None
        self._replicaEnergy: Optional[ReplicaEnergy] = None  # setReplicaEnergy: guard and fallback per replica
        self._replicaChecked = False
        self._replicaCache = None  # (q [N, 3] as written, V_b(q) [B]) of the latest per-replica stride
        self._replicaFallbacks = np.zeros(self.replicas, dtype=np.int64)  # per-replica strides' fallbacks
        self._replicaFallbackStrides = 0  # per-replica strides with a fallback (also in flashmdNumFallbacks)

    # ----------------------------------------------------------------------------------------------- setup
    def _findContext(self):
        """The Context this integrator is bound to (OpenMM has no integrator -> context accessor in Python)."""
        if self._context is not None:
            return self._context
        import gc
        for ref in gc.get_referrers(self):
            if isinstance(ref, mm.Context):
                self.setContext(ref)
                return ref
        raise RuntimeError("this FlashMD integrator is not bound to a Context; create a Context or Simulation with "
                           "it before calling step(), or call integrator.setContext(context)")

    def setContext(self, context) -> None:
        """Bind explicitly to ``context`` (done automatically on the first step) and validate its System."""
        system = context.getSystem()
        B = self.replicas
        masses, types = checkSystem(system, self._model, getattr(self, "_atomTypes", None), B)
        k = len(masses) // B
        gen = torch.Generator().manual_seed(int(self.getGlobalVariableByName("flashmdSeed")))
        self._stepper = FlashMDStepper(self._model, masses[:k].tolist(), types[:k].tolist(),
                                       stride=self.getStepSize().value_in_unit(unit.picosecond), randomRotation=False,
                                       device=self._device, generator=gen)
        self._masses, self._types = masses, types
        if self._speciesRescaleAuto:
            # Per-species shares need many particles per species: with a few beads per species (CG proteins) their
            # kinetic energies fluctuate too much within a stride and most strides would be rejected.
            smallest = min(int((self._types[:k] == z).sum()) for z in set(types[:k]))
            self.speciesRescale = self.rescaleEnergy and smallest >= MIN_SPECIES_PARTICLES
        self._periodic = system.usesPeriodicBoundaryConditions()
        self._moleculeGroups = None  # built on first use (modeRescale, computeModeTemperatures)
        # Forces that change positions, velocities or the box between steps (updateContextState) rule out carrying
        # the state from one stride to the next.
        # A CMMotionRemover is no obstacle: accepted strides write velocities with the centre of mass at rest.
        names = [type(f).__name__ for f in system.getForces()]
        self._passive = not any(n == "AndersenThermostat" or n.startswith("MonteCarlo") for n in names)
        self._removeCOM = "CMMotionRemover" in names
        graph = self.useCUDAGraph
        if graph is None:
            graph = self._stepper.device.type == "cuda"
        # Fixed-shape step (a CUDA graph on CUDA): all pairs without a box, a padded neighbor list with one.
        torch_energy = self._energy.torchEnergy
        if torch_energy is not None and (torch_energy.device != self._stepper.device
                                         or (torch_energy.device.type == "cuda" and not torch_energy.capturable)):
            torch_energy = None  # not graph-safe or on another device: called separately on OpenMM's positions
        self._dense = (DenseReplicaStep(self._stepper, B, useCUDAGraph=True, energy=torch_energy)
                       if graph and not self._periodic else None)
        self._padded = PaddedReplicaStep(self._stepper, B, periodic=True) if graph and self._periodic else None
        self._context = context
        self._cache = None
        self._resident, self._residentDecided = None, False  # decided at the next step (_residentLoop)

    def setAtomTypes(self, types) -> None:
        """Species ids of the particles, [N] or one replica's [N / replicas]: atomic numbers (or a Topology) for an
        element model, the FlashSchNet bead types for a model with ``speciesKind == "cgBead"``. By default (element
        models only) they are inferred from the masses."""
        if hasattr(types, "atoms"):
            if self._model.speciesKind == "cgBead":
                raise ValueError("this FlashMD model uses CG bead types as species: pass the bead types (a list of "
                                 "int, e.g. flashmdcg.cgBeadTypes(net, topology)), not a Topology (its elements)")
            types = [a.element.atomic_number for a in types.atoms()]
        self._atomTypes = [int(t) for t in types]
        if self._context is not None:
            self.setContext(self._context)

    # ----------------------------------------------------------------------------------------------- random
    def _rng(self) -> np.random.Generator:
        """A generator determined by (seed, draw counter); the counter is checkpointed, so is the noise."""
        draws = int(self.getGlobalVariableByName("flashmdDraws"))
        self.setGlobalVariableByName("flashmdDraws", draws + 1)
        return np.random.default_rng([int(self.getGlobalVariableByName("flashmdSeed")), draws])

    # ----------------------------------------------------------------------------------------------- hooks
    def _thermostatHalfStep(self, v: np.ndarray) -> np.ndarray:
        """Thermostat half step on velocities [N, 3] nm/ps (none for NVE)."""
        return v

    @property
    def _hasThermostat(self) -> bool:
        return False

    # ----------------------------------------------------------------------------------------------- resident
    residentCompile = True  # compile the resident strides with torch.compile on CUDA (set False before the first step)

    def _thermostatParameters(self):
        """(friction 1/ps, temperature K) of Ornstein-Uhlenbeck half steps, None for none (NVE); NotImplemented for a
        thermostat without a resident form."""
        return None

    def _residentLoop(self) -> Optional[ResidentLoop]:
        """The bound Context's loop, built on first use; None when the strides run on the host. deviceResident
        None: resident on a CUDA device when nothing stands in the way; True: required (ValueError says why not)."""
        if self._residentDecided:
            return self._resident
        self._residentDecided = True
        self._resident = None
        want = self.deviceResident
        if want is False or (want is None and (self._stepper.device.type != "cuda" or self._perReplica())):
            return None
        obstacles = residentObstacles(self._energy, self._stepper.device, self._periodic, self._passive,
                                      self.rescaleEnergy, self.speciesRescale, self.modeRescale, self.randomRotation,
                                      self._thermostatParameters(), type(self).__name__)
        if self._perReplica() and self._replicaEnergy.device != self._stepper.device:
            obstacles.append(f"the replica energy is on {self._replicaEnergy.device}, the network on "
                             f"{self._stepper.device}")
        if obstacles:
            if want:
                raise ValueError("deviceResident=True, but the strides cannot run on the device: "
                                 + "; ".join(obstacles))
            return None
        self._resident = buildResidentLoop(self._stepper, self.replicas, self._energy, self._masses,
                                           int(self.getGlobalVariableByName("flashmdSubsteps")),
                                           self.maxDisplacement, self.maxRescale, self._removeCOM,
                                           self.useCUDAGraph is not False, self.residentCompile,
                                           self._replicaEnergy if self._perReplica() else None)
        return self._resident

    def isDeviceResident(self) -> bool:
        """Whether the strides run device-resident on the bound Context (decided at the first step)."""
        self._findContext()
        return self._residentLoop() is not None

    # ----------------------------------------------------------------------------------------------- stepping
    def step(self, steps: int) -> None:
        """Advance ``steps`` strides: the step count grows by exactly ``steps``, the time by steps * stride."""
        if int(steps) != steps or steps < 0:
            raise ValueError(f"step() needs a non-negative whole number of steps, got {steps}")
        context = self._findContext()
        if steps and self._residentLoop() is not None:
            nfb = runResidentStrides(self, context, self._resident, int(steps), self._thermostatParameters(),
                                     self._log, self.maxDisplacement, self.maxRescale, self._replicaFallbacks)
            if self._perReplica():
                self._replicaFallbackStrides += nfb
            return
        self._carry = None  # the state is read from the Context at the first stride of every call
        stride = self._replicaStride if self._perReplica() else self._stride
        try:
            for _ in range(int(steps)):
                stride(context)
        finally:
            self._carry = None

    def setEnergyEvaluator(self, groups, extraEnergy) -> None:
        """Evaluate the potential energy for the rescale as OpenMM's energy of force ``groups`` (a set of group
        numbers) plus ``extraEnergy`` for the remaining forces: a callable (positions [N, 3] nm numpy) -> kJ/mol, or
        an ``energyeval.TorchEnergy``, which the fixed-shape learned step on a CUDA device runs inside its own graph.

        Use it when the rest is cheaper without OpenMM: a TorchForce always runs its backward pass for forces,
        while the rescale needs only the energy (see flashmdcg.flashSchNetEnergyEvaluator). The two parts must add
        up to the System's potential energy. ``setEnergyEvaluator(None, None)`` restores the plain OpenMM energy.
        """
        self._energy = EnergyEvaluator(groups, extraEnergy)
        self._cache = None
        self._resident, self._residentDecided = None, False
        if self._context is not None:
            self.setContext(self._context)

    def setReplicaEnergy(self, energy: Optional[ReplicaEnergy]) -> None:
        """Guard and fall back per replica: ``energy`` (replicaenergy.ReplicaEnergy, e.g.
        flashmdcg.flashSchNetReplicaEnergy) gives V_b of each of the ``replicas`` copies as a PyTorch function; it must
        add up to the System's potential energy (checked against OpenMM's energy and forces before the first stride).

        Each replica's learned stride is then accepted or rejected on its own (rescale.replicaguard: its own H_b,
        V_b' and alpha_b); accepted replicas keep their learned positions and momenta, and only the rejected ones are
        advanced by the fallback's velocity-Verlet substeps, with the forces -dV_b/dq of those replicas alone
        (PyTorch, float64 integration), so a fallback costs k / B of a whole-System one. The thermostat half steps
        act on all particles as before. With deviceResident=True the resident strides guard per replica too, but
        their fallback integrates every replica and keeps the rejected ones' results (fixed shapes for CUDA graphs;
        the cost of a whole-System fallback). Not with modeRescale. ``None`` restores the whole-System guard; with one
        replica nothing changes."""
        if energy is not None:
            if energy.replicas != self.replicas:
                raise ValueError(f"the replica energy is for {energy.replicas} replicas but the integrator for "
                                 f"{self.replicas}; create both with the same replicas")
            if self.modeRescale:
                raise ValueError("the per-replica guard does the plain or per-species energy rescale; pass "
                                 "modeRescale=False to the integrator, or keep the whole-System guard")
        self._replicaEnergy = energy
        self._replicaChecked = False
        self._replicaCache = None
        self._resident, self._residentDecided = None, False  # decided again at the next step (_residentLoop)

    def _perReplica(self) -> bool:
        """Whether the host strides guard and fall back per replica (a replica energy is set and B > 1)."""
        return self._replicaEnergy is not None and self.replicas > 1

    # ----------------------------------------------------------------------------------------------- diagnostics
    def getReplicaFallbackCounts(self) -> np.ndarray:
        """Strides each replica advanced by fallback substeps instead of its learned step, [replicas] int: its own
        rejections with the per-replica guard (setReplicaEnergy), every whole-System fallback otherwise. Not stored
        in checkpoints."""
        whole = self.getNumFallbacks() - self._replicaFallbackStrides
        return self._replicaFallbacks + max(whole, 0)

    def getReplicaFallbackFractions(self) -> np.ndarray:
        """getReplicaFallbackCounts() / strides run, [replicas] (zeros before the first stride)."""
        strides = self.getNumFallbacks() + self.getNumLearnedSteps()
        return self.getReplicaFallbackCounts() / max(strides, 1)

    @property
    def timings(self) -> Optional[Dict[str, float]]:
        """Wall time per stride phase (s) while profiling (enableProfiling), else None."""
        return self._log.timings

    @property
    def lastRejection(self) -> Optional[str]:
        """Reason of the latest rejected learned step (None before the first)."""
        return self._log.lastRejection

    def enableProfiling(self, on: bool = True) -> None:
        """Accumulate the wall time per stride phase in ``timings`` (s): readState (getState of q, v), thermostat,
        network (learned step incl. host <-> device copies), energy (setPositions + V'), rescale (energy rescale and the
        second thermostat half step), writeAndStep (setVelocities, counters, CustomIntegrator.step), fallback (the
        substeps of rejected strides)."""
        self._log.enableProfiling(on)

    def getRejectionCounts(self) -> Dict[str, int]:
        """Rejected learned steps since the integrator was created, by kind: "nonFinite",
        "displacement", "energyAbove" (H - V' <= 0), "rescaleLow" / "rescaleHigh" (alpha below / above the bounds:
        the network's V' too high / too low), "species" (per-species shares). Not stored in checkpoints."""
        return dict(self._log.rejections)

    def getRescaleFactors(self) -> np.ndarray:
        """Recent energy rescale factors alpha of accepted steps (diagnostic of the model's energy error)."""
        return np.asarray(self._log.alphas)

    def getNumFallbacks(self) -> int:
        """Number of strides advanced by velocity-Verlet substeps because the learned step was rejected (with the
        per-replica guard: strides in which at least one replica was; see getReplicaFallbackCounts)."""
        return int(self.getGlobalVariableByName("flashmdNumFallbacks"))

    def getNumLearnedSteps(self) -> int:
        """Number of accepted learned strides (with the per-replica guard: strides every replica's was accepted)."""
        return int(self.getGlobalVariableByName("flashmdNumLearned"))

    def getModel(self):
        return self._model

    def computeRescaleEnergy(self, context=None) -> float:
        """The potential energy at the Context's positions as the rescale evaluates it (see setEnergyEvaluator),
        kJ/mol."""
        return self._energy(context or self._findContext())[0]

    @property
    def _modeGroups(self):
        """OpenMM's molecules of the bound Context grouped by size (modes.moleculeGroups), built on first use."""
        if self._moleculeGroups is None:
            self._moleculeGroups = moleculeGroups(self._findContext().getMolecules())
        return self._moleculeGroups

    def computeSpeciesTemperatures(self, context=None) -> Dict[str, float]:
        """Kinetic temperature of each species, K: sum(m v^2) / (3 N_s k_B) (for equipartition checks), keyed by the
        species' label (element symbol, or the bead name such as "TYR:CA" for a bead-species model)."""
        context = context or self._findContext()
        v = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond)
        return speciesTemperatures(v, self._masses, self._types, self._model.speciesLabel)

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

    def _randomRotation(self):
        return random_rotation(torch.Generator().manual_seed(int(self._rng().integers(2 ** 62))))

    def _predict(self, q, v, box, rotation):
        """The learned step from (q [N, 3] nm, v [N, 3] nm/ps): (q' [N, 3], v' [N, 3] before any rescale, the PyTorch
        part of V(q') kJ/mol when the fixed-shape step computed it, else None)."""
        m = self._masses[:, None]
        shape = (self.replicas, -1, 3)
        e1 = None
        if self._dense is not None:
            q1, p1, e1 = self._dense(q.reshape(shape), (v * m).reshape(shape), rotation)
        elif self._padded is not None:
            q1, p1 = self._padded(q.reshape(shape), (v * m).reshape(shape), box, rotation)
        else:
            q1, p1 = self._stepper.step(torch.from_numpy(np.ascontiguousarray(q).reshape(shape)),
                                        torch.from_numpy((v * m).reshape(shape)),
                                        torch.from_numpy(box) if self._periodic else None, rotation=rotation)
            q1, p1 = q1.cpu().numpy(), p1.cpu().numpy()  # the stepper returns tensors on its device
        q1, p1 = q1.reshape(-1, 3), p1.reshape(-1, 3)
        self._log.tick("network")
        return q1, p1 / m, e1

    def _share(self, q, q1, box):
        """How H - V' is shared among the particles: per molecular mode, per species, or None (one factor)."""
        if self.modeRescale:
            b = np.asarray(box) if self._periodic else None
            return lambda v, v1, k: modeShareRescale(q, v, q1, v1, self._masses, self._modeGroups, k,
                                                     self.maxRescale, b)
        if self.speciesRescale:
            return lambda v, v1, k: speciesShareRescale(v, v1, self._masses, self._types, k, self.maxRescale,
                                                        self._model.speciesLabel)
        return None

    def _guard(self, context, q, v, V, q1, v1, e1, box):
        """Check one learned step and rescale it (guard.py): (reason of a rejection or None, rescaled v', V(q') and
        the positions as OpenMM holds them or None). Leaves q' in the Context when it got as far as the energy."""
        reason = checkPrediction(q, q1, v1, self.maxDisplacement)
        if reason is not None:
            return reason, v1, None
        context.setPositions(q1)
        if not self.rescaleEnergy:
            return None, v1, None
        held = self._energy(context, e1)
        self._log.tick("energy")
        reason, v1, alpha = energyRescale(v, v1, self._masses, V, held[0], self.maxRescale, self._share(q, q1, box))
        if reason is not None:
            return reason, v1, None
        self._log.noteRescale(alpha)
        return None, v1, held

    def _stride(self, context) -> None:
        prof = self._log.profiling
        self._log.start()
        carry, self._carry = self._carry, None
        if carry is not None:  # the previous accepted stride of this step() call left (q, v, box, V, params) as set
            q, v, box, V, params = carry
        else:
            st = context.getState(getPositions=True, getVelocities=True)
            q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            checkFiniteState(q, v, st.getStepCount())  # before any energy: NaN under PME crashes Reference
            box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            V, params = None, None
        if self.rescaleEnergy and carry is None:
            params = dict(context.getParameters())
            if (self._cache is not None and np.array_equal(self._cache[1], q) and np.array_equal(self._cache[2], box)
                    and self._cache[3] == params):
                V = self._cache[0]
            else:
                V = self._energy(context)[0]
        self._cache = None
        if prof:
            self._log.tick("readState")
        v = self._thermostatHalfStep(v)
        if prof:
            self._log.tick("thermostat")
        rotation = self._randomRotation() if self.randomRotation else None
        q1, v1, e1 = self._predict(q, v, box, rotation)
        reason, v1, held = self._guard(context, q, v, V, q1, v1, e1, box)
        if reason is None:
            v1 = self._thermostatHalfStep(v1)
            if self._removeCOM:  # what the System's CMMotionRemover would do to v1 (so that carrying it is exact)
                m = self._masses[:, None]
                v1 = v1 - (m * v1).sum(0) / m.sum()
            if prof:
                self._log.tick("rescale")
            context.setVelocities(v1)
            self.setGlobalVariableByName("flashmdNumLearned", self.getGlobalVariableByName("flashmdNumLearned") + 1)
            mm.CustomIntegrator.step(self, 1)
            if held is not None:
                self._cache = (held[0], held[1], box, params)
                if self._passive:
                    # Nothing in the System changes the state inside CustomIntegrator.step (no barostat or Andersen
                    # thermostat; a CMMotionRemover finds v1 already at rest): the next stride of this step() call
                    # starts from what was just set, without a getState.
                    self._carry = (held[1], v1, box, held[0], params)
            if prof:
                self._log.tick("writeAndStep")
            return
        # Rejected: restore the state and run the stride with velocity-Verlet substeps inside the C++ program.
        nfb = int(self.getGlobalVariableByName("flashmdNumFallbacks")) + 1
        self.setGlobalVariableByName("flashmdNumFallbacks", nfb)
        self._log.noteRejection(reason, rejectionKind(reason), context.getStepCount(), nfb,
                                int(self.getGlobalVariableByName("flashmdSubsteps")))
        context.setPositions(q)
        context.setVelocities(v)
        self.setGlobalVariableByName("flashmdFallback", 1)
        try:
            mm.CustomIntegrator.step(self, 1)
        finally:
            self.setGlobalVariableByName("flashmdFallback", 0)
        if self._hasThermostat:
            v2 = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(
                unit.nanometer / unit.picosecond)
            context.setVelocities(self._thermostatHalfStep(np.asarray(v2)))
        if prof:
            self._log.tick("fallback")

    def _checkReplicaEnergy(self, context) -> None:
        """Refuse (ValueError) a replica energy whose sum or forces differ from OpenMM's at the Context's state."""
        st = context.getState(getPositions=True, getEnergy=True, getForces=True)
        q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        V_openmm = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f_openmm = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        energy = self._replicaEnergy
        if energy.n * energy.replicas != len(q):
            raise ValueError(f"the replica energy covers {energy.replicas} x {energy.n} particles, the System has "
                             f"{len(q)}")
        x = torch.as_tensor(np.asarray(q), dtype=torch.float64, device=energy.device).view(energy.replicas, -1, 3)
        V, f = energy.forces(x)
        V, f = float(V.sum()), f.reshape(-1, 3).cpu().numpy()
        scale = max(1.0, float(np.sqrt((f_openmm ** 2).mean())))
        df = float(np.abs(f - f_openmm).max())
        if abs(V - V_openmm) > 1e-4 * max(1.0, abs(V_openmm)) + 1e-2 or df > 1e-2 * scale + 1e-2:
            raise ValueError(f"the replica energies do not add up to the System's: sum {V:.6g} vs OpenMM "
                             f"{V_openmm:.6g} kJ/mol, largest force difference {df:.3g} kJ/mol/nm (force RMS "
                             f"{scale:.3g}). They must cover every force of the System (e.g. "
                             "flashmdcg.flashSchNetReplicaEnergy); call setReplicaEnergy(None) for the whole-System "
                             "guard")
        self._replicaChecked = True

    def _replicaStride(self, context) -> None:
        """One stride with the guard and the fallback per replica (setReplicaEnergy); the Context is read once and
        written once, and ``CustomIntegrator.step(1)`` advances the step count (its fallback block stays off)."""
        prof = self._log.profiling
        self._log.start()
        energy, B = self._replicaEnergy, self.replicas
        st = context.getState(getPositions=True, getVelocities=True)
        q = np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = np.asarray(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        checkFiniteState(q, v, st.getStepCount())  # before any energy
        if not self._replicaChecked:
            self._checkReplicaEnergy(context)
        box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        V = None
        if self.rescaleEnergy:
            cache, self._replicaCache = self._replicaCache, None
            V = cache[1] if cache is not None and np.array_equal(cache[0], q) else energy.energies(q)
        if prof:
            self._log.tick("readState")
        v = self._thermostatHalfStep(v)
        rotation = self._randomRotation() if self.randomRotation else None
        q1, v1, _ = self._predict(q, v, box, rotation)
        share = None
        if self.speciesRescale:
            def share(b, sl):
                return lambda vb, v1b, k: speciesShareRescale(vb, v1b, self._masses[sl], self._types[sl], k,
                                                             self.maxRescale, self._model.speciesLabel)
        accepted, v1, V1, reasons, alphas = replicaGuard(
            q, v, q1, v1, self._masses, B, V, energy.energies if self.rescaleEnergy else None,
            self.maxDisplacement, self.maxRescale, share)
        if prof:
            self._log.tick("energy")
        for a in alphas[accepted]:
            if np.isfinite(a):
                self._log.noteRescale(float(a))
        rejected = np.nonzero(~accepted)[0]
        q1 = np.where(np.repeat(accepted, len(q) // B)[:, None], q1, q)
        if len(rejected):
            # The rejected replicas alone: velocity-Verlet substeps of their own forces from (q, v).
            n = len(q) // B
            nsub = int(self.getGlobalVariableByName("flashmdSubsteps"))
            nfb = int(self.getGlobalVariableByName("flashmdNumFallbacks")) + 1
            self.setGlobalVariableByName("flashmdNumFallbacks", nfb)
            self._replicaFallbackStrides += 1
            self._replicaFallbacks[rejected] += 1
            for b in rejected:
                self._log.noteRejection(f"replica {b}: {reasons[b]}", rejectionKind(reasons[b]),
                                        context.getStepCount(), nfb, nsub)
            qf, vf, Vf = energy.substeps(q.reshape(B, n, 3)[rejected], v.reshape(B, n, 3)[rejected],
                                         self._masses[:n], self.getGlobalVariableByName("flashmdH"), nsub)
            if not (np.isfinite(qf).all() and np.isfinite(vf).all() and np.isfinite(Vf).all()):
                raise RuntimeError(f"the {nsub} velocity-Verlet substeps of rejected FlashMD replicas "
                                   f"{rejected.tolist()} gave non-finite positions or energy (their forces blew up); "
                                   "the Context keeps the state from before this stride")
            q1, v1 = q1.reshape(B, n, 3), v1.reshape(B, n, 3)
            q1[rejected], v1[rejected], V1[rejected] = qf, vf, Vf
            q1, v1 = q1.reshape(-1, 3), v1.reshape(-1, 3)
            if prof:
                self._log.tick("fallback")
        else:
            self.setGlobalVariableByName("flashmdNumLearned", self.getGlobalVariableByName("flashmdNumLearned") + 1)
        v1 = self._thermostatHalfStep(v1)
        if self._removeCOM:
            m = self._masses[:, None]
            v1 = v1 - (m * v1).sum(0) / m.sum()
        context.setPositions(q1)
        context.setVelocities(v1)
        mm.CustomIntegrator.step(self, 1)
        if self.rescaleEnergy:
            self._replicaCache = (q1, V1)
        if prof:
            self._log.tick("writeAndStep")
