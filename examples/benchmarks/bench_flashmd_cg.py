"""FlashMD on the bundled CG protein (chignolin, FlashSchNet TorchForce + priors): validation and speed.

Both parts compare, in one process on one GPU, the same System (B replicas of chignolin, as the demo builds it) under

- ``LangevinMiddleIntegrator`` at 2 fs (the CG model's stable time step), 300 K, friction 1/ps, and
- ``FlashMDLangevinIntegrator`` with a shipped FlashMD model (stride 20 or 40 fs), same temperature and friction,
  energy rescale on (one energy evaluation per stride), guarded, fallbacks as velocity-Verlet substeps. With
  ``--energy torch`` on CUDA the whole energy is in PyTorch and the strides run device-resident
  (integrators/residentloop.py: learned step, guard, rescale and fallback substeps as CUDA graphs, OpenMM touched
  once per ``step`` call); ``--device-resident both`` times the host and the resident strides side by side.

``--validate``: CA-RMSD to native, fraction of native contacts Q and CA radius of gyration
(openmmflash.workflows.cgvalidation
observables), histogram overlaps, kinetic temperatures, fallback rate and the rescale-factor distribution;
writes results/flashmd_cg_validation<tag>.json and .png.

``--speed``: simulated ns/day (aggregate over the replicas) of both integrators for each replica count, their ratio,
with every stride's energy evaluation and fallback included, and where the FlashMD stride's wall time goes
(integrator profiling); writes results/flashmd_cg_speed<tag>.json.

    python examples/benchmarks/bench_flashmd_cg.py --model chignolin-cg-40fs --validate --speed \
        --replicas 32 --time 40 --speed-replicas 1 8 32
"""

import argparse
import json
import os
import platform as pyplatform
import sys
import time

import numpy as np
import torch

import openmm as mm
from openmm import unit

from openmmflash.blockstats import blockStandardError
from openmmflash.workflows.flashmdcg import (buildCGSystem, cgFallbackSubsteps, flashSchNetEnergyEvaluator,
                                               useCGBeadTypes)
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator

from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

HERE = os.path.dirname(os.path.abspath(__file__))
KB = 0.00831446261815324


def makeContext(system, integrator, platform):
    plat = mm.Platform.getPlatformByName(platform)
    props = {"Precision": "mixed"} if platform == "CUDA" else {}
    return mm.Context(system, integrator, plat, props)


def flashmdIntegrator(args, replicas, seed, system, net, topology, model=None, positions=None, resident=None,
                      compile=True, pairs=None):
    """resident: deviceResident of the integrator (default from --device-resident: None for auto, False for off);
    compile: torch.compile the resident strides (residentCompile); pairs: of the PyTorch FlashSchNet energy
    (flashmdcg.flashSchNetEnergyEvaluator; default the first of --pairs)."""
    model = model or args.model
    if resident is None:
        resident = {"auto": None, "off": False}.get(args.device_resident)
    integ = FlashMDLangevinIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond, None,
                                      model=model, replicas=replicas, randomSeed=seed, device=args.device,
                                      fallbackSubsteps=fallbackSubsteps(args, model), maxRescale=args.max_rescale,
                                      speciesRescale=args.species_rescale, deviceResident=resident)
    integ.residentCompile = compile
    useCGBeadTypes(integ, net, topology)  # models with bead-type species (speciesKind "cgBead") need the types
    if args.energy in ("split", "torch"):
        # positions size a padded neighbor list on CUDA: the energy then runs inside the learned step's graph
        # ("torch": the priors too, so the rescale makes no OpenMM energy call)
        integ.setEnergyEvaluator(*flashSchNetEnergyEvaluator(system, net, topology, replicas, device=args.device,
                                                             positions=positions, pairs=pairs or args.pairs[0],
                                                             priors="torch" if args.energy == "torch" else "openmm"))
    return integ


def fallbackSubsteps(args, model):
    """Velocity-Verlet substeps of a rejected stride: --fallback-substeps, or stride / 2 fs (the CG model's stable
    time step, as in the ordinary MD it is compared with)."""
    return args.fallback_substeps or cgFallbackSubsteps(loadModel(model))


def energyCheck(context, integ):
    """The split energy (priors from OpenMM + FlashSchNet forward pass) against OpenMM's full energy, kJ/mol."""
    full = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    split = integ.computeRescaleEnergy(context)
    return {"openmm_kJmol": full, "evaluator_kJmol": split, "difference_kJmol": split - full}


def start(context, positions, temperature, seed, minimize=True):
    context.setPositions(positions * unit.nanometer)
    if minimize:
        mm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)


def record(context, integrator, steps_per_frame, frames, max_wall, label, velocities=False):
    """Run ``frames`` frames of ``steps_per_frame`` steps; returns positions [F, N, 3] nm, kinetic T [F] K, wall and,
    with ``velocities``, velocities [F, N, 3] nm/ps (else None)."""
    from tqdm import tqdm
    system = context.getSystem()
    dof = 3 * system.getNumParticles() - 3
    pos, temps, vel = [], [], []
    t0 = time.time()
    for _ in tqdm(range(frames), desc=label, unit="frame", mininterval=5):
        integrator.step(steps_per_frame)
        st = context.getState(getPositions=True, getEnergy=True, getVelocities=velocities)
        x = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"{label}: NaN positions")
        pos.append(np.asarray(x, dtype=np.float32))
        if velocities:
            vel.append(np.asarray(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
                                  dtype=np.float32))
        temps.append(2 * st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * KB))
        if max_wall and time.time() - t0 > max_wall:
            break
    return np.array(pos), np.array(temps), time.time() - t0, (np.array(vel) if velocities else None)


def tiledSpeciesTemperatures(v, masses, types, label):
    """{species label: kinetic temperature K over all frames} of velocities v [F, M, 3] nm/ps, with ``masses`` and
    ``types`` given for a block of particles that tiles the frames' particles (one copy, or all replicas)."""
    from openmmflash.integrators.rescale.species import speciesTemperatures
    copies = v.shape[0] * v.shape[1] // len(masses)
    return speciesTemperatures(v.reshape(-1, 3).astype(np.float64), np.tile(np.asarray(masses), copies),
                               np.tile(np.asarray(types), copies), label)


def meanSpeciesTemperatures(integ, v):
    """tiledSpeciesTemperatures with the species (and masses) of the FlashMD integrator ``integ`` for one copy."""
    n = len(integ._masses) // integ.replicas
    return tiledSpeciesTemperatures(v, integ._masses[:n], integ._types[:n], integ._model.speciesLabel)


def saveFrames(args, name, x, n, frame_ps, v=None):
    """With --frames-out: the run's frames as ``<dir>/frames_<name>.npz`` (positions [F, n, 3] nm, one row per
    replica and frame; velocities nm/ps when ``v`` is given, FlashMD runs), e.g. starts for training data from the
    states a FlashMD run visits (flashmd_train_cg.py data --starts)."""
    if not args.frames_out:
        return
    os.makedirs(args.frames_out, exist_ok=True)
    extra = {} if v is None else {"velocities": np.asarray(v, dtype=np.float32).reshape(-1, n, 3)}
    np.savez_compressed(os.path.join(args.frames_out, f"frames_{name}.npz"),
                        positions=np.asarray(x, dtype=np.float32).reshape(-1, n, 3), frame_ps=frame_ps, **extra)


def langevinReference(args, frames, frame_ps):
    """LangevinMiddle 2 fs on ``--replicas`` copies: ({observable: values per frame}, run record with the kinetic
    temperature of each FlashSchNet bead type over all frames)."""
    from openmmflash.cg.observables import observables
    from openmmflash.cg.structure import caIndices
    from openmmflash.workflows.flashmdcg import cgBeadLabels, cgBeadTypes
    from openmmflash.integrators.training.data import particleMasses

    B = args.replicas
    full, system, positions, topology, native, net = buildCGSystem(B, platformName=args.platform,
                                                                   removeCMMotion=not args.no_cmm_remover)
    lang = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond,
                                       2.0 * unit.femtosecond)
    lang.setRandomNumberSeed(args.seed)
    ctx = makeContext(system, lang, args.platform)
    start(ctx, positions, args.temperature, args.seed)
    lang.step(int(round(args.burn / 0.002)))
    x, temps, wall, v = record(ctx, lang, int(round(frame_ps / 0.002)), frames, args.max_wall, "Langevin 2 fs",
                               velocities=True)
    del ctx, lang
    saveFrames(args, "langevin", x, len(native), frame_ps)
    obs = observables(x.reshape(-1, len(native), 3).astype(np.float64), native, caIndices(topology))
    frames_done = x.shape[0]
    species_t = tiledSpeciesTemperatures(v, particleMasses(system), cgBeadTypes(net, full), cgBeadLabels(net).get)
    run = {"integrator": "LangevinMiddleIntegrator", "timestep_fs": 2.0, "replicas": B,
           "temperature_K": args.temperature, "friction_per_ps": args.friction, "frameInterval_ps": frame_ps,
           "timePerReplica_ps": frames_done * frame_ps, "frames": int(frames_done), "wallSeconds": wall,
           "meanTemperature_K": float(temps.mean()), "temperatureStd_K": float(temps.std()),
           "speciesTemperature_K": species_t,
           "observables": {k: {"mean": float(o.mean()), "std": float(o.std())} for k, o in obs.items()}}
    return obs, run


def saveReference(path, obs, run, info):
    """The Langevin reference (observables per frame and the run record) as an npz for later --reference runs."""
    run = dict(run, savedBy=info.get("command"), gpu=info.get("gpu"))
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, run=json.dumps(run), **{k: np.asarray(o) for k, o in obs.items()})
    os.replace(tmp, path)


def loadReference(path, temperature):
    """({observable: values per frame}, run record) from :func:`saveReference`'s file, refused unless it was made
    at ``temperature`` K; the record says where it came from."""
    if not os.path.exists(path):
        raise SystemExit(f"--reference {path}: no such file; make one with --validate --save-reference {path}")
    with np.load(path) as d:
        run = json.loads(str(d["run"]))
        obs = {k: d[k] for k in d.files if k != "run"}
    if abs(run["temperature_K"] - temperature) > 1e-6:
        raise SystemExit(f"--reference {path} is a {run['temperature_K']:g} K run, this validation is at "
                         f"{temperature:g} K: give --temperature {run['temperature_K']:g} or make a reference at "
                         f"{temperature:g} K (--save-reference)")
    run["loadedFrom"] = os.path.basename(path)
    return obs, run


def validate(args, info):
    """LangevinMiddle on ``--replicas`` copies vs FlashMDLangevin (each of ``--validate-models``) on
    ``--flashmd-replicas`` copies, same force, temperature and friction; observables pooled over replicas."""
    from openmmflash.cg.observables import observables, overlap
    from openmmflash.cg.structure import caIndices

    models = [] if args.reference_only else (args.validate_models or [args.model])
    frame_ps = args.frame_interval
    frames = int(round(args.time / frame_ps))
    rep = {"info": info, "temperature_K": args.temperature, "friction_per_ps": args.friction, "burn_ps": args.burn,
           "frameInterval_ps": frame_ps, "maxRescale": args.max_rescale, "speciesRescale": args.species_rescale,
           "energyEvaluation": args.energy, "runs": {}}
    obs = {}
    if args.reference:
        obs["langevin"], rep["runs"]["langevin"] = loadReference(args.reference, args.temperature)
    else:
        obs["langevin"], rep["runs"]["langevin"] = langevinReference(args, frames, frame_ps)
        if args.save_reference:
            saveReference(args.save_reference, obs["langevin"], rep["runs"]["langevin"], info)
    # block standard errors of the means: 8 time blocks per replica (each tens of ps or more, against correlation
    # times of a few ps)
    lang = rep["runs"]["langevin"]
    for k, o in obs["langevin"].items():
        lang["observables"][k]["standardError"] = blockStandardError(o, blocks=8, runs=lang["replicas"])
    Bf = args.flashmd_replicas
    full, system, positions, topology, native, net = buildCGSystem(Bf, platformName=args.platform,
                                                                   removeCMMotion=not args.no_cmm_remover)
    ca = caIndices(topology)
    for model in models:
        flash = loadModel(model)
        stride_fs = flash.stride * 1000
        name = os.path.basename(str(model)).replace(".pt", "")
        integ = flashmdIntegrator(args, Bf, args.seed, system, net, full, model, positions)
        ctx = makeContext(system, integ, args.platform)
        start(ctx, positions, args.temperature, args.seed)
        check = energyCheck(ctx, integ)
        integ.step(int(round(args.burn * 1000 / stride_fs)))
        fb0, n0 = integ.getNumFallbacks(), integ.getNumLearnedSteps()
        spf = int(round(frame_ps * 1000 / stride_fs))
        x, temps, wall, v = record(ctx, integ, spf, frames, args.max_wall, f"FlashMD {name}", velocities=True)
        fb, learned = integ.getNumFallbacks() - fb0, integ.getNumLearnedSteps() - n0
        saveFrames(args, name, x, len(native), frame_ps, v)
        a = integ.getRescaleFactors()
        obs[name] = observables(x.reshape(-1, len(native), 3).astype(np.float64), native, ca)
        rep["runs"][name] = {
            "integrator": "FlashMDLangevinIntegrator", "model": str(model), "modelDescription": flash.describe(),
            "timestep_fs": stride_fs, "replicas": Bf, "timePerReplica_ps": x.shape[0] * frame_ps,
            "frames": int(x.shape[0]), "wallSeconds": wall, "meanTemperature_K": float(temps.mean()),
            "temperatureStd_K": float(temps.std()),
            # equipartition: kinetic temperature of each species over all frames (Langevin: same species, its run)
            "speciesTemperature_K": meanSpeciesTemperatures(integ, v),
            "fallbacks": int(fb), "learnedStrides": int(learned), "fallbackRate": fb / max(1, fb + learned),
            "rejectionsByKind": integ.getRejectionCounts(),
            "fallbackSubsteps": fallbackSubsteps(args, model), "lastRejection": integ.lastRejection,
            "energyCheck": check, "deviceResident": integ.isDeviceResident(),
            "rescaleFactor": {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
                              "max": float(a.max())} if a.size else None,
            "stable": bool(np.all(np.isfinite(x))),
            "observables": {k: {"mean": float(v.mean()), "std": float(v.std()),
                                "standardError": blockStandardError(v, blocks=8, runs=Bf)}
                            for k, v in obs[name].items()},
            "histogramOverlapWithLangevin": {k: overlap(obs[name][k], obs["langevin"][k]) for k in obs[name]}}
        r = rep["runs"][name]
        print(f"{name}: overlap {r['histogramOverlapWithLangevin']}, fallbacks {fb}/{fb + learned}, "
              f"T {r['meanTemperature_K']:.1f} K, {r['timePerReplica_ps']:.1f} ps, Rg {meanSem(r, 'Rg')} "
              f"(Langevin {meanSem(lang, 'Rg')}) A")
        del ctx, integ
    print("langevin", json.dumps(rep["runs"]["langevin"]["observables"]),
          f"T {rep['runs']['langevin']['meanTemperature_K']:.1f} K")
    plot(obs, rep, os.path.join(args.results, f"flashmd_cg_validation{args.tag}.png"))
    rep["provenance"] = provenance()
    with open(os.path.join(args.results, f"flashmd_cg_validation{args.tag}.json"), "w") as f:
        json.dump(rep, f, indent=1)
    return rep


def meanSem(run, key):
    """'mean +- standard error' of an observable of a validation run record."""
    o = run["observables"][key]
    sem = o.get("standardError")
    return f"{o['mean']:.3f} +- {sem:.3f}" if sem is not None else f"{o['mean']:.3f}"


def plot(obs, rep, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [k for k in ("caRmsd", "Q", "Rg") if k in obs["langevin"]]
    labels = {"caRmsd": "CA-RMSD to native (A)", "Q": "fraction of native contacts Q", "Rg": "CA Rg (A)"}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.3 * len(keys), 3.8))
    for ax, k in zip(np.atleast_1d(axes), keys):
        lo = min(o[k].min() for o in obs.values())
        hi = max(o[k].max() for o in obs.values())
        bins = np.linspace(lo, hi + 1e-9, 40)
        for name, o in obs.items():
            r = rep["runs"][name]
            label = (f"LangevinMiddle 2 fs, {r['replicas']} x {r['timePerReplica_ps']:.0f} ps" if name == "langevin"
                     else f"FlashMD {r['timestep_fs']:g} fs, {r['replicas']} x {r['timePerReplica_ps']:.0f} ps, "
                          f"{100 * r['fallbackRate']:.0f} % fallbacks, overlap "
                          f"{r['histogramOverlapWithLangevin'][k]:.2f}")
            ax.hist(o[k], bins=bins, density=True, alpha=0.45, label=label)
        ax.set_xlabel(labels[k])
        ax.legend(fontsize=6)
    ref_friction = rep["runs"]["langevin"].get("friction_per_ps", rep["friction_per_ps"])
    fig.suptitle(f"CG chignolin (FlashSchNet + priors), {rep['temperature_K']:g} K: FlashMDLangevinIntegrator "
                 f"(friction {rep['friction_per_ps']:g}/ps) vs LangevinMiddleIntegrator ({ref_friction:g}/ps)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sync(context):
    context.getState(getPositions=True)


def speed(args, info):
    models = args.speed_models or [args.model]
    rows = []
    for B in args.speed_replicas:
        full, system, positions, _, _, net = buildCGSystem(B, platformName=args.platform,
                                                           removeCMMotion=not args.no_cmm_remover)
        lang = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, args.friction / unit.picosecond,
                                           2.0 * unit.femtosecond)
        ctx = makeContext(system, lang, args.platform)
        start(ctx, positions, args.temperature, 1)
        lang.step(args.warmup)
        sync(ctx)
        t0 = time.perf_counter()
        n_md = 0
        while True:
            lang.step(50)
            n_md += 50
            sync(ctx)
            if time.perf_counter() - t0 > args.speed_seconds:
                break
        md_wall = time.perf_counter() - t0
        md_ns_day = n_md * 2e-6 / md_wall * 86400 * B
        state = ctx.getState(getPositions=True, getVelocities=True)
        del ctx, lang
        langevin = {"timestep_fs": 2.0, "steps": n_md, "wallSeconds": md_wall, "msPerStep": 1e3 * md_wall / n_md,
                    "nsPerDay": md_ns_day}
        print(f"B={B:4d}  LangevinMiddle 2 fs {langevin['msPerStep']:.3f} ms/step {md_ns_day:10.1f} ns/day")
        modes = {"both": [(False, True), (True, True)], "all": [(False, True), (True, False), (True, True)]}.get(
            args.device_resident, [(None, True)])
        for model, (resident, compile), pairs in [(m, r, p) for m in models for r in modes for p in args.pairs]:
            stride_fs = loadModel(model).stride * 1000
            integ = flashmdIntegrator(args, B, 1, system, net, full, model, positions, resident, compile, pairs)
            ctx = makeContext(system, integ, args.platform)
            ctx.setPositions(state.getPositions())
            ctx.setVelocities(state.getVelocities())
            check = energyCheck(ctx, integ)
            integ.step(5)
            sync(ctx)
            fb0 = integ.getNumFallbacks()
            integ.enableProfiling(True)
            t0 = time.perf_counter()
            n_fm = 0
            while True:
                integ.step(10)
                n_fm += 10
                if time.perf_counter() - t0 > args.speed_seconds:
                    break
            sync(ctx)
            fm_wall = time.perf_counter() - t0
            timings = dict(integ.timings)
            integ.enableProfiling(False)
            fm_ns_day = n_fm * stride_fs * 1e-6 / fm_wall * 86400 * B
            fb = integ.getNumFallbacks() - fb0
            ms_fb = 1e3 * timings.get("fallback", 0.0) / fb if fb else None  # wall time of one rejected stride
            row = {"replicas": B, "beads": system.getNumParticles(), "model": os.path.basename(str(model)),
                   "langevin": langevin,
                   "flashmd": {"stride_fs": stride_fs, "strides": n_fm, "wallSeconds": fm_wall,
                               "msPerStride": 1e3 * fm_wall / n_fm, "nsPerDay": fm_ns_day, "fallbacks": fb,
                               "fallbackRate": fb / n_fm, "fallbackSubsteps": fallbackSubsteps(args, model),
                               "rejectionsByKind": integ.getRejectionCounts(),
                               "energyEvaluation": args.energy, "energyCheck": check,
                               "energyPairs": pairs if args.energy != "openmm" else None,
                               "cudaGraphStep": bool(integ._dense is not None and integ._dense.graph is not None),
                               "deviceResident": integ.isDeviceResident(),
                               "compiled": bool(integ.isDeviceResident() and integ._resident.compiled),
                               # the fallback's substeps alone as an integrator (the part of the ratio that comes
                               # from leaving OpenMM rather than from the learned stride)
                               "msPerFallbackStride": ms_fb,
                               "fallbackSubstepsNsPerDay": stride_fs * 1e-6 / (ms_fb * 1e-3) * 86400 * B
                               if ms_fb else None,
                               "msPerStrideByPhase": {k: 1e3 * v / n_fm for k, v in sorted(timings.items())},
                               "unaccountedMsPerStride": 1e3 * (fm_wall - sum(timings.values())) / n_fm},
                   "ratio": fm_ns_day / md_ns_day}
            rows.append(row)
            kind = ((" resident" + (" compiled" if row["flashmd"]["compiled"] else ""))
                    if integ.isDeviceResident() else "") + (f" pairs={pairs}" if args.energy != "openmm" else "")
            print(f"B={B:4d}  FlashMD {stride_fs:g} fs{kind} "
                  f"{row['flashmd']['msPerStride']:.3f} ms/stride "
                  f"{fm_ns_day:10.1f} ns/day | ratio {row['ratio']:.2f} | fallbacks {fb}/{n_fm} | by phase (ms) "
                  f"{ {k: round(v, 3) for k, v in row['flashmd']['msPerStrideByPhase'].items()} }")
            del ctx, integ
    rep = {"info": info, "models": [str(m) for m in models], "temperature_K": args.temperature,
           "friction_per_ps": args.friction, "maxRescale": args.max_rescale, "speciesRescale": args.species_rescale,
           "cmMotionRemover": not args.no_cmm_remover, "secondsPerMeasurement": args.speed_seconds,
           "note": "ns/day is aggregate over the replicas of one System (one force call serves all); FlashMD time "
                   "includes its energy evaluation per stride, the guard and all fallbacks",
           "rows": rows}
    rep["provenance"] = provenance()
    with open(os.path.join(args.results, f"flashmd_cg_speed{args.tag}.json"), "w") as f:
        json.dump(rep, f, indent=1)
    return rep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-40fs")
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--replicas", type=int, default=32, help="replicas of the Langevin validation run")
    ap.add_argument("--flashmd-replicas", type=int, default=1, help="replicas of the FlashMD validation runs")
    ap.add_argument("--validate-models", nargs="+", default=None, help="FlashMD models to validate (default: --model)")
    ap.add_argument("--time", type=float, default=40.0, help="ps per replica and integrator (validation)")
    ap.add_argument("--burn", type=float, default=2.0, help="ps before recording")
    ap.add_argument("--frame-interval", type=float, default=0.2, help="ps between frames")
    ap.add_argument("--save-reference", default=None, metavar="NPZ",
                    help="save the Langevin run's observables per frame and its record (for --reference)")
    ap.add_argument("--reference", default=None, metavar="NPZ",
                    help="compare with this saved Langevin run (--save-reference) instead of running one")
    ap.add_argument("--reference-only", action="store_true",
                    help="run (and with --save-reference, save) only the Langevin reference")
    ap.add_argument("--frames-out", default=None, help="folder for the validation runs' frames (frames_<run>.npz)")
    ap.add_argument("--max-wall", type=float, default=None, help="stop each validation run after this many s")
    ap.add_argument("--speed-replicas", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--speed-models", nargs="+", default=None, help="FlashMD models to time (default: --model)")
    ap.add_argument("--species-rescale", action="store_true",
                    help="per-species energy rescale (default: one global factor; the CG protein has few beads per "
                         "species, whose kinetic energies fluctuate too much within a stride for per-species "
                         "factors)")
    ap.add_argument("--speed-seconds", type=float, default=10.0, help="wall time per speed measurement")
    ap.add_argument("--warmup", type=int, default=200, help="Langevin warm-up steps before timing")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=1.0)
    ap.add_argument("--fallback-substeps", type=int, default=None,
                    help="velocity-Verlet substeps of a rejected stride (default: stride / 2 fs)")
    ap.add_argument("--max-rescale", type=float, default=1.25)
    ap.add_argument("--energy", choices=["split", "torch", "openmm"], default="split",
                    help="V for the rescale: priors from OpenMM + FlashSchNet forward pass (split; on CUDA a padded "
                         "list and one CUDA graph with the learned step), the priors in PyTorch too (torch: no OpenMM "
                         "energy call), or OpenMM's full energy (its TorchForce also runs the backward pass)")
    ap.add_argument("--device-resident", choices=["auto", "off", "both", "all"], default="auto",
                    help="FlashMD strides device-resident (residentloop.py; auto: when the energy is all in PyTorch, "
                         "--energy torch, on CUDA), never, both timed (speed: host and resident), or all (host, "
                         "resident without and with torch.compile)")
    ap.add_argument("--pairs", nargs="+", choices=["auto", "list", "dense"], default=["auto"],
                    help="pairs of the PyTorch FlashSchNet energy (--energy split/torch; speed: one row each): the "
                         "TorchForce's neighbor list and fused kernels, all ordered pairs with the plain CFConv "
                         "(compilable), or auto (dense on CUDA for small Systems); flashmdcg.flashSchNetEnergyEvaluator")
    ap.add_argument("--no-cmm-remover", action="store_true",
                    help="build the System without a CMMotionRemover (FlashMD keeps the centre of mass itself), so "
                         "the FlashMD integrator can skip reading the state back after accepted strides")
    ap.add_argument("--platform", default="CUDA")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    os.makedirs(args.results, exist_ok=True)
    info = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "platform": args.platform, "python": pyplatform.python_version(), "torch": torch.__version__,
            "openmm": mm.__version__, "command": " ".join(sys.argv),
            "flashSchNetForce": ("CUDA fast path: fused kernels, padded neighbor list, CUDA graphs"
                                 if args.platform == "CUDA" else "reference kernels, exact neighbor list")}
    if args.validate:
        validate(args, info)
    if args.speed:
        speed(args, info)


if __name__ == "__main__":
    main()
