"""Per-step cost of the OpenMM / TorchForce boundary on the CUDA platform, and what the platform lets us cut.

Issue 3, item 4: a TorchForce adds a fixed cost to every step (the model is called on torch's stream, OpenMM waits
for it) whatever the model computes. This script measures, in one process on one GPU, LangevinMiddleIntegrator steps
(2 fs) of

- ``plain``: a System of N particles with a harmonic chain only (OpenMM's own step),
- ``trivial``: the same + a TorchForce whose model returns zero energy and zero forces (the boundary alone), with
  and without CUDA graphs, and with the CUDA platform's ``UseBlockingSync`` true (OpenMM's default: the host thread
  sleeps while it waits for the GPU) and false (it spins),
- ``pythonforce``: the same trivial model as an ``openmm.PythonForce`` (positions and forces through the host),
- ``chignolin``: the bundled CG model (FlashSchNet on the fused kernels + priors) for B replicas, as the demo and the
  validation run it: TorchForce with CUDA graphs, and PythonForce eager and with its own CUDA graph
  (``FlashSchNetCompute``), with ``UseBlockingSync`` true and false.

Prints a table and writes ``results/torchforce_boundary.json`` (+ ``.png``). Needs a CUDA GPU.

    python examples/benchmarks/bench_torchforce_boundary.py [--steps 3000] [--replicas 1 64]
"""

import argparse
import importlib.metadata
import json
import os
import platform as pyplatform
import time

import numpy as np
import torch

from openmmflash.stack import import_openmm

HERE = os.path.dirname(os.path.abspath(__file__))


class ZeroForce(torch.nn.Module):
    """Energy 0 and forces 0: what remains of a TorchForce step is the boundary itself."""

    def forward(self, positions: torch.Tensor):
        return positions.sum() * 0.0, torch.zeros_like(positions)


class ZeroCompute:
    """PythonForce computation with the same result as ``ZeroForce``."""

    def __init__(self, n):
        self.zeros = np.zeros((n, 3))

    def __call__(self, state):
        return 0.0, self.zeros


def chainSystem(n: int):
    """N particles of 12 amu in a harmonic chain (0.38 nm), positions on a helix-free zigzag line."""
    openmm = import_openmm()
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    for i in range(n):
        system.addParticle(12.0)
        if i:
            bonds.addBond(i - 1, i, 0.38, 1000.0)
    system.addForce(bonds)
    positions = np.zeros((n, 3))
    positions[:, 0] = 0.38 * np.arange(n)
    positions[1::2, 1] = 0.05
    return system, positions


def timeSteps(system, positions, steps: int, blocking: bool, warmup: int = 100) -> float:
    """ms per LangevinMiddleIntegrator step (2 fs, 300 K) on the CUDA platform, after ``warmup`` steps."""
    openmm = import_openmm()
    unit = openmm.unit
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    plat = openmm.Platform.getPlatformByName("CUDA")
    context = openmm.Context(system, integrator, plat, {"Precision": "mixed",
                                                        "UseBlockingSync": "true" if blocking else "false"})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(warmup)
    context.getState(getEnergy=True)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)  # waits for the GPU
    ms = (time.perf_counter() - start) * 1e3 / steps
    del context, integrator
    return ms


def trivialCases(n: int, steps: int) -> list:
    openmm = import_openmm()
    import openmmtorch

    rows = []
    system, positions = chainSystem(n)
    for blocking in (True, False):
        rows.append({"case": "plain", "particles": n, "useCUDAGraphs": None, "UseBlockingSync": blocking,
                     "ms_per_step": timeSteps(system, positions, steps, blocking)})
    scripted = torch.jit.script(ZeroForce())
    for graphs in (False, True):
        for blocking in (True, False):
            system, positions = chainSystem(n)
            force = openmmtorch.TorchForce(scripted, {"useCUDAGraphs": "true" if graphs else "false"})
            force.setOutputsForces(True)
            system.addForce(force)
            rows.append({"case": "trivial TorchForce", "particles": n, "useCUDAGraphs": graphs,
                         "UseBlockingSync": blocking, "ms_per_step": timeSteps(system, positions, steps, blocking)})
    system, positions = chainSystem(n)
    system.addForce(openmm.PythonForce(ZeroCompute(n)))
    rows.append({"case": "trivial PythonForce", "particles": n, "useCUDAGraphs": None, "UseBlockingSync": True,
                 "ms_per_step": timeSteps(system, positions, max(steps // 4, 200), True)})
    return rows


def chignolinCases(replicas: int, steps: int) -> list:
    from openmmflash.plugin.cgsystem import createCGSystem
    from openmmflash.cg.structure import nativeStructure
    from openmmflash.plugin.fastpath import fastPathOptions
    from openmmflash.plugin.replicas import replicatePositions, replicateTopology
    from openmmflash.schnet.model import loadModel

    model = loadModel("chignolin")
    folder = os.path.join("/tmp", f"boundary_native_{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    topology, native, _ = nativeStructure(model, folder)
    rows = []
    net, options = fastPathOptions(model, native, replicas, "CUDA")
    topology_b, start = replicateTopology(topology, replicas), replicatePositions(native, replicas)
    cases = [("torchforce", True, True), ("torchforce", True, False), ("pythonforce", False, True),
             ("pythonforce", True, True), ("pythonforce", True, False)]
    for backend, graphs, blocking in cases:
        system = createCGSystem(topology_b, net, replicas=replicas, backend=backend,
                                **dict(options, useCUDAGraphs=graphs))
        ms = timeSteps(system, start, steps if graphs else max(steps // 4, 200), blocking)
        rows.append({"case": f"chignolin FlashSchNet {backend}", "particles": system.getNumParticles(),
                     "replicas": replicas, "useCUDAGraphs": graphs, "UseBlockingSync": blocking, "ms_per_step": ms,
                     "timestep_mol_per_s": replicas * 1e3 / ms, "ns_per_day_per_replica": 2e-6 * 86400e3 / ms})
    return rows


def plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']}\nN={r['particles']} graphs={r['useCUDAGraphs']}\nblockingSync={r['UseBlockingSync']}"
              for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(rows)), 4.5))
    ax.bar(range(len(rows)), [r["ms_per_step"] * 1e3 for r in rows],
           color=["tab:blue" if r["UseBlockingSync"] else "tab:orange" for r in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=75, fontsize=6)
    ax.set_ylabel("µs per step")
    ax.set_yscale("log")
    ax.set_title("OpenMM CUDA platform: cost of the TorchForce boundary (blue: blocking sync, orange: spin)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--particles", type=int, nargs="+", default=[269, 34432])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 64])
    p.add_argument("--output", default=os.path.join(HERE, "results", "torchforce_boundary.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    openmm = import_openmm()
    rows = []
    for n in args.particles:
        rows += trivialCases(n, args.steps)
    for b in args.replicas:
        rows += chignolinCases(b, args.steps)
    print(f"{'case':24s} {'N':>7s} {'graphs':>7s} {'blockSync':>9s} {'us/step':>9s}")
    for r in rows:
        print(f"{r['case']:24s} {r['particles']:7d} {str(r['useCUDAGraphs']):>7s} {str(r['UseBlockingSync']):>9s} "
              f"{r['ms_per_step'] * 1e3:9.1f}")
    summary = {}
    for n in args.particles:
        def pick(case, graphs, blocking):
            return next(r["ms_per_step"] for r in rows if r["case"] == case and r["particles"] == n
                        and r["useCUDAGraphs"] == graphs and r["UseBlockingSync"] == blocking)
        base = pick("plain", None, True)
        summary[f"N={n}"] = {
            "boundary_us_graphs_blocking": (pick("trivial TorchForce", True, True) - base) * 1e3,
            "boundary_us_graphs_spin": (pick("trivial TorchForce", True, False) - pick("plain", None, False)) * 1e3,
            "boundary_us_nographs_blocking": (pick("trivial TorchForce", False, True) - base) * 1e3,
            "pythonforce_us": (pick("trivial PythonForce", None, True) - base) * 1e3,
            "spin_speedup_trivial_graphs": pick("trivial TorchForce", True, True) / pick("trivial TorchForce", True,
                                                                                          False)}
    for b in args.replicas:
        def cg(backend, graphs, blocking):
            return next(r["ms_per_step"] for r in rows if r["case"].endswith(backend) and r.get("replicas") == b
                        and r["useCUDAGraphs"] == graphs and r["UseBlockingSync"] == blocking)
        ref = cg("torchforce", True, True)
        summary[f"chignolin B={b}"] = {
            "torchforce_graphs_us": ref * 1e3,
            "spin_speedup_torchforce": ref / cg("torchforce", True, False),
            "pythonforce_graphs_speedup_vs_torchforce": ref / cg("pythonforce", True, True),
            "pythonforce_graphs_spin_speedup_vs_torchforce": ref / cg("pythonforce", True, False),
            "pythonforce_eager_speedup_vs_torchforce": ref / cg("pythonforce", False, True)}
    print(json.dumps(summary, indent=1))
    result = {"gpu": torch.cuda.get_device_name(0),
              "versions": {"torch": torch.__version__, "openmm": openmm.__version__,
                           "openmmtorch": importlib.metadata.version("openmmtorch"), "python": pyplatform.python_version()},
              "settings": {"steps": args.steps, "integrator": "LangevinMiddleIntegrator 2 fs 300 K 1/ps",
                           "Precision": "mixed", "warmupSteps": 100},
              "rows": rows, "summary": summary}
    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    result["provenance"] = provenance()
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, args.output.replace(".json", ".png"))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
