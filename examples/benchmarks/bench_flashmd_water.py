"""Validate a FlashMD water model against LangevinMiddleIntegrator on the same flexible-water System.

Runs, from one equilibrated state of a cubic box of flexible TIP3P-FB water (PME):
  1. reference: LangevinMiddleIntegrator, 300 K, 1/ps, 0.5 fs;
  2. FlashMDLangevinIntegrator, same temperature and friction, at the model's stride;
  3. FlashMDIntegrator (NVE) with energy rescaling, and without it (raw model drift);
  4. optionally NpT (MonteCarloBarostat, 1 bar) with both integrators: mean density.
Measures O-O, O-H, H-H intermolecular RDFs, per-species kinetic temperatures, fallback counts, rescale factors,
NVE energy drift, and simulated ns/day of each integrator. Writes a JSON and a PNG into
examples/benchmarks/results/ (flashmd_water*.json/png) and prints a table.

    python examples/benchmarks/bench_flashmd_water.py --model water-tip3pfb-8fs --time 20 --platform CPU
    python examples/benchmarks/bench_flashmd_water.py --platform CUDA --device cuda --time 150 --nve-time 2000 \
        --npt-time 2000 --max-wall 150 15 20 20 --tag _gpu      # the committed GPU report (wall-time capped)
"""

import argparse
import json
import os
import platform as pyplatform
import time

import numpy as np
import torch

import openmm as mm
from openmm import app, unit

from openmmflash.blockstats import blockStandardError
from openmmflash.integrators.training.data import flexibleWaterBox
from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator

from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KB = 0.00831446261815324


def equilibrated_state(top, system, pos, plat, T, equilibration, dt):
    """OpenMM State (positions, velocities) after minimization and ``equilibration`` ps of LangevinMiddleIntegrator
    (1/ps, step ``dt`` ps) at temperature T (a Quantity)."""
    eq = app.Simulation(top, system, mm.LangevinMiddleIntegrator(T, 1 / unit.picosecond, dt), plat)
    eq.context.setPositions(pos)
    eq.minimizeEnergy(maxIterations=500)
    eq.context.setVelocitiesToTemperature(T, 1)
    eq.step(int(equilibration / dt))
    return eq.context.getState(getPositions=True, getVelocities=True)


def rdfs(frames, box_lengths, residues, types, rmax, nbins=100):
    """Intermolecular g(r) for O-O, O-H, H-H. frames [F, N, 3] nm, box_lengths [F] (cubic), residues/types [N]."""
    edges = np.linspace(0, rmax, nbins + 1)
    out = {}
    for name, (za, zb) in {"OO": (8, 8), "OH": (8, 1), "HH": (1, 1)}.items():
        ia, ib = np.where(types == za)[0], np.where(types == zb)[0]
        hist = np.zeros(nbins)
        norm = 0.0
        for x, L in zip(frames, box_lengths):
            d = x[ia][:, None, :] - x[ib][None, :, :]
            d -= L * np.round(d / L)
            r = np.sqrt((d * d).sum(-1))
            inter = residues[ia][:, None] != residues[ib][None, :]
            hist += np.histogram(r[inter], edges)[0]
            npairs = inter.sum()
            norm += npairs / L ** 3
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        out[name] = hist / (norm * shell)
    return 0.5 * (edges[1:] + edges[:-1]), out


def species_temperatures(v, masses, types):
    ke2 = (masses[:, None] * v * v).sum(-1)
    return {"H": float(ke2[types == 1].sum() / (3 * (types == 1).sum() * KB)),
            "O": float(ke2[types == 8].sum() / (3 * (types == 8).sum() * KB))}


def run(sim, total_ps, sample_ps, stride_ps, masses, types, energy=False, progress=None, max_wall=None):
    """Advance ``sim`` for total_ps (or until max_wall seconds have passed), sampling every sample_ps.
    Returns samples, the simulated time ``time_ps`` and the wall time."""
    nsample = max(1, int(round(sample_ps / stride_ps)))
    nblocks = int(round(total_ps / sample_ps))
    frames, boxes, temps, energies, vols = [], [], [], [], []
    t0 = time.time()
    for _ in range(nblocks):
        if max_wall is not None and time.time() - t0 > max_wall:
            break
        sim.step(nsample)
        st = sim.context.getState(getPositions=True, getVelocities=True, getEnergy=energy)
        q = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        if not (np.isfinite(q).all() and np.isfinite(v).all()):
            raise RuntimeError("NaN in the simulation state")
        frames.append(np.asarray(q))
        box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        boxes.append(float(box[0][0]))
        vols.append(float(box[0][0] * box[1][1] * box[2][2]))
        temps.append(species_temperatures(np.asarray(v), masses, types))
        if energy:
            energies.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        if progress is not None:
            progress.update(1)
    return {"frames": np.stack(frames), "boxes": np.array(boxes), "temps": temps, "energies": np.array(energies),
            "volumes": np.array(vols), "wall": time.time() - t0, "time_ps": len(frames) * nsample * stride_ps}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="water-tip3pfb-8fs")
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--device", default=None, help="torch device for the FlashMD network")
    ap.add_argument("--box", type=float, default=1.6)
    ap.add_argument("--time", type=float, default=20.0, help="ps per NVT run")
    ap.add_argument("--nve-time", type=float, default=10.0, help="ps per NVE run")
    ap.add_argument("--npt-time", type=float, default=0.0, help="ps per NpT run (0: skip)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=1.0, help="1/ps")
    ap.add_argument("--equilibration", type=float, default=5.0, help="ps")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--max-wall", type=float, nargs=4, default=None, metavar=("NVT", "NVE", "NPT", "GLOBAL"),
                    help="wall-clock caps in s: reference and FlashMD NVT runs each, NVE runs each, NpT runs each, "
                         "and the FlashMD NVT run with the global (not per-species) rescale for comparison (0: skip)")
    ap.add_argument("--global-rescale", action="store_true",
                    help="FlashMDLangevinIntegrator with speciesRescale=False (the plain global energy rescale)")
    ap.add_argument("--mode-rescale", action="store_true",
                    help="FlashMD integrators with modeRescale=True (molecular translation / rotation / vibration "
                         "keep their kinetic-energy shares; takes precedence over the per-species rescale)")
    ap.add_argument("--outdir", default=RESULTS)
    args = ap.parse_args()

    from tqdm import tqdm
    model = loadModel(args.model)
    stride = model.stride
    top, system, pos = flexibleWaterBox(args.box, 0.7)
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    types = np.array([a.element.atomic_number for a in top.atoms()])
    residues = np.array([a.residue.index for a in top.atoms()])
    plat = mm.Platform.getPlatformByName(args.platform)
    T = args.temperature * unit.kelvin
    dt_ref = 0.0005

    def sim_with(integ, sys_=system):
        sim = app.Simulation(top, sys_, integ, plat)
        sim.context.setState(start)
        return sim

    start = equilibrated_state(top, system, pos, plat, T, args.equilibration, dt_ref)  # every run starts here

    sample = 0.1
    nblocks = int(round(args.time / sample))
    results = {}
    bar = tqdm(total=2 * nblocks + 2 * int(round(args.nve_time / sample)), desc="bench_flashmd_water")
    cap = dict(zip(("nvt", "nve", "npt", "global"), args.max_wall)) if args.max_wall else {}
    species_rescale = not args.global_rescale
    ref = run(sim_with(mm.LangevinMiddleIntegrator(T, args.friction / unit.picosecond, dt_ref)), args.time, sample,
              dt_ref, masses, types, progress=bar, max_wall=cap.get("nvt"))
    fm_integ = FlashMDLangevinIntegrator(T, args.friction / unit.picosecond, None, model=model, device=args.device,
                                         randomSeed=7, speciesRescale=species_rescale, modeRescale=args.mode_rescale)
    fm = run(sim_with(fm_integ), args.time, sample, stride, masses, types, progress=bar, max_wall=cap.get("nvt"))
    fm_fallbacks, fm_learned = fm_integ.getNumFallbacks(), fm_integ.getNumLearnedSteps()
    fm_alpha = fm_integ.getRescaleFactors()
    nve_integ = FlashMDIntegrator(model=model, device=args.device, randomSeed=8)
    nve = run(sim_with(nve_integ), args.nve_time, sample, stride, masses, types, energy=True, progress=bar,
              max_wall=cap.get("nve"))
    raw_integ = FlashMDIntegrator(model=model, rescaleEnergy=False, device=args.device, randomSeed=9)
    try:
        raw = run(sim_with(raw_integ), args.nve_time, sample, stride, masses, types, energy=True, progress=bar,
                  max_wall=cap.get("nve"))
        raw_ok = True
    except Exception as err:  # a raw learned map may blow up: that is a result too
        raw, raw_ok = {"energies": np.array([np.nan]), "wall": np.nan, "error": str(err)}, False
    bar.close()

    r, g_ref = rdfs(ref["frames"][5:], ref["boxes"][5:], residues, types, 0.5 * args.box)
    _, g_fm = rdfs(fm["frames"][5:], fm["boxes"][5:], residues, types, 0.5 * args.box)
    dr = r[1] - r[0]

    def mean_t(run_, species):
        return float(np.mean([t[species] for t in run_["temps"][5:]]))

    def sem_t(run_, species, block=10):
        return blockStandardError([t[species] for t in run_["temps"][5:]], blockLength=block)

    e = nve["energies"]
    tt = np.arange(len(e)) * sample
    drift = float(np.polyfit(tt, e, 1)[0]) * 1000.0 if len(e) > 2 else None  # kJ/mol/ns
    er = raw["energies"]
    raw_drift = float(np.polyfit(np.arange(len(er)) * sample, er, 1)[0]) * 1000.0 if raw_ok and len(er) > 2 else None
    results = {
        "benchmark": "bench_flashmd_water", "model": args.model, "modelInfo": model.describe(),
        "modelValidation": model.validation, "stride_fs": stride * 1000, "numParticles": n, "box_nm": args.box,
        "temperature_K": args.temperature, "friction_per_ps": args.friction, "reference_dt_fs": dt_ref * 1000,
        "runTime_ps": args.time, "nveTime_ps": args.nve_time,
        "machine": {"platform": args.platform, "cpu": pyplatform.processor() or pyplatform.machine(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": torch.__version__, "openmm": mm.__version__, "device": str(args.device or "cpu")},
        "temperature": {
            "langevin": {s: mean_t(ref, s) for s in ("H", "O")},
            "langevin_sem": {s: sem_t(ref, s) for s in ("H", "O")},
            "flashmdLangevin": {s: mean_t(fm, s) for s in ("H", "O")},
            "flashmdLangevin_sem": {s: sem_t(fm, s) for s in ("H", "O")},
            "deltaT_vs_target": {s: mean_t(fm, s) - args.temperature for s in ("H", "O")},
        },
        "rdf": {"r_nm": r.tolist(), "langevin": {k: v.tolist() for k, v in g_ref.items()},
                "flashmd": {k: v.tolist() for k, v in g_fm.items()},
                "l1_difference": {k: float(np.sum(np.abs(g_fm[k] - g_ref[k])) * dr) for k in g_ref},
                "first_peak_r_nm": {k: [float(r[np.argmax(g_ref[k])]), float(r[np.argmax(g_fm[k])])] for k in g_ref},
                "first_peak_height": {k: [float(g_ref[k].max()), float(g_fm[k].max())] for k in g_ref}},
        "flashmdLangevin": {"strides": fm_learned + fm_fallbacks, "learned": fm_learned, "fallbacks": fm_fallbacks,
                            "fallbackFraction": fm_fallbacks / max(1, fm_learned + fm_fallbacks),
                            "alpha_mean": float(np.mean(fm_alpha)) if len(fm_alpha) else None,
                            "alpha_std": float(np.std(fm_alpha)) if len(fm_alpha) else None,
                            "blowUp": False},
        "nve": {"drift_kJ_per_mol_per_ns": drift, "drift_per_atom_kJ_per_mol_per_ns": drift / n if drift else None,
                "energy_std_kJ_per_mol": float(np.std(e)), "fallbacks": nve_integ.getNumFallbacks(),
                "learned": nve_integ.getNumLearnedSteps(),
                "noRescale_drift_kJ_per_mol_per_ns": raw_drift, "noRescale_ok": raw_ok,
                "noRescale_error": raw.get("error")},
        "speed": {"langevin_ns_per_day": ref["time_ps"] / 1000 / ref["wall"] * 86400,
                  "flashmdLangevin_ns_per_day": fm["time_ps"] / 1000 / fm["wall"] * 86400},
        "simulated_ps": {"langevin": ref["time_ps"], "flashmdLangevin": fm["time_ps"], "nve": nve["time_ps"],
                         "nveNoRescale": raw.get("time_ps")},
        "speciesRescale": species_rescale, "modeRescale": args.mode_rescale, "wallCaps_s": cap,
    }
    results["flashmdLangevin"]["nan"] = False  # run() raises on a non-finite state
    if cap.get("global", 0) > 0 and species_rescale:
        # Same run with the plain global rescale, as the baseline of the per-species rescale.
        g_integ = FlashMDLangevinIntegrator(T, args.friction / unit.picosecond, None, model=model, device=args.device,
                                            randomSeed=7, speciesRescale=False)
        g = run(sim_with(g_integ), args.time, sample, stride, masses, types, max_wall=cap["global"])
        results["globalRescale"] = {"time_ps": g["time_ps"], "T": {s: mean_t(g, s) for s in ("H", "O")},
                                    "T_sem": {s: sem_t(g, s) for s in ("H", "O")},
                                    "fallbacks": g_integ.getNumFallbacks(), "learned": g_integ.getNumLearnedSteps()}
    results["speed"]["ratio"] = results["speed"]["flashmdLangevin_ns_per_day"] / results["speed"]["langevin_ns_per_day"]

    if args.npt_time > 0:
        npt = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
        npt.addForce(mm.MonteCarloBarostat(1 * unit.bar, T, 25))
        mass_g = masses.sum() / 6.02214076e23
        ref_p = run(sim_with(mm.LangevinMiddleIntegrator(T, args.friction / unit.picosecond, dt_ref), npt),
                    args.npt_time, sample, dt_ref, masses, types, max_wall=cap.get("npt"))
        fm_p_integ = FlashMDLangevinIntegrator(T, args.friction / unit.picosecond, None, model=model,
                                               device=args.device, randomSeed=10, speciesRescale=species_rescale,
                                               modeRescale=args.mode_rescale)
        fm_p = run(sim_with(fm_p_integ, npt), args.npt_time, sample, stride, masses, types, max_wall=cap.get("npt"))
        dens = lambda v: float(np.mean(mass_g / (v[len(v) // 4:] * 1e-21)))  # noqa: E731  g/cm^3

        def dens_sem(v, block=20):  # block standard error of the density, g/cm^3
            return blockStandardError(mass_g / (v[len(v) // 4:] * 1e-21), blockLength=block)
        results["npt"] = {"time_ps": {"langevin": ref_p["time_ps"], "flashmd": fm_p["time_ps"]},
                          "density_langevin": dens(ref_p["volumes"]), "density_flashmd": dens(fm_p["volumes"]),
                          "density_sem_langevin": dens_sem(ref_p["volumes"]),
                          "density_sem_flashmd": dens_sem(fm_p["volumes"]),
                          "fallbacks": fm_p_integ.getNumFallbacks(), "learned": fm_p_integ.getNumLearnedSteps()}
        results["npt"]["relative_difference"] = results["npt"]["density_flashmd"] / results["npt"][
            "density_langevin"] - 1

    os.makedirs(args.outdir, exist_ok=True)
    stem = os.path.join(args.outdir, f"flashmd_water{args.tag}")
    results["provenance"] = provenance()
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for ax, k in zip(axes[:3], ("OO", "OH", "HH")):
        ax.plot(r, g_ref[k], label="LangevinMiddle 0.5 fs")
        ax.plot(r, g_fm[k], "--", label=f"FlashMD Langevin {stride * 1000:g} fs")
        ax.set_title(f"g_{k}(r), intermolecular")
        ax.set_xlabel("r (nm)")
        ax.legend()
    ax = axes[3]
    for name, rr in (("Langevin", ref), ("FlashMD", fm)):
        for s in ("H", "O"):
            ax.plot(np.arange(len(rr["temps"])) * sample, [t[s] for t in rr["temps"]], label=f"{name} T_{s}")
    ax.axhline(args.temperature, color="k", lw=0.5)
    ax.set_xlabel("t (ps)")
    ax.set_ylabel("kinetic T (K)")
    ax.legend(fontsize=7)
    ax = axes[4]
    ax.plot(tt, e - e[0], label="FlashMD NVE, rescaled")
    if raw_ok:
        ax.plot(np.arange(len(er)) * sample, er - er[0], label="FlashMD NVE, no rescale")
    ax.set_xlabel("t (ps)")
    ax.set_ylabel("H - H(0) (kJ/mol)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=90)

    print(f"{'quantity':38s} {'Langevin':>12s} {'FlashMD':>12s}")
    for s in ("H", "O"):
        print(f"{'T_' + s + ' (K)':38s} {results['temperature']['langevin'][s]:12.2f} "
              f"{results['temperature']['flashmdLangevin'][s]:12.2f}")
    for k in ("OO", "OH", "HH"):
        print(f"{'g_' + k + ' first peak height':38s} {g_ref[k].max():12.3f} {g_fm[k].max():12.3f}")
    print(f"{'ns/day':38s} {results['speed']['langevin_ns_per_day']:12.2f} "
          f"{results['speed']['flashmdLangevin_ns_per_day']:12.2f}")
    print(f"fallbacks {fm_fallbacks}/{fm_learned + fm_fallbacks}; NVE drift {drift} kJ/mol/ns "
          f"(no rescale: {raw_drift}); wrote {stem}.json/.png")


if __name__ == "__main__":
    main()
