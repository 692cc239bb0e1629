"""Training data for FlashMD: pairs of phase-space points one stride apart, from OpenMM NVE runs.

Recipe (FlashMD, arXiv 2505.19350): from many independent starts at the temperatures of interest, equilibrate
with Langevin dynamics, then run NVE velocity Verlet at a small time step with the System's own forces and record
pairs ((q, p) at t, (q, p) at t + stride). Pair starts are spaced by ``pairSpacing`` so that consecutive pairs are
only weakly correlated. Time-reversed pairs and rotations are added at training time (training.py), not stored.

Units: positions nm, momenta amu nm/ps, masses amu (dalton), times ps, temperatures K.

Dataset file (``.npz``): q0 [P, N, 3] float32, p0 [P, N, 3] float32, dq [P, N, 3] float32 (= q1 - q0, unwrapped),
p1 [P, N, 3] float32, box [P, 3, 3] float32, temperature [P] float32, masses [N] float64, types [N] int64, and a
JSON ``meta`` string (stride, timestep, system description, provenance).
"""

import json
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch  # noqa: F401  (before openmm)

from openmmflash.units import valueIn



def import_openmm():
    """Import openmm (torch is already imported above, as the Torch plugin needs)."""
    import openmm
    return openmm


def createVelocityVerletIntegrator(timestep: float):
    """A CustomIntegrator running velocity Verlet, with velocities at the same time as positions (OpenMM's
    VerletIntegrator is leap-frog, whose velocities lag by half a step). ``timestep`` in ps."""
    mm = import_openmm()
    integ = mm.CustomIntegrator(timestep)
    integ.addUpdateContextState()
    integ.addComputePerDof("v", "v+0.5*dt*f/m")
    integ.addComputePerDof("x", "x+dt*v")
    integ.addComputePerDof("v", "v+0.5*dt*f/m")
    return integ


def flexibleWaterBox(boxSize: float = 1.6, cutoff: float = 0.7, forcefield: Sequence[str] = ("amber14/tip3pfb.xml",),
                     density: Optional[float] = None):
    """A cubic box of flexible water (no constraints, harmonic O-H and H-O-H terms), PME electrostatics.

    boxSize and cutoff in nm. Returns (topology, system, positions [N, 3] nm as numpy). The water model is
    ``tip3pfb`` from amber14 with ``rigidWater=False``; its O-H stretch has a period of about 9 fs, so ordinary MD
    needs a time step of 0.5 fs. Modeller fills a 1.6 nm box with 129 molecules (0.942 g/cm^3); ``density``
    (g/cm^3) scales the molecule centres and the box to that density (molecules keep their shape; minimize and
    equilibrate before use), e.g. for FlashMD data over the densities a barostat visits.
    """
    mm = import_openmm()
    from openmm import app, unit

    ff = app.ForceField(*forcefield)
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", boxSize=mm.Vec3(boxSize, boxSize, boxSize) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff * unit.nanometer,
                             constraints=None, rigidWater=False, removeCMMotion=False)
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    topology = modeller.topology
    if density is not None:
        if not density > 0:
            raise ValueError(f"density must be > 0 g/cm^3, got {density}")
        grams = particleMasses(system).sum() / 6.02214076e23
        edge = (grams / density / 1e-21) ** (1.0 / 3.0)  # nm
        if cutoff > 0.5 * edge:
            raise ValueError(f"at {density} g/cm^3 the box edge is {edge:.3f} nm, less than twice the cutoff "
                             f"{cutoff} nm; use a larger boxSize or a smaller cutoff")
        scale = edge / boxSize
        for res in topology.residues():
            idx = [a.index for a in res.atoms()]
            centre = positions[idx].mean(0)
            positions[idx] += (scale - 1.0) * centre
        vectors = [mm.Vec3(*row) * unit.nanometer for row in np.eye(3) * edge]
        system.setDefaultPeriodicBoxVectors(*vectors)
        topology.setPeriodicBoxVectors(vectors)
    return topology, system, positions


def speciesOf(topology) -> np.ndarray:
    """Atomic numbers of a Topology's atoms, [N] int64 (the atom types FlashMD models use)."""
    return np.array([a.element.atomic_number if a.element is not None else 0 for a in topology.atoms()],
                    dtype=np.int64)


def particleMasses(system) -> np.ndarray:
    """Masses [N] amu of a System's particles."""
    from openmm import unit
    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])


def _read(context):
    from openmm import unit
    st = context.getState(getPositions=True, getVelocities=True)
    q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    return np.asarray(q), np.asarray(v), np.asarray(box)


def generatePairs(system, positions, types, temperatures: Sequence[float], stride: float, timestep: float = 0.0005,
                  startsPerTemperature: int = 4, pairsPerStart: int = 50, pairSpacing: float = 0.1,
                  equilibration: float = 2.0, platform: Optional[str] = None, seed: int = 0, progress: bool = True,
                  starts: Optional[Sequence] = None):
    """Run NVE trajectories and collect phase-space pairs one stride apart.

    Parameters
    ----------
    system : openmm.System
        Must have no constraints (FlashMD moves every degree of freedom).
    positions : array [N, 3], nm
        Starting structure (minimized here before each start).
    types : array [N] int
        Atom types (atomic numbers).
    temperatures : list of K
    stride : ps
        Learned step length; must be a whole number of ``timestep``.
    timestep : ps
        NVE velocity-Verlet step used to produce the reference dynamics.
    pairSpacing : ps
        Time between the starts of consecutive pairs in one trajectory (>= stride).
    equilibration : ps
        Langevin equilibration (friction 5/ps) before each NVE segment.

    Temperatures and times are numbers in these units or OpenMM Quantities.
    starts : list of (temperature index, start index), optional
        Run only these starts (one process's share of a job; the pairs are those of the whole run's starts).

    Returns a dict of numpy arrays as described in the module docstring (``meta`` as a dict).
    """
    mm = import_openmm()
    from openmm import unit
    temperatures = [valueIn(t, unit.kelvin, "temperatures") for t in temperatures]
    stride = valueIn(stride, unit.picosecond, "stride")
    timestep = valueIn(timestep, unit.picosecond, "timestep")
    pairSpacing = valueIn(pairSpacing, unit.picosecond, "pairSpacing")
    equilibration = valueIn(equilibration, unit.picosecond, "equilibration")
    if system.getNumConstraints() > 0:
        raise ValueError(f"the System has {system.getNumConstraints()} constraints; FlashMD needs a System without "
                         "constraints (create it with constraints=None, rigidWater=False)")
    nsub = int(round(stride / timestep))
    if nsub < 1 or abs(nsub * timestep - stride) > 1e-9:
        raise ValueError(f"stride {stride} ps must be a whole multiple of the timestep {timestep} ps")
    nspace = int(round(pairSpacing / timestep))
    if nspace < nsub:
        raise ValueError(f"pairSpacing {pairSpacing} ps must be at least the stride {stride} ps")
    plat = mm.Platform.getPlatformByName(platform) if platform else None
    masses = particleMasses(system)
    out = {k: [] for k in ("q0", "p0", "dq", "p1", "box", "temperature")}
    chosen = None if starts is None else {tuple(int(v) for v in pair) for pair in starts}
    total = (len(temperatures) * startsPerTemperature if chosen is None else len(chosen)) * pairsPerStart
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="flashmd-data pairs", unit="pair")
    t0 = time.time()
    for ti, temperature in enumerate(temperatures):
        for s in range(startsPerTemperature):
            if chosen is not None and (ti, s) not in chosen:
                continue
            rseed = seed * 100003 + ti * 1009 + s + 1
            lang = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 5.0 / unit.picosecond, timestep)
            lang.setRandomNumberSeed(rseed)
            vv = createVelocityVerletIntegrator(timestep)
            vv.setRandomNumberSeed(rseed)  # CUDA: the integrators of one CompoundIntegrator share one seed
            integ = mm.CompoundIntegrator()
            integ.addIntegrator(lang)
            integ.addIntegrator(vv)
            # reference data: on a GPU mixed precision, not the default single
            props = {"Precision": "mixed"} if plat is not None and plat.getName() in ("CUDA", "OpenCL") else {}
            ctx = mm.Context(system, integ, plat, props) if plat else mm.Context(system, integ)
            ctx.setPositions(positions * unit.nanometer)
            mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
            ctx.setVelocitiesToTemperature(temperature * unit.kelvin, rseed)
            integ.setCurrentIntegrator(0)
            integ.step(int(round(equilibration / timestep)))
            integ.setCurrentIntegrator(1)
            for _ in range(pairsPerStart):
                q0, v0, box = _read(ctx)
                integ.step(nsub)
                q1, v1, _ = _read(ctx)
                if not (np.isfinite(q1).all() and np.isfinite(v1).all()):
                    raise RuntimeError(f"the reference NVE run blew up at {temperature} K; use a smaller timestep")
                out["q0"].append(q0.astype(np.float32))
                out["p0"].append((v0 * masses[:, None]).astype(np.float32))
                out["dq"].append((q1 - q0).astype(np.float32))
                out["p1"].append((v1 * masses[:, None]).astype(np.float32))
                out["box"].append(box.astype(np.float32))
                out["temperature"].append(np.float32(temperature))
                if nspace > nsub:
                    integ.step(nspace - nsub)
                if bar is not None:
                    bar.update(1)
            del ctx, integ
    if bar is not None:
        bar.close()
    data = {k: np.stack(v) for k, v in out.items()}
    data["masses"] = masses
    data["types"] = np.asarray(types, dtype=np.int64)
    data["meta"] = {"stride": stride, "timestep": timestep, "temperatures": list(map(float, temperatures)),
                    "startsPerTemperature": startsPerTemperature, "pairsPerStart": pairsPerStart,
                    "pairSpacing": pairSpacing, "equilibration": equilibration, "seed": seed,
                    "numParticles": int(system.getNumParticles()), "openmm": mm.__version__,
                    "periodic": bool(system.usesPeriodicBoundaryConditions()),
                    "platform": ctx_platform_name(plat), "seconds": round(time.time() - t0, 1)}
    return data


def ctx_platform_name(plat) -> str:
    return plat.getName() if plat is not None else "default"


def saveDataset(path: str, data: dict) -> None:
    """Write a dataset produced by :func:`generatePairs` to ``path`` (.npz, compressed)."""
    arrays = {k: v for k, v in data.items() if k != "meta"}
    arrays["meta"] = np.array(json.dumps(data.get("meta", {})))
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def loadDataset(path: str) -> dict:
    """Read a dataset written by :func:`saveDataset`; checks that all arrays agree in shape."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no FlashMD dataset at {path!r}; create one with `openmmflash flashmd-data`")
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    data["meta"] = json.loads(str(data["meta"]))
    P, N = data["q0"].shape[:2]
    for k in ("p0", "dq", "p1"):
        if data[k].shape != (P, N, 3):
            raise ValueError(f"dataset {path}: array {k} has shape {data[k].shape}, expected {(P, N, 3)}")
    if data["masses"].shape != (N,) or data["types"].shape != (N,):
        raise ValueError(f"dataset {path}: masses/types must have {N} entries")
    return data


def readDatasets(dataset) -> dict:
    """One dataset from a path, a dict, or a list of either (merged, e.g. water boxes at several densities)."""
    if isinstance(dataset, (list, tuple)):
        if not dataset:
            raise ValueError("no datasets given; pass at least one .npz file from `openmmflash flashmd-data`")
        parts = [readDatasets(d) for d in dataset]
        return parts[0] if len(parts) == 1 else mergeDatasets(parts)
    return loadDataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset


def mergeDatasets(datasets) -> dict:
    """Concatenate datasets with identical masses, types and stride (e.g. from parallel runs)."""
    first = datasets[0]
    for d in datasets[1:]:
        if not (np.array_equal(d["masses"], first["masses"]) and np.array_equal(d["types"], first["types"])
                and abs(d["meta"]["stride"] - first["meta"]["stride"]) < 1e-12):
            raise ValueError("datasets differ in masses, types or stride and cannot be merged; train one model per "
                             "System and stride")
    out = {k: np.concatenate([d[k] for d in datasets]) for k in ("q0", "p0", "dq", "p1", "box", "temperature")}
    out["masses"], out["types"] = first["masses"], first["types"]
    out["meta"] = dict(first["meta"], parts=[d["meta"] for d in datasets])
    return out
