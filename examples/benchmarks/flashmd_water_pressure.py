"""Why does FlashMD water under MonteCarloBarostat come out too light? Pressure at fixed volume, split by term.

From one state of the flexible TIP3P-FB water box of bench_flashmd_water.py, compressed to the Langevin NpT density
(molecule centres scaled, default 1.0154 g/cm^3: Langevin's NpT density in bench_flashmd_water.py at friction 10/ps
on an H100) and equilibrated with
LangevinMiddleIntegrator (NVT, 0.5 fs), runs NVT at 300 K, friction 10/ps with
  (a) LangevinMiddleIntegrator, 0.5 fs, and
  (b) FlashMDLangevinIntegrator at the model's stride (8 fs),
for the same simulated time, and every ``--sample`` ps records
  - the instantaneous pressure from MonteCarloBarostat.computeCurrentPressure (a barostat with frequency 0 is in
    the System; the volume is checked to stay fixed),
  - the "barostat pressure" P_b = -dU/dV + N_mol k T0 / V: -dU/dV by a central finite difference with molecule
    centres scaled as the barostat does (intramolecular geometry kept), split into bonds, angles, nonbonded
    direct space (LJ + real-space Coulomb) and PME reciprocal space, and the nonbonded part into LJ and Coulomb
    (charges switched off through a parameter offset). <P_b> = 1 bar is what MonteCarloBarostat converges to,
  - P_b again with every molecule rebuilt at the force field's equilibrium geometry (same centre of mass, bisector
    and plane): if the FlashMD - Langevin difference survives this, it comes from how molecules are placed and
    oriented; if it vanishes, from the intramolecular geometry,
  - the potential energy by force group, O-H bond lengths and H-O-H angles of all molecules, the mean molecular
    dipole, per-species and molecular translation / rotation / vibration kinetic temperatures, and the FlashMD
    fallback count and energy-rescale factors.
Reports means with block standard errors (10 blocks after ``--discard``), prints a table, writes the run
``flashmd_water_pressure_<tag>`` into results/flashmd_water_pressure_<platform>.json (one file, a run per tag) and
a plot results/flashmd_water_pressure_<tag>.png. About 6 min on 2 CPU cores (30 ps with each integrator).

    nice python examples/benchmarks/flashmd_water_pressure.py                                # per-species rescale
    nice python examples/benchmarks/flashmd_water_pressure.py --mode-rescale --tag cpu_modes  # modeRescale=True
    python examples/benchmarks/flashmd_water_pressure.py --time 0.2 --equilibration 0.1 --discard 0.05 --outdir /tmp/p
"""

import argparse
import os
import platform as pyplatform
import sys
import time

import numpy as np
import torch  # noqa: F401  (before openmm)

import openmm as mm
from openmm import app, unit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_flashmd_water import equilibrated_state  # noqa: E402
from benchprovenance import provenance, storeRun  # noqa: E402
from openmmflash.integrators.training.data import flexibleWaterBox  # noqa: E402
from openmmflash.integrators.network.modelfile import loadModel  # noqa: E402
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DESCRIPTION = ("Pressure at a fixed volume (the barostat's own virial) and per-motion temperatures of water under "
               "FlashMD and Langevin ({platform} platform); one run per entry of `runs`.")
KB = 0.00831446261815324  # kJ/mol/K
BAR_PER_KJ_MOL_NM3 = 16.6054  # 1 kJ/mol/nm^3 in bar
NA = 6.02214076e23
GROUPS = {"bonds": 0, "angles": 1, "nonbondedDirect": 2, "pmeReciprocal": 3}
CHARGE_OFF = "pressureChargeOff"  # global parameter: 1 switches all charges off (LJ only)


def groupedSystem(system, T):
    """Copy of ``system`` with bonds, angles, direct and reciprocal nonbonded in groups 0-3, a charge switch
    (parameter offset) on the NonbondedForce, and a MonteCarloBarostat of frequency 0 (never moves the box)."""
    s = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    for f in s.getForces():
        if isinstance(f, mm.HarmonicBondForce):
            f.setForceGroup(GROUPS["bonds"])
        elif isinstance(f, mm.HarmonicAngleForce):
            f.setForceGroup(GROUPS["angles"])
        elif isinstance(f, mm.NonbondedForce):
            f.setForceGroup(GROUPS["nonbondedDirect"])
            f.setReciprocalSpaceForceGroup(GROUPS["pmeReciprocal"])
            f.addGlobalParameter(CHARGE_OFF, 0.0)
            for i in range(f.getNumParticles()):
                q = f.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
                if q != 0:
                    f.addParticleParameterOffset(CHARGE_OFF, i, -q, 0.0, 0.0)
            if any(f.getExceptionParameters(k)[2].value_in_unit(unit.elementary_charge ** 2) != 0
                   for k in range(f.getNumExceptions())):
                raise ValueError("exceptions with charge products are not switched off by the LJ/Coulomb split")
        else:
            raise ValueError(f"unexpected force {type(f).__name__} in the water System")
    baro = mm.MonteCarloBarostat(1 * unit.bar, T, 0)
    baro.setForceGroup(4)
    s.addForce(baro)
    return s, s.getNumForces() - 1


class PressureProbe:
    """Pressure and energy decomposition of a state, on its own Context (so the running simulation is untouched)."""

    def __init__(self, system, plat, molecules, masses, T0, eps=1e-3):
        self.context = mm.Context(system, mm.VerletIntegrator(0.0005), plat)
        self.molecules = molecules  # list of index arrays
        self.masses = masses
        self.T0 = T0
        self.eps = eps

    def _energies(self, q, box, groups):
        self.context.setPeriodicBoxVectors(*box)
        self.context.setPositions(q)
        return {k: self.context.getState(getEnergy=True, groups={g}).getPotentialEnergy().value_in_unit(
            unit.kilojoule_per_mole) for k, g in groups.items()}

    def _scaled(self, q, box, f):
        """Molecule centres (geometric, as MonteCarloBarostat) and the box scaled by f = (V'/V)^(1/3)."""
        out = q.copy()
        for m in self.molecules:
            c = q[m].mean(0)
            out[m] += (f - 1) * c
        return out, box * f

    def __call__(self, q, v, box):
        V = float(box[0, 0] * box[1, 1] * box[2, 2])
        e0 = self._energies(q, box, GROUPS)
        fp, fm = (1 + self.eps) ** (1 / 3), (1 - self.eps) ** (1 / 3)
        dV = 2 * self.eps * V
        nb = {k: GROUPS[k] for k in ("nonbondedDirect", "pmeReciprocal")}
        ep = self._energies(*self._scaled(q, box, fp), GROUPS)
        em = self._energies(*self._scaled(q, box, fm), GROUPS)
        self.context.setParameter(CHARGE_OFF, 1.0)
        lp = self._energies(*self._scaled(q, box, fp), nb)
        lm = self._energies(*self._scaled(q, box, fm), nb)
        self.context.setParameter(CHARGE_OFF, 0.0)
        p = {k: -(ep[k] - em[k]) / dV * BAR_PER_KJ_MOL_NM3 for k in GROUPS}
        p["LJ"] = -(lp["nonbondedDirect"] + lp["pmeReciprocal"] - lm["nonbondedDirect"] - lm["pmeReciprocal"]) \
            / dV * BAR_PER_KJ_MOL_NM3
        p["coulomb"] = p["nonbondedDirect"] + p["pmeReciprocal"] - p["LJ"]
        nmol = len(self.molecules)
        p["configurational"] = sum(p[k] for k in GROUPS)
        p["idealT0"] = nmol * KB * self.T0 / V * BAR_PER_KJ_MOL_NM3
        # Centre-of-mass kinetic term (what the instantaneous molecular pressure uses instead of N k T0 / V).
        ke_com = 0.0
        for m in self.molecules:
            pm = (self.masses[m, None] * v[m]).sum(0)
            ke_com += 0.5 * float((pm * pm).sum()) / self.masses[m].sum()
        p["kineticCOM"] = 2 * ke_com / (3 * V) * BAR_PER_KJ_MOL_NM3
        p["barostat"] = p["configurational"] + p["idealT0"]
        p["molecularInstantaneous"] = p["configurational"] + p["kineticCOM"]
        return p, e0, 2 * ke_com / (3 * nmol * KB)


def geometry(q, box, O, H1, H2):
    """O-H bond lengths [2 M] nm and H-O-H angles [M] degrees (minimum image within each molecule)."""
    L = np.diag(box)
    d1, d2 = q[H1] - q[O], q[H2] - q[O]
    d1 -= L * np.round(d1 / L)
    d2 -= L * np.round(d2 / L)
    r1, r2 = np.linalg.norm(d1, axis=1), np.linalg.norm(d2, axis=1)
    ang = np.degrees(np.arccos(np.clip((d1 * d2).sum(1) / (r1 * r2), -1, 1)))
    return np.concatenate([r1, r2]), ang


def rigidified(q, box, O, H1, H2, masses, r0, theta0):
    """Each molecule rebuilt at the force field's equilibrium geometry (O-H r0 nm, H-O-H theta0 rad), keeping its
    centre of mass, the direction of its H-O-H bisector and its molecular plane. q [N, 3] nm -> [N, 3] nm."""
    L = np.diag(box)
    u1, u2 = q[H1] - q[O], q[H2] - q[O]
    u1 -= L * np.round(u1 / L)
    u2 -= L * np.round(u2 / L)
    e1, e2 = u1 / np.linalg.norm(u1, axis=1)[:, None], u2 / np.linalg.norm(u2, axis=1)[:, None]
    b = e1 + e2
    b /= np.linalg.norm(b, axis=1)[:, None]
    w = e1 - e2
    w -= (w * b).sum(1)[:, None] * b
    w /= np.linalg.norm(w, axis=1)[:, None]
    mO, mH = masses[O][:, None], masses[H1][:, None]
    com = (mO * q[O] + mH * (q[O] + u1) + mH * (q[O] + u2)) / (mO + 2 * mH)
    h1 = r0 * (np.cos(theta0 / 2) * b + np.sin(theta0 / 2) * w)
    h2 = r0 * (np.cos(theta0 / 2) * b - np.sin(theta0 / 2) * w)
    o = com - mH * (h1 + h2) / (mO + 2 * mH)
    out = q.copy()
    out[O], out[H1], out[H2] = o, o + h1, o + h2
    return out


def dipoles(q, box, O, H1, H2, charges):
    """Molecular dipole moments |mu| [M] in debye (minimum image within each molecule)."""
    L = np.diag(box)
    u1, u2 = q[H1] - q[O], q[H2] - q[O]
    u1 -= L * np.round(u1 / L)
    u2 -= L * np.round(u2 / L)
    mu = charges[H1][:, None] * u1 + charges[H2][:, None] * u2  # e nm (neutral molecule, origin at O)
    return np.linalg.norm(mu, axis=1) / 0.0208194  # 1 D = 0.0208194 e nm


def molecularTemperatures(q, v, box, O, H1, H2, masses):
    """Kinetic temperatures (K) of molecular translation, rotation and vibration (3 degrees of freedom each per
    molecule): translation from centre-of-mass velocities, rotation from angular momentum and inertia tensor about
    the centre of mass, vibration the remainder of the kinetic energy."""
    idx = np.stack([O, H1, H2], 1)  # [M, 3]
    L = np.diag(box)
    x = q[idx]
    x = x - L * np.round((x - x[:, :1]) / L)  # whole molecules
    m = masses[idx][..., None]  # [M, 3, 1]
    vel = v[idx]
    M = m.sum(1)
    xc, vc = (m * x).sum(1) / M, (m * vel).sum(1) / M
    d, u = x - xc[:, None], vel - vc[:, None]
    ang = (m * np.cross(d, u)).sum(1)  # [M, 3]
    inertia = (m[..., None] * ((d * d).sum(-1)[..., None, None] * np.eye(3) - d[..., :, None] * d[..., None, :])).sum(1)
    omega = np.linalg.solve(inertia, ang[..., None])[..., 0]
    k_trans = 0.5 * (M[:, 0] * (vc * vc).sum(1)).sum()
    k_rot = 0.5 * (ang * omega).sum()
    k_vib = 0.5 * (m * u * u).sum() - k_rot
    dof = 3 * len(O) * KB
    return {"T_trans": 2 * k_trans / dof, "T_rot": 2 * k_rot / dof, "T_vib": 2 * k_vib / dof}


def blockStats(x, nblocks=10):
    """(mean, block standard error with ``nblocks`` blocks, or None if too short)."""
    x = np.asarray(x, dtype=float)
    b = len(x) // nblocks
    if b < 1 or nblocks < 2:
        return float(np.mean(x)), None
    means = x[:b * nblocks].reshape(nblocks, b).mean(1)
    return float(np.mean(x)), float(np.std(means, ddof=1) / np.sqrt(nblocks))


def sampleRun(sim, baro, probe, total_ps, sample_ps, stride_ps, atoms, flashmd=None, progress=None):
    """Run ``sim`` for total_ps, recording a row of pressures, energies, geometry and temperatures every sample_ps."""
    nstep = max(1, int(round(sample_ps / stride_ps)))
    rows, bonds, angles, frames = [], [], [], []
    O, H1, H2, masses, types = atoms
    t0 = time.time()
    for _ in range(int(round(total_ps / sample_ps))):
        sim.step(nstep)
        ctx = sim.context
        p_omm = baro.computeCurrentPressure(ctx)
        st = ctx.getState(getPositions=True, getVelocities=True)
        q = np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = np.asarray(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        box = np.asarray(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        if not (np.isfinite(q).all() and np.isfinite(v).all()):
            raise RuntimeError("NaN in the simulation state")
        p, e, t_com = probe(q, v, box)
        r, a = geometry(q, box, O, H1, H2)
        bonds.append(r)
        frames.append((q.astype(np.float32), box))
        angles.append(a)
        ke2 = (masses[:, None] * v * v).sum(-1)
        rows.append({"t_ps": float(st.getTime().value_in_unit(unit.picosecond)),
                     "volume_nm3": float(np.prod(np.diag(box))),
                     "pressureOpenMM_bar": float(p_omm.value_in_unit(unit.bar)),
                     **{f"P_{k}_bar": val for k, val in p.items()}, **{f"E_{k}": val for k, val in e.items()},
                     "T_H": float(ke2[types == 1].sum() / (3 * (types == 1).sum() * KB)),
                     "T_O": float(ke2[types == 8].sum() / (3 * (types == 8).sum() * KB)), "T_COM": t_com,
                     **molecularTemperatures(q, v, box, O, H1, H2, masses),
                     "bondMean_nm": float(r.mean()), "angleMean_deg": float(a.mean()),
                     "fallbacks": flashmd.getNumFallbacks() if flashmd is not None else 0})
        if progress is not None:
            progress.update(1)
    return {"rows": rows, "bonds": np.array(bonds), "angles": np.array(angles), "frames": frames,
            "wall_s": time.time() - t0}


def addRigidPressure(run, probe, atoms, charges, r0, theta0):
    """Add to each row P_b of the configuration rebuilt with rigid equilibrium molecules (same centres of mass and
    orientations), its LJ and Coulomb parts, and the mean molecular dipole of the sampled configuration."""
    O, H1, H2, masses, _ = atoms
    for row, (q, box) in zip(run["rows"], run["frames"]):
        q = q.astype(np.float64)
        p, _, _ = probe(rigidified(q, box, O, H1, H2, masses, r0, theta0), np.zeros_like(q), box)
        row["P_rigid_barostat_bar"] = p["barostat"]
        row["P_rigid_LJ_bar"] = p["LJ"]
        row["P_rigid_coulomb_bar"] = p["coulomb"]
        row["dipole_D"] = float(dipoles(q, box, O, H1, H2, charges).mean())


BOND_EDGES = np.linspace(0.090, 0.117, 109)  # nm
ANGLE_EDGES = np.linspace(90.0, 122.0, 129)  # degrees


def distributions(run, discard):
    """Normalized histograms of O-H lengths and H-O-H angles on BOND_EDGES / ANGLE_EDGES, and the fraction of values
    outside those ranges (strongly distorted molecules)."""
    b, a = run["bonds"][discard:].ravel(), run["angles"][discard:].ravel()
    hb, ha = np.histogram(b, BOND_EDGES)[0], np.histogram(a, ANGLE_EDGES)[0]
    return {"bond": (hb / (b.size * np.diff(BOND_EDGES))).tolist(),
            "angle": (ha / (a.size * np.diff(ANGLE_EDGES))).tolist(),
            "bondOutside": float(1 - hb.sum() / b.size), "angleOutside": float(1 - ha.sum() / a.size)}


def summarize(run, discard):
    rows = run["rows"][discard:]
    keys = [k for k in rows[0] if k not in ("t_ps", "fallbacks")]
    out = {k: dict(zip(("mean", "sem"), blockStats([r[k] for r in rows]))) for k in keys}
    b, a = run["bonds"][discard:], run["angles"][discard:]
    out["bondDistribution_nm"] = {"mean": float(b.mean()), "std": float(b.std()), "min": float(b.min()),
                                  "max": float(b.max()),
                                  "sem": blockStats(b.mean(1))[1]}
    out["angleDistribution_deg"] = {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
                                    "max": float(a.max()),
                                    "sem": blockStats(a.mean(1))[1]}
    out["pressureStd_bar"] = float(np.std([r["pressureOpenMM_bar"] for r in rows]))
    out["barostatPressureStd_bar"] = float(np.std([r["P_barostat_bar"] for r in rows]))
    out["samples"] = len(rows)
    out["histograms"] = distributions(run, discard)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="water-tip3pfb-8fs")
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--device", default="cpu", help="torch device of the FlashMD network (cuda on a GPU)")
    ap.add_argument("--time", type=float, default=30.0, help="ps of NVT with each integrator")
    ap.add_argument("--sample", type=float, default=0.048, help="ps between samples (a multiple of the stride)")
    ap.add_argument("--discard", type=float, default=5.0,
                    help="ps discarded at the start of each run (FlashMD pressure relaxes over ~5 ps)")
    ap.add_argument("--equilibration", type=float, default=5.0, help="ps of Langevin NVT before both runs")
    ap.add_argument("--density", type=float, default=1.0154, help="g/cm^3 (Langevin NpT density, GPU report)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--friction", type=float, default=10.0, help="1/ps")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--mode-rescale", action="store_true",
                    help="FlashMDLangevinIntegrator(modeRescale=True): molecular modes keep their kinetic shares")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--outdir", default=RESULTS)
    args = ap.parse_args()
    if args.time <= 0 or args.sample <= 0 or args.discard < 0 or args.discard >= args.time:
        ap.error("need --time > 0, --sample > 0 and 0 <= --discard < --time")

    from tqdm import tqdm
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = loadModel(args.model)
    stride = model.stride
    if abs(args.sample / stride - round(args.sample / stride)) > 1e-6 or args.sample < stride:
        ap.error(f"--sample {args.sample} ps must be a whole multiple of the model's stride {stride} ps")
    T = args.temperature * unit.kelvin
    top, system0, pos = flexibleWaterBox(1.6, 0.7, density=args.density)
    edge = system0.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer)
    n = system0.getNumParticles()
    masses = np.array([system0.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    types = np.array([a.element.atomic_number for a in top.atoms()])
    residues = np.array([a.residue.index for a in top.atoms()])
    molecules = [np.where(residues == r)[0] for r in np.unique(residues)]
    O = np.array([m[types[m] == 8][0] for m in molecules])
    H1 = np.array([m[types[m] == 1][0] for m in molecules])
    H2 = np.array([m[types[m] == 1][1] for m in molecules])
    system, baro_index = groupedSystem(system0, T)
    plat = mm.Platform.getPlatformByName(args.platform)
    dt_ref = 0.0005
    t_start = time.time()
    start = equilibrated_state(top, system, pos * unit.nanometer, plat, T, args.equilibration, dt_ref)
    eq_wall = time.time() - t_start
    probe = PressureProbe(system, plat, molecules, masses, args.temperature)
    atoms = (O, H1, H2, masses, types)
    nsamples = int(round(args.time / args.sample))
    bar = tqdm(total=2 * nsamples, desc="flashmd_water_pressure")

    def simulation(integ):
        sim = app.Simulation(top, system, integ, plat)
        sim.context.setState(start)
        return sim, sim.system.getForce(baro_index)

    sim, baro = simulation(mm.LangevinMiddleIntegrator(T, args.friction / unit.picosecond, dt_ref))
    sim.context.getIntegrator().setRandomNumberSeed(args.seed)
    ref = sampleRun(sim, baro, probe, args.time, args.sample, dt_ref, atoms, progress=bar)
    fm_integ = FlashMDLangevinIntegrator(T, args.friction / unit.picosecond, None, model=model, device=args.device,
                                         randomSeed=args.seed, **({"modeRescale": True} if args.mode_rescale else {}))
    sim, baro = simulation(fm_integ)
    fm = sampleRun(sim, baro, probe, args.time, args.sample, stride, atoms, flashmd=fm_integ, progress=bar)
    bar.close()
    alpha = fm_integ.getRescaleFactors()
    nb = next(f for f in system.getForces() if isinstance(f, mm.NonbondedForce))
    charges = np.array([nb.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in range(n)])
    bf = next(f for f in system.getForces() if isinstance(f, mm.HarmonicBondForce))
    af = next(f for f in system.getForces() if isinstance(f, mm.HarmonicAngleForce))
    r0 = bf.getBondParameters(0)[2].value_in_unit(unit.nanometer)
    theta0 = af.getAngleParameters(0)[3].value_in_unit(unit.radian)
    for run in (ref, fm):
        addRigidPressure(run, probe, atoms, charges, r0, theta0)

    discard = int(round(args.discard / args.sample))
    s_ref, s_fm = summarize(ref, discard), summarize(fm, discard)
    vols = [r["volume_nm3"] for run in (ref, fm) for r in run["rows"]]
    delta = {}
    for k in s_ref:
        if isinstance(s_ref[k], dict) and "mean" in s_ref[k]:
            se = [s.get("sem") for s in (s_ref[k], s_fm[k])]
            delta[k] = {"flashmdMinusLangevin": s_fm[k]["mean"] - s_ref[k]["mean"],
                        "sem": float(np.hypot(*se)) if None not in se else None}
    kappa_T = 4.5e-5  # 1/bar, water's isothermal compressibility
    dP = delta["P_barostat_bar"]["flashmdMinusLangevin"]
    results = {
        "benchmark": "flashmd_water_pressure", "model": args.model, "stride_fs": stride * 1000, "numParticles": n,
        "numMolecules": len(molecules), "density_g_cm3": args.density, "boxEdge_nm": edge,
        "densitySource": "molecule centres of the bench_flashmd_water box scaled to --density (the Langevin NpT "
                         "density of bench_flashmd_water.py at friction 10/ps), then Langevin NVT equilibration",
        "temperature_K": args.temperature, "friction_per_ps": args.friction, "modeRescale": args.mode_rescale,
        "seed": args.seed,
        "reference_dt_fs": dt_ref * 1000,
        "runTime_ps": args.time, "sample_ps": args.sample, "discard_ps": args.discard,
        "equilibration_ps": args.equilibration, "blocks": 10,
        "rigidGeometry": {"r0_nm": r0, "theta0_deg": float(np.degrees(theta0))},
        "finiteDifferenceRelativeDV": probe.eps,
        "machine": {"platform": args.platform, "cpu": pyplatform.processor() or pyplatform.machine(),
                    "torch": torch.__version__, "openmm": mm.__version__, "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "volumeFixed": bool(np.ptp(vols) == 0.0), "volumeRange_nm3": [float(min(vols)), float(max(vols))],
        "langevin": s_ref, "flashmdLangevin": s_fm, "difference": delta,
        "flashmdCounts": {"learned": fm_integ.getNumLearnedSteps(), "fallbacks": fm_integ.getNumFallbacks(),
                          "rejections": fm_integ.getRejectionCounts(),
                          "rescaleFactorMean": float(np.mean(alpha)), "rescaleFactorStd": float(np.std(alpha))},
        "densityEstimate": {"compressibility_per_bar": kappa_T, "deltaP_barostat_bar": dP,
                            "predictedRelativeDensityChange": -kappa_T * dP,
                            "observedRelativeDensityChange_gpu_npt": -0.0423},
        "wall_s": {"equilibration": eq_wall, "langevin": ref["wall_s"], "flashmd": fm["wall_s"]},
        "timeSeries": {"langevin": ref["rows"], "flashmdLangevin": fm["rows"]},
        "provenance": provenance(),
    }
    os.makedirs(args.outdir, exist_ok=True)
    stem = os.path.join(args.outdir, f"flashmd_water_pressure_{args.tag}")
    path = os.path.join(args.outdir, f"flashmd_water_pressure_{args.platform.lower()}.json")
    storeRun(path, f"flashmd_water_pressure_{args.tag}", results, DESCRIPTION.format(platform=args.platform))
    plot(stem + ".png", ref, fm, discard, stride, delta)

    print(f"{'quantity':34s} {'Langevin':>20s} {'FlashMD':>20s} {'FlashMD-Langevin':>20s}")
    for k in ("pressureOpenMM_bar", "P_barostat_bar", "P_configurational_bar", "P_kineticCOM_bar", "P_LJ_bar",
              "P_coulomb_bar", "P_rigid_barostat_bar", "P_rigid_LJ_bar",
              "P_rigid_coulomb_bar", "dipole_D", "P_nonbondedDirect_bar", "P_pmeReciprocal_bar", "E_bonds", "E_angles",
              "E_nonbondedDirect", "E_pmeReciprocal", "bondMean_nm", "angleMean_deg", "T_H", "T_O", "T_trans",
              "T_rot", "T_vib"):
        fmt = lambda s: f"{s['mean']:.4g} +- {s['sem']:.2g}" if s["sem"] is not None else f"{s['mean']:.4g}"  # noqa
        d = delta[k]
        dd = f"{d['flashmdMinusLangevin']:.4g} +- {d['sem']:.2g}" if d["sem"] is not None else \
            f"{d['flashmdMinusLangevin']:.4g}"
        print(f"{k:34s} {fmt(s_ref[k]):>20s} {fmt(s_fm[k]):>20s} {dd:>20s}")
    for k in ("bondDistribution_nm", "angleDistribution_deg"):
        print(f"{k + ' std':34s} {s_ref[k]['std']:20.4g} {s_fm[k]['std']:20.4g}")
    print(f"rescale factor alpha {np.mean(alpha):.4f} +- {np.std(alpha):.4f} (std); "
          f"fallbacks {fm_integ.getNumFallbacks()}/{fm_integ.getNumFallbacks() + fm_integ.getNumLearnedSteps()}; "
          f"volume fixed: {results['volumeFixed']}; predicted density change {-kappa_T * dP:+.2%} "
          f"(observed NpT -4.23 %); wrote run flashmd_water_pressure_{args.tag} into {path}, and {stem}.png")


def plot(path, ref, fm, discard, stride, delta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    axes = axes.ravel()
    runs = (("Langevin 0.5 fs", ref), (f"FlashMD Langevin {stride * 1000:g} fs", fm))
    for label, run in runs:
        t = [r["t_ps"] - run["rows"][0]["t_ps"] for r in run["rows"]]
        pb = np.array([r["P_barostat_bar"] for r in run["rows"]])
        line, = axes[0].plot(t, pb, lw=0.5, alpha=0.6, label=label)
        w = max(1, int(round(1.0 / (t[1] - t[0])))) if len(t) > 1 else 1  # 1 ps running mean
        if len(pb) >= w:
            axes[0].plot(t[w - 1:], np.convolve(pb, np.ones(w) / w, "valid"), lw=2, color=line.get_color(),
                         label=f"{label}, 1 ps running mean")
        x = [r["P_barostat_bar"] for r in run["rows"][discard:]]
        axes[1].hist(x, bins=30, alpha=0.5, density=True, label=f"{label}: {np.mean(x):.0f} bar")
        x = [r["P_rigid_barostat_bar"] for r in run["rows"][discard:]]
        axes[2].hist(x, bins=30, alpha=0.5, density=True, label=f"{label}: {np.mean(x):.0f} bar")
        h = distributions(run, discard)
        axes[3].stairs(h["bond"], BOND_EDGES, label=f"{label} ({h['bondOutside']:.1e} outside)")
        axes[4].stairs(h["angle"], ANGLE_EDGES, label=f"{label} ({h['angleOutside']:.1e} outside)")
    axes[0].set(xlabel="t (ps)", ylabel="P_b = -dU/dV + N k T0 / V (bar)", title="barostat pressure, NVT")
    axes[1].set(xlabel="P_b (bar)", title="barostat pressure, after discard")
    axes[2].set(xlabel="P_b (bar)", title="P_b with molecules made rigid (equilibrium geometry)")
    axes[3].set(xlabel="O-H (nm)", title="O-H bond length")
    axes[4].set(xlabel="H-O-H (deg)", title="H-O-H angle")
    for ax in axes[:5]:
        ax.legend(fontsize=7)
    keys = ["pressureOpenMM_bar", "P_barostat_bar", "P_kineticCOM_bar", "P_LJ_bar", "P_coulomb_bar",
            "P_rigid_barostat_bar", "P_rigid_LJ_bar", "P_rigid_coulomb_bar"]
    d = [delta[k]["flashmdMinusLangevin"] for k in keys]
    e = [delta[k]["sem"] or 0.0 for k in keys]
    axes[5].bar(range(len(keys)), d, yerr=e, capsize=3)
    axes[5].axhline(900, color="r", lw=0.8, ls="--", label="+900 bar ~ -4.2 % density")
    axes[5].set_xticks(range(len(keys)), [k[2:-4] if k.startswith("P_") else k[:-4] for k in keys], rotation=45,
                       ha="right", fontsize=7)
    axes[5].set(ylabel="FlashMD - Langevin (bar)", title="pressure differences (block s.e.)")
    axes[5].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
