"""Does FlashMD data from the CG model's own ensemble cut the fallbacks far from the native structure?

chignolin-cg-40fs was trained on pairs recorded within ~37 ps of the native structure and falls back in 70-86 % of
the strides above 4.5 A CA-RMSD (flashmd_cg_fallback_map.py). This script (small enough for the CPU platform):

1. ``starts``: LangevinMiddleIntegrator (300 K, 1/ps, 2 fs) on one chignolin from the native structure, 20 ps of
   burn-in, then ``--frames`` frames 5 ps apart (the CG model's own, mostly unfolded ensemble); one file per seed.
2. ``data``: replica pairs (integrators/replicadata.py, bead species) started from those frames, 300 K.
3. ``finetune``: a FlashMD model fine-tuned on them with the energy term (as the shipped model's last step).
Then run flashmd_cg_fallback_map.py with ``--model`` set to the result and compare.

    python examples/benchmarks/flashmd_cg_coverage.py starts --seed 11 --out cov   (and --seed 12 ...)
    python examples/benchmarks/flashmd_cg_coverage.py data --starts cov/starts_11.npy cov/starts_12.npy --out cov
    python examples/benchmarks/flashmd_cg_coverage.py finetune --data cov/chignolin_40fs_cov.npz --out cov/ft.pt
"""

import argparse
import os
import time

import numpy as np
import torch
import openmm as mm
from openmm import unit

from openmmflash.workflows.flashmdcg import buildCGSystem, cgFallbackSubsteps, flashMDSpecies, useCGBeadTypes


def starts(args):
    torch.set_num_threads(1)
    _, system, pos, _, _, _ = buildCGSystem(1, removeCMMotion=False)
    integ = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integ.setRandomNumberSeed(args.seed)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(args.platform), args.properties)
    ctx.setPositions(pos)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    ctx.setVelocitiesToTemperature(300 * unit.kelvin, args.seed)
    integ.step(10000)  # 20 ps burn-in
    frames = []
    for _ in range(args.frames):
        integ.step(2500)  # 5 ps apart
        frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, f"starts_{args.seed}.npy"), np.stack(frames))


def data(args):
    from openmmflash.integrators.training.data import saveDataset
    from openmmflash.integrators.training.replicadata import generateReplicaPairs

    torch.set_num_threads(args.threads)
    x = np.concatenate([np.load(p) for p in args.starts])  # [B, n, 3] nm
    B = x.shape[0]
    _, system, _, topology, _, net = buildCGSystem(B, removeCMMotion=False)
    types, kind, labels = flashMDSpecies(net, topology, "bead")
    sets = generateReplicaPairs(system, x, types, B, [300.0], [args.stride / 1000.0], cycles=100000,
                                decorrelation=0.25, equilibration=1.0, platform=args.platform,
                                platformProperties=args.properties, maxSeconds=args.seconds, minimize=False,
                                seed=args.seed, speciesKind=kind, speciesLabels=labels)
    for stride, d in sets.items():
        d["meta"]["system"] = f"bundled CG chignolin, {B} replicas from Langevin frames ({', '.join(args.starts)})"
        path = os.path.join(args.out, f"chignolin_{round(stride * 1000)}fs_cov.npz")
        saveDataset(path, d)
        print(f"wrote {d['q0'].shape[0]} pairs to {path}")


def finetune(args):
    from openmmflash.integrators.network.modelfile import saveModel
    from openmmflash.integrators.training.trainer import train

    torch.set_num_threads(args.threads)
    system = buildCGSystem(1, removeCMMotion=False)[1]
    t0 = time.time()
    model = train(args.data, args.out, iterations=20000, batchSize=16, lr=2e-4, energyWeight=0.1, system=system,
                  energyPlatform=args.platform, device="cpu", maxMinutes=args.minutes, initialModel=args.init,
                  checkpointInterval=0, resume=False)
    model.provenance["recipe"] = "examples/benchmarks/flashmd_cg_coverage.py finetune"
    saveModel(model, args.out)
    v = model.validation
    print(f"{model.provenance['iterations']} iterations in {time.time() - t0:.0f} s; held-out loss position "
          f"{v['lossPosition']:.4f}, momentum {v['lossMomentum']:.4f}")


@torch.no_grad()
def guardAcceptance(model, dataPath, maxRescale=1.25, heldOutOnly=True, platform="CPU"):
    """Fraction of (held-out) pairs whose predicted state the integrator's guard would accept in NVE: the energy
    rescale factor alpha = sqrt((H - V(q')) / K(p')) within [1/maxRescale, maxRescale], H = V(q) + K(p); plus the
    energy error V(q') + K(p') - H in kT (mean |.|, 90th percentile). The same held-out split as training (seed 0)."""
    from openmmflash.integrators.engine.stepper import batch_edges
    from openmmflash.integrators.training.trainer import KB, Trainer, makeEnergyContext

    tr = Trainer(dataPath, model=model, device="cpu", batchSize=16, seed=0)
    ctx = makeEnergyContext(buildCGSystem(1, removeCMMotion=False)[1], platform)
    m = tr.masses.double().view(-1, 1)
    idx_all = tr.val_idx if heldOutOnly else np.arange(tr.q0.shape[0])
    accepted, errors = 0, []
    for i in idx_all:
        q0, p0, dq, p1 = tr._batch(np.array([i]), False)
        src, dst, ev = batch_edges(q0, None, model.cutoff)
        a, b = model.normalized(tr.type_idx, (p0 / tr.sqrt_m / model.momentumScale).reshape(-1, 3), src, dst, ev)
        q_pred = (q0[0] + a * model.stride * model.momentumScale / tr.sqrt_m[0]).double()
        p_pred = (b * model.momentumScale * tr.sqrt_m[0]).double()
        energy = []
        for x in (q0[0].double(), q_pred):
            ctx.setPositions(x.numpy())
            with torch.enable_grad():  # the FlashSchNet TorchForce takes its own gradient on this thread
                st = ctx.getState(getEnergy=True)
            energy.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        H = energy[0] + float((p0[0].double() ** 2 / (2 * m)).sum())
        K1 = float((p_pred ** 2 / (2 * m)).sum())
        errors.append((energy[1] + K1 - H) / (KB * float(tr.temperature[i])))
        alpha2 = (H - energy[1]) / K1
        accepted += bool(alpha2 > 0 and 1 / maxRescale <= np.sqrt(alpha2) <= maxRescale)
    err = np.abs(np.array(errors))
    return {"pairs": int(len(idx_all)), "acceptance": accepted / len(idx_all), "meanAbsEnergyError_kT": float(err.mean()),
            "p90AbsEnergyError_kT": float(np.percentile(err, 90))}


def _heldOutStarts(model, dataPath, starts):
    """(dataset, first ``starts`` held-out pair indices of training's split (seed 0), topology, System, FlashSchNet
    model) of one CG chignolin: the true states the rollouts start from."""
    from openmmflash.integrators.training.data import loadDataset
    from openmmflash.integrators.training.trainer import Trainer

    d = loadDataset(dataPath)
    val = Trainer(d, model=model, device="cpu", seed=0).val_idx[:starts]
    topology, system, _, _, _, net = buildCGSystem(1, removeCMMotion=False)
    return d, val, topology, system, net


def rollout(model, dataPath, strides=10, starts=30, platform="CPU"):
    """Guard rejections by stride index k = 1..strides of FlashMDIntegrator (NVE, energy rescale, maxRescale 1.25)
    started from true states (q, p) of held-out pairs: does the model fail on true states, or on the states its own
    earlier strides made? Returns the rejection fraction per k (over ``starts`` starts)."""
    from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator

    d, val, topology, system, net = _heldOutStarts(model, dataPath, starts)
    rejected = np.zeros(strides)
    for i in val:
        integ = FlashMDIntegrator(model=model, fallbackSubsteps=cgFallbackSubsteps(model), device="cpu")
        useCGBeadTypes(integ, net, topology)
        ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(platform))
        ctx.setPositions(d["q0"][i].astype(np.float64))
        ctx.setVelocities((d["p0"][i] / d["masses"][:, None]).astype(np.float64))
        for k in range(strides):
            before = integ.getNumFallbacks()
            integ.step(1)
            rejected[k] += integ.getNumFallbacks() - before
        del ctx
    return (rejected / len(val)).tolist()


def energyTrace(model, dataPath, strides=150, starts=8, friction=1.0, platform="CPU"):
    """Potential energy V (kJ/mol) and kinetic temperature after each 40 fs of FlashMDLangevinIntegrator and of
    LangevinMiddleIntegrator (2 fs), both from the same true held-out states at 300 K: does the learned map heat the
    configurational degrees of freedom (V rising above the reference while the rescale takes kinetic energy)?"""
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    from openmmflash.integrators.training.trainer import KB

    d, val, topology, system, net = _heldOutStarts(model, dataPath, starts)
    n_sub = cgFallbackSubsteps(model)
    dof = 3 * system.getNumParticles() - 3
    out = {}
    for kind in ("flashmd", "langevin"):
        V, T, rej = np.zeros((len(val), strides)), np.zeros((len(val), strides)), np.zeros(strides)
        for j, i in enumerate(val):
            if kind == "flashmd":
                integ = FlashMDLangevinIntegrator(300, friction, None, model=model, fallbackSubsteps=n_sub,
                                                  device="cpu", speciesRescale=False,
                                                  randomSeed=j + 1)
                useCGBeadTypes(integ, net, topology)
            else:
                integ = mm.LangevinMiddleIntegrator(300, friction, 0.002)
                integ.setRandomNumberSeed(j + 1)
            ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(platform))
            ctx.setPositions(d["q0"][i].astype(np.float64))
            ctx.setVelocities((d["p0"][i] / d["masses"][:, None]).astype(np.float64))
            for k in range(strides):
                before = integ.getNumFallbacks() if kind == "flashmd" else 0
                integ.step(1 if kind == "flashmd" else n_sub)
                if kind == "flashmd":
                    rej[k] += integ.getNumFallbacks() - before
                with torch.enable_grad():
                    st = ctx.getState(getEnergy=True)
                V[j, k] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                T[j, k] = 2 * st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * KB)
            del ctx, integ
        out[kind] = {"V_mean_by_stride": V.mean(0).tolist(), "T_mean_by_stride": T.mean(0).tolist(),
                     "rejected_by_stride": (rej / len(val)).tolist(), "V_last_half_mean": float(V[:, strides // 2:].mean()),
                     "T_last_half_mean": float(T[:, strides // 2:].mean())}
    return out


def guard(args):
    import json

    from openmmflash.integrators.network.modelfile import loadModel
    torch.set_num_threads(args.threads)
    report = {}
    for name in args.models:
        model = loadModel(name)
        report[name] = guardAcceptance(model, args.data, heldOutOnly=not args.all_pairs)
        report[name]["rejectedByStrideIndex"] = rollout(model, args.data, args.rollout_strides)
        if args.trace_strides:
            report[name]["energyTrace"] = energyTrace(model, args.data, args.trace_strides)
    print(json.dumps(report, indent=1))
    if args.json:
        from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

        with open(args.json, "w") as fh:
            json.dump({"data": args.data, "heldOutOnly": not args.all_pairs, "models": report,
                       "provenance": provenance()}, fh, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("starts")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--frames", type=int, default=8)
    p.set_defaults(func=starts)
    p = sub.add_parser("data")
    p.add_argument("--starts", nargs="+", required=True, help=".npy files from `starts`")
    p.add_argument("--stride", type=float, default=40.0, help="fs")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=5)
    p.set_defaults(func=data)
    p = sub.add_parser("finetune")
    p.add_argument("--data", required=True)
    p.add_argument("--init", default="chignolin-cg-40fs")
    p.add_argument("--minutes", type=float, default=10.0)
    p.set_defaults(func=finetune)
    p = sub.add_parser("guard", help="offline guard acceptance of models on (held-out) pairs")
    p.add_argument("--data", required=True)
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--all-pairs", action="store_true", help="all pairs, not only the held-out 10 %%")
    p.add_argument("--rollout-strides", type=int, default=10)
    p.add_argument("--trace-strides", type=int, default=0, help="also run energyTrace for this many strides")
    p.add_argument("--json", default=None)
    p.set_defaults(func=guard)
    for p in sub.choices.values():
        p.add_argument("--out", default="cov")
        p.add_argument("--platform", default="CPU")
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    args.properties = {"Threads": str(args.threads)} if args.platform == "CPU" else {}
    args.func(args)


if __name__ == "__main__":
    main()
