"""Does a FlashMD CG model preserve phase-space volume? log |det J| of the learned stride, state by state.

A map G: x = (q, p) -> x' that conserves H exactly (the integrator's energy rescale) leaves the canonical density
exp(-H/kT) invariant only if it also preserves volume, |det dG/dx| = 1, as the true (symplectic) dynamics does.
Where log |det J| < 0 the map contracts phase space and a run piles up density there, whatever the single-stride
errors look like. This script computes, from K states of the CG protein (frames of a Langevin run, Maxwell momenta at
``--temperature``):

- log |det J_M| of the network's stride alone, M: (q, p) -> (q', p') (COM kept as the integrator does), and
- log |det J_G| of the stride with the energy rescale, G: (q, p) -> (q', alpha p'), alpha = sqrt((H - V(q')) / K'),

with the CG System's energy in PyTorch (priors and the FlashSchNet model over all pairs, float64) and all pairs of
beads as the network's edges (equal to the neighbor list: pairs beyond the cutoff have zero filters), so G is smooth.
J is the full 6n x 6n Jacobian (autograd). ``--verlet`` adds velocity Verlet over the same stride as a check of the
machinery: it is symplectic, so its log |det J| must be 0 to rounding. The report relates log |det J_G| to the CA
radius of gyration of the start: a slope means the learned dynamics gain or lose volume along Rg.

    python examples/benchmarks/flashmd_cg_jacobian.py --models chignolin-cg-40fs-stiff --states 40 \
        --frames frames_langevin.npz --verlet

Writes results/flashmd_cg_jacobian<tag>.json and .png.
"""

import argparse
import json
import os
import platform as pyplatform
import time

import numpy as np
import torch  # noqa: F401  (before openmm)
from tqdm import tqdm

from bench_flashschnet_nve import drift_fit
from benchprovenance import provenance
from openmmflash.cg.observables import radiusOfGyration
from openmmflash.cg.structure import caIndices
from openmmflash.workflows.flashmdcg import buildCGSystem, flashMDSpecies, flashSchNetEnergyEvaluator
from openmmflash.integrators.training.data import particleMasses
from openmmflash.integrators.network.modelfile import loadModel
from openmmflash.integrators.engine.stepper import FlashMDStepper

HERE = os.path.dirname(os.path.abspath(__file__))
KB = 0.00831446261815324


class PhaseSpaceMaps:
    """The learned stride M, the rescaled stride G and velocity Verlet as differentiable functions of x [6n] (q nm
    then p amu nm/ps, float64) for one copy of the CG System."""

    def __init__(self, model, system, net, topology):
        masses = particleMasses(system)
        n = self.n = len(masses)
        self.m = torch.tensor(masses, dtype=torch.float64).view(n, 1)
        _, evaluator = flashSchNetEnergyEvaluator(system, net, topology, 1, device="cpu", priors="torch",
                                                  pairs="dense")
        self.V = evaluator.fn
        self.model = None if model is None else loadModel(model)
        if self.model is not None:
            kind = "bead" if self.model.speciesKind == "cgBead" else "element"
            types = flashMDSpecies(net, topology, kind)[0]
            self.stepper = FlashMDStepper(self.model, masses, types, device="cpu", dtype=torch.float64)
            self.stride = self.model.stride
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        self.src, self.dst = torch.tensor(i), torch.tensor(j)

    def split(self, x):
        return x[:3 * self.n].view(self.n, 3), x[3 * self.n:].view(self.n, 3)

    def kinetic(self, p):
        return 0.5 * (p * p / self.m).sum()

    def learned(self, x):
        """M(x): the network's (q', p') with the COM constraints, [6n]."""
        q, p = self.split(x)
        s = self.stepper
        sqrt_m = torch.sqrt(self.m)
        edge_vec = q[self.src] - q[self.dst]
        dq, p1 = s.learnedUpdate(p.unsqueeze(0), p, s.type_idx, sqrt_m, self.src, self.dst, edge_vec)
        return torch.cat([(q + dq[0]).reshape(-1), p1[0].reshape(-1)])

    def alpha(self, x):
        """The rescale factor sqrt((V(q) + K(p) - V(q')) / K(p')) of the stride from x."""
        q, p = self.split(x)
        q1, p1 = self.split(self.learned(x))
        return torch.sqrt((self.V(q) + self.kinetic(p) - self.V(q1)) / self.kinetic(p1))

    def energyError(self, x):
        """H(M(x)) - H(x), kJ/mol: what the learned stride misses before the rescale."""
        q, p = self.split(x)
        q1, p1 = self.split(self.learned(x))
        return self.V(q1) + self.kinetic(p1) - self.V(q) - self.kinetic(p)

    def rescaled(self, x):
        """G(x): M(x) with p' scaled so that V(q') + K(p') = V(q) + K(p)."""
        q1, p1 = self.split(self.learned(x))
        return torch.cat([q1.reshape(-1), (self.alpha(x) * p1).reshape(-1)])

    def logDets(self, x):
        """(log |det J_M|, log |det J_G|, alpha) at x. J_G = D J_M + u v^T with D = diag(1, alpha), u = (0, p'),
        v = d alpha / dx, so by the matrix determinant lemma log |det J_G| = log |det J_M| + 3 n log alpha
        + log |1 + v^T (D J_M)^-1 u| (one Jacobian instead of two)."""
        J = torch.autograd.functional.jacobian(self.learned, x)
        _, ld_m = torch.linalg.slogdet(J)
        xg = x.detach().requires_grad_(True)
        a = self.alpha(xg)
        (v,) = torch.autograd.grad(a, xg)
        a = a.detach()
        p1 = self.split(self.learned(x).detach())[1].reshape(-1)
        d = torch.cat([torch.ones(3 * self.n, dtype=x.dtype), a.expand(3 * self.n)])
        u = torch.cat([torch.zeros(3 * self.n, dtype=x.dtype), p1])
        w = torch.linalg.solve(d[:, None] * J, u)
        ld_g = ld_m + 3 * self.n * torch.log(a) + torch.log(torch.abs(1 + v @ w))
        return float(ld_m), float(ld_g), float(a)

    def verlet(self, x, stride: float, substeps: int):
        """Velocity Verlet with the System's forces over ``stride`` ps in ``substeps`` steps."""
        q, p = self.split(x)
        h = stride / substeps

        def force(q):
            (g,) = torch.autograd.grad(self.V(q), q, create_graph=True)
            return -g

        if not q.requires_grad:
            q = q.detach().requires_grad_(True)
        f = force(q)
        for _ in range(substeps):
            p = p + 0.5 * h * f
            q = q + h * p / self.m
            f = force(q)
            p = p + 0.5 * h * f
        return torch.cat([q.reshape(-1), p.reshape(-1)])


def logDet(fn, x):
    """log |det dfn/dx| at x (full Jacobian by autograd; row by row, faster than vectorized here)."""
    J = torch.autograd.functional.jacobian(fn, x)
    sign, logabs = torch.linalg.slogdet(J)
    return float(logabs), float(sign)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["chignolin-cg-40fs-stiff"])
    ap.add_argument("--states", type=int, default=40)
    ap.add_argument("--frames", required=True, help="npz with positions [F, n, 3] nm (bench_flashmd_cg.py --frames-out)")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--verlet", action="store_true", help="also velocity Verlet (2 fs substeps) over the stride")
    ap.add_argument("--direct-check", type=int, default=1,
                    help="states whose log |det J_G| is also computed from G's own Jacobian (check of the lemma)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    full, system, positions, topology, native, net = buildCGSystem(1, platformName="CPU", removeCMMotion=False)
    frames = np.load(args.frames)["positions"]
    rng = np.random.default_rng(args.seed)
    picks = np.sort(rng.choice(len(frames), size=min(args.states, len(frames)), replace=False))
    ca = caIndices(topology)
    rg = radiusOfGyration(frames[picks][:, ca] * 10.0)
    masses = particleMasses(system)
    p0 = rng.standard_normal((len(picks), len(masses), 3)) * np.sqrt(KB * args.temperature * masses)[None, :, None]
    p0 -= p0.sum(1, keepdims=True) / len(masses)  # total momentum 0
    states = [torch.tensor(np.concatenate([frames[k].reshape(-1), p0[i].reshape(-1)]), dtype=torch.float64)
              for i, k in enumerate(picks)]
    report = {"info": {"python": pyplatform.python_version(), "torch": torch.__version__, "device": "cpu",
                       "cpu": pyplatform.processor() or pyplatform.machine(), "command": " ".join(os.sys.argv)},
              "frames": os.path.basename(args.frames), "states": len(states), "temperature_K": args.temperature,
              "Rg_A": rg.tolist(), "models": {}}
    for name in args.models:
        maps = PhaseSpaceMaps(name, system, net, topology)
        rows = {"logDetLearned": [], "logDetRescaled": [], "alpha": [], "energyErrorBeforeRescale_kT": []}
        t0 = time.time()
        for i, x in enumerate(tqdm(states, desc=f"log det J {os.path.basename(name)}", unit="state")):
            ld_m, ld_g, a = maps.logDets(x)
            rows["logDetLearned"].append(ld_m)
            rows["logDetRescaled"].append(ld_g)
            rows["alpha"].append(a)
            with torch.no_grad():
                rows["energyErrorBeforeRescale_kT"].append(float(maps.energyError(x)) / (KB * args.temperature))
            if i < args.direct_check:  # the determinant lemma against the rescaled map's own Jacobian
                rows.setdefault("logDetRescaledDirect", []).append(logDet(maps.rescaled, x)[0])
        g = np.array(rows["logDetRescaled"])
        ok = np.isfinite(g)  # NaN: H - V' <= 0, a stride the guard rejects (no rescale exists)
        b, se, _ = drift_fit(rg[ok], g[ok])  # least-squares slope along Rg and its standard error
        lo, hi = np.quantile(rg, [1 / 3, 2 / 3])
        report["models"][name] = dict(
            rows, stride_fs=maps.stride * 1000, seconds=round(time.time() - t0, 1),
            meanLogDetLearned=float(np.mean(rows["logDetLearned"])), meanLogDetRescaled=float(g[ok].mean()),
            stdLogDetRescaled=float(g[ok].std()), statesWithoutRescale=int((~ok).sum()),
            meanEnergyErrorBeforeRescale_kT=float(np.mean(rows["energyErrorBeforeRescale_kT"])),
            meanAbsEnergyErrorBeforeRescale_kT=float(np.mean(np.abs(rows["energyErrorBeforeRescale_kT"]))),
            slopeLogDetRescaledPerA=b, slopeStdErr=se,
            meanLogDetRescaledByRgTercile=[float(g[sel & ok].mean()) for sel in (rg <= lo, (rg > lo) & (rg <= hi),
                                                                                  rg > hi)])
        r = report["models"][name]
        print(f"{name}: mean log|det J| learned {r['meanLogDetLearned']:+.3f}, rescaled {r['meanLogDetRescaled']:+.3f} "
              f"+- {r['stdLogDetRescaled']:.3f}; slope along Rg {b:+.3f} +- {se:.3f} per A; by Rg tercile "
              f"{', '.join(f'{v:+.3f}' for v in r['meanLogDetRescaledByRgTercile'])}; H(M(x)) - H(x) before the rescale "
              f"{r['meanEnergyErrorBeforeRescale_kT']:+.2f} kT (mean |.| {r['meanAbsEnergyErrorBeforeRescale_kT']:.2f} kT)")
    if args.verlet:
        maps = PhaseSpaceMaps(None, system, net, topology)
        stride = max(loadModel(m).stride for m in args.models)
        substeps = int(round(stride / 0.002))
        vals = [logDet(lambda x: maps.verlet(x, stride, substeps), x)[0]
                for x in tqdm(states[:5], desc="log det J velocity Verlet", unit="state")]
        report["velocityVerlet"] = {"stride_fs": stride * 1000, "substeps": substeps, "logDet": vals}
        print(f"velocity Verlet {stride * 1000:g} fs: log|det J| {', '.join(f'{v:+.2e}' for v in vals)} (must be 0)")
    report["provenance"] = provenance()
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, f"flashmd_cg_jacobian{args.tag}.json"), "w") as f:
        json.dump(_finite(report), f, indent=1)
    plot(report, rg, os.path.join(args.results, f"flashmd_cg_jacobian{args.tag}.png"))


def _finite(obj):
    """NaN -> None (strict JSON; a NaN log det is a state without a rescale, H - V' <= 0)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def plot(report, rg, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in report["models"].items():
        ax.scatter(rg, np.asarray(r["logDetRescaled"], dtype=float), s=12, label=f"{os.path.basename(name)}: slope "
                   f"{r['slopeLogDetRescaledPerA']:+.3f} +- {r['slopeStdErr']:.3f} / A")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("CA Rg of the start (A)")
    ax.set_ylabel("log |det J| of the rescaled learned stride")
    ax.set_title(f"CG chignolin, {report['states']} Langevin states at {report['temperature_K']:g} K: "
                 "phase-space volume per stride (0 = preserved)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
