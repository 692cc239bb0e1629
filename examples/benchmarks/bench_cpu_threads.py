"""How libtorch's thread count affects a FlashSchNet TorchForce on OpenMM's CPU platform.

Runs the bundled chignolin model (4 replicas, priors + TorchForce, LangevinMiddleIntegrator 2 fs) on the CPU
platform, with torch's default thread count and with one thread, in one process (the order alternates so both see
the same machine load), and reports ms per step: once on the machine as it is, once with as many busy-looping
processes as there are cores (an oversubscribed machine, as when other jobs run). Writes
examples/benchmarks/results/cpu_threads.json.
"""

import json
import multiprocessing
import os
import platform
import time

import torch

import openmmflash
from openmmflash.cg.structure import nativeStructure
from openmmflash.plugin.replicas import replicatePositions, replicateTopology
from openmmflash.schnet.model import FlashSchNet
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.stack import import_openmm, versions

openmm = import_openmm()
unit = openmm.unit
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_steps(context, integrator, steps):
    integrator.step(5)  # warm-up
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)
    return (time.perf_counter() - start) / steps * 1000.0


def _spin(stop):
    while not stop.is_set():
        pass


def measure(system, positions, replicas, steps, rounds, default_threads):
    timings = {"default": [], "one": []}
    for _ in range(rounds):
        for label, threads in (("default", default_threads), ("one", 1)):
            torch.set_num_threads(threads)
            integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                         2 * unit.femtosecond)
            context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
            context.setPositions(replicatePositions(positions, replicas))
            context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
            timings[label].append(time_steps(context, integrator, steps))
            del context
    return {"msPerStep": {k: min(v) for k, v in timings.items()}, "allRounds": timings,
            "loadavg": os.getloadavg()[0]}


def main(steps=40, replicas=4, rounds=2):
    model = FlashSchNet.load("chignolin")
    os.makedirs("/tmp/openmmflash-bench", exist_ok=True)
    topology, positions, _ = nativeStructure(model, "/tmp/openmmflash-bench")
    full = replicateTopology(topology, replicas)
    system = createCGSystem(full, model, replicas=replicas)
    default_threads = torch.get_num_threads()
    conditions = {"asIs": measure(system, positions, replicas, steps, rounds, default_threads)}
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count())]
    for proc in busy:
        proc.start()
    try:
        conditions["oversubscribed"] = measure(system, positions, replicas, steps // 4, 1, default_threads)
    finally:
        stop.set()
        for proc in busy:
            proc.join()
    result = {
        "benchmark": "FlashSchNet TorchForce on the OpenMM CPU platform: torch threads",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": versions(), "openmmflash": openmmflash.__version__,
        "settings": {"model": "chignolin", "replicas": replicas, "steps": steps, "rounds": rounds,
                     "defaultTorchThreads": default_threads, "busyProcessesWhenOversubscribed": os.cpu_count()},
        "conditions": conditions,
    }
    for c in conditions.values():
        c["speedupOneThread"] = c["msPerStep"]["default"] / c["msPerStep"]["one"]
    from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

    result["provenance"] = provenance()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "cpu_threads.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{'machine':>15s} {'default ms/step':>16s} {'1 thread ms/step':>17s} {'1-thread speedup':>17s}")
    for name, c in conditions.items():
        print(f"{name:>15s} {c['msPerStep']['default']:16.2f} {c['msPerStep']['one']:17.2f} "
              f"{c['speedupOneThread']:17.2f}")
    print(f"(default = {default_threads} torch threads)")

if __name__ == "__main__":
    main()
