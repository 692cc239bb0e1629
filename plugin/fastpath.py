"""The CUDA fast path of a CG FlashSchNet force, chosen in one place: fused Triton kernels (float32), a padded
fixed-capacity neighbor list and CUDA graphs. Elsewhere the model runs as it is."""

import copy

import numpy as np
import torch

from openmmflash.neighbors import build_neighbor_list
from openmmflash.schnet.config import FILTER_PRECISIONS

NEIGHBOR_HEADROOM = 1.6  # padded neighbor-list capacity / pairs of the native structure (CUDA fast path)


def neighborCapacity(model, positions, replicas: int, headroom: float = NEIGHBOR_HEADROOM) -> int:
    """Padded neighbor-list length for ``replicas`` copies of a CG protein: ``headroom`` times the directed pairs
    within the model's cutoff in ``positions`` (n, 3) nm (a compact native structure has about the most)."""
    x = torch.as_tensor(np.asarray(positions, dtype=np.float64) * model.config.lengthScale)
    pairs = int(build_neighbor_list(x, 1, float(model.config.cutoff), None, 0)[3])
    return int(np.ceil(headroom * max(pairs, 1) * replicas)) + 64


# CUDA graphs are on: openmm-torch 1.5 keeps the outputs of the graph captured last (one graph per includeForces),
# which ran CG MD on stale forces after any energy-only evaluation (2 140-2 910 K in a 300 K bath on an H100,
# examples/benchmarks/results/cg_fastpath_temperature.json) until the force module returned the same output buffers
# from every graph (plugin/forcemodule.py, outputBuffers; 293 K in results/torchforce_graphs_check.json).
FAST_PATH = {"backend": "flash", "padded": True, "useCUDAGraphs": True, "filterPrecision": "fp32"}


def fastPathOptions(model, positions, replicas: int, platformName: str, fastPath=True) -> tuple:
    """(model, force options) of the fast path on CUDA: by default (``fastPath=True``, ``FAST_PATH``) the fused
    Triton kernels (backend "flash", float32), a padded fixed-capacity neighbor list and CUDA graphs; a dict with
    the keys of ``FAST_PATH`` picks parts (``{"useCUDAGraphs": False}`` drops the graphs, ``{"filterPrecision":
    "w16a16"}`` runs the filter MLPs with fp16 per-channel-scaled weights and activations). Elsewhere, or with
    ``fastPath=False``, the model as it is with an exact neighbor list and no graphs."""
    if platformName != "CUDA" or not fastPath:
        return model, {}
    choice = dict(FAST_PATH, **(fastPath if isinstance(fastPath, dict) else {}))
    unknown = sorted(set(choice) - set(FAST_PATH))
    if unknown:
        raise ValueError(f"unknown fast-path keys {unknown}; known: {sorted(FAST_PATH)}")
    fast = copy.deepcopy(model)
    fast.backend = choice["backend"]
    if choice["filterPrecision"] not in FILTER_PRECISIONS:
        raise ValueError(f"unknown filterPrecision {choice['filterPrecision']!r}; choose one of "
                         f"{list(FILTER_PRECISIONS)}")
    fast.filter_precision = choice["filterPrecision"]
    padded = choice["padded"] or choice["useCUDAGraphs"]  # CUDA graphs need static shapes
    return fast, {"precision": "single", "useCUDAGraphs": bool(choice["useCUDAGraphs"]),
                  "neighborCapacity": neighborCapacity(model, positions, replicas) if padded else 0}
