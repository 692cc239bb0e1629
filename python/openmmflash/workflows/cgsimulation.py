"""A CG protein simulation with a FlashSchNet model: priors as native OpenMM forces, the network as a TorchForce,
B replicas in one System, LangevinMiddleIntegrator; frames, energies and temperatures recorded."""

import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from openmmflash.cg.refdata import fastestPlatform
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.plugin.fastpath import fastPathOptions
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.stack import import_openmm
from openmmflash.units import BOLTZMANN_KJ, valueIn


def simulateCG(model, topology, positions, replicas: int = 4, steps: int = 5000, reportInterval: int = 100,
               timestep=2.0, temperature=None, friction=1.0,
               platform: Optional[str] = None, seed: int = 1, dcdPath: Optional[str] = None, progress: bool = True,
               minimize: bool = True, fastPath: bool = True, initialState=None, stopAt: Optional[float] = None,
               onReport=None, stopOnBlowUp: bool = False, platformProperties: Optional[dict] = None) -> dict:
    """Run ``replicas`` copies of a CG protein with the model (TorchForce) + priors; returns the recorded frames.

    With ``fastPath`` on the CUDA platform the force uses the fused kernels, float32, a padded neighbor list and CUDA
    graphs (``fastPathOptions``). Returns a dict: positions (frames, replicas, n, 3) nm, time (frames,) ps,
    potentialEnergy and temperature (frames,) for the whole System (kJ/mol, K), the platform name, the wall time of
    the MD loop (s), the steps, and ``forceOptions`` (what the fast path chose). ``timestep`` (fs), ``temperature``
    (K; default the model's reference temperature) and ``friction`` (1/ps) are numbers in these units or OpenMM
    Quantities.

    Chunked runs (``openmmflash.workflows.cgvalidation.runValidationChunk``): ``initialState`` (an OpenMM State or its
    XML)
    continues a run instead of minimizing and drawing velocities (``positions`` still sizes the fast path's
    neighbor list); ``stopAt`` (a ``time.time()`` value) ends the run at the last frame boundary predicted to come
    before it (at least one frame); ``onReport(steps)`` is called after each frame with the steps since the last
    call; ``stopOnBlowUp`` ends the run at NaN positions instead of raising (``blewUp`` then holds the message).
    The result also holds ``stepCount`` (the Context's step count at the end) and ``state``, the final State's XML
    (positions, velocities, parameters, step count; portable between platforms). ``platformProperties`` (e.g.
    ``{"DeviceIndex": "1"}`` from ``openmmflash.distributed.Ensemble.platformProperties``) are passed to the
    Context where the chosen platform knows them.
    """
    openmm = import_openmm()
    app, unit = openmm.app, openmm.unit
    if replicas < 1 or steps < 1 or reportInterval < 1:
        raise ValueError(f"replicas, steps and reportInterval must be >= 1 (got {replicas}, {steps}, "
                         f"{reportInterval})")
    timestep = valueIn(timestep, unit.femtosecond)  # a Quantity, or a number in fs
    friction = valueIn(friction, unit.picosecond ** -1)
    if temperature is None:
        temperature = float(model.metadata.get("provenance", {}).get("referenceSettings", {})
                            .get("temperature", 300.0))
    temperature = valueIn(temperature, unit.kelvin)
    n = topology.getNumAtoms()
    full_topology = replicateTopology(topology, replicas)
    start = replicatePositions(positions, replicas)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    plat = fastestPlatform(platform)
    net, options = fastPathOptions(model, positions, replicas, plat.getName(), fastPath)
    system = createCGSystem(full_topology, net, replicas=replicas, **options)
    properties = {k: v for k, v in (platformProperties or {}).items() if k in plat.getPropertyNames()}
    try:
        context = openmm.Context(system, integrator, plat, properties)
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
