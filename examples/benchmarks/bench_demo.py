"""Time the default ``openmmflash demo`` as a user runs it and record what it reports.

Runs the CLI in a subprocess (the wall time a user sees, start-up and imports included) and writes
examples/benchmarks/results/demo_<platform>.json with the demo's own figures (MD wall time, ns/day, .cmdx / DCD / XTC
sizes, the equilibration verdict) and provenance (CPU, GPU, torch / Triton / OpenMM versions, command, commit, date,
the load average before and after: on a shared machine the wall time depends on it).

    OMP_NUM_THREADS=1 python examples/benchmarks/bench_demo.py --platform CPU
    python examples/benchmarks/bench_demo.py --platform CUDA
"""

import argparse
import datetime
import json
import os
import platform as pyplatform
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _cpuName() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return pyplatform.processor() or pyplatform.machine()


def _versions() -> dict:
    import torch  # noqa: F401  (before openmm)
    import openmm
    import triton

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    driver = None
    if gpu:
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    return {"torch": torch.__version__, "triton": triton.__version__, "openmm": openmm.__version__, "gpu": gpu,
            "driver": driver}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--platform", default="CPU")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("demo_args", nargs="*", help="extra arguments for openmmflash demo (after --)")
    args = ap.parse_args(argv)
    out = tempfile.mkdtemp(prefix="bench-demo-")
    command = [sys.executable, "-m", "openmmflash.cli", "demo", "--platform", args.platform, "--output", out]
    command += args.demo_args
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time of the demo process: its wall time on an idle
    cpu_seconds = usage.ru_utime + usage.ru_stime          # machine is about this (one busy core) or less
    if proc.returncode != 0:
        sys.exit(f"openmmflash demo failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(proc.stdout)
    s = json.load(open(os.path.join(out, "summary.json")))
    sizes = s["trajectory"]["bytes"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    result = {"benchmark": "openmmflash demo, default settings", "command": " ".join(["openmmflash"] + command[3:]),
              "wallSeconds": wall, "cpuSeconds": cpu_seconds, "demoTotalWallSeconds": s["totalWallSeconds"], "mdWallSeconds": s["wallSeconds"],
              "nsPerDayPerReplica": s["nsPerDayPerReplica"], "nsPerDayAggregate": s["nsPerDayAggregate"],
              "replicas": s["replicas"], "steps": s["steps"], "timestep_fs": s["timestep_fs"],
              "frames": s["frames"], "simulatedTimePerReplica_ps": s["simulatedTimePerReplica_ps"],
              "integrator": s["integrator"], "platform": s["platform"], "model": s["model"],
              "bytes": sizes, "dcdOverCmdx": s["trajectory"]["dcdOverCmdx"], "xtcOverCmdx": s["trajectory"]["xtcOverCmdx"],
              "equilibrated": s["equilibration"]["equilibrated"], "equilibrationReasons": s["equilibration"]["reasons"],
              "machine": dict(_versions(), cpu=_cpuName(), cpuCount=os.cpu_count(),
                              loadAverage1minBefore=load_before[0], loadAverage1minAfter=load_after[0],
                              ompNumThreads=os.environ.get("OMP_NUM_THREADS")),
              "commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    print(f"{'wall time (s, as the user sees it)':<40}{wall:10.1f}")
    print(f"{'CPU time of the demo process (s)':<40}{cpu_seconds:10.1f}")
    print(f"{'demo MD loop (s)':<40}{s['wallSeconds']:10.1f}")
    print(f"{'ns/day per replica / aggregate':<40}{s['nsPerDayPerReplica']:10.2f} / {s['nsPerDayAggregate']:.2f}")
    for key in ("cmdx", "dcd", "xtc"):
        print(f"{key + ' (bytes)':<40}{sizes[key] if sizes[key] is not None else 'n/a':>10}")
    print(f"{'DCD / cmdx, XTC / cmdx':<40}{s['trajectory']['dcdOverCmdx']:10.2f} / "
          f"{s['trajectory']['xtcOverCmdx'] or float('nan'):.2f}")
    print(f"{'load average (1 min) before / after':<40}{load_before[0]:10.2f} / {load_after[0]:.2f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"demo_{s['platform'].lower()}{args.tag}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
