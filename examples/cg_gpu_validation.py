"""The GPU half of the bundled-model checks in one run: `openmmflash demo` with default arguments, then a
``cg-validate`` of each bundled model with many replicas in one System (CUDA fast path, see
``openmmflash.demo.fastPathOptions``).

    python examples/cg_gpu_validation.py --output results --chignolin 128 0.08 --3a4r 64 0.16

Each model option takes ``REPLICAS NS_PER_REPLICA``; the aggregate CG time is their product, the longest single
trajectory is NS_PER_REPLICA (the JSON reports both). Writes into ``--output``: cg_demo_gpu.{json,png} and
cg_<name>_validation_<aggregate>ns.{json,png} (trajectories stay in a temporary folder). Needs the reference data
of each model (``cg-data`` directories, ``--data-root``/<name>). A model whose validation would pass ``--deadline`` seconds since the start is skipped and
said so (use it to fit a run into a time limit).
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import torch  # noqa: F401  (before openmm)

from openmmflash.cg.validation import validateModel
from openmmflash.demo import printSummary, runDemo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="cg-gpu-results")
    parser.add_argument("--data-root", default=".cgref", help="folder holding <model>/ reference-data directories")
    parser.add_argument("--models", nargs="*", default=["chignolin", "3a4r"], help="models to validate")
    parser.add_argument("--chignolin", nargs=2, type=float, metavar=("REPLICAS", "NS"), default=[128, 0.08])
    parser.add_argument("--3a4r", dest="p3a4r", nargs=2, type=float, metavar=("REPLICAS", "NS"), default=[64, 0.16])
    parser.add_argument("--estimate-ms", nargs=2, type=float, default=[3.0, 20.0],
                        help="expected ms per step of chignolin and 3a4r at these replica counts (for --deadline)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds; skip a validation that would pass it")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--platform", default="CUDA")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    start = time.time()
    os.makedirs(args.output, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="cg-gpu-")  # trajectories stay here; only the reports go to --output
    if not args.no_demo:
        demo_dir = os.path.join(scratch, "demo")
        summary = runDemo(output=demo_dir, platform=args.platform)  # otherwise the defaults of `openmmflash demo`
        printSummary(summary, demo_dir)
        shutil.copy(os.path.join(demo_dir, "summary.json"), os.path.join(args.output, "cg_demo_gpu.json"))
        shutil.copy(os.path.join(demo_dir, "demo.png"), os.path.join(args.output, "cg_demo_gpu.png"))
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
                               reportInterval=500, platform=args.platform, seed=args.seed)
        total = f"{report['cgTimeTotal_ns']:.3g}ns"
        for ext in ("json", "png"):
            shutil.copy(os.path.join(work, f"validation.{ext}"),
                        os.path.join(args.output, f"cg_{name}_validation_{total}.{ext}"))
        print(f"{name}: {report['cgTime']}; stable {report['stable']}, mean T {report['meanTemperature_K']:.1f} K, "
              f"{report['wallSeconds']:.0f} s wall, overlaps {json.dumps(report['histogramOverlap'])}", flush=True)
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
