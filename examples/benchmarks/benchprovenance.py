"""The ``provenance`` object every benchmark results file carries (see docs/benchmarks.md).

    from benchprovenance import provenance
    result["provenance"] = provenance()

Keys: gpu, driver, torch, triton, openmm, command, commit, date (UTC, ISO 8601), plus platform, cpu, python and
``notRecorded`` (the keys that could not be determined here, set to None). Without CUDA, gpu and driver are
``NO_GPU`` ("none (CPU run)"): the run had no GPU, which is recorded, not missing. ``commit`` is ``git rev-parse HEAD`` of
the checkout the script runs from (``BENCH_COMMIT`` overrides it, for copies without git); ``dirty`` says whether
tracked files outside ``examples/benchmarks/results`` differed from that commit.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys

import torch  # noqa: F401  (import torch before openmm)

KEYS = ("gpu", "driver", "torch", "triton", "openmm", "command", "commit", "date")
NO_GPU = "none (CPU run)"
HERE = os.path.dirname(os.path.abspath(__file__))


def _run(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, cwd=HERE, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpuModel() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _differs_from(commit):
    """Whether tracked files outside the results folder differ from ``commit`` (None where git or the commit is not
    there). Results files are this folder's outputs: a run that follows another is not "dirty" for the first one's
    file. Compared with ``commit`` itself, not HEAD: a copy run under ``BENCH_COMMIT`` may hold another HEAD."""
    if not commit:
        return None
    try:
        out = subprocess.run(["git", "diff", "--quiet", commit, "--", ":(top)",
                              ":(top,exclude)examples/benchmarks/results"], capture_output=True, cwd=HERE, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: False, 1: True}.get(out.returncode)


def provenance(argv=None):
    """Provenance of the running benchmark; the command is ``argv`` (default ``sys.argv``) as run."""
    argv = sys.argv if argv is None else argv
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        driver = driver.splitlines()[0] if driver else None
    else:
        gpu = driver = NO_GPU
    try:
        import openmm

        openmm_version = openmm.__version__
    except ImportError:
        openmm_version = None
    commit = os.environ.get("BENCH_COMMIT") or _run(["git", "rev-parse", "HEAD"])
    dirty = _differs_from(commit)
    out = {
        "gpu": gpu,
        "driver": driver,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "openmm": openmm_version,
        "command": " ".join(["python"] + [os.path.relpath(argv[0]) if argv else ""] + list(argv[1:])),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dirty": dirty,
        "platform": platform.platform(),
        "cpu": cpuModel(),
        "python": platform.python_version(),
    }
    out["notRecorded"] = [k for k in KEYS if out[k] is None]
    return out


def storeRun(path: str, run: str, result: dict, description: str) -> None:
    """Write ``result`` (with its ``provenance``) as run ``run`` of the multi-run results file ``path``: one file per
    benchmark, ``{"benchmark", "description", "provenance", "runs": [{"run", "provenance", "result"}]}``. A stored
    run of the same name is replaced, the others are kept; the top-level provenance merges the runs' (a key whose
    runs differ holds the list of their values)."""
    stored = _load(path)
    body = {k: v for k, v in result.items() if k != "provenance"}
    runs = [r for r in stored.get("runs", []) if r.get("run") != run]
    runs.append({"run": run, "provenance": result["provenance"], "result": body})
    merged = {}
    for key in runs[0]["provenance"]:
        values = [r["provenance"].get(key) for r in runs]
        merged[key] = values[0] if all(v == values[0] for v in values) else values
    merged["notRecorded"] = sorted({k for r in runs for k in r["provenance"].get("notRecorded", [])})
    _write(path, {"benchmark": os.path.splitext(os.path.basename(path))[0], "description": description,
                  "provenance": merged, "runs": runs})


def storeSection(path: str, key: str, value) -> None:
    """Set ``key`` of the results file ``path`` (a JSON object; created if missing) to ``value``, keeping the rest:
    for a benchmark whose results are one section of another benchmark's file."""
    stored = _load(path)
    stored[key] = value
    _write(path, stored)


def _load(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write(path: str, obj) -> None:
    """Write JSON through a temporary file, so that an interrupted run never leaves half a results file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
