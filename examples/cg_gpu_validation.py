"""The GPU half of the bundled-model checks in one run: `openmmflash demo` with default arguments, then a
``cg-validate`` of each bundled model with many replicas in one System (CUDA fast path, see
``openmmflash.plugin.fastpath.fastPathOptions``).

    python examples/cg_gpu_validation.py --output results --chignolin 128 0.08 --3a4r 64 0.16

Each model option takes ``REPLICAS NS_PER_REPLICA``; the aggregate CG time is their product, the longest single
trajectory is NS_PER_REPLICA (the JSON reports both). Writes into ``--output``: cg_demo_gpu.{json,png} and
cg_<name>_validation_<aggregate>ns.{json,png} (trajectories stay in a temporary folder). Needs the reference data
of each model (``cg-data`` directories, ``--data-root``/<name>). A model whose validation would pass ``--deadline``
seconds since the start is skipped and said so (use it to fit a run into a time limit).

Chunked and resumable (one model; the GPU side needs no reference data, the work folder stays a few MB):

    python examples/cg_gpu_validation.py --work WORK --model 3a4r --3a4r 32 0.32 --max-wall 555   # each chunk
    python examples/cg_gpu_validation.py --work WORK --finalize --output examples/benchmarks/results  # CPU

``--work`` simulates until ``--max-wall`` seconds have passed since the start (at a frame boundary), saves the
OpenMM State and the per-frame observables into WORK, and says how far it got; the same command on the returned
folder continues it (a folder started with other settings is refused). The work folder holds three files
(settings.json, checkpoint.npz, status.json: about 1 MB for 32 replicas of 3a4r). ``--finalize`` compares WORK
with the reference data (``--data-root``/<model>) and writes cg_<model>_validation_<aggregate>ns.{json,png} into
``--output``.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch  # noqa: F401  (before openmm)

from openmmflash.workflows.cgvalidation import finalizeValidation, runValidationChunk, validateModel
from openmmflash.demo import printSummary, runDemo

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks"))
from benchprovenance import provenance  # noqa: E402


def exportReport(srcJson, srcPng, dstStem):
    """The JSON report ``srcJson`` as ``dstStem``.json, with this run's provenance
    (examples/benchmarks/benchprovenance.py), and its plot ``srcPng`` as ``dstStem``.png."""
    with open(srcJson) as f:
        report = json.load(f)
    report["provenance"] = provenance()
    with open(dstStem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    shutil.copy(srcPng, dstStem + ".png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="cg-gpu-results")
    parser.add_argument("--data-root", default=".cgref", help="folder holding <model>/ reference-data directories")
    parser.add_argument("--models", nargs="*", default=["chignolin", "3a4r"], help="models to validate")
    parser.add_argument("--chignolin", nargs=2, type=float, metavar=("REPLICAS", "NS"), default=None,
                        help="replicas and ns per replica (default 128 0.08)")
    parser.add_argument("--3a4r", dest="p3a4r", nargs=2, type=float, metavar=("REPLICAS", "NS"), default=None,
                        help="replicas and ns per replica (default 64 0.16)")
    parser.add_argument("--work", help="chunked mode: work folder of one model's validation (created or continued)")
    parser.add_argument("--model", help="with --work: the model to start the folder with (chignolin or 3a4r)")
    parser.add_argument("--max-wall", type=float, default=None, help="with --work: seconds since the start after "
                        "which the chunk stops at the next frame boundary")
    parser.add_argument("--report-interval", type=int, default=500, help="steps between frames (default 500)")
    parser.add_argument("--finalize", action="store_true", help="with --work: compare the folder with the "
                        "reference data and write the report (CPU; no simulation)")
    parser.add_argument("--estimate-ms", nargs=2, type=float, default=[3.0, 20.0],
                        help="expected ms per step of chignolin and 3a4r at these replica counts (for --deadline)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; skip a validation that would pass it")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--filter-precision", choices=["fp32", "w16a16"], default=None,
                        help="with --work (new folder): precision of the fused filter MLPs on the CUDA fast path "
                        "(default fp32)")
    parser.add_argument("--platform", default="CUDA")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    start = args.start = time.time()
    if args.work:
        return chunked(args)
    args.chignolin, args.p3a4r = args.chignolin or [128, 0.08], args.p3a4r or [64, 0.16]
    os.makedirs(args.output, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="cg-gpu-")  # trajectories stay here; only the reports go to --output
    if not args.no_demo:
        demo_dir = os.path.join(scratch, "demo")
        summary = runDemo(output=demo_dir, platform=args.platform)  # otherwise the defaults of `openmmflash demo`
        printSummary(summary, demo_dir)
        exportReport(os.path.join(demo_dir, "summary.json"), os.path.join(demo_dir, "demo.png"),
                     os.path.join(args.output, "cg_demo_gpu"))
    plan = [("chignolin", args.chignolin, args.estimate_ms[0]), ("3a4r", args.p3a4r, args.estimate_ms[1])]
    for name, (replicas, ns), ms in plan:
        if name not in args.models:
            continue
        replicas = int(replicas)
        expected = ns * 1e6 / 2.0 * ms * 1e-3
        if args.deadline is not None and time.time() - start + expected > args.deadline:
            print(f"{name}: skipped, {replicas} x {ns} ns would take about {expected:.0f} s and pass the deadline")
            continue
        work = os.path.join(scratch, f"work_{name}")
        report = validateModel(name, os.path.join(args.data_root, name), work, timeNs=ns, replicas=replicas,
                               reportInterval=args.report_interval, platform=args.platform, seed=args.seed)
        total = f"{report['cgTimeTotal_ns']:.3g}ns"
        exportReport(os.path.join(work, "validation.json"), os.path.join(work, "validation.png"),
                     os.path.join(args.output, f"cg_{name}_validation_{total}"))
        print(f"{name}: {report['cgTime']}; stable {report['stable']}, mean T {report['meanTemperature_K']:.1f} K, "
              f"{report['wallSeconds']:.0f} s wall, overlaps {json.dumps(report['histogramOverlap'])}", flush=True)
    print(f"done in {time.time() - start:.0f} s")


def chunked(args):
    """--work: one chunk of a resumable validation, or (--finalize) its report."""
    if args.finalize:
        with open(os.path.join(args.work, "settings.json")) as f:
            name = json.load(f)["model"]
        os.makedirs(args.output, exist_ok=True)
        report = finalizeValidation(args.work, os.path.join(args.data_root, name), args.work)
        total = f"{report['cgTimeTotal_ns']:.3g}ns"
        # the provenance of this --finalize command; the GPU chunks' machine is in the report's "machine"
        exportReport(os.path.join(args.work, "validation.json"), os.path.join(args.work, "validation.png"),
                     os.path.join(args.output, f"cg_{name}_validation_{total}"))
        print(f"{name}: {report['cgTime']}{'' if report['complete'] else ' (target not reached)'}; stable "
              f"{report['stable']}, angles in range {report['anglesInRange']}, mean T "
              f"{report['meanTemperature_K']:.1f} K, {report['aggregateNsPerDay']:.0f} ns/day aggregate, overlaps "
              f"{json.dumps(report['histogramOverlap'])}; wrote {args.output}/cg_{name}_validation_{total}.*")
        return
    pair = {"chignolin": args.chignolin, "3a4r": args.p3a4r}.get(args.model)
    replicas, ns = (int(pair[0]), pair[1]) if pair else (None, None)
    fast = {"filterPrecision": args.filter_precision} if args.filter_precision else None
    status = runValidationChunk(args.work, args.model, ns, replicas, reportInterval=args.report_interval,
                                seed=args.seed, fastPath=fast, maxWallSeconds=args.max_wall, platform=args.platform)
    last = status["chunks"][-1] if status["chunks"] else {}
    print(f"{status['summary']}; this chunk {last.get('steps', 0)} steps in {last.get('wallSeconds', 0):.0f} s MD "
          f"({last.get('nsPerDayAggregate', 0):.0f} ns/day aggregate), {time.time() - args.start:.0f} s in all; "
          f"complete {status['complete']}")


if __name__ == "__main__":
    main()
