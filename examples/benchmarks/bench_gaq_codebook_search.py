"""Nearest-codeword search: the cube-map index (``openmmflash.gaq.codebookindex``) against a search over all K
codewords, alone (``--runs`` repetitions: median and range of the speed-up) and inside the quantized FlashMD water
model's call; all in one run, on the CPU (or the device given).

Prints a table and writes ``results/gaq_codebook_search_<device>.json``. The model part needs the water training
pairs (``--data``, from ``openmmflash flashmd-data``; skipped when the file is missing).

    python examples/benchmarks/bench_gaq_codebook_search.py [--device cpu] [--data .flashmd_data/water_8fs.npz]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, reps: int) -> float:
    """Median wall time (ms) of fn() over reps calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def search_rows(device: str, directions: int, reps: int) -> list:
    from openmmflash.gaq.codebook import sphereCodebook
    from openmmflash.gaq.codebookindex import CodebookIndex

    u = torch.randn(directions, 3, generator=torch.Generator().manual_seed(0))
    u = (u / u.norm(dim=1, keepdim=True)).to(device)
    rows = []
    for bits in (6, 8, 10, 12):
        c = sphereCodebook(bits, device=device)
        t0 = time.perf_counter()
        index = CodebookIndex(c)
        build = time.perf_counter() - t0
        full = timed(lambda: (u @ c.T).argmax(1), reps)
        fast = timed(lambda: index.nearest(u), reps)
        agree = float((index.nearest(u) == (u @ c.T).argmax(1)).float().mean())
        rows.append({"bits": bits, "codewords": 2 ** bits, "resolution": index.resolution,
                     "candidatesPerDirection": index.width, "build_s": build, "fullSearch_ms": full,
                     "index_ms": fast, "speedup": full / fast, "sameIndex": agree})
    return rows


def summarize(runs: list) -> list:
    """Per codebook size: the index's speed-up over the full search in every run, its median, min and max, and the
    lowest fraction of directions given the same codeword as the full search."""
    rows = []
    for k, first in enumerate(runs[0]):
        speedups = [run[k]["speedup"] for run in runs]
        rows.append({"bits": first["bits"], "codewords": first["codewords"], "resolution": first["resolution"],
                     "candidatesPerDirection": first["candidatesPerDirection"], "speedups": speedups,
                     "speedupMedian": float(np.median(speedups)), "speedupMin": min(speedups),
                     "speedupMax": max(speedups), "sameIndexMin": min(run[k]["sameIndex"] for run in runs)})
    return rows


def model_rows(device: str, data_path: str, frames: int, reps: int) -> list:
    import openmmflash.gaq.codebook as codebook
    from openmmflash.integrators.training.data import loadDataset
    from openmmflash.integrators.network.modelfile import loadModel

    sys.path.insert(0, HERE)
    from bench_gaq import frame_inputs

    data = loadDataset(data_path)
    idx = np.arange(frames)
    rows = []
    for label, name, threshold in (("fp32", "water-tip3pfb-8fs", None),
                                   ("frame W4A8, full search", "water-tip3pfb-8fs-gaq-w4a8", 10 ** 9),
                                   ("frame W4A8, cube-map index", "water-tip3pfb-8fs-gaq-w4a8", None)):
        saved = codebook.INDEX_MIN_CODEWORDS
        if threshold is not None:
            codebook.INDEX_MIN_CODEWORDS = threshold
        try:
            model = loadModel(name).to(device, torch.float32).eval()
            types, x, src, dst, ev = frame_inputs(model, data, idx, device, torch.float32)
            inputs = (types, x.float(), src, dst, ev.float())
            with torch.no_grad():
                ms = timed(lambda: model.network(*inputs), reps)
        finally:
            codebook.INDEX_MIN_CODEWORDS = saved
        rows.append({"model": label, "file": name, "frames": frames, "atoms": int(frames * len(data["types"])),
                     "call_ms": ms})
    base = rows[0]["call_ms"]
    for row in rows:
        row["vs_fp32"] = row["call_ms"] / base
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--directions", type=int, default=200_000)
    p.add_argument("--data", default=os.path.join(HERE, "..", "..", ".flashmd_data", "water_8fs.npz"))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--runs", type=int, default=5, help="repetitions of the whole search timing (spread over runs)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
              "cpu": platform.processor() or platform.machine(), "threads": args.threads,
              "torch": torch.__version__, "python": platform.python_version(),
              "note": "CPU wall times on a shared 2-core machine: compare within this run (ratios), not across runs",
              "runs": [search_rows(args.device, args.directions, args.reps)
                       for _ in tqdm(range(args.runs), desc="search runs", disable=None)]}
    result["search"] = summarize(result["runs"])
    print(f"{'bits':>4} {'K':>6} {'cand':>5} {'speed-up median':>16} {'min':>6} {'max':>6} {'same':>8}")
    for r in result["search"]:
        print(f"{r['bits']:4d} {r['codewords']:6d} {r['candidatesPerDirection']:5d} {r['speedupMedian']:16.1f} "
              f"{r['speedupMin']:6.1f} {r['speedupMax']:6.1f} {r['sameIndexMin']:8.5f}")
    if os.path.exists(args.data):
        result["modelCall"] = model_rows(args.device, args.data, args.frames, args.reps)
        for r in result["modelCall"]:
            print(f"{r['model']:28s} {r['call_ms']:9.1f} ms  {r['vs_fp32']:5.2f}x fp32")
    else:
        print(f"no training pairs at {args.data}: model-call timings skipped")
    sys.path.insert(0, HERE)
    from benchprovenance import provenance

    result["provenance"] = provenance()
    out = os.path.join(HERE, "results", f"gaq_codebook_search_{args.device.split(':')[0]}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
