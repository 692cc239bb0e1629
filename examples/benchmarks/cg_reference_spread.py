"""How much one all-atom reference run pins a CG model's target ensemble: the CA-RMSD, Q and CA radius of gyration
of several reference runs of one recipe that differ only in their seed, measured against the bundled model's
native structure with the observables of ``cg-validate``.

Each run's mean comes with its block standard error (10 blocks); the spread of the means between runs shows
whether that error describes how well the run has converged. The data the bundled model was trained on is not in
the repository; its figures are read from the model's validation file (``reference`` of
``results/cg_<model>_validation_10.2ns.json``) and shown as the last row.

Make the runs with the model card's recipe (docs/models.md), one seed per directory, then:

    for s in 1 2 3 4 5; do OMP_NUM_THREADS=1 openmmflash cg-data --sequence GYDPETGTWG --hairpin --mapping 5bead \\
        --steps 250000 --timestep 4 --hydrogen-mass 3 --temperature 300 --friction 1 --report-interval 50 \\
        --shard-frames 250 --equilibration 5000 --platform CPU --seed $s --output .cgref/chignolin-s$s & done; wait
    python examples/benchmarks/cg_reference_spread.py .cgref/chignolin-s*

Prints a table and writes ``results/cg_<model>_reference_spread.json``.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from openmmflash.blockstats import blockStandardError
from openmmflash.cg.observables import observables
from openmmflash.cg.refdata import loadReferenceData
from openmmflash.cg.structure import caIndices, nativeStructure
from openmmflash.cg.training import checkMapping
from openmmflash.schnet.model import loadModel

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from benchprovenance import provenance  # noqa: E402

KEYS = ("caRmsd", "Q", "Rg")
BLOCKS = 10


def summarize(values: np.ndarray) -> dict:
    """mean, std and block standard error of one run's per-frame values (frames,)."""
    return {"mean": float(values.mean()), "std": float(values.std()),
            "sem": blockStandardError(values, blocks=BLOCKS)}


def runRecord(directory: str, model, native: np.ndarray, ca: np.ndarray) -> dict:
    """Observables of one reference-data directory against the model's native structure (beads, 3) nm."""
    data = loadReferenceData(directory)
    checkMapping(model, data["metadata"])
    if data["native"].shape != native.shape:
        raise ValueError(f"{directory!r} holds {data['native'].shape[0]} beads, the model {native.shape[0]}: "
                         "give reference data of the model's protein")
    settings = data["metadata"]["settings"]
    made = data["metadata"].get("provenance", {})
    obs = observables(data["positions"].astype(np.float64), native, ca)
    frames = len(data["time"])
    frame_ps = settings["reportInterval"] * settings["timestep"] * 1e-3
    return {"directory": directory, "seed": settings.get("seed"), "frames": frames,
            "simulated_ns": frames * frame_ps * 1e-3,
            "nativeDeviation_A": float(np.abs(data["native"] - native).max() * 10.0),
            "made": {k: made.get(k) for k in ("platform", "openmm", "created")},
            "settings": {k: settings.get(k) for k in ("sequence", "mapping", "temperature", "timestep", "friction",
                                                      "hydrogenMass", "reportInterval", "equilibrationSteps")},
            **{k: summarize(obs[k]) for k in KEYS if k in obs}}


def trainingReference(modelName: str) -> dict:
    """The trained-on reference's figures as the model's validation file stores them (or {} without one)."""
    path = os.path.join(RESULTS, f"cg_{modelName}_validation_10.2ns.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        stored = json.load(f)
    ref = stored.get("reference", {})
    return {"source": f"results/{os.path.basename(path)} (reference)", "frames": stored.get("referenceFrames"),
            "simulated_ns": stored.get("referenceTime_ns"),
            **{k: {"mean": ref[k]["mean"], "std": ref[k]["std"]} for k in KEYS if k in ref}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directories", nargs="+", help="reference-data directories of `openmmflash cg-data`, one per seed")
    p.add_argument("--model", default="chignolin", help="bundled model name or model file")
    p.add_argument("--outdir", default=RESULTS)
    p.add_argument("--tag", default="", help="suffix of the results file")
    args = p.parse_args(argv)
    if len(args.directories) < 2:
        p.error("give at least two reference runs: the spread needs more than one")
    model = loadModel(args.model)
    with tempfile.TemporaryDirectory(prefix="cgspread-") as tmp:
        topology, native, _ = nativeStructure(model, tmp)
    ca = caIndices(topology)
    runs = [runRecord(d, model, native, ca) for d in args.directories]
    recipes = {json.dumps(r["settings"], sort_keys=True) for r in runs}
    if len(recipes) > 1:
        raise ValueError("the reference runs differ in more than their seed: "
                         + "; ".join(f"{r['directory']}: {r['settings']}" for r in runs))
    spread = {}
    for k in (k for k in KEYS if all(k in r for r in runs)):
        means = np.array([r[k]["mean"] for r in runs])
        spread[k] = {"meanOfMeans": float(means.mean()), "stdOfMeans": float(means.std(ddof=1)),
                     "lowest": float(means.min()), "highest": float(means.max()),
                     "largestSem": float(max(r[k]["sem"] for r in runs))}
    name = os.path.basename(args.model).removesuffix(".pt")
    report = {"benchmark": "cg_reference_spread", "model": args.model, "blocks": BLOCKS, "runs": runs,
              "spread": spread, "trainingReference": trainingReference(name), "provenance": provenance()}
    print(f"{'run':<28} {'seed':>4} {'ns':>5} {'native dev (A)':>14}  "
          + "  ".join(f"{k + ' mean +- sem (std)':>28}" for k in KEYS))
    for r in runs:
        print(f"{os.path.basename(r['directory'].rstrip('/')):<28} {r['seed']:>4} {r['simulated_ns']:>5.2f} "
              f"{r['nativeDeviation_A']:>14.4f}  "
              + "  ".join(f"{r[k]['mean']:>10.3f} +- {r[k]['sem']:.3f} ({r[k]['std']:.2f})".rjust(28) for k in KEYS))
    ref = report["trainingReference"]
    if ref:
        print(f"{'trained-on reference':<28} {'':>4} {ref['simulated_ns'] or 0:>5.2f} {'':>14}  "
              + "  ".join(f"{ref[k]['mean']:>10.3f} ({ref[k]['std']:.2f})".rjust(28) for k in KEYS if k in ref))
    for k, s in spread.items():
        print(f"{k}: means {s['lowest']:.3f}-{s['highest']:.3f}, std of means {s['stdOfMeans']:.3f}, "
              f"largest block SEM {s['largestSem']:.3f}")
    os.makedirs(args.outdir, exist_ok=True)
    out = os.path.join(args.outdir, f"cg_{name}_reference_spread{args.tag}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
