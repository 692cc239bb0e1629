"""Where a FlashMD CG model's rejected strides go wrong: the learned stride against the true one, term by term.

From K states of the CG protein (frames of a Langevin run from ``bench_flashmd_cg.py --frames-out``, or this script's
own Langevin run from the native structure), with Maxwell velocities at ``--temperature``, one learned stride of
the FlashMD model is compared with the true stride (NVE velocity Verlet at ``--timestep``, the System's forces).
For every stride the guard's rescale factor alpha = sqrt((H - V') / K') is computed as the integrator would, and
the potential energy of the predicted end point minus that of the true end point is split over the System's force
terms (each force in its own group): which terms make the model's V' too high, the cause of nearly all rejections.
Also the per-species RMSE of the predicted positions, the per-species kinetic energy of the prediction over the
true one (a species the network keeps too cold shows here before a long run shows it), and the mean change of the
CA radius of gyration that the learned stride makes beyond the true stride, Rg(q_pred) - Rg(q_true) (a systematic
sign means the learned dynamics drift compact or expanded, which long runs then show as a shifted ensemble). With ``--chain K``, from every state the FlashMD integrator
itself (NVE, energy rescale, guard) runs up to K strides and the stride of its first rejection is recorded: how fast
the learned dynamics leave the states where single strides are fine (survival curve in the report and plot).

    python examples/benchmarks/flashmd_cg_rejections.py --model chignolin-cg-40fs --starts 200 \
        --frames DIR/frames_langevin.npz

Writes results/flashmd_cg_rejections<tag>.json and .png.
"""

import argparse
import json
import os
import time

import numpy as np
import torch  # noqa: F401  (before openmm)
import openmm as mm
from openmm import unit

from openmmflash.workflows.flashmdcg import buildCGSystem, flashMDSpecies
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.engine.stepper import FlashMDStepper

from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

HERE = os.path.dirname(os.path.abspath(__file__))
KB = 0.00831446261815324


def termContext(system, platform):
    """A Context of a copy of ``system`` with every force in its own group; returns (context, {group: name})."""
    sys2 = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    names = {}
    for g, f in enumerate(sys2.getForces()):
        f.setForceGroup(g)
        name = (f.getName() or type(f).__name__).replace("FlashSchNet prior ", "prior ")
        names[g] = name if name not in names.values() else f"{name} #{g}"
    ctx = mm.Context(sys2, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName(platform))
    return ctx, names


def terms(ctx, names, q):
    """{term: V kJ/mol} at positions q [n, 3] nm."""
    ctx.setPositions(q)
    return {name: ctx.getState(getEnergy=True, groups={g}).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole) for g, name in names.items()}


def maxwellVelocities(rng, masses, temperature):
    """Velocities [n, 3] nm/ps drawn at ``temperature`` K for ``masses`` [n] amu, centre of mass at rest."""
    v = rng.standard_normal((len(masses), 3)) * np.sqrt(KB * temperature / masses)[:, None]
    return v - (masses[:, None] * v).sum(0) / masses.sum()


def startStates(args, system, native):
    """[K, n, 3] nm: frames from --frames, or a Langevin run from the native structure (one frame per ps)."""
    if args.frames:
        x = np.load(args.frames)["positions"].astype(np.float64)
        return x[np.linspace(0, len(x) - 1, args.starts).astype(int)]
    integ = mm.LangevinMiddleIntegrator(args.temperature, 1.0, 0.002)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(args.platform))
    ctx.setPositions(native)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    ctx.setVelocitiesToTemperature(args.temperature, args.seed)
    integ.step(int(args.burn / 0.002))
    out = []
    for _ in range(args.starts):
        integ.step(500)
        out.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(out)


def firstRejections(args, model, system, net, topology, starts, masses, rng):
    """Survival [K + 1]: fraction of the states from which FlashMDIntegrator (NVE) ran k strides without a rejection."""
    from tqdm import tqdm
    from openmmflash.workflows.flashmdcg import cgFallbackSubsteps, flashSchNetEnergyEvaluator, useCGBeadTypes
    from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
    import logging
    logging.getLogger("openmmflash.flashmd").setLevel(logging.ERROR)  # the rejections are counted here
    evaluator = flashSchNetEnergyEvaluator(system, net, topology, 1, device="cpu", priors="torch")  # shared by all
    first = []
    for q in tqdm(starts, desc="chains", unit="chain"):
        integ = FlashMDIntegrator(model=model, maxRescale=args.max_rescale, device="cpu",
                                  fallbackSubsteps=cgFallbackSubsteps(model), randomSeed=args.seed)
        useCGBeadTypes(integ, net, topology)
        integ.setEnergyEvaluator(*evaluator)
        ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(args.platform))
        ctx.setPositions(q)
        ctx.setVelocities(maxwellVelocities(rng, masses, args.temperature))
        k = args.chain
        for i in range(args.chain):
            integ.step(1)
            if integ.getNumFallbacks():
                k = i
                break
        first.append(k)
    first = np.array(first)
    return [float((first >= k).mean()) for k in range(args.chain + 1)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-40fs")
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--frames", default=None, help="npz with positions [F, n, 3] nm (bench_flashmd_cg.py --frames-out)")
    ap.add_argument("--burn", type=float, default=20.0, help="ps of Langevin before the first start (no --frames)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--timestep", type=float, default=0.5, help="fs, true NVE stride")
    ap.add_argument("--max-rescale", type=float, default=1.25)
    ap.add_argument("--chain", type=int, default=0, help="also run up to this many integrator strides per state")
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    from tqdm import tqdm

    model = loadModel(args.model)
    full, system, pos, topology, native, net = buildCGSystem(1, platformName=args.platform)
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    types = flashMDSpecies(net, topology, "bead" if model.speciesKind == "cgBead" else "element")[0]
    stepper = FlashMDStepper(model, masses, types, device="cpu")
    tctx, names = termContext(system, args.platform)
    nsteps = int(round(model.stride * 1000 / args.timestep))
    nve = mm.VerletIntegrator(args.timestep * unit.femtosecond)
    vctx = mm.Context(system, nve, mm.Platform.getPlatformByName(args.platform))
    starts = startStates(args, system, native)
    rng = np.random.default_rng(args.seed)
    from openmmflash.cg.observables import radiusOfGyration
    from openmmflash.cg.structure import caIndices
    ca = caIndices(topology)

    def rg(x):  # CA radius of gyration of positions [n, 3] nm, Angstrom
        return 10.0 * float(radiusOfGyration(x[None, ca])[0])
    rows = []
    t0 = time.time()
    for q in tqdm(starts, desc="strides", unit="stride"):
        v = maxwellVelocities(rng, masses, args.temperature)
        vctx.setPositions(q)
        vctx.setVelocities(v)
        nve.step(nsteps)
        st = vctx.getState(getPositions=True, getVelocities=True)
        q_true = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v_true = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        q1, p1 = stepper.step(torch.as_tensor(q), torch.as_tensor(masses[:, None] * v))
        q1, v1 = q1.numpy(), p1.numpy() / masses[:, None]
        e0, e_true, e_pred = terms(tctx, names, q), terms(tctx, names, q_true), terms(tctx, names, q1)
        K0, K1 = (0.5 * float((masses[:, None] * x * x).sum()) for x in (v, v1))
        H = sum(e0.values()) + K0
        avail = H - sum(e_pred.values())
        alpha = float(np.sqrt(avail / K1)) if avail > 0 else 0.0
        rows.append({"alpha": alpha, "V0": e0, "accepted": bool(1 / args.max_rescale <= alpha <= args.max_rescale),
                     "dV": {k: e_pred[k] - e_true[k] for k in names.values()},
                     "K_pred_over_true": K1 / (0.5 * float((masses[:, None] * v_true * v_true).sum())),
                     "k_pred": (masses[:, None] * v1 * v1).sum(-1), "k_true": (masses[:, None] * v_true * v_true).sum(-1),
                     "dRg": rg(q1) - rg(q_true),
                     "dq2": ((q1 - q_true) ** 2).sum(-1).tolist()})
    survival = firstRejections(args, model, system, net, full, starts, masses, rng) if args.chain else None
    acc = [r for r in rows if r["accepted"]]
    rej = [r for r in rows if not r["accepted"]]
    term_names = list(names.values())

    def mean_dv(rs):
        return {k: float(np.mean([r["dV"][k] for r in rs])) if rs else None for k in term_names}
    dq2 = np.array([r["dq2"] for r in rows])
    by_species = {model.speciesLabel(t): float(np.sqrt(dq2[:, np.array(types) == t].mean())) for t in sorted(set(types))}
    kp, kt = (np.array([r[k] for r in rows]) for k in ("k_pred", "k_true"))  # [starts, n]
    kinetic_by_species = {model.speciesLabel(t): float(kp[:, np.array(types) == t].sum() / kt[:, np.array(types) == t].sum())
                          for t in sorted(set(types))}
    drg = np.array([r["dRg"] for r in rows])
    rep = {"info": {"model": str(args.model), "platform": args.platform, "torch": torch.__version__,
                    "openmm": mm.__version__, "command": " ".join(os.sys.argv)},
           "starts": len(rows), "frames": args.frames, "temperature_K": args.temperature,
           "trueTimestep_fs": args.timestep, "maxRescale": args.max_rescale, "wallSeconds": time.time() - t0,
           "rejectedFraction": len(rej) / len(rows),
           "alpha": {"mean": float(np.mean([r["alpha"] for r in rows])), "min": float(min(r["alpha"] for r in rows))},
           "meanExcessEnergyByTerm_kJmol": {"accepted": mean_dv(acc), "rejected": mean_dv(rej)},
           "kineticPredOverTrue": {"accepted": float(np.mean([r["K_pred_over_true"] for r in acc])) if acc else None,
                                   "rejected": float(np.mean([r["K_pred_over_true"] for r in rej])) if rej else None},
           "positionRmseBySpecies_nm": by_species,
           "kineticPredOverTrueBySpecies": kinetic_by_species,
           "rgPredMinusTrue_A": {"mean": float(np.mean(drg)), "standardError": float(np.std(drg) / np.sqrt(len(drg)))},
           "startStateEnergyByTerm_kJmol": {k: float(np.mean([r["V0"][k] for r in rows])) for k in term_names},
           "chainSurvival": survival}
    print(f"{args.model}: {len(rej)}/{len(rows)} strides rejected (alpha outside [{1 / args.max_rescale:.2f}, "
          f"{args.max_rescale:.2f}])")
    if survival:
        print("runs without a rejection after k strides: "
              + ", ".join(f"k={k}: {survival[k]:.2f}" for k in sorted({1, 2, 5, 10, args.chain}) if k <= args.chain))
    print(f"Rg(pred) - Rg(true): {rep['rgPredMinusTrue_A']['mean']:+.4f} +- {rep['rgPredMinusTrue_A']['standardError']:.4f} A;"
          f" predicted / true kinetic energy by species {min(kinetic_by_species.values()):.2f}-"
          f"{max(kinetic_by_species.values()):.2f}")
    print(f"{'term':44s} {'V(pred) - V(true), accepted':>28s} {'rejected':>10s}")
    for k in term_names:
        a, b = rep["meanExcessEnergyByTerm_kJmol"]["accepted"][k], rep["meanExcessEnergyByTerm_kJmol"]["rejected"][k]
        print(f"{k:44s} {a if a is not None else float('nan'):28.2f} {b if b is not None else float('nan'):10.2f}")
    rep["provenance"] = provenance()
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, f"flashmd_cg_rejections{args.tag}.json"), "w") as f:
        json.dump(rep, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3 if survival else 2, figsize=(17 if survival else 12, 4))
    x = np.arange(len(term_names))
    for off, (lab, d) in zip((-0.2, 0.2), rep["meanExcessEnergyByTerm_kJmol"].items()):
        ax[0].bar(x + off, [d[k] or 0.0 for k in term_names], 0.4, label=f"{lab} ({len(acc if lab == 'accepted' else rej)})")
    ax[0].set_xticks(x, term_names, rotation=30, ha="right")
    ax[0].set_ylabel("V(predicted) - V(true end point), kJ/mol")
    ax[0].legend()
    ax[1].hist([r["alpha"] for r in rows], bins=40)
    for b in (1 / args.max_rescale, args.max_rescale):
        ax[1].axvline(b, color="k", ls="--")
    ax[1].set_xlabel("rescale factor alpha")
    if survival:
        ax[2].step(np.arange(len(survival)), survival, where="post")
        ax[2].set_xlabel("integrator strides from the state (NVE, rescale, guard)")
        ax[2].set_ylabel("fraction of runs without a rejection yet")
        ax[2].set_ylim(0, 1.02)
    fig.suptitle(f"{os.path.basename(str(args.model))}: one learned stride vs the true stride from {len(rows)} states")
    fig.tight_layout()
    fig.savefig(os.path.join(args.results, f"flashmd_cg_rejections{args.tag}.png"), dpi=110)
    return rep


if __name__ == "__main__":
    main()
