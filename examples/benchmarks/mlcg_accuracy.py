"""Accuracy of imported mlcg models against mlcg's own energies and forces (chignolin CA test model, 16 frames).

    python examples/benchmarks/mlcg_accuracy.py

Relative errors per frame, |dE| / |E| and ||dF|| / ||F|| (Frobenius norm of the frame's forces), maximum over the
frames, for the SchNet term alone (model; TorchForce on the Reference and CPU platforms) and for the total
(SchNet + priors as native forces, ``MLPotential("flashschnet")``, Reference), in float64 and float32 (float32
compared with mlcg's float32 run). Writes examples/benchmarks/results/mlcg_accuracy.json.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "tests", "data", "mlcg")
SIMULATION = os.path.join(DATA, "schnet_cln_ca_specialized_model_and_config.pt")


def errors(energies, forces, ref_e, ref_f):
    e = float(np.max(np.abs(np.asarray(energies) - ref_e) / np.abs(ref_e)))
    f = float(max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(np.asarray(forces), ref_f)))
    return e, f


def openmmEval(system, positions, platform_name):
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))
    energies, forces = [], []
    for pos in positions:
        context.setPositions(pos * 0.1)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / 4.184)
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / 41.84)
    return energies, forces


def main():
    import openmm
    from openmm import app
    from openmmml import MLPotential

    from openmmflash.mlcg.importer import importMlcg, writeCGPdb
    from openmmflash.plugin.torchforce import addFlashSchNetForce

    ref = np.load(os.path.join(DATA, "reference_cln_ca.npz"))
    work = tempfile.mkdtemp(prefix="mlcg-accuracy-")
    model_path, pdb_path = os.path.join(work, "model.pt"), os.path.join(work, "cg.pdb")
    model = importMlcg(SIMULATION)
    model.save(model_path)
    writeCGPdb(SIMULATION, pdb_path)
    topology = app.PDBFile(pdb_path).topology
    rows = []
    for dtype, suffix, precision in ((torch.float64, "", "double"), (torch.float32, "_f32", "single")):
        m = importMlcg(SIMULATION, includePriors=False).to(dtype)
        types = torch.tensor(ref["atom_types"])
        out = [m.energy_and_forces(torch.tensor(p, dtype=dtype), types) for p in ref["positions"]]
        e, f = errors([o[0].item() for o in out], [o[1].double().numpy() for o in out],
                      ref[f"energies_schnet{suffix}"], ref[f"forces_schnet{suffix}"])
        rows.append(("SchNet alone", "model (torch)", precision, e, f))
        for name in ("Reference", "CPU"):
            system = openmm.System()
            for _ in range(topology.getNumAtoms()):
                system.addParticle(12.0)
            addFlashSchNetForce(system, model_path, topology, precision=precision)
            e, f = errors(*openmmEval(system, ref["positions"], name), ref[f"energies_schnet{suffix}"],
                          ref[f"forces_schnet{suffix}"])
            rows.append(("SchNet alone", f"TorchForce, {name}", precision, e, f))
        system = MLPotential("flashschnet", modelPath=model_path).createSystem(topology, precision=precision)
        e, f = errors(*openmmEval(system, ref["positions"], "Reference"), ref[f"energies{suffix}"],
                      ref[f"forces{suffix}"])
        rows.append(("SchNet + priors", "MLPotential, Reference", precision, e, f))
    print(f"{'target':<17}{'path':<26}{'precision':<11}{'max rel. dE':>13}{'max rel. dF':>13}")
    for target, path, precision, e, f in rows:
        print(f"{target:<17}{path:<26}{precision:<11}{e:>13.2e}{f:>13.2e}")
    try:
        commit = subprocess.check_output(["git", "-C", HERE, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    result = {"what": "imported mlcg chignolin CA test model vs mlcg's own energies/forces, 16 frames",
              "metric": "max over frames of |dE|/|E| and ||dF||/||F||; float32 against mlcg's float32 run",
              "rows": [{"target": t, "path": p, "precision": pr, "energyRelError": e, "forceRelError": f}
                       for t, p, pr, e, f in rows],
              "provenance": {"torch": str(torch.__version__), "openmm": openmm.__version__,
                             "python": sys.version.split()[0], "cpu": platform.processor() or platform.machine(),
                             "gpu": None, "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                             "commit": commit,
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}}
    with open(os.path.join(HERE, "results", "mlcg_accuracy.json"), "w") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
