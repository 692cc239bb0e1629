"""Accuracy of the tabulated filters (filterMode "table") on the bundled models and the benchmark workload model.

For each model: the table the force module builds (nodes, spacing, RMS error of W and dW/dd on the check grid
against the exact float64 filter, size), for fp32 and fp16 storage, and the whole-model force error
(RMSE / RMS = ||F - F_exact64|| / ||F_exact64||) of the single-precision force module with filterMode "table" and
"exact", against the exact model in float64. Structure: the 45-bead CG fragment of tests/data for the bundled
models (their bead types), the folded 269-bead 1ENH-like structure for the workload model (F' = 128, R = 64, T = 4,
random weights, seed 0). CPU only (plain torch paths; the GPU kernels are checked in bench_flashschnet.py).

Usage: ``python examples/benchmarks/bench_filter_tables.py``; stores its rows and provenance under "filterTables" in
results/flashschnet_kernels.json (the FlashSchNet kernels' results file; ``--out`` for another file).
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def force_errors(module_for, positions_nm):
    """{mode: force error} of the float32 module per filter mode against the float64 exact module."""
    p64 = torch.as_tensor(positions_nm, dtype=torch.float64)
    _, f_exact = module_for("double", "exact")(p64)
    out, info = {}, {}
    for mode in ("table", "exact"):
        module = module_for("single", mode)
        _, f = module(p64.float())
        out[mode] = float((f.double() - f_exact).norm() / f_exact.norm())
        info = module.filter_table_info or info
    return out, info


def main():
    from benchprovenance import provenance, storeSection
    from openmmflash.cg.structure import loadProtein
    from openmmflash.plugin.forcemodule import createFlashSchNetModule
    from openmmflash.schnet.filtertable import FilterTableOptions, buildFilterTable
    from openmmflash.schnet.model import loadModel

    torch.set_num_threads(1)
    rows = []
    top, pos = loadProtein(os.path.join(HERE, "..", "..", "tests", "data", "cg_fragment.pdb"))
    for name in ("chignolin", "3a4r"):
        errors, info = force_errors(lambda prec, mode: createFlashSchNetModule(name, top, precision=prec,
                                                                               filterMode=mode), pos)
        half = buildFilterTable(loadModel(name), FilterTableOptions(storage="fp16")).info()
        rows.append({"model": name, "beads": top.getNumAtoms(), "table_fp32": info, "table_fp16": half,
                     "force_rel_error_table": errors["table"], "force_rel_error_exact_fp32": errors["exact"]})
        print(json.dumps(rows[-1]), flush=True)
    from bench_flashschnet import load_workload, make_model

    pos0, types, _, table = load_workload("folded")
    model = make_model(len(table), "flash_fp32", "cpu")
    errors, info = force_errors(lambda prec, mode: createFlashSchNetModule(
        model, beadTypes=types, precision=prec, filterMode=mode), pos0 / 10.0)
    half = buildFilterTable(model, FilterTableOptions(storage="fp16")).info()
    rows.append({"model": "workload F128 R64 T4 (random, seed 0)", "beads": len(types), "table_fp32": info,
                 "table_fp16": half, "force_rel_error_table": errors["table"],
                 "force_rel_error_exact_fp32": errors["exact"]})
    print(json.dumps(rows[-1]), flush=True)
    out = {"provenance": provenance(), "rows": rows,
           "settings": {"tolerance": FilterTableOptions().tolerance, "checkPointsPerInterval": 4}}
    path = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else os.path.join(
        HERE, "results", "flashschnet_kernels.json")
    storeSection(path, "filterTables", out)
    for r in rows:
        print(f"{r['model']:40} nodes {int(r['table_fp32']['nodes']):5d} W {r['table_fp32']['errorValue']:.1e} "
              f"W' {r['table_fp32']['errorDerivative']:.1e} | forces table {r['force_rel_error_table']:.2e} "
              f"exact fp32 {r['force_rel_error_exact_fp32']:.2e} | fp16 table {int(r['table_fp16']['nodes'])} "
              f"nodes, W' {r['table_fp16']['errorDerivative']:.1e}")


if __name__ == "__main__":
    main()
