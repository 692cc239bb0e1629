"""Time the default ``openmmflash demo`` as a user runs it and record what it reports.

Runs the CLI in a subprocess (the wall time a user sees, start-up and imports included) and stores, as the run
named after the platform (plus --tag) in examples/benchmarks/results/demo.json, the demo's own figures (MD wall time, ns/day, .cmdx / DCD / XTC
sizes, the equilibration verdict), then the same with ``--integrator flashmd``, and the provenance object
(benchprovenance.py) plus the CPU model and the load average before and after each run (on a shared machine the
wall time depends on it; the demo's CPU time is recorded too).

    OMP_NUM_THREADS=1 python examples/benchmarks/bench_demo.py --platform CPU
    python examples/benchmarks/bench_demo.py --platform CUDA
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchprovenance import cpuModel, provenance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def runDemo(platform: str, extra: list) -> dict:
    """Run ``openmmflash demo`` once in a subprocess; its summary plus the wall and CPU time the user sees."""
    out = tempfile.mkdtemp(prefix="bench-demo-")
    command = [sys.executable, "-m", "openmmflash.cli", "demo", "--platform", platform, "--output", out] + extra
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"openmmflash demo failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(proc.stdout)
    s = json.load(open(os.path.join(out, "summary.json")))
    # CPU time of the demo process: on an idle machine its wall time is about this or less (two cores)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": " ".join(["openmmflash"] + command[3:]).replace(out, "OUT"), "wallSeconds": wall,
            "cpuSeconds": cpu, "demoTotalWallSeconds": s["totalWallSeconds"], "mdWallSeconds": s["wallSeconds"],
            "nsPerDayPerReplica": s["nsPerDayPerReplica"], "nsPerDayAggregate": s["nsPerDayAggregate"],
            "replicas": s["replicas"], "steps": s["steps"], "stepSize_fs": s["timestep_fs"], "frames": s["frames"],
            "simulatedTimePerReplica_ps": s["simulatedTimePerReplica_ps"], "integrator": s["integrator"],
            "flashmd": s.get("flashmd"), "platform": s["platform"], "model": s["model"],
            "bytes": s["trajectory"]["bytes"], "dcdOverCmdx": s["trajectory"]["dcdOverCmdx"],
            "xtcOverCmdx": s["trajectory"]["xtcOverCmdx"], "meanTemperature_K": s["meanTemperature_K"],
            "equilibrated": s["equilibration"]["equilibrated"], "equilibrationReasons": s["equilibration"]["reasons"],
            "loadAverage1min": [load_before[0], os.getloadavg()[0]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--tag", default="", help="suffix of the run's name in results/demo.json")
    ap.add_argument("--no-flashmd", action="store_true", help="skip the second run with --integrator flashmd")
    ap.add_argument("demo_args", nargs="*", help="extra arguments for openmmflash demo (after --)")
    args = ap.parse_args(argv)
    default = runDemo(args.platform, args.demo_args)
    result = dict(default, benchmark="openmmflash demo, default settings; then the same with --integrator flashmd")
    rows = [("demo (LangevinMiddleIntegrator)", default)]
    if not args.no_flashmd:
        flash = runDemo(args.platform, args.demo_args + ["--integrator", "flashmd"])
        result["flashmdRun"] = flash
        result["flashmdOverLangevinNsPerDay"] = flash["nsPerDayPerReplica"] / default["nsPerDayPerReplica"]
        rows.append(("demo --integrator flashmd", flash))
    result.update(provenance=provenance(), machine={"cpuModel": cpuModel(), "cpuCount": os.cpu_count(),
                                                    "ompNumThreads": os.environ.get("OMP_NUM_THREADS")})
    print(f"{'run':<34}{'wall s':>8}{'CPU s':>8}{'MD s':>8}{'ns/day/rep':>11}{'cmdx B':>8}{'DCD B':>8}{'XTC B':>8}"
          f"{'load':>11}")
    for name, r in rows:
        b = r["bytes"]
        print(f"{name:<34}{r['wallSeconds']:8.1f}{r['cpuSeconds']:8.1f}{r['mdWallSeconds']:8.1f}"
              f"{r['nsPerDayPerReplica']:11.2f}{b['cmdx']:8d}{b['dcd']:8d}{b['xtc'] or 0:8d}"
              f"{r['loadAverage1min'][0]:6.1f}-{r['loadAverage1min'][1]:.1f}")
    print(f"DCD / cmdx {default['dcdOverCmdx']:.2f}, XTC / cmdx {default['xtcOverCmdx'] or float('nan'):.2f}")
    if "flashmdOverLangevinNsPerDay" in result:
        print(f"FlashMD / Langevin ns/day per replica (same machine, one after the other): "
              f"{result['flashmdOverLangevinNsPerDay']:.2f}")
    # One results file for the demo: this run replaces the run of the same platform (and tag), others are kept.
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "demo.json")
    stored = {}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
    runs = dict(stored.get("runs", {}), **{f"{default['platform'].lower()}{args.tag}": result})
    with open(path, "w") as f:
        json.dump({"benchmark": "openmmflash demo (examples/benchmarks/bench_demo.py): the default run as a user "
                   "starts it, then the same with --integrator flashmd; one run per platform", "runs": runs,
                   "provenance": result["provenance"]}, f, indent=1)
    print(f"wrote run {default['platform'].lower()}{args.tag} into {path}")


if __name__ == "__main__":
    main()
