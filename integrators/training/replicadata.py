"""FlashMD training pairs from many replicas of one molecule in one OpenMM System (GPU-efficient data generation).

Same recipe as :func:`openmmflash.integrators.training.data.generatePairs` (Langevin-equilibrated starts at the
temperatures of
interest, then NVE velocity Verlet at a small time step with the System's own forces), but B independent copies of
the molecule run side by side in one Context (one force call per step serves them all, e.g. a FlashSchNet
TorchForce built with ``replicas=B``). Each replica has its own bath temperature (a per-particle ``kT`` in one
CustomIntegrator), so all temperatures run at once. One cycle, repeated ``cycles`` times (or until ``maxSeconds``):

    NVE velocity Verlet at ``timestep``: record (q, p) at t = 0 and at every requested stride -> one pair per
    replica and stride;  then Langevin (BAOAB middle scheme) at ``langevinTimestep`` for ``decorrelation`` ps, which
    re-thermalizes every replica and moves the next start away from this one.

Units: nm, ps, amu, K. The result has the dataset layout of data.py with one frame per replica and cycle
(N = particles per replica); the System must be non-periodic (``meta["periodic"]`` is False and the stored boxes
are zero) and have no constraints.
"""

import time
from typing import Dict, Optional, Sequence

import numpy as np

from openmmflash.integrators.training.data import import_openmm, particleMasses
from openmmflash.integrators.network.modelfile import SPECIES_KINDS
from openmmflash.units import BOLTZMANN_KJ as KB
from openmmflash.units import valueIn



def createReplicaIntegrator(langevinTimestep: float, friction: float):
    """CustomIntegrator with two programs selected by the global ``mode``: 0 Langevin middle (per-particle bath
    ``kT``, a per-DOF variable in kJ/mol), 1 velocity Verlet (velocities at the same time as positions)."""
    mm = import_openmm()
    integ = mm.CustomIntegrator(langevinTimestep)
    integ.addGlobalVariable("mode", 0)
    integ.addGlobalVariable("friction", friction)
    integ.addGlobalVariable("a", 0)
    integ.addPerDofVariable("kT", 0)
    integ.addUpdateContextState()
    integ.beginIfBlock("mode < 0.5")
    integ.addComputeGlobal("a", "exp(-friction*dt)")
    integ.addComputePerDof("v", "v + dt*f/m")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.addComputePerDof("v", "a*v + sqrt((1 - a*a)*kT/m)*gaussian")
    integ.addComputePerDof("x", "x + 0.5*dt*v")
    integ.endBlock()
    integ.beginIfBlock("mode > 0.5")
    integ.addComputePerDof("v", "v + 0.5*dt*f/m")
    integ.addComputePerDof("x", "x + dt*v")
    integ.addComputePerDof("v", "v + 0.5*dt*f/m")
    integ.endBlock()
    return integ


def _state(context, replicas: int):
    from openmm import unit
    st = context.getState(getPositions=True, getVelocities=True)
    q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    return np.asarray(q).reshape(replicas, -1, 3), np.asarray(v).reshape(replicas, -1, 3)


def generateReplicaPairs(system, positions, types, replicas: int, temperatures: Sequence[float],
                         strides: Sequence[float], timestep: float = 0.0005, cycles: int = 20,
                         decorrelation: float = 0.5, equilibration: float = 2.0, langevinTimestep: float = 0.002,
                         friction: float = 5.0, platform: Optional[str] = None, platformProperties=None,
                         maxSeconds: Optional[float] = None, minimize: bool = True, seed: int = 1,
                         progress: bool = True, speciesKind: str = "element",
                         speciesLabels: Optional[Dict[int, str]] = None, startVelocities=None) -> Dict[float, dict]:
    """Pairs at several strides from B replicas in one System.

    Parameters
    ----------
    system : openmm.System with ``replicas`` contiguous copies of the molecule (no constraints, not periodic)
    positions : array [B * n, 3] or [B, n, 3], nm (e.g. openmmflash.plugin.replicas.replicatePositions)
    types : sequence [n] (one replica) or [B * n] of species ids: atomic numbers, or CG bead types
    speciesKind : "element" (types are atomic numbers) or "cgBead" (types are a CG model's bead types); recorded in
        ``meta`` and carried by training into the model file. Every type must have exactly one mass.
    speciesLabels : optional {type: name} (e.g. {21: "TYR:CA"}), recorded in ``meta`` for per-species reports
    temperatures : K; replica b runs at temperatures[b % len(temperatures)]
    strides : ps; each a whole multiple of ``timestep``; one dataset per stride
    timestep : NVE velocity-Verlet step of the reference dynamics, ps
    cycles : NVE + decorrelation cycles (each gives one pair per replica and stride)
    decorrelation, equilibration : Langevin time between pairs and before the first, ps
    maxSeconds : stop after the cycle that passes this wall time (at least one cycle runs)
    startVelocities : optional [B * n, 3] or [B, n, 3] nm/ps with ``positions``: the first cycle's NVE segments start
        from exactly these states (no minimization, no equilibration; e.g. the states of a FlashMD run, whose
        momenta need not be thermal), later cycles as usual

    Temperatures, times and ``friction`` (1/ps) are numbers in these units or OpenMM Quantities.

    Returns {stride (ps): dataset dict} in the layout of :mod:`openmmflash.integrators.training.data`.
    """
    mm = import_openmm()
    from openmm import unit
    temperatures = [valueIn(t, unit.kelvin, "temperatures") for t in temperatures]
    strides = [valueIn(s, unit.picosecond, "strides") for s in strides]
    timestep = valueIn(timestep, unit.picosecond, "timestep")
    decorrelation = valueIn(decorrelation, unit.picosecond, "decorrelation")
    equilibration = valueIn(equilibration, unit.picosecond, "equilibration")
    langevinTimestep = valueIn(langevinTimestep, unit.picosecond, "langevinTimestep")
    friction = valueIn(friction, unit.picosecond ** -1, "friction")
    if system.getNumConstraints() > 0:
        raise ValueError(f"the System has {system.getNumConstraints()} constraints; FlashMD needs a System without "
                         "constraints")
    if system.usesPeriodicBoundaryConditions():
        raise ValueError("generateReplicaPairs is for non-periodic replicated Systems; use data.generatePairs for a "
                         "periodic box")
    N = system.getNumParticles()
    if replicas < 1 or N % replicas:
        raise ValueError(f"{N} particles cannot form {replicas} equal replicas")
    n = N // replicas
    types = np.asarray(types, dtype=np.int64).reshape(-1)
    if types.shape[0] == N:
        types = types[:n]
    if types.shape[0] != n:
        raise ValueError(f"types must have {n} (one replica) or {N} entries, got {types.shape[0]}")
    nsubs = []
    for stride in strides:
        k = int(round(stride / timestep))
        if k < 1 or abs(k * timestep - stride) > 1e-9:
            raise ValueError(f"stride {stride} ps must be a whole multiple of the timestep {timestep} ps")
        nsubs.append(k)
    if speciesKind not in SPECIES_KINDS:
        raise ValueError(f"speciesKind must be one of {SPECIES_KINDS}, got {speciesKind!r}")
    masses = particleMasses(system)
    if not np.allclose(masses.reshape(replicas, n), masses[:n]):
        raise ValueError("the replicas differ in their masses; build the System with replicas of one molecule")
    for z in np.unique(types):
        mz = np.unique(masses[:n][types == z])
        if np.ptp(mz) > 1e-6 * mz.max():
            raise ValueError(f"species {int(z)} has particles of masses {mz.tolist()} amu; a FlashMD model needs "
                             "exactly one mass per species: give those particles different types or equal masses")
    temps = np.array([temperatures[b % len(temperatures)] for b in range(replicas)], dtype=np.float64)
    integ = createReplicaIntegrator(langevinTimestep, friction)
    plat = mm.Platform.getPlatformByName(platform) if platform else None
    if plat is not None:
        context = mm.Context(system, integ, plat, dict(platformProperties or {}))
    else:
        context = mm.Context(system, integ)
    kt = np.repeat(KB * temps, n)
    integ.setPerDofVariableByName("kT", [mm.Vec3(k, k, k) for k in kt])
    context.setPositions(np.asarray(positions, dtype=np.float64).reshape(N, 3) * unit.nanometer)
    if minimize and startVelocities is None:
        mm.LocalEnergyMinimizer.minimize(context, 10.0, 100)
    rng = np.random.default_rng(seed)
    if startVelocities is not None:
        v0 = np.asarray(startVelocities, dtype=np.float64)
        if v0.size != N * 3:
            raise ValueError(f"startVelocities must have {N} x 3 entries (nm/ps), got shape {v0.shape}")
        context.setVelocities(v0.reshape(N, 3) * unit.nanometer / unit.picosecond)
        equilibration = 0.0
    else:
        v0 = rng.standard_normal((N, 3)) * np.sqrt(kt / masses)[:, None]
        context.setVelocities(v0 * unit.nanometer / unit.picosecond)
        integ.setGlobalVariableByName("mode", 0)
        integ.setStepSize(langevinTimestep)
        integ.step(max(1, int(round(equilibration / langevinTimestep))))
    out = {s: {k: [] for k in ("q0", "p0", "dq", "p1", "temperature")} for s in strides}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cycles, desc=f"flashmd-data cycles ({replicas} replicas)", unit="cycle")
    t0 = time.time()
    done = 0
    m = masses.reshape(replicas, n)[..., None]
    for _ in range(cycles):
        integ.setGlobalVariableByName("mode", 1)
        integ.setStepSize(timestep)
        q0, v0 = _state(context, replicas)
        at = 0
        for stride, k in sorted(zip(strides, nsubs), key=lambda x: x[1]):
            integ.step(k - at)
            at = k
            q1, v1 = _state(context, replicas)
            if not (np.isfinite(q1).all() and np.isfinite(v1).all()):
                raise RuntimeError("the reference NVE run blew up; use a smaller timestep")
            rec = out[stride]
            rec["q0"].append(q0.astype(np.float32))
            rec["p0"].append((v0 * m).astype(np.float32))
            rec["dq"].append((q1 - q0).astype(np.float32))
            rec["p1"].append((v1 * m).astype(np.float32))
            rec["temperature"].append(temps.astype(np.float32))
        integ.setGlobalVariableByName("mode", 0)
        integ.setStepSize(langevinTimestep)
        integ.step(max(1, int(round(decorrelation / langevinTimestep))))
        done += 1
        if bar is not None:
            bar.update(1)
        if maxSeconds is not None and time.time() - t0 > maxSeconds:
            break
    if bar is not None:
        bar.close()
    seconds = round(time.time() - t0, 1)
    result = {}
    for stride in strides:
        rec = out[stride]
        data = {k: np.concatenate(v) for k, v in rec.items()}
        data["box"] = np.zeros((data["q0"].shape[0], 3, 3), dtype=np.float32)
        data["masses"] = masses[:n]
        data["types"] = types
        data["meta"] = {"stride": float(stride), "timestep": timestep, "temperatures": sorted(set(temps.tolist())),
                        "replicas": replicas, "cycles": done, "decorrelation": decorrelation,
                        "equilibration": equilibration, "langevinTimestep": langevinTimestep, "friction": friction,
                        "seed": seed, "numParticles": n, "periodic": False, "openmm": mm.__version__,
                        "platform": context.getPlatform().getName(), "seconds": seconds, "speciesKind": speciesKind,
                        "generator": "openmmflash.integrators.training.replicadata.generateReplicaPairs"}
        if speciesLabels:
            data["meta"]["speciesLabels"] = {str(int(k)): str(v) for k, v in speciesLabels.items()}
        result[stride] = data
    del context, integ
    return result
