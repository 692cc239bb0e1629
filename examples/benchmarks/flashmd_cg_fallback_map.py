"""Where along a trajectory does a CG FlashMD model fall back? One chignolin under FlashMDLangevinIntegrator, chunks of
``--chunk`` strides: fallbacks in the chunk and CA-RMSD / Q / Rg at its end; the fallback fraction binned by
CA-RMSD shows whether rejections come from conformations the training data did not cover.

    python examples/benchmarks/flashmd_cg_fallback_map.py --platform CPU --device cpu --seconds 900
        -> results/flashmd_cg_fallback_map_<platform>.json / .png
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch  # noqa: F401  (before openmm)
from openmm import unit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_flashmd_cg import HERE, flashmdIntegrator, makeContext, start  # noqa: E402
from benchprovenance import provenance  # noqa: E402

from openmmflash.workflows.flashmdcg import buildCGSystem  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="chignolin-cg-40fs")
    ap.add_argument("--seconds", type=float, default=600.0, help="wall time of the run")
    ap.add_argument("--chunk", type=int, default=50, help="strides per record")
    ap.add_argument("--platform", default="CUDA")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default="", help="appended to the output file names")
    args = ap.parse_args(argv)
    # what bench_flashmd_cg.flashmdIntegrator reads
    args.temperature, args.friction, args.max_rescale, args.species_rescale = 300.0, 1.0, 1.25, False
    args.fallback_substeps, args.energy = None, "split"
    from tqdm import tqdm

    from openmmflash.cg.observables import observables
    from openmmflash.cg.structure import caIndices

    topology, system, positions, _, native, net = buildCGSystem(1, platformName=args.platform)
    integ = flashmdIntegrator(args, 1, args.seed, system, net, topology, positions=positions)
    ctx = makeContext(system, integ, args.platform)
    start(ctx, positions, args.temperature, args.seed)
    ca = caIndices(topology)
    rows, frames, done = [], [], 0
    t0 = time.time()
    with tqdm(desc="FlashMD chunks", unit="chunk") as bar:
        while time.time() - t0 < args.seconds:
            integ.step(args.chunk)
            fb = integ.getNumFallbacks()
            x = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            frames.append(np.asarray(x))
            rows.append({"time_ps": round(ctx.getState().getTime().value_in_unit(unit.picosecond), 3),
                         "fallbacks": fb - done, "wall_s": round(time.time() - t0, 1)})
            done = fb
            bar.update(1)
    obs = observables(np.stack(frames), np.asarray(native), ca)
    for r, i in zip(rows, range(len(rows))):
        r.update({k: float(v[i]) for k, v in obs.items()})
    frac = np.array([r["fallbacks"] / args.chunk for r in rows])
    rmsd = obs["caRmsd"]
    edges = np.arange(np.floor(rmsd.min()), np.ceil(rmsd.max()) + 0.5, 0.5)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (rmsd >= lo) & (rmsd < hi)
        if sel.any():
            bins.append({"caRmsd_A": [float(lo), float(hi)], "chunks": int(sel.sum()),
                         "fallbackFraction": float(frac[sel].mean())})
    rep = {"model": args.model, "platform": args.platform, "chunkStrides": args.chunk, "seed": args.seed,
           "simulated_ps": rows[-1]["time_ps"] if rows else 0.0, "fallbackFraction": float(frac.mean()),
           "correlationFallbacksCaRmsd": float(np.corrcoef(frac, rmsd)[0, 1]) if len(rows) > 2 else None,
           "byCaRmsd": bins, "chunks": rows}
    rep["provenance"] = provenance()
    os.makedirs(args.results, exist_ok=True)
    out = os.path.join(args.results, f"flashmd_cg_fallback_map_{args.platform.lower()}{args.tag}")
    with open(out + ".json", "w") as fh:
        json.dump(rep, fh, indent=1)
    print(f"{rep['simulated_ps']:.0f} ps, fallback fraction {rep['fallbackFraction']:.3f}, correlation with CA-RMSD "
          f"{rep['correlationFallbacksCaRmsd']}")
    for b in bins:
        print(f"CA-RMSD {b['caRmsd_A'][0]:.1f}-{b['caRmsd_A'][1]:.1f} A: {b['chunks']:4d} chunks, fallbacks "
              f"{100 * b['fallbackFraction']:.1f} %")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    t = [r["time_ps"] for r in rows]
    ax[0].plot(t, 100 * frac, lw=0.8, label="fallbacks (%)")
    ax[0].plot(t, 10 * rmsd, lw=0.8, label="CA-RMSD x 10 (A)")
    ax[0].set_xlabel("time (ps)")
    ax[0].legend(fontsize=8)
    ax[1].bar([np.mean(b["caRmsd_A"]) for b in bins], [100 * b["fallbackFraction"] for b in bins], width=0.45)
    ax[1].set_xlabel("CA-RMSD to native at the end of the chunk (A)")
    ax[1].set_ylabel(f"strides falling back (%, chunks of {args.chunk})")
    fig.suptitle(f"{args.model}, 1 chignolin, 300 K, {args.platform}: where the guard rejects learned strides")
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
