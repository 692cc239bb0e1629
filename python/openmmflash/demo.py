"""``openmmflash demo``: a CG protein simulation with a bundled FlashSchNet model, the main job in one command.

The model's priors run as native OpenMM forces and the network as a TorchForce; B replicas of the protein share one
System (and one model call per step). The native structure stored in the model file is the start and the reference
of the CA-RMSD.
"""

import json
import os
import time
from typing import Optional

import numpy as np

from openmmflash.stack import import_openmm
from openmmflash.schnet.config import PRECISIONS

BOLTZMANN_KJ = 0.00831446261815324  # kJ/mol/K


def kabschRMSD(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """RMSD after optimal superposition of frames x (frames, n, 3) on ref (n, 3); same units as the input."""
    x = x - x.mean(axis=1, keepdims=True)
    ref = ref - ref.mean(axis=0)
    out = np.empty(x.shape[0])
    for k in range(x.shape[0]):
        h = x[k].T @ ref
        u, s, vt = np.linalg.svd(h)
        d = np.sign(np.linalg.det(u @ vt))
        s[-1] *= d
        e = (np.sum(x[k] ** 2) + np.sum(ref ** 2) - 2 * s.sum()) / x.shape[1]
        out[k] = np.sqrt(max(e, 0.0))
    return out


def nativeStructure(model, directory: str):
    """(CG topology, positions (n, 3) nm, path) of the native structure stored in the model file."""
    from openmmflash.cg.structure import loadProtein

    pdb = model.metadata.get("structure")
    if not pdb:
        raise ValueError("the model file holds no native structure (metadata['structure']); the demo needs a model "
                         "made by `openmmflash cg-train`")
    path = os.path.join(directory, "native.pdb")
    with open(path, "w") as f:
        f.write(pdb)
    topology, positions = loadProtein(path, model.metadata.get("mapping") or "5bead")
    return topology, positions, path


NEIGHBOR_HEADROOM = 1.6  # padded neighbor-list capacity / pairs of the native structure (CUDA fast path)


def neighborCapacity(model, positions, replicas: int, headroom: float = NEIGHBOR_HEADROOM) -> int:
    """Padded neighbor-list length for ``replicas`` copies of a CG protein: ``headroom`` times the directed pairs
    within the model's cutoff in ``positions`` (n, 3) nm (a compact native structure has about the most)."""
    import torch

    from openmmflash.neighbors import build_neighbor_list

    x = torch.as_tensor(np.asarray(positions, dtype=np.float64) * model.config.lengthScale)
    pairs = int(build_neighbor_list(x, 1, float(model.config.cutoff), None, 0)[3])
    return int(np.ceil(headroom * max(pairs, 1) * replicas)) + 64


# CUDA graphs are on: openmm-torch 1.5 keeps the outputs of the graph captured last (one graph per includeForces),
# which ran CG MD on stale forces after any energy-only evaluation (2 140-2 910 K in a 300 K bath on an H100,
# examples/benchmarks/results/cg_fastpath_temperature.json) until the force module returned the same output buffers
# from every graph (plugin/forcemodule.py, outputBuffers; 293 K in results/torchforce_graphs_check.json).
FAST_PATH = {"backend": "flash", "padded": True, "useCUDAGraphs": True, "filterPrecision": "fp32"}


def fastPathOptions(model, positions, replicas: int, platformName: str, fastPath=True) -> tuple:
    """(model, force options) of the fast path on CUDA: by default (``fastPath=True``, ``FAST_PATH``) the fused
    Triton kernels (backend "flash", float32), a padded fixed-capacity neighbor list and CUDA graphs; a dict with
    the keys of ``FAST_PATH`` picks parts (``{"useCUDAGraphs": False}`` drops the graphs, ``{"filterPrecision":
    "w16a16"}`` runs the filter MLPs with fp16 per-channel-scaled weights and activations). Elsewhere, or with
    ``fastPath=False``, the model as it is with an exact neighbor list and no graphs."""
    if platformName != "CUDA" or not fastPath:
        return model, {}
    import copy

    choice = dict(FAST_PATH, **(fastPath if isinstance(fastPath, dict) else {}))
    unknown = sorted(set(choice) - set(FAST_PATH))
    if unknown:
        raise ValueError(f"unknown fast-path keys {unknown}; known: {sorted(FAST_PATH)}")
    fast = copy.deepcopy(model)
    fast.backend = choice["backend"]
    if choice["filterPrecision"] not in PRECISIONS:
        raise ValueError(f"unknown filterPrecision {choice['filterPrecision']!r}; choose one of {list(PRECISIONS)}")
    fast.precision = choice["filterPrecision"]
    padded = choice["padded"] or choice["useCUDAGraphs"]  # CUDA graphs need static shapes
    return fast, {"precision": "single", "useCUDAGraphs": bool(choice["useCUDAGraphs"]),
                  "neighborCapacity": neighborCapacity(model, positions, replicas) if padded else 0}


def simulateCG(model, topology, positions, replicas: int = 4, steps: int = 5000, reportInterval: int = 100,
               timestep: float = 2.0, temperature: Optional[float] = None, friction: float = 1.0,
               platform: Optional[str] = None, seed: int = 1, dcdPath: Optional[str] = None, progress: bool = True,
               minimize: bool = True, fastPath: bool = True, initialState=None, stopAt: Optional[float] = None,
               onReport=None, stopOnBlowUp: bool = False) -> dict:
    """Run ``replicas`` copies of a CG protein with the model (TorchForce) + priors; returns the recorded frames.

    With ``fastPath`` on the CUDA platform the force uses the fused kernels, float32, a padded neighbor list and CUDA
    graphs (``fastPathOptions``). Returns a dict: positions (frames, replicas, n, 3) nm, time (frames,) ps,
    potentialEnergy and temperature (frames,) for the whole System (kJ/mol, K), the platform name, the wall time of
    the MD loop (s), the steps, and ``forceOptions`` (what the fast path chose).

    Chunked runs (``openmmflash.cg.validation.runValidationChunk``): ``initialState`` (an OpenMM State or its XML)
    continues a run instead of minimizing and drawing velocities (``positions`` still sizes the fast path's
    neighbor list); ``stopAt`` (a ``time.time()`` value) ends the run at the last frame boundary predicted to come
    before it (at least one frame); ``onReport(steps)`` is called after each frame with the steps since the last
    call; ``stopOnBlowUp`` ends the run at NaN positions instead of raising (``blewUp`` then holds the message).
    The result also holds ``stepCount`` (the Context's step count at the end) and ``state``, the final State's XML
    (positions, velocities, parameters, step count; portable between platforms).
    """
    from tqdm import tqdm

    openmm = import_openmm()
    app, unit = openmm.app, openmm.unit
    from openmmflash.cg.cgsystem import createCGSystem
    from openmmflash.cg.refdata import fastestPlatform
    from openmmflash.plugin.replicas import replicatePositions, replicateTopology

    if replicas < 1 or steps < 1 or reportInterval < 1:
        raise ValueError(f"replicas, steps and reportInterval must be >= 1 (got {replicas}, {steps}, "
                         f"{reportInterval})")
    if temperature is None:
        temperature = float(model.metadata.get("provenance", {}).get("referenceSettings", {})
                            .get("temperature", 300.0))
    n = topology.getNumAtoms()
    full_topology = replicateTopology(topology, replicas)
    start = replicatePositions(positions, replicas)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    plat = fastestPlatform(platform)
    net, options = fastPathOptions(model, positions, replicas, plat.getName(), fastPath)
    system = createCGSystem(full_topology, net, replicas=replicas, **options)
    try:
        context = openmm.Context(system, integrator, plat)
    except openmm.OpenMMException as err:
        if platform or plat.getName() == "CPU":
            raise
        # CUDA is installed but cannot start (no GPU, driver mismatch): fall back to the CPU platform.
        print(f"platform {plat.getName()} failed ({str(err).splitlines()[0]}); using CPU")
        plat = openmm.Platform.getPlatformByName("CPU")
        options = {}
        system = createCGSystem(full_topology, model, replicas=replicas)
        integrator = integrator.__copy__()
        context = openmm.Context(system, integrator, plat)
    if plat.getName() in ("CPU", "Reference"):
        # libtorch's OpenMP threads spin against OpenMM's own CPU threads: one torch thread is ~10x faster here.
        import torch

        torch.set_num_threads(1)
    if initialState is not None:
        if isinstance(initialState, str):
            initialState = openmm.XmlSerializer.deserialize(initialState)
        if len(initialState.getPositions()) != system.getNumParticles():
            raise ValueError(f"the initial state has {len(initialState.getPositions())} particles but {replicas} "
                             f"replicas of this protein have {system.getNumParticles()}")
        context.setState(initialState)
    else:
        context.setPositions(start)
        if minimize:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    first_step = context.getStepCount()
    dof = 3 * system.getNumParticles() - 3
    dcd, dcd_file = None, None
    if dcdPath:
        dcd_file = open(dcdPath, "wb")
        dcd = app.DCDFile(dcd_file, full_topology, timestep * unit.femtosecond, 0, reportInterval)
    frames, times, energies, temps = [], [], [], []
    done, blew_up, durations = 0, None, []
    t0 = time.time()
    try:
        with tqdm(total=steps, desc=f"CG MD ({replicas} replicas, {plat.getName()})", unit="step",
                  disable=not progress) as bar:
            while done < steps:
                # The next frame would end after stopAt (the first frame may hold compilation and graph capture).
                if done and stopAt is not None and time.time() + max(durations[1:] or durations) > stopAt:
                    break
                t_frame = time.time()
                chunk = min(reportInterval, steps - done)
                integrator.step(chunk)
                done += chunk
                state = context.getState(getPositions=True, getEnergy=True)
                xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                if not np.all(np.isfinite(xyz)):
                    hint = (f", or the padded neighbor list ({options['neighborCapacity']} pairs) overflowed"
                            if options.get("neighborCapacity") else "")
                    blew_up = (f"the CG simulation blew up (NaN positions) after {first_step + done} steps; try a "
                               f"smaller --timestep{hint}")
                    if stopOnBlowUp:
                        break
                    raise RuntimeError(blew_up)
                frames.append(xyz.reshape(replicas, n, 3).astype(np.float32))  # float32: long runs, many replicas
                times.append((first_step + done) * timestep * 1e-3)
                energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
                kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
                temps.append(2 * kinetic / (dof * BOLTZMANN_KJ))
                if dcd is not None:
                    dcd.writeModel(xyz * 10.0 * unit.angstrom)
                bar.update(chunk)
                if onReport is not None:
                    onReport(chunk)
                durations.append(time.time() - t_frame)
    finally:
        if dcd_file is not None:
            dcd_file.close()
    wall = time.time() - t0
    final = None
    if blew_up is None:
        final = openmm.XmlSerializer.serialize(context.getState(getPositions=True, getVelocities=True,
                                                                getParameters=True))
    return {"positions": np.array(frames).reshape(-1, replicas, n, 3), "time": np.array(times),
            "potentialEnergy": np.array(energies), "temperature": np.array(temps), "platform": plat.getName(),
            "wallSeconds": wall, "steps": done if blew_up is None else done - chunk, "stepCount": first_step + done,
            "state": final, "blewUp": blew_up, "frameSeconds": np.array(durations),
            "timestep": timestep, "replicas": replicas, "targetTemperature": temperature,
            "forceOptions": dict(options, backend=getattr(net if options else model, "backend", None))}


def caIndices(topology) -> np.ndarray:
    return np.array([a.index for a in topology.atoms() if a.name == "CA"])


def plotRun(result: dict, rmsd: np.ndarray, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for b in range(rmsd.shape[1]):
        ax[0].plot(result["time"], rmsd[:, b], lw=1, label=f"replica {b}")
    ax[0].set_xlabel("time (ps)")
    ax[0].set_ylabel("CA-RMSD to native (A)")
    ax[0].legend(fontsize=7)
    ax[1].plot(result["time"], result["potentialEnergy"], lw=1)
    ax[1].set_xlabel("time (ps)")
    ax[1].set_ylabel("potential energy, all replicas (kJ/mol)")
    ax[2].plot(result["time"], result["temperature"], lw=1)
    ax[2].axhline(result["targetTemperature"], color="k", ls="--", lw=0.8)
    ax[2].set_xlabel("time (ps)")
    ax[2].set_ylabel("temperature (K)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def runDemo(model: str = "chignolin", steps: int = 3000, replicas: int = 4, platform: Optional[str] = None,
            output: str = "openmmflash-demo", timestep: float = 2.0, reportInterval: int = 100, seed: int = 1,
            progress: bool = True, fastPath=True) -> dict:
    """Run the demo and write trajectory.dcd, native.pdb, demo.png and summary.json into ``output``."""
    from openmmflash.schnet.modelfile import loadModel

    os.makedirs(output, exist_ok=True)
    net = loadModel(model)
    topology, native, _ = nativeStructure(net, output)
    from openmmflash.plugin.replicas import replicateTopology

    with open(os.path.join(output, "topology.pdb"), "w") as f:  # the DCD's topology (all replicas)
        openmm = import_openmm()
        from openmmflash.plugin.replicas import replicatePositions

        openmm.app.PDBFile.writeFile(replicateTopology(topology, replicas),
                                     replicatePositions(native, replicas) * openmm.unit.nanometer, f)
    result = simulateCG(net, topology, native, replicas, steps, reportInterval, timestep, platform=platform,
                        seed=seed, dcdPath=os.path.join(output, "trajectory.dcd"), progress=progress,
                        fastPath=fastPath)
    ca = caIndices(topology)
    frames = result["positions"]
    rmsd = np.stack([kabschRMSD(frames[:, b][:, ca] * 10.0, native[ca] * 10.0) for b in range(replicas)], 1)
    simulated_ps = result["steps"] * timestep * 1e-3
    ns_day = simulated_ps * 1e-3 / max(result["wallSeconds"], 1e-9) * 86400.0
    summary = {"model": model, "platform": result["platform"], "replicas": replicas, "beads": topology.getNumAtoms(),
               "steps": result["steps"], "timestep_fs": timestep, "simulatedTimePerReplica_ps": simulated_ps,
               "wallSeconds": result["wallSeconds"], "nsPerDayPerReplica": ns_day,
               "nsPerDayAggregate": ns_day * replicas,
               "finalPotentialEnergy_kJmol": float(result["potentialEnergy"][-1]),
               "meanTemperature_K": float(result["temperature"][len(result["temperature"]) // 2:].mean()),
               "targetTemperature_K": result["targetTemperature"],
               "caRmsdFinal_A": [float(v) for v in rmsd[-1]], "caRmsdMean_A": float(rmsd.mean()),
               "forceOptions": result["forceOptions"]}
    plotRun(result, rmsd, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {replicas} replicas, {result['platform']}")
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def printSummary(s: dict, output: str) -> None:
    print(f"\nopenmmflash demo: {s['model']} ({s['beads']} beads) x {s['replicas']} replicas on {s['platform']}")
    print(f"  steps                {s['steps']} x {s['timestep_fs']} fs")
    print(f"  simulated time       {s['simulatedTimePerReplica_ps']:.1f} ps per replica "
          f"({s['simulatedTimePerReplica_ps'] * s['replicas']:.1f} ps in total)")
    print(f"  speed                {s['nsPerDayPerReplica']:.2f} ns/day per replica, "
          f"{s['nsPerDayAggregate']:.2f} ns/day aggregate ({s['wallSeconds']:.1f} s wall)")
    print(f"  potential energy     {s['finalPotentialEnergy_kJmol']:.1f} kJ/mol (all replicas, last frame)")
    print(f"  temperature          {s['meanTemperature_K']:.1f} K (second half; target "
          f"{s['targetTemperature_K']:.0f} K)")
    print(f"  CA-RMSD to native    {', '.join(f'{v:.2f}' for v in s['caRmsdFinal_A'])} A (last frame per replica)")
    print(f"  wrote                {output}/trajectory.dcd (topology.pdb), {output}/demo.png, "
          f"{output}/summary.json")


def _demo(args):
    steps = args.steps
    if args.time is not None:
        steps = int(round(args.time / (args.timestep * 1e-3)))
    if steps is None:
        steps = 200 if args.quick else 3000
    replicas = args.replicas or (2 if args.quick else 4)
    interval = min(args.report_interval, steps) if not args.quick else 20
    summary = runDemo(args.model, steps, replicas, args.platform, args.output, args.timestep, interval, args.seed,
                      fastPath=not args.no_fast_path)
    printSummary(summary, args.output)
