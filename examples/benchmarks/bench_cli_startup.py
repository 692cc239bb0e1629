"""Start-up time of the ``openmmflash`` command: ``--help``, every sub-command's ``--help`` and ``doctor``.

Each command runs as a fresh ``python -m openmmflash ...`` process (``--repeats`` times, median and min reported).
Baseline in the same run: a process that imports what building the parser used to import (torch and every command
module: doctor, demo, workflows.cgcli, workflows.flashmdcli, compactmd.cli, workflows.gaqcli), i.e. the floor of ``--help`` before the
argument declarations moved to ``openmmflash.commands``. Also ``import torch`` alone. CPU-only figures: wall seconds
on this machine (its load average is recorded), to compare with each other, not across machines.

    python examples/benchmarks/bench_cli_startup.py            # writes examples/benchmarks/results/cli_startup.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "examples", "benchmarks", "results")
OLD_PARSER_IMPORTS = ("import torch, openmmflash.doctor, openmmflash.demo, openmmflash.workflows.cgcli, "
                      "openmmflash.workflows.flashmdcli, openmmflash.compactmd.cli, openmmflash.workflows.gaqcli")


def timed(argv, repeats):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):  # doctor returns 1 when it finds a stack problem
            raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--doctor-repeats", type=int, default=2)
    ap.add_argument("--output", default=os.path.join(RESULTS, "cli_startup.json"))
    args = ap.parse_args()

    from openmmflash.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    py = [sys.executable]
    cases = {"openmmflash --help": py + ["-m", "openmmflash", "--help"]}
    cases.update({f"openmmflash {c} --help": py + ["-m", "openmmflash", c, "--help"] for c in sub.choices})
    cases["openmmflash doctor"] = py + ["-m", "openmmflash", "doctor"]
    cases["baseline: imports of the former parser"] = py + ["-c", OLD_PARSER_IMPORTS]
    cases["baseline: import torch"] = py + ["-c", "import torch"]
    rows = {}
    for name, argv in cases.items():
        rows[name] = timed(argv, args.doctor_repeats if name == "openmmflash doctor" else args.repeats)
        print(f"{name:48s} median {rows[name]['median_s']:6.2f} s   min {rows[name]['min_s']:6.2f} s", flush=True)
    base = rows["baseline: imports of the former parser"]["median_s"]
    help_ratio = base / rows["openmmflash --help"]["median_s"]
    print(f"--help is {help_ratio:.0f}x faster than the former parser's imports alone")

    from benchprovenance import provenance

    out = {"benchmark": "openmmflash command start-up (fresh process per run)",
           "provenance": provenance(), "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()},
           "repeats": args.repeats, "results": rows, "helpSpeedupOverFormerParserImports": help_ratio}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
