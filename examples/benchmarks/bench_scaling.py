"""Strong and weak scaling over processes (torchrun, one GPU each) of a CG replica ensemble and of force-matching
training with DistributedDataParallel.

    python examples/benchmarks/bench_scaling.py --processes 1 2 4 8 --platform CUDA        # one node, 8 GPUs
    python examples/benchmarks/bench_scaling.py --processes 1 2 --platform CPU --quick     # CPU smoke check

For each process count N the script starts itself under ``torchrun --standalone --nproc-per-node N`` and measures:

* **CG ensemble** (the demo's chignolin model, FlashSchNet TorchForce + priors, LangevinMiddleIntegrator 2 fs, the
  fast path on CUDA): each rank simulates its replicas in one System on its own device (``simulateCG``). The time
  of a frame is the median over the frames after the first (compilation, CUDA-graph capture) on each rank; the
  job's frame time is the slowest rank's. Weak scaling: ``--replicas-per-rank`` on every rank; strong scaling:
  ``--replicas`` shared out. Aggregate ns/day = replicas x simulated time per frame / job frame time.
* **Training** (``ForceMatching``'s loss under ``DataParallelLoss``, i.e. DDP, Adam): time per optimizer step over
  ``--train-steps`` after ``--train-warmup``, with a barrier (and CUDA synchronization) around the timed loop.
  Weak scaling: ``--batch-per-rank`` frames per rank (global batch N x that); strong: ``--batch`` frames shared out.
  The reference data are a short all-atom run (``--cg-data``, or GAY for ``--data-steps`` steps made first).

Efficiency: weak E_N = throughput_N / (N throughput_1); strong E_N = time_1 / (N time_N), both in the same run.
Writes examples/benchmarks/results/scaling_cuda.json (provenance, every measurement) and a PNG beside it; the CPU
smoke check writes scaling_cpu.json into the working directory (not a results file).

Caution: on a CPU machine the processes share its cores with each other (and, on a shared machine, with other
users): CPU figures only show that the machinery runs; they are not the GPU scaling and must not be quoted as such.
"""

import argparse
import json
import os
import platform as host
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from benchprovenance import provenance  # examples/benchmarks/benchprovenance.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


# -- worker (one per rank, under torchrun) -----------------------------------------------------------------------
def _cg_ensemble(ens, args, replicasOnRank: int) -> dict:
    from openmmflash.cg.structure import nativeStructure
    from openmmflash.workflows.cgsimulation import simulateCG
    from openmmflash.schnet.model import loadModel

    net = loadModel(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        topology, native, _ = nativeStructure(net, tmp)
    properties = dict(ens.platformProperties(args.platform))
    if args.platform == "CPU":
        properties["Threads"] = "1"  # one core per rank: N ranks use N cores
    ens.barrier()
    result = simulateCG(net, topology, native, replicasOnRank, args.steps, args.report_interval, 2.0,
                        platform=args.platform, seed=ens.seed(1), progress=False, minimize=False,
                        platformProperties=properties)
    frame = float(np.median(result["frameSeconds"][1:]))
    times = ens.allGather(frame)
    return {"replicasPerRank": ens.allGather(replicasOnRank), "frameSecondsPerRank": times,
            "jobFrameSeconds": max(times), "platform": result["platform"], "forceOptions": result["forceOptions"],
            "aggregateNsPerDay": sum(ens.allGather(replicasOnRank)) * args.report_interval * 2e-6 / max(times)
            * 86400.0}


def _training(ens, args, trainer, globalBatch: int) -> dict:
    from openmmflash.distributed import DataParallelLoss

    parallel = DataParallelLoss(trainer.model, trainer.batchLoss)
    optimizer = torch.optim.Adam(trainer.model.parameters(), lr=1e-4)
    rng = np.random.default_rng(1)

    def step():
        index = rng.choice(trainer.train_idx, size=globalBatch, replace=len(trainer.train_idx) < globalBatch)
        optimizer.zero_grad()
        loss = parallel(index[parallel.part(globalBatch)]) * parallel.weight(globalBatch)
        loss.backward()
        optimizer.step()

    def sync():
        if ens.device.type == "cuda":
            torch.cuda.synchronize(ens.device)
        ens.barrier()

    for _ in range(args.train_warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / args.train_steps
    seconds = max(ens.allGather(seconds))
    return {"globalBatch": globalBatch, "secondsPerStep": seconds, "framesPerSecond": globalBatch / seconds}


def worker(args) -> None:
    from openmmflash.cg.refdata import loadReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.distributed import Ensemble
    from openmmflash.schnet.config import FlashSchNetConfig

    torch.set_num_threads(1)
    with Ensemble(device="cuda" if args.platform == "CUDA" else "cpu") as ens:
        n = ens.worldSize
        out = {"worldSize": n, "devices": ens.allGather(str(ens.device))}
        out["cgWeak"] = _cg_ensemble(ens, args, args.replicas_per_rank)
        out["cgStrong"] = _cg_ensemble(ens, args, len(ens.share(args.replicas)))
        config = FlashSchNetConfig(hiddenChannels=args.hidden, numFilters=args.hidden, numRbf=32, numInteractions=2,
                                   cutoff=10.0, readoutHidden=[32], backend="reference")
        trainer = ForceMatching(loadReferenceData(args.cg_data), config=config, numBlocks=4, seed=1,
                                device=str(ens.device))
        out["trainWeak"] = _training(ens, args, trainer, args.batch_per_rank * n)
        out["trainStrong"] = _training(ens, args, trainer, args.batch)
        if ens.isMain:
            with open(args.result, "w") as f:
                json.dump(out, f, indent=1)


# -- driver ------------------------------------------------------------------------------------------------------
def machine() -> dict:
    """What the provenance leaves out: cores and GPUs of this machine."""
    return {"host": host.node(), "cpuCount": os.cpu_count(),
            "gpuCount": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def makeData(args, directory: str) -> str:
    from openmmflash.cg.refdata import ReferenceRun

    path = os.path.join(directory, "gay")
    print(f"reference data: GAY, {args.data_steps} all-atom steps on {args.platform} -> {path}", flush=True)
    ReferenceRun(path, sequence="GAY", reportInterval=10, shardFrames=100, equilibrationSteps=200,
                 platform=args.platform, timestep=2.0, seed=1).run(args.data_steps)
    return path


def efficiencies(runs: list) -> None:
    """Adds weak and strong scaling efficiencies relative to the run with one process."""
    base = next(r for r in runs if r["worldSize"] == 1)
    for r in runs:
        n = r["worldSize"]
        r["cgWeak"]["efficiency"] = r["cgWeak"]["aggregateNsPerDay"] / (n * base["cgWeak"]["aggregateNsPerDay"])
        r["cgStrong"]["efficiency"] = base["cgStrong"]["jobFrameSeconds"] / (n * r["cgStrong"]["jobFrameSeconds"])
        r["trainWeak"]["efficiency"] = base["trainWeak"]["secondsPerStep"] / r["trainWeak"]["secondsPerStep"]
        r["trainStrong"]["efficiency"] = (base["trainStrong"]["secondsPerStep"]
                                          / (n * r["trainStrong"]["secondsPerStep"]))


def plot(runs: list, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["worldSize"] for r in runs]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("cgWeak", "CG ensemble, weak"), ("cgStrong", "CG ensemble, strong"),
                       ("trainWeak", "training, weak"), ("trainStrong", "training, strong")):
        ax[0].plot(n, [r[key]["efficiency"] for r in runs], "o-", label=label)
    ax[0].axhline(1.0, color="k", lw=0.8, ls="--")
    ax[0].set_xlabel("processes")
    ax[0].set_ylabel("scaling efficiency")
    ax[0].set_xticks(n)
    ax[0].legend(fontsize=8)
    ax[1].plot(n, [r["cgWeak"]["aggregateNsPerDay"] for r in runs], "o-", label="CG ensemble (weak), ns/day")
    ax2 = ax[1].twinx()
    ax2.plot(n, [r["trainWeak"]["framesPerSecond"] for r in runs], "s-", color="C1",
             label="training (weak), frames/s")
    ax[1].set_xlabel("processes")
    ax[1].set_ylabel("aggregate ns/day")
    ax2.set_ylabel("training frames/s")
    ax[1].set_xticks(n)
    handles = ax[1].get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax[1].legend(handles, [h.get_label() for h in handles], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--platform", default="CUDA", choices=["CUDA", "CPU"])
    parser.add_argument("--model", default="chignolin")
    parser.add_argument("--replicas-per-rank", type=int, default=64, help="weak scaling: replicas on every rank")
    parser.add_argument("--replicas", type=int, default=256, help="strong scaling: replicas over all ranks")
    parser.add_argument("--steps", type=int, default=2000, help="MD steps per measurement")
    parser.add_argument("--report-interval", type=int, default=100, help="steps per timed frame")
    parser.add_argument("--batch-per-rank", type=int, default=16, help="weak scaling: frames per rank and step")
    parser.add_argument("--batch", type=int, default=64, help="strong scaling: frames per step over all ranks")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--train-warmup", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64, help="FlashSchNet width of the trained model")
    parser.add_argument("--cg-data", help="reference-data directory from `openmmflash cg-data` (default: made)")
    parser.add_argument("--data-steps", type=int, default=2000, help="all-atom steps of the made reference data")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke check)")
    parser.add_argument("--output", help="results JSON (default examples/benchmarks/results/scaling_cuda.json; on CPU "
                        "scaling_cpu.json in the working directory)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.replicas_per_rank, args.replicas, args.steps, args.report_interval = 2, 4, 100, 20
        args.batch_per_rank, args.batch, args.train_steps, args.train_warmup, args.hidden = 4, 8, 5, 2, 16
        args.data_steps = min(args.data_steps, 400)
    if args.worker:
        return worker(args)
    output = args.output or (os.path.join(HERE, "results", "scaling_cuda.json") if args.platform == "CUDA"
                             else "scaling_cpu.json")
    runs = []
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        if not args.cg_data:
            args.cg_data = makeData(args, tmp)
        for n in sorted(set(args.processes) | {1}):
            result = os.path.join(tmp, f"n{n}.json")
            forwarded = [a for a in sys.argv[1:] if a != "--quick"]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                   os.path.abspath(__file__), "--worker", "--result", result, "--cg-data", args.cg_data] + \
                forwarded + (["--quick"] if args.quick else [])
            print(f"{n} processes ...", flush=True)
            env = dict(os.environ, OMP_NUM_THREADS="1")
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"{n} processes failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            with open(result) as f:
                runs.append(json.load(f))
    efficiencies(runs)
    print(f"\n{'N':>3} {'CG weak ns/day':>15} {'eff':>6} {'CG strong s/frame':>18} {'eff':>6} "
          f"{'train weak s/step':>18} {'eff':>6} {'train strong s/step':>20} {'eff':>6}")
    for r in runs:
        print(f"{r['worldSize']:>3} {r['cgWeak']['aggregateNsPerDay']:>15.2f} {r['cgWeak']['efficiency']:>6.2f} "
              f"{r['cgStrong']['jobFrameSeconds']:>18.4f} {r['cgStrong']['efficiency']:>6.2f} "
              f"{r['trainWeak']['secondsPerStep']:>18.4f} {r['trainWeak']['efficiency']:>6.2f} "
              f"{r['trainStrong']['secondsPerStep']:>20.4f} {r['trainStrong']['efficiency']:>6.2f}")
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "result", "output")}
    report = {"benchmark": "strong and weak scaling over torchrun processes: CG replica ensemble and DDP force "
                           "matching", "provenance": provenance(), "machine": machine(), "settings": settings,
              "runs": runs}
    if args.platform == "CPU":
        report["caution"] = ("CPU smoke check: the processes share the machine's cores (and, on a shared machine, "
                             "other users' work); these figures show that the machinery runs, not how it scales "
                             "on GPUs")
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=1)
    if args.platform == "CPU":  # a smoke check is not a figure to look at
        print(f"wrote {output} (no PNG for the CPU smoke check)")
        return
    png = os.path.splitext(output)[0] + ".png"
    plot(runs, png, f"{args.platform}: {report['provenance']['gpu']}, {args.model} ensemble and force matching")
    print(f"wrote {output} and {png}")

if __name__ == "__main__":
    main()
