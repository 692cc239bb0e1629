"""``openmmflash demo``: a CG protein simulation with a bundled FlashSchNet model, the main job in one command.

The model's priors run as native OpenMM forces and the network as a TorchForce; B replicas of the protein share one
System (and one model call per step). The trajectory is written by ``CompactReporter`` (.cmdx) and its size compared
with DCD and XTC files of the same frames. ``integrator="flashmd"`` runs the shipped FlashMD model trained on the
bundled CG System instead of LangevinMiddleIntegrator. The native structure stored in the model file (or the user's
protein, ``pdb``) is the start and the reference of CA-RMSD, Rg and Q. The summary says whether the run equilibrated
(``openmmflash.workflows.equilibration``).
"""

import json
import os
import tempfile
import time
from typing import Optional

import numpy as np

from openmmflash.cg.mapping import canonicalResidue
from openmmflash.cg.observables import observables, overlap, stats
from openmmflash.cg.structure import caIndices, nativeStructure
from openmmflash.compactmd.formatsizes import formatSizes
from openmmflash.distributed import Ensemble, launchInfo
from openmmflash.integrators.network.modelfile import ensembleNote
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.schnet.model import loadModel
from openmmflash.stack import import_openmm
from openmmflash.workflows.demosimulation import flashMDModelFor, runDemoSimulation
from openmmflash.workflows.equilibration import equilibrationVerdict
from openmmflash.workflows.modelchoice import modelForProtein, trainedSequence
from openmmflash.workflows.rankedjobs import shareOrRefuse

OBSERVABLES = (("caRmsd", "CA-RMSD to native (A)"), ("Rg", "CA radius of gyration (A)"),
               ("Q", "fraction of native contacts Q"))


def referenceObservables(net) -> Optional[dict]:
    """{name: samples} of the model's reference ensemble (CA-RMSD and Rg in A, Q) when its file carries one
    (``metadata["referenceObservables"]``, e.g. from the all-atom reference run it was trained on), else None."""
    ref = net.metadata.get("referenceObservables")
    if not isinstance(ref, dict):
        return None
    out = {k: np.asarray(v, np.float64).ravel() for k, v in ref.items() if k in dict(OBSERVABLES) and len(v)}
    return out or None


def plotRun(result: dict, obs: dict, native: dict, path: str, title: str, reference: Optional[dict] = None) -> None:
    """Energy, per-replica temperature and CA-RMSD against time; CA-RMSD, Rg and Q distributions of the last half
    with the native structure's values marked and the model's reference ensemble where it has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["time"]
    half = len(t) // 2
    fig, ax = plt.subplots(2, 3, figsize=(13, 7))
    ax[0, 0].plot(t, result["potentialEnergy"], lw=1)
    ax[0, 0].set_ylabel("potential energy, all replicas (kJ/mol)")
    for b in range(result["temperature"].shape[1]):
        ax[0, 1].plot(t, result["temperature"][:, b], lw=0.8, label=f"replica {b}")
        ax[0, 2].plot(t, obs["caRmsd"][:, b], lw=0.8)
    ax[0, 1].axhline(result["targetTemperature"], color="k", ls="--", lw=0.8, label="bath")
    ax[0, 1].set_ylabel("temperature (K)")
    ax[0, 1].legend(fontsize=6, ncol=2)
    ax[0, 2].set_ylabel("CA-RMSD to native (A)")
    for a in ax[0]:
        a.set_xlabel("time (ps)")
        if len(t):
            a.axvspan(t[half], t[-1], color="0.9", zorder=0)  # the half the statistics use
    for a, (key, label) in zip(ax[1], OBSERVABLES):
        if key not in obs:
            a.set_axis_off()
            continue
        sample = obs[key][half:].ravel()
        a.hist(sample, bins=int(np.clip(sample.size // 4, 5, 40)), density=True, alpha=0.7,
               label="this run, last half")
        if reference and key in reference:
            a.hist(reference[key], bins=40, density=True, histtype="step", color="k", lw=1.2,
                   label="model's reference ensemble")
        a.axvline(native[key], color="k", ls="--", lw=1, label="native structure")
        a.set_xlabel(label)
        a.set_ylabel("density")
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prepareDemo(model: Optional[str], pdb: Optional[str], output: str, integrator: str, quantized: bool,
                flashmdModel: Optional[str], writeNative: bool = True) -> tuple:
    """(FlashSchNet model, its name, CG topology, native (n, 3) nm, FlashMD model name or None) of a demo run;
    writes native.pdb into ``output`` (``writeNative``). Refuses --quantized where no quantized model exists."""
    if model is None and not pdb:
        model = "chignolin"
    if integrator == "flashmd" or quantized:
        if integrator != "flashmd":
            raise ValueError("--quantized: quantized models are FlashMD models; no quantized FlashSchNet model is "
                             "shipped. Add --integrator flashmd, or run without --quantized")
        flashmdModel = flashMDModelFor(model or "chignolin", flashmdModel, quantized)
    os.makedirs(output, exist_ok=True)
    openmm = import_openmm()
    with tempfile.TemporaryDirectory(prefix="demo-native-") as tmp:  # native.pdb only where asked
        where = output if writeNative else tmp
        if pdb:
            net, model, topology, native = modelForProtein(pdb, model)
            with open(os.path.join(where, "native.pdb"), "w") as f:
                openmm.app.PDBFile.writeFile(topology, native * openmm.unit.nanometer, f)
        else:
            net = loadModel(model)
            topology, native, _ = nativeStructure(net, where)
    return net, model, topology, native, flashmdModel


def runDemoPart(net, topology, native, replicas: int, steps: int, platform: Optional[str], output: str,
                timestep: float, reportInterval: int, seed: int, progress: bool = True, fastPath=True, tag: str = "",
                platformProperties: Optional[dict] = None, integrator: str = "langevin", friction: float = 10.0,
                flashmdModel: Optional[str] = None) -> dict:
    """Simulate ``replicas`` copies of the protein, writing trajectory{tag}.cmdx and topology{tag}.pdb into
    ``output``; returns runDemoSimulation's result (plus ``cmdx``, the trajectory's path)."""
    openmm = import_openmm()
    temperature = float(net.metadata.get("provenance", {}).get("referenceSettings", {}).get("temperature", 300.0))
    cmdx = os.path.join(output, f"trajectory{tag}.cmdx")
    if os.path.exists(cmdx):
        os.remove(cmdx)  # a fresh trajectory each run
    result = runDemoSimulation(net, topology, native, replicas, steps * timestep * 1e-3,
                               reportInterval * timestep * 1e-3, timestep, friction, temperature, platform, seed,
                               integrator, flashmdModel, cmdx, progress, fastPath, platformProperties)
    with open(os.path.join(output, f"topology{tag}.pdb"), "w") as f:  # the trajectory's topology (all replicas)
        openmm.app.PDBFile.writeFile(result["topology"], replicatePositions(native, replicas) * openmm.unit.nanometer,
                                     f)
    result["cmdx"] = cmdx
    return result


def finishDemo(net, model: str, topology, native, result: dict, output: str, cmdxBytes: int, t_start: float,
               pdb: Optional[str] = None, integrator: str = "langevin", quantized: bool = False,
               friction: float = 10.0, flashmdModel: Optional[str] = None, title: str = "") -> dict:
    """Observables, equilibration verdict, format sizes, plot and summary.json of a run whose ``result`` holds
    positions (F, B, n, 3) nm and temperature (F, B) of all B replicas; returns the summary."""
    frames = result["positions"]  # (F, B, n, 3) nm
    f_count, replicas, n = frames.shape[0], frames.shape[1], frames.shape[2]
    ca = caIndices(topology)
    obs = {k: v.reshape(f_count, replicas) for k, v in
           observables(frames.reshape(-1, n, 3).astype(np.float64), native, ca).items()}
    native_obs = {k: float(v[0]) for k, v in observables(native[None].astype(np.float64), native, ca).items()}
    ref = referenceObservables(net)
    verdict = equilibrationVerdict(result["temperature"], result["targetTemperature"],
                                   {k: obs[k] for k in ("caRmsd", "Rg")})
    sizes = formatSizes(frames.reshape(f_count, -1, 3), result["time"], result["topology"],
                        result["stepSize_fs"] * 1e-3, result["reportInterval"])
    sizes["cmdx"] = cmdxBytes
    simulated_ps = result["steps"] * result["stepSize_fs"] * 1e-3
    ns_day = simulated_ps * 1e-3 / max(result["wallSeconds"], 1e-9) * 86400.0
    half = f_count // 2
    protein = f"the native structure in the {model} model file"
    if pdb:
        same = [canonicalResidue(r.name) for r in topology.residues()] == trainedSequence(net)
        protein = pdb + ("" if same else f" (the model was trained on another protein, "
                         f"{'-'.join(trainedSequence(net))[:60]}: a transferability test)")
    summary = {"model": str(model), "protein": protein,
               "integrator": integrator, "platform": result["platform"], "replicas": replicas,
               "beads": topology.getNumAtoms(), "steps": result["steps"], "timestep_fs": result["stepSize_fs"],
               "friction_per_ps": friction, "frames": f_count,
               "simulatedTimePerReplica_ps": simulated_ps, "wallSeconds": result["wallSeconds"],
               "totalWallSeconds": time.time() - t_start,
               "nsPerDayPerReplica": ns_day, "nsPerDayAggregate": ns_day * replicas,
               "finalPotentialEnergy_kJmol": float(result["potentialEnergy"][-1]),
               "meanTemperature_K": float(result["temperature"][half:].mean()),
               "temperaturePerReplica_K": [float(v) for v in result["temperature"][half:].mean(0)],
               "targetTemperature_K": result["targetTemperature"],
               "caRmsdFinal_A": [float(v) for v in obs["caRmsd"][-1]], "caRmsdMean_A": float(obs["caRmsd"].mean()),
               "observablesLastHalf": {k: stats(v[half:]) for k, v in obs.items()},
               "observablesNative": native_obs,
               "reference": {"ensemble": None, "note": "the model file carries no reference ensemble (it holds the "
                             "native structure, the force-matching validation and the reference MD settings); "
                             "distributions are shown against the native structure",
                             "forceMatching": net.metadata.get("validation", {}).get("validation")},
               "trajectory": {"path": result["cmdx"], "bytes": sizes, "maxError_nm": 0.0005,
                              "dcdOverCmdx": sizes["dcd"] / sizes["cmdx"],
                              "xtcOverCmdx": sizes["xtc"] / sizes["cmdx"] if sizes["xtc"] else None},
               "equilibration": verdict, "forceOptions": result["forceOptions"], "worldSize": 1}
    if ref is not None:
        summary["reference"].update(ensemble={k: stats(v) for k, v in ref.items()},
                                    overlap={k: overlap(obs[k][half:].ravel(), v) for k, v in ref.items() if k in obs},
                                    note="the model file's reference ensemble")
    if integrator == "flashmd":
        strides = result["learnedSteps"] + result["fallbacks"]
        summary["flashmd"] = {"model": flashmdModel, "quantized": bool(quantized), "stride_fs": result["stepSize_fs"],
                              "learnedStrides": result["learnedSteps"], "fallbacks": result["fallbacks"],
                              "fallbackRate": result["fallbacks"] / max(strides, 1),
                              "deviceResident": result["deviceResident"], "ensembleNote": ensembleNote(flashmdModel),
                              "replicaFallbackFractions": result.get("replicaFallbackFractions")}
    verdict_text = "equilibrated" if verdict["equilibrated"] else "NOT equilibrated"
    plotRun(result, obs, native_obs, os.path.join(output, "demo.png"),
            f"openmmflash demo: {model}, {integrator}, {replicas} replicas{title}, {result['platform']}, "
            f"{simulated_ps:.1f} ps per replica: {verdict_text}", ref)
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def runDemo(model: Optional[str] = "chignolin", steps: int = 2000, replicas: int = 4, platform: Optional[str] = None,
            output: str = "openmmflash-demo", timestep: float = 2.0, reportInterval: int = 40, seed: int = 1,
            progress: bool = True, fastPath=True, integrator: str = "langevin", quantized: bool = False,
            pdb: Optional[str] = None, friction: float = 10.0, flashmdModel: Optional[str] = None) -> dict:
    """Run the demo and write trajectory.cmdx, topology.pdb, native.pdb, demo.png and summary.json into ``output``.

    ``steps`` MD steps of ``timestep`` fs per replica (FlashMD runs the same simulated time in strides), a frame
    every ``reportInterval`` steps; ``friction`` 1/ps; ``pdb`` a protein file to run instead of the model's own
    (``model=None``: the bundled model trained on its sequence, or on all its residue types);
    ``quantized`` the GAQ-quantized FlashMD model (ValueError when none is shipped for the model)."""
    t_start = time.time()
    net, model, topology, native, flashmdModel = prepareDemo(model, pdb, output, integrator, quantized, flashmdModel)
    result = runDemoPart(net, topology, native, replicas, steps, platform, output, timestep, reportInterval, seed,
                         progress, fastPath, integrator=integrator, friction=friction, flashmdModel=flashmdModel)
    return finishDemo(net, model, topology, native, result, output, os.path.getsize(result["cmdx"]), t_start, pdb,
                      integrator, quantized, friction, flashmdModel)


def runDemoRanks(ens, model: Optional[str] = "chignolin", steps: int = 2000, replicas: int = 4,
                 platform: Optional[str] = None, output: str = "openmmflash-demo", timestep: float = 2.0,
                 reportInterval: int = 40, seed: int = 1, fastPath=True, integrator: str = "langevin",
                 quantized: bool = False, pdb: Optional[str] = None, friction: float = 10.0,
                 flashmdModel: Optional[str] = None) -> Optional[dict]:
    """``runDemo`` over the ranks of ``ens`` (an ``openmmflash.distributed.Ensemble``): rank k simulates its share
    of the replicas (seed ``ens.seed(seed)``, its own GPU) into trajectory.rank<k>.cmdx / topology.rank<k>.pdb; rank
    0 writes native.pdb, demo.png and one summary.json over all replicas (``worldSize``, ``ranks``). Returns the
    summary on rank 0, None elsewhere."""
    t_start = time.time()
    mine = shareOrRefuse(ens, replicas, "replicas", "--replicas")
    net, model, topology, native, flashmdModel = prepareDemo(model, pdb, output, integrator, quantized, flashmdModel,
                                                             writeNative=ens.isMain)
    result = runDemoPart(net, topology, native, len(mine), steps, platform, output, timestep, reportInterval,
                         ens.seed(seed), ens.isMain, fastPath, tag=f".rank{ens.rank}",
                         platformProperties=ens.platformProperties(platform or "CUDA"), integrator=integrator,
                         friction=friction, flashmdModel=flashmdModel)
    light = {k: v for k, v in result.items() if k != "topology"}
    parts = ens.gather({"rank": ens.rank, "replicas": list(mine), "result": light, "device": str(ens.device),
                        "cmdxBytes": os.path.getsize(result["cmdx"])})
    if not ens.isMain:
        return None
    frames = min(len(p["result"]["time"]) for p in parts)
    merged = dict(parts[0]["result"], topology=replicateTopology(topology, replicas))
    merged["positions"] = np.concatenate([p["result"]["positions"][:frames] for p in parts], axis=1)
    merged["temperature"] = np.concatenate([p["result"]["temperature"][:frames] for p in parts], axis=1)
    merged["potentialEnergy"] = sum(p["result"]["potentialEnergy"][:frames] for p in parts)  # all replicas
    merged["time"] = merged["time"][:frames]
    merged["wallSeconds"] = max(p["result"]["wallSeconds"] for p in parts)  # the job ends with its slowest rank
    for key in ("learnedSteps", "fallbacks"):
        if key in merged:
            merged[key] = sum(p["result"][key] for p in parts)
    if "replicaFallbackFractions" in merged:
        merged["replicaFallbackFractions"] = [f for p in parts for f in p["result"]["replicaFallbackFractions"]]
    summary = finishDemo(net, model, topology, native, merged, output, sum(p["cmdxBytes"] for p in parts), t_start,
                         pdb, integrator, quantized, friction, flashmdModel, f" on {ens.worldSize} processes")
    summary.update(worldSize=ens.worldSize, launcher=ens.launcher)
    summary["trajectory"]["path"] = [p["result"]["cmdx"] for p in parts]
    summary["ranks"] = [{"rank": p["rank"], "replicas": p["replicas"], "device": p["device"],
                         "platform": p["result"]["platform"], "wallSeconds": p["result"]["wallSeconds"],
                         "trajectory": f"trajectory.rank{p['rank']}.cmdx", "topology": f"topology.rank{p['rank']}.pdb"}
                        for p in parts]
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def printSummary(s: dict, output: str) -> None:
    """The one-page summary of a demo run."""
    kb = {k: (v / 1024 if v else None) for k, v in s["trajectory"]["bytes"].items()}
    print(f"\nopenmmflash demo: {s['model']} ({s['beads']} beads) x {s['replicas']} replicas on {s['platform']}")
    print(f"  protein              {s['protein']}")
    integ = ("LangevinMiddleIntegrator" if s["integrator"] == "langevin"
             else f"FlashMDLangevinIntegrator, model {s['flashmd']['model']}")
    print(f"  integrator           {integ}, {s['timestep_fs']:g} fs steps, friction {s['friction_per_ps']:g}/ps")
    what = "strides" if "flashmd" in s else "steps"
    print(f"  {what:<20} {s['steps']} ({s['simulatedTimePerReplica_ps']:.1f} ps per replica, "
          f"{s['simulatedTimePerReplica_ps'] * s['replicas']:.1f} ps in total, {s['frames']} frames)")
    print(f"  speed                {s['nsPerDayPerReplica']:.2f} ns/day per replica, "
          f"{s['nsPerDayAggregate']:.2f} ns/day aggregate ({s['wallSeconds']:.1f} s of MD, "
          f"{s['totalWallSeconds']:.1f} s in all)")
    if "flashmd" in s:
        fm = s["flashmd"]
        print(f"  FlashMD              {fm['learnedStrides']} learned strides, {fm['fallbacks']} fell back to "
              f"ordinary substeps ({100 * fm['fallbackRate']:.0f} %)")
        if fm.get("replicaFallbackFractions"):
            print("  FlashMD per replica  each replica falls back alone: "
                  + ", ".join(f"{100 * f:.0f} %" for f in fm["replicaFallbackFractions"]))
    print(f"  potential energy     {s['finalPotentialEnergy_kJmol']:.1f} kJ/mol (all replicas, last frame)")
    print(f"  temperature          {s['meanTemperature_K']:.1f} K over the last half (bath "
          f"{s['targetTemperature_K']:.0f} K); per replica "
          f"{', '.join(f'{v:.0f}' for v in s['temperaturePerReplica_K'])} K")
    ref = s["reference"]
    for key, label, unit in (("caRmsd", "CA-RMSD to native", "A"), ("Rg", "CA Rg", "A"), ("Q", "Q (native)", "")):
        if key in s["observablesLastHalf"]:
            st = s["observablesLastHalf"][key]
            versus = f"native {s['observablesNative'][key]:.2f}"
            if ref["ensemble"] and key in ref["ensemble"]:
                r = ref["ensemble"][key]
                versus += f"; reference {r['mean']:.2f} +- {r['std']:.2f}, overlap {ref['overlap'][key]:.2f}"
            print(f"  {label:<20} {st['mean']:.2f} +- {st['std']:.2f} {unit} over the last half ({versus})")
    if not ref["ensemble"]:
        print("  reference ensemble   none in the model file; compared with the native structure")
    xtc = f"{kb['xtc']:.1f} KiB" if kb["xtc"] else "n/a (mdtraj not installed)"
    ratio = f", {s['trajectory']['xtcOverCmdx']:.1f}x smaller than XTC" if s["trajectory"]["xtcOverCmdx"] else ""
    print(f"  trajectory           {kb['cmdx']:.1f} KiB .cmdx (error <= 0.0005 nm) against DCD {kb['dcd']:.1f} KiB, "
          f"XTC {xtc}: {s['trajectory']['dcdOverCmdx']:.1f}x smaller than DCD{ratio}")
    eq = s["equilibration"]
    if eq["equilibrated"]:
        print("  equilibration        temperature at the bath and no drift in CA-RMSD or Rg over the last half")
    else:
        print("  equilibration        NOT equilibrated -- statistics above describe a relaxing system:")
        for reason in eq["reasons"]:
            print(f"                       - {reason}")
        print("                       run longer (--time PS) or with more replicas for converged distributions")
    trajectories = ("trajectory.cmdx (topology.pdb)" if s.get("worldSize", 1) == 1 else
                    f"trajectory.rank<k>.cmdx (topology.rank<k>.pdb), k < {s['worldSize']}")
    print(f"  wrote                {output}/{trajectories}, {output}/demo.png, {output}/summary.json")
    print("  read back            CompactTrajectory('trajectory.cmdx').read() or openmmflash compact-convert")


# Defaults of the command line (openmmflash.commands declares the flags): about 2 minutes on a 2-core CPU.
DEFAULT_STEPS, DEFAULT_REPLICAS, DEFAULT_INTERVAL = 2000, 4, 40


def _demo(args):
    steps = args.steps
    if args.time is not None:
        steps = int(round(args.time / (args.timestep * 1e-3)))
    if steps is None:
        steps = 200 if args.quick else DEFAULT_STEPS
    replicas = args.replicas or (2 if args.quick else DEFAULT_REPLICAS)
    interval = args.report_interval or (20 if args.quick else DEFAULT_INTERVAL)
    interval = min(interval, steps)
    options = dict(fastPath=not args.no_fast_path, integrator=args.integrator, quantized=args.quantized,
                   pdb=args.pdb, friction=args.friction, flashmdModel=args.flashmd_model)
    if launchInfo()["worldSize"] == 1:
        summary = runDemo(args.model, steps, replicas, args.platform, args.output, args.timestep, interval,
                          args.seed, **options)
    else:  # torchrun / srun: each rank its share of the replicas, rank 0 the summary
        with Ensemble() as ens:
            summary = runDemoRanks(ens, args.model, steps, replicas, args.platform, args.output, args.timestep,
                                   interval, args.seed, **options)
        if summary is None:
            return
    printSummary(summary, args.output)
