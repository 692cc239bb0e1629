"""GAQ long runs: nanosecond NVT runs of the FlashMD water model, fp32 vs quantized, chunked and resumable.

Each variant (fp32 = the shipped ``water-tip3pfb-8fs``; quantized ones = model files made beforehand with
``openmmflash quantize`` into --models-dir as ``water-gaq-<variant>.pt``) runs the flexible-water box (387 atoms,
1.6 nm, PME) in ``FlashMDLangevinIntegrator`` as users run it (300 K, 1/ps, rescaling + guard on, per-species
rescale), one subprocess per variant, in parallel on one GPU. Every --sample strides: per-species kinetic temperature,
potential and total energy, fallback and learned-stride counts, mean energy-rescale factor, and an intermolecular
O-O / O-H / H-H g(r) accumulation. A run stops at a blow-up (exception, non-finite state or a species temperature
above --blowup-factor x T) and records when.

Chunking: a worker stops after --max-wall seconds and saves, per variant, the OpenMM State XML (positions,
velocities, box, step count, time: portable across GPUs), the integrator's checkpoint state, the sampled series and
the g(r) sums (npz); running again with the same --work continues (a larger --ns extends the runs). A --work
folder made with other settings or other model files is refused.

    python examples/benchmarks/bench_gaq_long.py --work /tmp/gaqlong --models-dir .gaqmodels --ns 1.0 \\
        --max-wall 570 --platform CUDA                                  # one chunk of all five variants
    python examples/benchmarks/bench_gaq_long.py --work /tmp/gaqlong --finalize   # JSON + PNG + table (CPU OK)

On the device machine (no training pairs needed; the work folder travels as a tarball): carry .whl, .gaqmodels and
.gaqlong, run the install lines of the project brief, then

    python examples/benchmarks/bench_gaq_long.py --work .gaqlong --models-dir .gaqmodels --ns 1.0 --platform CUDA \
        --max-wall 510 --jobs 5 2>&1 | tail -8; tar czf $OUT/gaqlong.tgz .gaqlong

and unpack gaqlong.tgz into the repository before the next chunk. Measured on an H100 (results/
gaq_speed_longrun_smoke.json): five workers share the GPU at ~3.6 ms per stride in aggregate (fp32, with ~20 %
fallback strides, is the slowest), so 1 ns of all five variants is ~2300 s of running, five chunks.

The quantized model files (CPU; about 30 min each at 100 QAT steps on a 2-core machine):

    openmmflash quantize water-tip3pfb-8fs --scheme w8a8 --method naive --data .flashmd_data/water_8fs.npz \
        --qat-steps 100 -o .gaqmodels/water-gaq-naive-w8a8.pt          # likewise frame-w8a8 and naive-w4a8

and frame-w4a8 is the shipped ``water-tip3pfb-8fs-gaq-w4a8`` (300 QAT steps on a GPU) copied in. The committed
results/gaq_long.json is fp32 and frame-w4a8 only (``--variants fp32 frame-w4a8 --jobs 2``, two chunks on an H100).

--finalize writes examples/benchmarks/results/gaq_long<tag>.json and .png; the g(r) reference is the 150 ps
LangevinMiddleIntegrator run (0.5 fs) stored in results/flashmd_water_gpu.json (same System, 300 K, 1/ps).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from openmmflash.blockstats import blockStandardError

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
KB = 0.00831446261815324
VARIANTS = ["fp32", "naive-w8a8", "frame-w8a8", "naive-w4a8", "frame-w4a8"]
FP32_MODEL = "water-tip3pfb-8fs"
BOX_NM, CUTOFF_NM, RDF_BINS = 1.6, 0.7, 100
# Settings that must match for a --work folder to be continued.
RUN_KEYS = ("ns", "temperature", "friction", "sample", "seed", "blowup_factor", "models", "stride_ps", "fp32_model",
            "mode_rescale")
NEW_KEY_DEFAULTS = {"fp32_model": FP32_MODEL, "mode_rescale": False}  # keys that work folders made earlier lack
SERIES = ("t_ps", "T_H", "T_O", "Epot", "Etot", "learned", "fallbacks", "alpha", "wall_s")


def model_path(variant, models_dir, fp32_model=FP32_MODEL):
    """The model file of a variant (fp32: the shipped model ``fp32_model``, a name or a file)."""
    from openmmflash.integrators.network.modelfile import modelPath
    if variant == "fp32":
        return modelPath(fp32_model)
    path = os.path.join(models_dir or "", f"water-gaq-{variant}.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: make it with `openmmflash quantize {FP32_MODEL} --scheme "
                                f"{variant.split('-')[1]} --method {variant.split('-')[0]} --data ... -o {path}`, "
                                "or pass --models-dir with the folder that holds it")
    return path


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_atomic(path, write):
    """write(tmp_path), then rename: an interrupted save never leaves a half-written file."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path, obj):
    def write(p):
        with open(p, "w") as f:
            json.dump(obj, f, indent=1)
    _write_atomic(path, write)


def prepare_work(args):
    """Create or check <work>/settings.json; returns the settings. A folder with other settings is refused."""
    from openmmflash.integrators.network.modelfile import loadModel
    models = {v: sha256(model_path(v, args.models_dir, args.fp32_model)) for v in args.variants}
    new = {"ns": args.ns, "temperature": args.temperature, "friction": args.friction, "sample": args.sample,
           "seed": args.seed, "blowup_factor": args.blowup_factor, "models": models,
           "stride_ps": loadModel(args.fp32_model).stride, "box_nm": BOX_NM, "cutoff_nm": CUTOFF_NM,
           "models_dir": args.models_dir, "fp32_model": args.fp32_model, "mode_rescale": args.mode_rescale}
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        # A longer --ns continues the same runs further (a shorter one is refused like any other change).
        diff = [k for k in RUN_KEYS if k != "models" and old.get(k, NEW_KEY_DEFAULTS.get(k)) != new.get(k)
                and not (k == "ns" and new["ns"] > old["ns"])]
        diff += [f"model of {v}" for v in models if v in old["models"] and old["models"][v] != models[v]]
        if diff:
            raise SystemExit(f"--work {args.work} holds runs made with other settings ({', '.join(diff)}); use "
                             "the same settings and model files to continue them, or a new --work folder")
        old["models"].update(models)   # variants may be added to a folder later
        # models_dir is relative to the repository root, wherever that is on the machine of this chunk
        new = old | {"models_dir": new["models_dir"], "ns": new["ns"]}
    _write_json(path, new)
    return new


def _machine():
    import platform as pyplatform
    import openmm
    import torch
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "openmm": openmm.__version__, "host": pyplatform.node()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _provenance():
    """The provenance object of this process (examples/benchmarks/benchprovenance.py, which imports torch)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    from benchprovenance import provenance
    return provenance()


class LongRun:
    """One variant's resumable run in <work>/<variant>/ (state.xml, integrator.json, series.npz, status.json)."""

    def __init__(self, work, variant, settings, platform, device):
        import openmm as mm
        from openmm import app, unit
        from openmmflash.integrators.training.data import flexibleWaterBox
        from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
        self.dir = os.path.join(work, variant)
        os.makedirs(self.dir, exist_ok=True)
        self.variant, self.settings = variant, settings
        top, system, positions = flexibleWaterBox(settings["box_nm"], settings["cutoff_nm"])
        path = model_path(variant, settings["models_dir"], settings.get("fp32_model", FP32_MODEL))
        if sha256(path) != settings["models"][variant]:
            raise SystemExit(f"{path} differs from the model file this --work folder was started with")
        seed = settings["seed"] + VARIANTS.index(variant) if variant in VARIANTS else settings["seed"]
        self.integ = FlashMDLangevinIntegrator(settings["temperature"] * unit.kelvin,
                                               settings["friction"] / unit.picosecond, None, model=path,
                                               device=device, randomSeed=seed,
                                               modeRescale=settings.get("mode_rescale", False))
        self.sim = app.Simulation(top, system, self.integ, mm.Platform.getPlatformByName(platform))
        self.masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                                for i in range(system.getNumParticles())])
        self.types = np.array([a.element.atomic_number for a in top.atoms()])
        self.residues = np.array([a.residue.index for a in top.atoms()])
        self.status = self._load("status.json", {"strides": 0, "wall_s": 0.0, "chunks": 0, "failed": None,
                                                 "done": False})
        self.series = {k: [] for k in SERIES}
        self.rdf = {k: np.zeros(RDF_BINS) for k in ("OO", "OH", "HH")}
        self.rdf_samples = 0
        if os.path.exists(os.path.join(self.dir, "state.xml")):
            self._resume()
        else:
            self.sim.context.setPositions(positions)
            self.sim.minimizeEnergy(maxIterations=500)
            self.sim.context.setVelocitiesToTemperature(settings["temperature"] * unit.kelvin, seed)
            self.sim.context.setTime(0.0)
            self.sim.context.setStepCount(0)

    def _load(self, name, default):
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return default
        with open(path) as f:
            return json.load(f)

    def _resume(self):
        import openmm as mm
        with open(os.path.join(self.dir, "state.xml")) as f:
            state = mm.XmlSerializer.deserialize(f.read())
        self.sim.context.setState(state)
        self.sim.context.setStepCount(state.getStepCount())
        self.sim.context.setTime(state.getTime())
        self.integ.setCheckpointState(self._load("integrator.json", {}))
        with np.load(os.path.join(self.dir, "series.npz")) as d:
            self.series = {k: d[k].tolist() for k in SERIES}
            self.rdf = {k: d["rdf_" + k].copy() for k in self.rdf}
            self.rdf_samples = int(d["rdf_samples"])

    def save(self):
        import openmm as mm
        st = self.sim.context.getState(getPositions=True, getVelocities=True, getParameters=True)
        xml = mm.XmlSerializer.serialize(st)

        def write_xml(p):
            with open(p, "w") as f:
                f.write(xml)
        _write_atomic(os.path.join(self.dir, "state.xml"), write_xml)
        _write_json(os.path.join(self.dir, "integrator.json"), self.integ.getCheckpointState())
        arrays = {k: np.asarray(v) for k, v in self.series.items()} | {f"rdf_{k}": v for k, v in self.rdf.items()}

        def write_npz(p):
            with open(p, "wb") as f:
                np.savez(f, rdf_samples=self.rdf_samples, **arrays)
        _write_atomic(os.path.join(self.dir, "series.npz"), write_npz)
        self.status["strides"] = int(self.sim.context.getStepCount())
        _write_json(os.path.join(self.dir, "status.json"), self.status)

    def sample(self):
        """Record one sample; returns a failure reason or None."""
        from openmm import unit
        st = self.sim.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        epot = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ekin = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        ke2 = (self.masses[:, None] * np.asarray(v) ** 2).sum(-1)
        temps = [float(ke2[self.types == z].sum() / (3 * (self.types == z).sum() * KB)) for z in (1, 8)]
        learned, fallbacks = self.integ.getNumLearnedSteps(), self.integ.getNumFallbacks()
        new = learned - (self.series["learned"][-1] if self.series["learned"] else 0)
        alphas = self.integ.getRescaleFactors()
        alpha = float(np.mean(alphas[-new:])) if new > 0 and len(alphas) else float("nan")
        for k, x in zip(SERIES, (st.getTime().value_in_unit(unit.picosecond), *temps, epot, epot + ekin,
                                 learned, fallbacks, alpha, self.status["wall_s"])):
            self.series[k].append(x)
        if not (np.isfinite(q).all() and np.isfinite(v).all() and np.isfinite(epot + ekin)):
            return "non-finite state"
        if max(temps) > self.settings["blowup_factor"] * self.settings["temperature"]:
            return f"species temperature {max(temps):.0f} K > {self.settings['blowup_factor']} x bath"
        if HERE not in sys.path:
            sys.path.insert(0, HERE)
        from bench_flashmd_water import rdfs   # the g(r) of the fp32 water validation, same bins
        _, g = rdfs(np.asarray(q)[None], [self.settings["box_nm"]], self.residues, self.types,
                    0.5 * self.settings["box_nm"], RDF_BINS)
        for k in self.rdf:
            self.rdf[k] += g[k]
        self.rdf_samples += 1
        return None

    def run(self, max_wall, save_every=120.0):
        """Advance until the target time, a failure or max_wall seconds; save at the end (and every save_every s)."""
        total = int(round(self.settings["ns"] * 1000 / self.settings["stride_ps"]))
        k = self.settings["sample"]
        t0 = last_save = time.time()
        wall0 = self.status["wall_s"]
        self.status["chunks"] += 1
        self.status["done"] = int(self.sim.context.getStepCount()) >= total   # --ns may have grown
        while not self.status["done"] and self.status["failed"] is None:   # at least one block per chunk
            n = min(k, total - int(self.sim.context.getStepCount()))
            try:
                self.sim.step(n)
                self.status["wall_s"] = wall0 + time.time() - t0
                reason = self.sample()
            except Exception as err:  # noqa: BLE001 - a learned map may fail; that is a result
                reason = f"{type(err).__name__}: {str(err)[:300]}"
            if reason is not None:
                self.status["failed"] = {"reason": reason, "time_ps": self.sim.context.getState().getTime()
                                         .value_in_unit(__import__("openmm").unit.picosecond)}
            self.status["done"] = int(self.sim.context.getStepCount()) >= total
            self.status["wall_s"] = wall0 + time.time() - t0
            if time.time() - t0 >= max_wall:
                break
            if time.time() - last_save > save_every:
                self.save()
                last_save = time.time()
        self.status["wall_s"] = wall0 + time.time() - t0
        self.status["machine"] = _machine()
        self.status["provenance"] = _provenance()   # this chunk's (the worker's command, commit, GPU)
        self.save()
        return self.status


def worker(args):
    import torch  # noqa: F401  (torch before openmm)
    import logging
    logging.getLogger("openmmflash.flashmd").setLevel(logging.ERROR)  # fallbacks are counted, not logged each
    with open(os.path.join(args.work, "settings.json")) as f:
        settings = json.load(f)
    run = LongRun(args.work, args.worker, settings, args.platform, args.device)
    st = run.run(args.max_wall)
    print(json.dumps({"variant": args.worker} | {k: st[k] for k in ("strides", "wall_s", "done", "failed")}))


def launch(args):
    """One worker subprocess per variant, --jobs at a time; tqdm bars from their status files."""
    from tqdm import tqdm
    settings = prepare_work(args)
    total = int(round(args.ns * 1000 / settings["stride_ps"]))
    todo = [v for v in args.variants]
    procs, bars = {}, {}

    def strides(v):
        try:
            with open(os.path.join(args.work, v, "status.json")) as f:
                return json.load(f)["strides"]
        except (OSError, ValueError, KeyError):
            return 0

    for i, v in enumerate(args.variants):
        bars[v] = tqdm(total=total, initial=strides(v), desc=f"{v:11s}", unit="stride", position=i, mininterval=5)
    while todo or procs:
        while todo and len(procs) < args.jobs:
            v = todo.pop(0)
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", v, "--work", args.work, "--max-wall",
                   str(args.max_wall), "--platform", args.platform] + (["--device", args.device] if args.device else [])
            procs[v] = subprocess.Popen(cmd, stdout=open(os.path.join(args.work, f"{v}.log"), "a"),
                                        stderr=subprocess.STDOUT)
        time.sleep(5)
        for v in list(procs):
            bars[v].n = strides(v)
            bars[v].refresh()
            if procs[v].poll() is not None:
                if procs[v].returncode != 0:
                    print(f"\n{v}: worker exited with {procs[v].returncode}; see {args.work}/{v}.log", flush=True)
                del procs[v]
    for v in args.variants:
        bars[v].n = strides(v)
        bars[v].close()
    for v in args.variants:
        with open(os.path.join(args.work, f"{v}.log")) as f:
            lines = f.read().strip().splitlines() or ["(no output)"]
        print(f"{v}: {lines[-1][-300:]}")


# ------------------------------------------------------------------------------------------------------ report
def reference_rdf(path=None):
    """Intermolecular g(r) of a LangevinMiddleIntegrator run in a bench_flashmd_water report (default: the 150 ps run
    of results/flashmd_water_gpu.json)."""
    path = path or os.path.join(RESULTS, "flashmd_water_gpu.json")
    with open(path) as f:
        d = json.load(f)
    return {"source": os.path.relpath(path, os.path.dirname(HERE)), "simulated_ps": d["simulated_ps"]["langevin"],
            "r_nm": np.asarray(d["rdf"]["r_nm"]), "g": {k: np.asarray(v) for k, v in d["rdf"]["langevin"].items()}}


def summarize_variant(work, variant, settings, discard_ps, blocks, ref):
    with open(os.path.join(work, variant, "status.json")) as f:
        status = json.load(f)
    with np.load(os.path.join(work, variant, "series.npz")) as d:
        s = {k: d[k] for k in SERIES}
        g = {k: d["rdf_" + k] / max(1, int(d["rdf_samples"])) for k in ("OO", "OH", "HH")}
        rdf_samples = int(d["rdf_samples"])
    T0 = settings["temperature"]
    t = s["t_ps"]
    keep = t >= discard_ps
    out = {"simulated_ns": float(t[-1] / 1000) if len(t) else 0.0, "wall_s": status["wall_s"],
           "strides": status["strides"], "chunks": status["chunks"], "complete": bool(status["done"]),
           "stable": status["failed"] is None, "failure": status["failed"], "samples": int(len(t)),
           "samplesInStatistics": int(keep.sum()), "machine": status.get("machine"),
           "provenance": status.get("provenance")}   # of the variant's last chunk
    out["ns_per_day"] = out["simulated_ns"] / max(1e-9, status["wall_s"]) * 86400
    out["ms_per_stride"] = 1000 * status["wall_s"] / max(1, status["strides"])
    n = len(t)
    if n >= 8:   # steady state: the slope of wall time over the later half of the samples (no start-up costs)
        half = slice(n // 2, n)
        strides = t[half] / settings["stride_ps"]
        out["ms_per_stride_steady"] = float(np.polyfit(strides, s["wall_s"][half], 1)[0] * 1000)
    learned = int(s["learned"][-1]) if len(t) else 0
    fallbacks = int(s["fallbacks"][-1]) if len(t) else 0
    out["fallbackFraction"] = fallbacks / max(1, learned + fallbacks)
    out["rescaleFactor"] = {"mean": float(np.nanmean(s["alpha"][keep])) if keep.any() else float("nan"),
                            "std": float(np.nanstd(s["alpha"][keep])) if keep.any() else float("nan")}
    for name, key in (("H", "T_H"), ("O", "T_O")):
        x = s[key][keep]
        tk = t[keep]
        out[f"T_{name}_K"] = float(x.mean()) if len(x) else float("nan")
        sem = blockStandardError(x, blocks=blocks)
        out[f"T_{name}_sem_K"] = float("nan") if sem is None else sem
        out[f"absDeltaT_{name}_K"] = abs(out[f"T_{name}_K"] - T0)
        out[f"Tdrift_{name}_K_per_ns"] = float(np.polyfit(tk, x, 1)[0] * 1000) if len(x) > 2 else float("nan")
    if rdf_samples and ref is not None:
        dr = float(ref["r_nm"][1] - ref["r_nm"][0])
        out["rdf"] = {"samples": rdf_samples,
                      "l1_difference_vs_langevin": {k: float(np.abs(g[k] - ref["g"][k]).sum() * dr) for k in g},
                      "first_peak_height": {k: [float(ref["g"][k].max()), float(g[k].max())] for k in g},
                      "g_OO": g["OO"].tolist()}
    out["series"] = {"t_ps": t.tolist(), "T_H": s["T_H"].tolist(), "T_O": s["T_O"].tolist(),
                     "fallbacks": s["fallbacks"].tolist(), "learned": s["learned"].tolist()}
    return out


def finalize(args):
    with open(os.path.join(args.work, "settings.json")) as f:
        settings = json.load(f)
    try:
        ref = reference_rdf(args.reference)
    except (OSError, KeyError) as err:
        print(f"no g(r) reference: {err}")
        ref = None
    report = {"benchmark": "gaq_long", "settings": settings | {"discard_ps": args.discard_ps, "blocks": args.blocks,
              "system": f"flexible TIP3P-FB water, {BOX_NM} nm box, PME cutoff {CUTOFF_NM} nm",
              "integrator": "FlashMDLangevinIntegrator (rescaleEnergy + guard on, "
                            + ("modeRescale on)" if settings.get("mode_rescale") else "speciesRescale on)")},
              "rdfReference": None if ref is None else {"source": ref["source"], "simulated_ps": ref["simulated_ps"],
                                                        "r_nm": ref["r_nm"].tolist(), "g_OO": ref["g"]["OO"].tolist(),
                                                        "integrator": "LangevinMiddleIntegrator 0.5 fs"},
              "variants": {}}
    for v in VARIANTS:
        if os.path.exists(os.path.join(args.work, v, "status.json")):
            report["variants"][v] = summarize_variant(args.work, v, settings, args.discard_ps, args.blocks, ref)
    machines = [r["machine"] for r in report["variants"].values() if r.get("machine")]
    report["machine"] = machines[-1] if machines else None
    os.makedirs(args.outdir, exist_ok=True)
    path = os.path.join(args.outdir, f"{args.report_name}{args.tag}.json")
    report["provenance"] = _provenance()   # of --finalize; each variant carries its runs' (last chunk's)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{'variant':11s} {'ns':>6s} {'ms/str':>7s} {'stable':>6s} {'T_H (K)':>13s} {'T_O (K)':>13s} "
          f"{'dT_H/ns':>8s} {'dT_O/ns':>8s} {'fallback':>8s} {'gOO L1':>7s}")
    for v, r in report["variants"].items():
        l1 = r.get("rdf", {}).get("l1_difference_vs_langevin", {}).get("OO", float("nan"))
        ms = r.get("ms_per_stride_steady", r["ms_per_stride"])
        print(f"{v:11s} {r['simulated_ns']:6.3f} {ms:7.2f} {'yes' if r['stable'] else 'NO':>6s} "
              f"{r['T_H_K']:7.1f}+-{r['T_H_sem_K']:4.1f} {r['T_O_K']:7.1f}+-{r['T_O_sem_K']:4.1f} "
              f"{r['Tdrift_H_K_per_ns']:8.2f} {r['Tdrift_O_K_per_ns']:8.2f} {r['fallbackFraction']:8.4f} {l1:7.4f}")
    plot(report, os.path.join(args.outdir, f"{args.report_name}{args.tag}.png"))
    print(f"wrote {path}")
    return report


def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(report["variants"])
    fp32 = report["settings"].get("fp32_model", FP32_MODEL)
    name = lambda v: fp32 if v == "fp32" and fp32 != FP32_MODEL else v  # noqa: E731
    fig, ax = plt.subplots(1, 3, figsize=(17, 5))
    colors = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for n in names:
        s = report["variants"][n]["series"]
        t = np.asarray(s["t_ps"]) / 1000
        w = max(1, len(t) // 200)   # running mean over ~1/200 of the run, for legibility
        sm = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")  # noqa: E731
        ax[0].plot(sm(t), sm(np.asarray(s["T_H"])), color=colors[n], label=f"{name(n)} H")
        ax[0].plot(sm(t), sm(np.asarray(s["T_O"])), color=colors[n], ls="--", label=f"{name(n)} O")
        fb = np.asarray(s["fallbacks"], dtype=float)
        tot = fb + np.asarray(s["learned"], dtype=float)
        ax[1].plot(t, fb / np.maximum(1, tot), color=colors[n], label=name(n))
        if "rdf" in report["variants"][n] and report["rdfReference"]:
            ax[2].plot(report["rdfReference"]["r_nm"], report["variants"][n]["rdf"]["g_OO"], color=colors[n], label=name(n))
    ax[0].axhline(report["settings"]["temperature"], color="k", lw=0.8)
    ax[0].set(xlabel="time (ns)", ylabel="kinetic T (K), running mean; solid H, dashed O",
              title="FlashMDLangevinIntegrator, 387-atom water, 8 fs stride")
    ax[0].legend(fontsize=7, ncol=2)
    ax[1].set(xlabel="time (ns)", ylabel="cumulative fallback fraction", title="guard fallbacks (velocity Verlet)")
    ax[1].legend(fontsize=8)
    if report["rdfReference"]:
        ax[2].plot(report["rdfReference"]["r_nm"], report["rdfReference"]["g_OO"], "k--", label="Langevin 0.5 fs")
    ax[2].set(xlabel="r (nm)", ylabel="g_OO(r)", title="O-O radial distribution")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--fp32-model", default=FP32_MODEL, help="model of the fp32 variant (shipped name or file)")
    ap.add_argument("--mode-rescale", action="store_true", help="FlashMDLangevinIntegrator(modeRescale=True)")
    ap.add_argument("--reference", default=None, help="bench_flashmd_water JSON whose Langevin g(r) is the "
                    "reference (default results/flashmd_water_gpu.json)")
    ap.add_argument("--models-dir", default=".gaqmodels", help="folder with water-gaq-<variant>.pt files")
    ap.add_argument("--ns", type=float, default=1.0, help="simulated time per variant (ns)")
    ap.add_argument("--work", required=True, help="folder of the resumable runs")
    ap.add_argument("--max-wall", type=float, default=570.0, help="seconds each worker runs in this chunk")
    ap.add_argument("--jobs", type=int, default=5, help="worker processes at once (one per variant)")
    ap.add_argument("--platform", default="CUDA", help="OpenMM platform")
    ap.add_argument("--device", default=None, help="torch device of the model (default: cuda when available)")
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--friction", type=float, default=1.0, help="1/ps")
    ap.add_argument("--sample", type=int, default=25, help="strides between samples")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--blowup-factor", type=float, default=3.0,
                    help="stop a run when a species temperature exceeds this many times the bath temperature")
    ap.add_argument("--finalize", action="store_true", help="write the JSON and PNG from --work (CPU is fine)")
    ap.add_argument("--discard-ps", type=float, default=20.0, help="equilibration left out of the statistics")
    ap.add_argument("--blocks", type=int, default=10, help="blocks for the standard errors")
    ap.add_argument("--tag", default="")
    ap.add_argument("--report-name", default="gaq_long", help="file name of the report (before --tag)")
    ap.add_argument("--outdir", default=RESULTS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, HERE)
    if args.worker:
        worker(args)
    elif args.finalize:
        finalize(args)
    else:
        import torch  # noqa: F401
        launch(args)


if __name__ == "__main__":
    main()
