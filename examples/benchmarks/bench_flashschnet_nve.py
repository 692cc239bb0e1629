"""NVE energy drift of the FlashSchNet force in OpenMM: exact fused fp32 vs other variants (W16A16, tables).

Same system as bench_flashschnet.py (folded 1ENH-like CG workload, random weights with the readout x 0.01, weak
harmonic restraint to the start positions), B replicas, CUDA platform (mixed precision), TorchForce with CUDA
graphs, VerletIntegrator (``--dt`` fs) for ``--ps`` ps from 300 K velocities (after ``--equil`` unsampled steps). The total
energy is sampled every ``--every`` steps; the drift is the slope of a least-squares line through E(t), in
kJ/mol/ns and per degree of freedom (kT/ns), plus the RMS fluctuation around the line. One process per variant,
all at once (the GPU is far from busy at small B). Writes a JSON (``--out``) and merges it into
flashschnet_kernels.json under "nve" when ``--merge`` is given.

Usage (GPU): ``python examples/benchmarks/bench_flashschnet_nve.py [--replicas 1] [--ps 100] [--merge JSON]``.
With ``--state-dir DIR`` each variant saves its state (positions and velocities as OpenMM XML) and the energies so
far every ``--save-every`` samples and resumes from them when started again (a long run split over several jobs;
``--stop-after`` seconds ends a job cleanly); ``--collect`` only writes the JSON from the saved series.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
KT_300 = 2.494339  # kJ/mol


def drift_fit(t, e):
    """(slope, its standard error, RMS residual) of a least-squares line through energies e at times t."""
    t, e = np.asarray(t, dtype=float), np.asarray(e, dtype=float)
    slope, intercept = np.polyfit(t, e, 1)
    resid = e - (slope * t + intercept)
    se = float(np.sqrt(resid.var(ddof=2) / ((t - t.mean()) ** 2).sum())) if len(t) > 2 else float("nan")
    return float(slope), se, float(np.std(resid))


def _saved(state_dir, variant):
    path = os.path.join(state_dir, f"{variant}.json") if state_dir else None
    if path and os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)
    return None


def _save(state_dir, variant, context, series, done):
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    state = context.getState(getPositions=True, getVelocities=True)
    with open(os.path.join(state_dir, f"{variant}.xml.tmp"), "w") as handle:
        handle.write(openmm.XmlSerializer.serialize(state))
    os.replace(os.path.join(state_dir, f"{variant}.xml.tmp"), os.path.join(state_dir, f"{variant}.xml"))
    with open(os.path.join(state_dir, f"{variant}.json.tmp"), "w") as handle:
        json.dump(dict(series, steps_done=done), handle)
    os.replace(os.path.join(state_dir, f"{variant}.json.tmp"), os.path.join(state_dir, f"{variant}.json"))


def worker(variant, replicas, dt_fs, ps, every, equil, state_dir=None, save_every=20, stop_after=None):
    import faulthandler

    faulthandler.enable()
    from bench_flashschnet import count_pairs, load_workload, make_model, restrained_system
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    unit = openmm.unit
    pos0, types, masses, table = load_workload("folded")
    positions = np.tile(pos0, (replicas, 1)) / 10.0
    model = make_model(len(table), variant, "cpu")
    pairs = count_pairs(torch.tensor(positions * 10.0, dtype=torch.float32), replicas)
    system = restrained_system(model, types, masses, positions, replicas, int(pairs * 1.5) + 64,
                               torch.cuda.is_available(), variant)
    integrator = openmm.VerletIntegrator(dt_fs * 1e-3 * unit.picoseconds)
    platform = os.environ.get("BENCH_PLATFORM", "CUDA")  # another platform only for a CPU smoke test
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform),
                             {"Precision": "mixed"} if platform == "CUDA" else {})
    steps = int(round(ps * 1000.0 / dt_fs))
    saved = _saved(state_dir, variant)
    series = {"times_ns": [], "energies_kJmol": [], "wall_s": 0.0, "segments": 0, "beads": system.getNumParticles()}
    if saved is None:
        context.setPositions(positions)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integrator.step(equil)  # NVE from 300 K velocities; the first ``equil`` steps are left out of the fit
        first = 0
    else:  # resume: positions and velocities of the last save (OpenMM XML State, full precision)
        with open(os.path.join(state_dir, f"{variant}.xml")) as handle:
            context.setState(openmm.XmlSerializer.deserialize(handle.read()))
        series = {k: saved[k] for k in series}
        first = int(saved["steps_done"]) + every
    series["segments"] += 1
    start = time.perf_counter()
    wall0 = series["wall_s"]
    for n, k in enumerate(range(first, steps + 1, every)):
        if k:
            integrator.step(every)
        state = context.getState(getEnergy=True)
        series["times_ns"].append(k * dt_fs * 1e-6)
        series["energies_kJmol"].append((state.getPotentialEnergy() + state.getKineticEnergy())
                                        .value_in_unit(unit.kilojoule_per_mole))
        series["wall_s"] = wall0 + time.perf_counter() - start
        if state_dir and ((n + 1) % save_every == 0 or k + every > steps):
            _save(state_dir, variant, context, series, k)
        if stop_after is not None and time.perf_counter() - start > stop_after and k + every <= steps:
            print(f"PARTIAL {variant} {k}/{steps} steps", flush=True)
            return
    print("ROW " + json.dumps(summarize(variant, replicas, dt_fs, ps, steps, series)), flush=True)


def summarize(variant, replicas, dt_fs, ps, steps, series):
    """The result row of one variant from its energy series."""
    beads = series["beads"]
    elapsed = series["wall_s"]
    t, e = np.array(series["times_ns"]), np.array(series["energies_kJmol"])
    slope, slope_se, fluctuation = drift_fit(t, e)
    dof = 3 * beads
    row = {"variant": variant, "replicas": replicas, "beads": beads, "dt_fs": dt_fs, "ps": ps, "samples": len(t),
           "segments": series["segments"], "steps": steps, "wall_s": elapsed, "ms_per_step": 1000.0 * elapsed / steps,
           "drift_kJmol_per_ns": slope, "drift_standard_error_kJmol_per_ns": slope_se,
           "drift_kT_per_dof_per_ns": float(slope / dof / KT_300), "fluctuation_rms_kJmol": fluctuation,
           "energy_start_kJmol": float(e[0]), "energy_end_kJmol": float(e[-1]),
           "energy_series_kJmol": [float(v) for v in e[:: max(1, len(e) // 100)]]}
    if series["segments"] > 1:
        row["note"] = (f"run in {series['segments']} jobs, resumed from saved positions and velocities; ms_per_step "
                       "is over all jobs, which shared the GPU with other work")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--dt", type=float, default=4.0, help="time step, fs")
    parser.add_argument("--ps", type=float, default=100.0, help="NVE length, ps")
    parser.add_argument("--every", type=int, default=250, help="steps between energy samples")
    parser.add_argument("--equil", type=int, default=250, help="NVE steps before the sampled ones")
    parser.add_argument("--variants", default="flash_fp32,table")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "flashschnet_nve.json"))
    parser.add_argument("--merge", metavar="JSON", help="also store the result under 'nve' in this JSON")
    parser.add_argument("--state-dir", help="save and resume each variant's state and energies here")
    parser.add_argument("--save-every", type=int, default=20, help="samples between saves (with --state-dir)")
    parser.add_argument("--stop-after", type=float, help="seconds after which a worker saves and stops")
    parser.add_argument("--collect", action="store_true", help="only summarize the series saved in --state-dir")
    parser.add_argument("--worker", metavar="VARIANT")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.replicas, args.dt, args.ps, args.every, args.equil, args.state_dir,
               args.save_every, args.stop_after)
        return
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
    extra = ((["--state-dir", args.state_dir, "--save-every", str(args.save_every)] if args.state_dir else [])
             + (["--stop-after", str(args.stop_after)] if args.stop_after else []))
    base = [sys.executable, os.path.abspath(__file__), "--replicas", str(args.replicas), "--dt", str(args.dt),
            "--ps", str(args.ps), "--every", str(args.every), "--equil", str(args.equil)] + extra + ["--worker"]
    variants = args.variants.split(",")
    steps = int(round(args.ps * 1000.0 / args.dt))
    if args.collect:
        rows = []
        for v in variants:
            saved = _saved(args.state_dir, v)
            if saved is None or saved["steps_done"] + args.every <= steps:
                rows.append({"variant": v, "error": f"incomplete: {None if saved is None else saved['steps_done']} "
                                                    f"of {steps} steps saved"})
            else:
                rows.append(summarize(v, args.replicas, args.dt, args.ps, steps, saved))
        report(rows, args)
        return
    procs = {v: subprocess.Popen(base + [v], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for v in variants}
    rows = []
    for variant, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        got = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ROW ")]
        partial = [line for line in out.splitlines() if line.startswith("PARTIAL ")]
        if partial:
            print(partial[0], "(resume with the same --state-dir)", flush=True)
            rows.append({"variant": variant, "error": partial[0]})
            continue
        if not got:  # once more alone, in case running side by side was the problem
            print(f"{variant}: exit {proc.returncode} side by side ({err[-300:]!r}); running it alone", flush=True)
            again = subprocess.run(base + [variant], capture_output=True, text=True, timeout=900)
            got = [json.loads(line[4:]) for line in again.stdout.splitlines() if line.startswith("ROW ")]
            err = f"exit {again.returncode}: {again.stderr[-1500:]}"
        rows += got or [{"variant": variant, "error": err}]
    report(rows, args)


def report(rows, args):
    """Print the drifts and write the JSON (and merge it) from the per-variant rows."""
    from benchprovenance import provenance, storeSection

    result = {"provenance": provenance(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "runs": rows}
    drifts = {r["variant"]: abs(r["drift_kJmol_per_ns"]) for r in rows if "drift_kJmol_per_ns" in r}
    if drifts.get("flash_fp32"):
        result["drift_over_fp32"] = {v: d / drifts["flash_fp32"] for v, d in drifts.items() if v != "flash_fp32"}
        # A ratio of two slopes that are both within their noise says nothing: also compare with 2 sigma bounds.
        bound = {r["variant"]: abs(r["drift_kJmol_per_ns"]) + 2 * r["drift_standard_error_kJmol_per_ns"]
                 for r in rows if "drift_kJmol_per_ns" in r}
        result["drift_2sigma_bound_kJmol_per_ns"] = bound
    for r in rows:
        print(f"{r['variant']:14} " + (f"drift {r['drift_kJmol_per_ns']:+10.3f} kJ/mol/ns "
                                       f"+- {r['drift_standard_error_kJmol_per_ns']:.3f} "
                                       f"({r['drift_kT_per_dof_per_ns']:+.2e} kT/dof/ns), fluctuation "
                                       f"{r['fluctuation_rms_kJmol']:.3f} kJ/mol, {r['ms_per_step']:.2f} ms/step"
                                       if "error" not in r else "ERROR " + r["error"][-600:]))
    print("|drift| / |drift fp32|:", result.get("drift_over_fp32"))
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    if args.merge and os.path.exists(args.merge):
        storeSection(args.merge, "nve", result)


if __name__ == "__main__":
    main()
