"""Force error of the float32 FlashSchNet paths on an imported mlcg model, through the table kernels on the CPU.

mlcg's chignolin CA test model (tests/data/mlcg, ExpNormal basis, beta ~ 276) on its 16 reference frames, and the
bundled chignolin and 3a4r models on the 45-bead CG fragment of tests/data. Error: ||F - F64|| / ||F64|| over all
frames together ("global", what the CUDA tests assert) and the largest per-frame value, against the float64 exact
model at the same input positions (the float64 FlashSchNet equals mlcg's float64 forces to 1e-14). Variants:

- exact fp32: the filter MLP per pair in float32 (``filterMode="exact"``);
- table (N nodes), kernels: the Triton table kernels in float32 (interpreter, ``TRITON_INTERPRET=1``) with the
  table the builder picks now (d^2-weighted check of the kernel's float32 evaluation) and with the 2,049-node table
  the unweighted check picked (``weightPower=0``);
- table, plain torch: the CPU path of the force (Hermite evaluated in float64 from the float32 table).

Inputs: "nm64": positions in float64 nm (Reference/CPU platforms); "nm32": positions rounded to float32 nm as a
single-precision CUDA platform holds them (these frames lie 15-23 nm from the origin), through the force module
(which translates each replica to its mean first) and, for comparison, straight into the model (no translation);
and the change of the float64 forces that this rounding of the positions alone makes. Also the error of W' at the
CA pair distances from the kernels' float32 Hermite sum and from a difference form (``hermite_forms``).

Usage: ``TRITON_INTERPRET=1 python examples/benchmarks/bench_mlcg_table_accuracy.py`` (about 3 minutes on one core);
stores its results and provenance under "tableAccuracy" in results/mlcg_chignolin_1ns.json (the mlcg model's
results file).
"""

import copy
import json
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
MLCG = os.path.join(HERE, "..", "..", "tests", "data", "mlcg")


def rel_errors(forces, reference):
    """(global, max per frame) of ||F - F_ref|| / ||F_ref||, arrays [frames, n, 3]."""
    forces, reference = np.asarray(forces), np.asarray(reference)
    per = [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(forces, reference)]
    return float(np.linalg.norm(forces - reference) / np.linalg.norm(reference)), float(max(per))


def module_forces(module, frames_nm):
    """Forces (model units: kJ/mol/nm divided back) of a force module over frames [k, n, 3] nm (any dtype)."""
    out = []
    for pos in frames_nm:
        with torch.enable_grad():
            _, f = module(pos)
        out.append(f.double().numpy() / (module.energy_scale * module.length_scale))
    return np.array(out)


def variants(model, types, frames_nm):
    """{variant: (global, per-frame max)} of the float32 paths against float64 exact at the same inputs."""
    from openmmflash.plugin.forcemodule import FlashSchNetForceModule
    from openmmflash.schnet.filtertable import FilterTableOptions

    n = len(types)
    exact64 = FlashSchNetForceModule(model, types, n, precision="double", filterMode="exact")
    reference = module_forces(exact64, frames_nm.double())
    rows, info = {}, {}
    cases = [("exact fp32", "exact", None, False), ("table, kernels", "table", None, True),
             ("table, plain torch", "table", None, False),
             ("table, unweighted check (weightPower=0), kernels", "table", FilterTableOptions(weightPower=0.0), True)]
    for name, mode, options, kernels in tqdm(cases, desc="variants", leave=False):
        module = FlashSchNetForceModule(model, types, n, precision="single", filterMode=mode, filterTable=options)
        module.model.table_kernels_on_cpu = kernels
        if mode == "table":
            info[name] = {k: module.filter_table_info[k] for k in ("nodes", "errorValue", "errorDerivative")}
            name = name.replace("table", f"table ({int(module.filter_table_info['nodes'])} nodes)", 1)
        rows[name] = rel_errors(module_forces(module, frames_nm), reference)
    return rows, info


def hermite_forms(model, nodes=1025, lo=3.3, hi=4.5, samples=20000):
    """Relative error of W' [T, P, F'] at random float32 distances in [lo, hi] (where the CA pairs are) from the
    float32 table, three ways: the kernels' float32 evaluation (``_hermite_fp32``: the difference form, value terms
    from w_k+1 - w_k, exact in float32 for neighbouring nodes), the plain Hermite sum of the four node terms in
    float32 (the earlier kernels), and float64 arithmetic (the storage rounding alone)."""
    from openmmflash.schnet.filtertable import (FilterTableOptions, _hermite_derivative, _hermite_fp32,
                                                buildFilterTable, exact_filter)

    table = buildFilterTable(model, FilterTableOptions(minNodes=nodes, maxNodes=nodes), warn=False)
    gen = torch.Generator().manual_seed(1)
    d = (lo + (hi - lo) * torch.rand(samples, generator=gen, dtype=torch.float64)).float().double()
    with torch.no_grad():
        _, dw = exact_filter(copy.deepcopy(model).double(), d)
        inv_h = torch.tensor(1.0 / table.spacing, dtype=torch.float32)
        u = d.float() * inv_h
        k = u.floor()
        s = (u - k)[None, :, None]
        lo_, hi_ = table.table[:, k.long()], table.table[:, k.long() + 1]
        plain = ((6.0 * s * s - 6.0 * s) * lo_[:, :, 0] + (3.0 * s * s - 4.0 * s + 1.0) * lo_[:, :, 1]
                 + (6.0 * s - 6.0 * s * s) * hi_[:, :, 0] + (3.0 * s * s - 2.0 * s) * hi_[:, :, 1]) * inv_h
        forms = {"kernels (difference form)": _hermite_fp32(table.table, table.spacing, d)[1],
                 "plain Hermite sum (earlier kernels)": plain.double(),
                 "float64 arithmetic (storage rounding only)": _hermite_derivative(table.table, table.spacing, d)}
    return {"nodes": nodes, "range": [lo, hi],
            **{name: float((value - dw).norm() / dw.norm()) for name, value in forms.items()}}


def main():
    from benchprovenance import provenance, storeSection
    from openmmflash.cg.structure import loadProtein
    from openmmflash.mlcg.importer import importMlcg
    from openmmflash.plugin.forcemodule import FlashSchNetForceModule, createFlashSchNetModule
    from openmmflash.plugin.opsmodel import FlashSchNetOps
    from openmmflash.schnet.model import loadModel

    torch.set_num_threads(1)
    ref = dict(np.load(os.path.join(MLCG, "reference_cln_ca.npz")))
    model = importMlcg(os.path.join(MLCG, "schnet_cln_ca_specialized_model_and_config.pt"), includePriors=False)
    types = torch.tensor(ref["atom_types"])
    nm64 = torch.tensor(ref["positions"], dtype=torch.float64) * 0.1
    results = {"mlcg_cln_ca": {}}
    rows, info = variants(model, types, nm64)
    results["mlcg_cln_ca"]["nm64"] = rows
    results["mlcg_cln_ca"]["tables"] = info
    rows, _ = variants(model, types, nm64.float())
    # The same float32 nm inputs straight into the float32 model (no translation: the force before it centred).
    exact64 = FlashSchNetForceModule(model, types, len(types), precision="double", filterMode="exact")
    reference = module_forces(exact64, nm64.float().double())
    m32 = FlashSchNetOps.fromModel(model).float()
    raw = [m32.energy_and_forces(pos * 10.0, types)[1].double().numpy() for pos in nm64.float()]
    rows["exact fp32, untranslated (model directly)"] = rel_errors(raw, reference)
    # What the float32 nm rounding of the positions alone does: float64 forces there vs at the stored positions.
    rows["float64 at float32 nm positions vs float64 at the stored positions"] = rel_errors(
        reference, module_forces(exact64, nm64))
    results["mlcg_cln_ca"]["nm32"] = rows
    results["mlcg_cln_ca"]["hermiteForms"] = hermite_forms(model)
    top, pos = loadProtein(os.path.join(HERE, "..", "..", "tests", "data", "cg_fragment.pdb"))
    for name in ("chignolin", "3a4r"):
        module = createFlashSchNetModule(name, top, precision="double", filterMode="exact")
        rows, info = variants(loadModel(name), module.types, torch.as_tensor(np.asarray(pos))[None])
        results[name] = {"nm64": rows, "tables": info}
    out = {"provenance": provenance(), "metric": "||F - F64|| / ||F64|| (global over frames, max per frame)",
           "results": results}
    path = os.path.join(HERE, "results", "mlcg_chignolin_1ns.json")
    storeSection(path, "tableAccuracy", out)
    for model_name, parts in results.items():
        for inputs, rows in parts.items():
            if inputs in ("tables", "hermiteForms"):
                continue
            for variant, (glob, worst) in rows.items():
                print(f"{model_name:12} {inputs:5} {variant:52} global {glob:.2e}  max/frame {worst:.2e}")
    print("W' error at CA pair distances:", json.dumps(results["mlcg_cln_ca"]["hermiteForms"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
