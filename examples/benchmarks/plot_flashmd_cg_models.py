"""One table and one PNG for the CG chignolin FlashMD models measured on an H100: speed ratio against
LangevinMiddleIntegrator at 2 fs (same GPU call, 5 s or 30 s windows) and fallback rate (speed windows and 25-95 s validation
runs), from the committed JSON files of examples/benchmarks/bench_flashmd_cg.py. Reads only; measures nothing.

    python examples/benchmarks/plot_flashmd_cg_models.py      # -> results/flashmd_cg_models.{json,png}
"""

import json
import os

OLD_40FS = {"flashmd_cg_speed_gpu_openmm_energy.json"}
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SPEED = ["flashmd_cg_speed_gpu_openmm_energy.json", "flashmd_cg_speed_gpu_split_energy_bead.json",
         "flashmd_cg_speed_gpu_energy_term.json", "flashmd_cg_speed_gpu_40fs_30s.json"]
VALIDATION = ["flashmd_cg_validation_gpu_bead_species.json", "flashmd_cg_validation_gpu_energy_term.json",
              "flashmd_cg_validation_gpu_40fs_long.json"]
# file names in the GPU runs -> what they are now
NAMES = {"chignolin-cg-20fs": "20 fs element (shipped)", "chignolin-cg-40fs": "40 fs bead + energy term (shipped chignolin-cg-40fs)",
         "chignolin-cg-20fs-element": "20 fs element, more data", "chignolin-cg-20fs-bead": "20 fs bead",
         "chignolin-cg-40fs-bead": "40 fs bead", "chignolin-cg-20fs-energy": "20 fs element + energy term",
         "chignolin-cg-40fs-bead-energy": "40 fs bead + energy term (shipped chignolin-cg-40fs)"}


def _name(model: str, source: str) -> str:
    base = os.path.basename(model)
    if base == "chignolin-cg-40fs" and source in OLD_40FS:  # before the model file was replaced
        return "40 fs element (first chignolin-cg-40fs)"
    return NAMES.get(base[:-3] if base.endswith(".pt") else base, base)


def collect():
    rows = []
    for f in SPEED:
        d = json.load(open(os.path.join(RESULTS, f)))
        for r in d["rows"]:
            fm = r["flashmd"]
            rows.append({"file": f, "kind": "speed", "model": _name(r["model"], f), "energy": fm["energyEvaluation"],
                         "ratio": r["ratio"], "msPerStride": fm["msPerStride"], "fallbackRate": fm["fallbackRate"],
                         "strides": fm["strides"]})
    for f in VALIDATION:
        d = json.load(open(os.path.join(RESULTS, f)))
        for key, run in d["runs"].items():
            if key == "langevin":
                continue
            rows.append({"file": f, "kind": "validation", "model": _name(key, f), "fallbackRate": run["fallbackRate"],
                         "temperature_K": run["meanTemperature_K"], "time_ps": run["timePerReplica_ps"],
                         "nsPerDayWithReporting": run["timePerReplica_ps"] / run["wallSeconds"] * 86.4,
                         "overlap": run["histogramOverlapWithLangevin"]})
    return rows


def main():
    rows = collect()
    print(f"{'model':52s} {'run':10s} {'energy':7s} {'ratio':>6s} {'fallbacks':>9s}  T (K) / overlaps")
    for r in rows:
        extra = (f"{r['temperature_K']:.1f} / " + " ".join(f"{k} {v:.2f}" for k, v in r["overlap"].items())
                 + f" / {r['time_ps']:.0f} ps at {r['nsPerDayWithReporting']:.0f} ns/day"
                 if r["kind"] == "validation" else "")
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        print(f"{r['model']:52s} {r['kind']:10s} {r.get('energy', ''):7s} {ratio:>6s} {100 * r['fallbackRate']:8.1f}%  "
              f"{extra}")
    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py (this script's folder)

    out = os.path.join(RESULTS, "flashmd_cg_models")
    with open(out + ".json", "w") as fh:  # provenance of this gathering run; each source file carries its own
        json.dump({"sources": SPEED + VALIDATION, "gpu": "NVIDIA H100 80GB HBM3", "rows": rows,
                   "provenance": provenance()}, fh, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    speed = [r for r in rows if r["kind"] == "speed"]
    val = [r for r in rows if r["kind"] == "validation"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    labels = [f"{r['model']} [{r['energy']} V]" for r in speed]
    axes[0].barh(range(len(speed)), [r["ratio"] for r in speed], color="tab:blue")
    axes[0].axvline(1.0, color="k", lw=0.8)
    axes[0].axvline(10.0, color="tab:red", ls="--", lw=0.8, label="issue target 10x")
    axes[0].set_yticks(range(len(speed)), labels, fontsize=7)
    axes[0].set_xlabel("ns/day FlashMDLangevin / LangevinMiddle 2 fs (1 chignolin, H100, same call)")
    axes[0].legend(fontsize=8)
    names = sorted({r["model"] for r in rows})
    for i, kind in enumerate(("speed", "validation")):
        sel = [r for r in rows if r["kind"] == kind]
        axes[1].scatter([100 * r["fallbackRate"] for r in sel], [names.index(r["model"]) + 0.15 * i for r in sel],
                        label=f"{kind} runs", marker="o" if i == 0 else "s")
    axes[1].set_yticks(range(len(names)), names, fontsize=7)
    axes[1].set_xlabel("strides that fell back to 2 fs velocity-Verlet substeps (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"CG chignolin FlashMD models on an H100 ({len(val)} validation runs, {len(speed)} speed windows)")
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
    print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
