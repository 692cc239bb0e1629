"""Gather per-call reports of one benchmark into its multi-run results file (one entry per run in ``runs``).

    python examples/benchmarks/store_runs.py RESULTS_JSON "DESCRIPTION" RUN=REPORT.json [RUN=REPORT.json ...]

Each REPORT is one call's JSON with its ``provenance`` (``bench_flashmd_cg.py`` writes one per call); it is stored
unchanged as run RUN of RESULTS_JSON with ``benchprovenance.storeRun`` (a run of the same name is replaced). Start
from a missing RESULTS_JSON to keep only the runs given.
"""

import argparse
import json
import sys

from benchprovenance import storeRun  # examples/benchmarks/benchprovenance.py (this script's folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", help="the multi-run results file (created if missing)")
    ap.add_argument("description", help="what the file holds (stored as its description)")
    ap.add_argument("runs", nargs="+", metavar="RUN=REPORT", help="run name and the report file of that call")
    args = ap.parse_args(argv)
    pairs = []
    for item in args.runs:
        run, sep, path = item.partition("=")
        if not sep or not run or not path:
            ap.error(f"expected RUN=REPORT.json, got {item!r}")
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        if not isinstance(report.get("provenance"), dict):
            ap.error(f"{path} has no provenance object: re-run it with a script that records one")
        pairs.append((run, report))
    for run, report in pairs:
        storeRun(args.results, run, report, args.description)
        print(f"stored {run} in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
