"""Which time step does ordinary MD of the bundled CG chignolin tolerate? The baseline of the FlashMD CG speed target.

The System is the one the FlashMD CG benchmark uses (``flashmdcg.buildCGSystem``: FlashSchNet force + priors, one
chignolin, 47 beads). From one Langevin-equilibrated state, for each time step: NVE with VerletIntegrator (total
energy fluctuation and drift; the usual criterion is std(E_total) / std(E_kinetic) well below 1, say <= 0.05) and
LangevinMiddleIntegrator at 300 K, 1/ps (mean kinetic temperature and whether it stays finite).

    python examples/benchmarks/cg_timestep_stability.py --platform CPU --timesteps 1 2 3 4 5 6
        -> results/cg_timestep_stability_<platform>.json / .png
"""

import argparse
import json
import os
import platform as pyplatform
import sys
import time

import numpy as np
import torch  # noqa: F401  (before openmm)
import openmm as mm
from openmm import unit
from tqdm import tqdm

from openmmflash.workflows.flashmdcg import buildCGSystem

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_flashmd_cg import makeContext as context  # noqa: E402  (mixed precision on CUDA, as the CG benchmark)

KB = 0.00831446261815324  # kJ/mol/K


def run_series(ctx, integ, dt_fs, total_ps, sample_ps, dof, label, bar):
    """Step ``integ`` for total_ps, sampling every sample_ps: dict of t (ps), E_total, E_kin (kJ/mol), T (K)."""
    every = max(1, int(round(sample_ps * 1000 / dt_fs)))
    n = int(round(total_ps * 1000 / dt_fs / every))
    out = {"t_ps": [], "E_total": [], "E_kinetic": [], "T_K": []}
    failed = None
    for i in range(n):
        try:
            integ.step(every)
        except Exception as err:  # e.g. OpenMM "Particle coordinate is NaN"
            failed = f"{type(err).__name__}: {err}"
            break
        st = ctx.getState(getEnergy=True)
        k = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        e = k + st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not np.isfinite(e):
            failed = "non-finite energy"
            break
        out["t_ps"].append((i + 1) * every * dt_fs / 1000)
        out["E_total"].append(e)
        out["E_kinetic"].append(k)
        out["T_K"].append(2 * k / (dof * KB))
        bar.update(1)
    out["failed"] = failed
    return out


def summarize_nve(s):
    t, e, k = (np.asarray(s[x]) for x in ("t_ps", "E_total", "E_kinetic"))
    if len(t) < 3:
        return {"stable": False, "failed": s["failed"]}
    slope = np.polyfit(t, e, 1)[0] * 1000  # kJ/mol/ns
    return {"stable": s["failed"] is None, "failed": s["failed"], "simulated_ps": float(t[-1]),
            "drift_kJ_per_mol_per_ns": float(slope), "E_total_std": float(np.std(e)),
            "E_kinetic_std": float(np.std(k)), "fluctuationRatio": float(np.std(e) / np.std(k))}


def summarize_langevin(s, discard):
    T = np.asarray(s["T_K"])[discard:]
    if len(T) < 3:
        return {"stable": False, "failed": s["failed"]}
    blocks = [b.mean() for b in np.array_split(T, 10)]
    return {"stable": s["failed"] is None, "failed": s["failed"], "simulated_ps": float(s["t_ps"][-1]),
            "T_mean_K": float(T.mean()), "T_sem_K": float(np.std(blocks, ddof=1) / np.sqrt(len(blocks)))}


def plot(report, path):
    """NVE energy traces (runs whose energy fluctuation stays below the kinetic one; the others are named in the
    title) and the fluctuation ratio against the time step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, series = report["timesteps"], report["series"]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    wild = []
    for dt, s in series.items():
        ratio = rows[dt]["nve"].get("fluctuationRatio", np.inf)
        if not s["nve_t_ps"] or not ratio < 1:
            wild.append(f"{dt} fs")
            continue
        e = np.asarray(s["nve_E_total"])
        ax[0].plot(s["nve_t_ps"], e - e[0], label=f"{dt} fs")
    ax[0].set(xlabel="t (ps)", ylabel="E_total - E_total(0) (kJ/mol)",
              title="NVE, VerletIntegrator" + (f" (not shown, energy runs away: {', '.join(wild)})" if wild else ""))
    ax[0].legend(fontsize=8)
    dts = [float(d) for d in rows if "fluctuationRatio" in rows[d]["nve"]]
    ax[1].semilogy(dts, [rows[f"{d:g}"]["nve"]["fluctuationRatio"] for d in dts], "o-")
    ax[1].axhline(0.05, color="k", lw=0.8, ls="--")
    ax[1].set(xlabel="time step (fs)", ylabel="std(E_total) / std(E_kinetic)", title="energy conservation")
    fig.suptitle("CG chignolin (FlashSchNet + priors): time-step stability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--timesteps", type=float, nargs="+", default=[1, 2, 3, 4, 5, 6], help="fs")
    ap.add_argument("--equilibration", type=float, default=20.0, help="ps of Langevin at 2 fs before the runs")
    ap.add_argument("--nve-time", type=float, default=10.0, help="ps of NVE per time step")
    ap.add_argument("--langevin-time", type=float, default=20.0, help="ps of Langevin per time step")
    ap.add_argument("--sample", type=float, default=0.1, help="ps between samples")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=1.0, help="1/ps")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--replot", default=None, metavar="JSON", help="only redraw the PNG of an earlier report")
    args = ap.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), args.replot[:-len(".json")] + ".png")
        return

    _, system, positions, _, _, _ = buildCGSystem(1, platformName=args.platform)
    dof = 3 * system.getNumParticles() - 3  # the System has a CMMotionRemover
    T = args.temperature * unit.kelvin
    eq = mm.LangevinMiddleIntegrator(T, args.friction / unit.picosecond, 0.002)
    eq.setRandomNumberSeed(args.seed)
    ctx = context(system, eq, args.platform)
    ctx.setPositions(positions * unit.nanometer)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    ctx.setVelocitiesToTemperature(T, args.seed)
    t0 = time.time()
    eq.step(int(round(args.equilibration / 0.002)))
    start = ctx.getState(getPositions=True, getVelocities=True)
    del ctx
    n_samples = sum(int(round(args.nve_time / args.sample)) + int(round(args.langevin_time / args.sample))
                    for _ in args.timesteps)
    bar = tqdm(total=n_samples, desc="cg_timestep_stability", unit="sample", mininterval=5)
    rows, series = {}, {}
    for dt in args.timesteps:
        nve = mm.VerletIntegrator(dt / 1000)
        ctx = context(system, nve, args.platform)
        ctx.setState(start)
        s_nve = run_series(ctx, nve, dt, args.nve_time, args.sample, dof, f"NVE {dt} fs", bar)
        del ctx
        lang = mm.LangevinMiddleIntegrator(T, args.friction / unit.picosecond, dt / 1000)
        lang.setRandomNumberSeed(args.seed + 1)
        ctx = context(system, lang, args.platform)
        ctx.setState(start)
        s_lang = run_series(ctx, lang, dt, args.langevin_time, args.sample, dof, f"Langevin {dt} fs", bar)
        del ctx
        rows[f"{dt:g}"] = {"nve": summarize_nve(s_nve), "langevin": summarize_langevin(s_lang, discard=10)}
        series[f"{dt:g}"] = {"nve_t_ps": s_nve["t_ps"], "nve_E_total": s_nve["E_total"]}
    bar.close()

    print(f"{'dt (fs)':>7s} {'NVE std(E)/std(K)':>18s} {'drift kJ/mol/ns':>16s} {'Langevin T (K)':>15s}")
    for dt, r in rows.items():
        n, lg = r["nve"], r["langevin"]
        ratio = f"{n['fluctuationRatio']:.4f}" if "fluctuationRatio" in n else "failed"
        drift = f"{n['drift_kJ_per_mol_per_ns']:.1f}" if "drift_kJ_per_mol_per_ns" in n else "-"
        temp = f"{lg['T_mean_K']:.1f} +- {lg['T_sem_K']:.1f}" if "T_mean_K" in lg else "failed"
        print(f"{dt:>7s} {ratio:>18s} {drift:>16s} {temp:>15s}")

    report = {"benchmark": "cg_timestep_stability", "system": "bundled CG chignolin (buildCGSystem, 1 copy, 47 beads)",
              "platform": args.platform, "settings": vars(args) | {"results": None},
              "criterion": "NVE std(E_total) / std(E_kinetic) <= 0.05 and finite Langevin runs",
              "machine": {"cpu": pyplatform.processor() or pyplatform.machine(), "torch": torch.__version__,
                          "openmm": mm.__version__,
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "wall_s": round(time.time() - t0, 1), "timesteps": rows, "series": series}
    ok = [float(dt) for dt, r in rows.items() if r["nve"].get("fluctuationRatio", 1) <= 0.05
          and r["langevin"].get("stable")]
    report["largestTimestepMeetingCriterion_fs"] = max(ok) if ok else None
    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    report["provenance"] = provenance()
    os.makedirs(args.results, exist_ok=True)
    base = os.path.join(args.results, f"cg_timestep_stability_{args.platform.lower()}")
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)

    plot(report, base + ".png")
    print(f"wrote {base}.json/.png; largest time step meeting the criterion: "
          f"{report['largestTimestepMeetingCriterion_fs']} fs")


if __name__ == "__main__":
    main()
