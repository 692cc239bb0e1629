"""A fixed-shape FlashMD step for periodic systems (or any system), replayed as one CUDA graph.

The general stepper (stepper.py) builds an exact neighbor list every call, whose length changes from step to step,
so each call launches a few hundred small kernels from Python (launch-bound for a few hundred atoms). Here the
neighbor list is the padded one (openmmflash.neighbors, ``capacity`` > 0): a fixed number of slots, the unused
ones marked src = dst = -1, built without a host synchronization. Every shape is then fixed and the whole step
(neighbor search with the minimum image, rotation, network, unscaling, centre-of-mass constraints) is captured
once as a CUDA graph and replayed; one host -> device copy brings (q, p, box, R) in, one device -> host copy takes
(q', p', pair count) out.

Padded slots: src and dst are mapped to particle 0 and their edge vector is set to e = (2 r_c, 0, 0), longer than
the cutoff r_c. The cosine cutoff is then exactly 0 (painn.cosine_cutoff), so every message of a padded slot is
exactly 0 and adding it to particle 0 changes nothing: the result equals the exact-list step up to float summation
order (the real pairs come first, in the same CSR order as the exact list).

Math (as FlashMDStepper.step), per replica, with R the rotation (identity when none) and s the momentum scale:
    pairs (j -> i) with |r_j - r_i + shift| < r_c (minimum image in the box);  e_ij = R (r_j - r_i + shift)
    x = R p / sqrt(m) / s;  (a, b) = x + network(types, x, e)
    dq = R^T a stride s / sqrt(m),  p' = R^T b s sqrt(m)
    p' <- p' - m / M (sum p' - P),  dq <- dq - sum(m dq) / M + P / M stride   (P = sum p, M = sum m)
    q' = q + dq.

Capacity: the first configuration's pair count times ``margin`` (1.3), unless given. After every call the true
pair count comes back with the outputs; if it exceeds the capacity, the capacity grows to count x margin, the
graph is captured again and the same stride is recomputed, so pairs are never dropped. The box is a buffer: a
barostat's new box is just copied in (checked on the host against the cutoff with neighbors.check_box first).

Measured (H100, 387-atom water, examples/benchmarks/results/flashmd_water_speed_gpu.json): one learned step with
host arrays in and out 3.57 ms eager -> 1.33 ms replayed (fp32), 12.97 -> 2.43 ms (GAQ W4A8).

Caution: cost and memory are O(B N^2) for the neighbor search (fine for a few thousand atoms per replica). Graph
and eager results differ by float summation order only; a quantized (GAQ) model turns that into visible output
differences (rounding flips: ~2.5 % RMS of the displacement for the shipped W4A8 water model, the same as permuting
the atoms on the CPU), so compare quantized runs statistically, not bit for bit.
"""

import logging
import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from openmmflash.neighbors import build_neighbor_list, check_box

from openmmflash.integrators.engine.densestep import captureGraph
from openmmflash.integrators.engine.stepper import FlashMDStepper

logger = logging.getLogger("openmmflash.flashmd")


class PaddedReplicaStep:
    """Callable (q [B, N, 3] nm, p [B, N, 3] amu nm/ps, box [3, 3] nm or None, R [3, 3] or None) -> (q', p') as
    float64 numpy arrays, with a padded neighbor list.

    Parameters
    ----------
    stepper : FlashMDStepper for the N particles of one replica (its model, masses, types, stride and device)
    replicas : B
    periodic : whether a box is given on every call (minimum image) or never
    useCUDAGraph : capture the step as a CUDA graph (only on a CUDA device; otherwise, or if the capture fails,
        the same padded step runs eagerly, with a logged warning in the latter case)
    capacity : initial number of pair slots (None: the first configuration's pair count x ``margin``)
    margin : growth factor of the capacity over the pair count
    """

    def __init__(self, stepper: FlashMDStepper, replicas: int, periodic: bool = True, useCUDAGraph: bool = True,
                 capacity: Optional[int] = None, margin: float = 1.3):
        if margin < 1.0:
            raise ValueError(f"margin must be >= 1, got {margin}")
        self.stepper = stepper
        self.replicas = B = int(replicas)
        self.n = n = stepper.masses.shape[0]
        self.periodic = bool(periodic)
        self.margin = float(margin)
        self.capacity = None if capacity is None else max(1, int(capacity))
        self.cutoff = float(stepper.model.cutoff)
        dev = stepper.device
        self.useCUDAGraph = bool(useCUDAGraph) and dev.type == "cuda"
        self.sqrt_m = torch.sqrt(stepper.masses.to(dev, torch.float64)).repeat(B).unsqueeze(-1)   # [B N, 1]
        self.type_idx = stepper.type_idx.repeat(B)
        # One input buffer (q, p, box, R), filled by one copy; the staging buffer on the host is pinned on CUDA.
        size = 2 * B * n * 3 + 18
        self._input = torch.zeros(size, dtype=torch.float64, device=dev)
        self._staging = torch.zeros(size, dtype=torch.float64, pin_memory=dev.type == "cuda")
        self._staged = self._staging.numpy()
        self.q = self._input[:B * n * 3].view(B, n, 3)
        self.p = self._input[B * n * 3:2 * B * n * 3].view(B, n, 3)
        self.box = self._input[2 * B * n * 3:2 * B * n * 3 + 9].view(3, 3)
        self.R = self._input[2 * B * n * 3 + 9:].view(3, 3)
        self.far = torch.tensor([2.0 * self.cutoff, 0.0, 0.0], dtype=torch.float64, device=dev)
        self.graph = None
        self.captureFailed = False
        self.numCaptures = 0
        self.numOverflows = 0

    # ------------------------------------------------------------------------------------------------- math
    @torch.no_grad()
    def _compute(self) -> Tensor:
        """The step on the input buffers -> flat [2 B N 3 + 1] float64: q', p', then the true pair count."""
        st = self.stepper
        B, n = self.replicas, self.n
        flat = self.q.reshape(B * n, 3)
        src, dst, shifts, count = build_neighbor_list(flat, B, self.cutoff, self.box if self.periodic else None,
                                                      self.capacity)
        valid = (src >= 0).unsqueeze(-1)
        src, dst = src.clamp(min=0), dst.clamp(min=0)
        edge_vec = torch.where(valid, (flat[src] - flat[dst] + shifts) @ self.R.T, self.far)
        pin = self.p.reshape(B * n, 3) @ self.R.T
        dq, p1 = st.learnedUpdate(self.p, pin, self.type_idx, self.sqrt_m, src, dst, edge_vec, self.R)
        return torch.cat([(self.q + dq).reshape(-1), p1.reshape(-1), count.to(torch.float64).reshape(1)])

    def _capture(self) -> None:
        self.graph = None
        self.graph, self._output = captureGraph(self._compute, warmup=2)
        self.numCaptures += 1

    def _run(self) -> Tensor:
        """One evaluation on the current buffers, replayed from the graph when there is one."""
        if self.useCUDAGraph and self.graph is None and not self.captureFailed:
            try:
                self._capture()
            except Exception as err:  # e.g. a host synchronization inside a model: same step, eagerly
                self.captureFailed = True
                self.graph = None
                torch.cuda.synchronize()
                logger.warning("CUDA graph capture of the periodic FlashMD step failed (%s); running it eagerly",
                               str(err).splitlines()[0] if str(err) else type(err).__name__)
        if self.graph is not None:
            self.graph.replay()
            return self._output.cpu()
        return self._compute().cpu()

    def initialCapacity(self) -> int:
        """Pair count of the configuration in the buffers x margin (one exact neighbor search)."""
        B, n = self.replicas, self.n
        _, _, _, count = build_neighbor_list(self.q.reshape(B * n, 3), B, self.cutoff,
                                             self.box if self.periodic else None, 1)
        return max(16, int(math.ceil(int(count) * self.margin)))

    # ------------------------------------------------------------------------------------------------- call
    def __call__(self, q, p, box=None, rotation: Optional[Tensor] = None) -> Tuple[np.ndarray, np.ndarray]:
        B, n = self.replicas, self.n
        k = B * n * 3
        s = self._staged
        s[:k] = np.asarray(q, dtype=np.float64).reshape(-1)
        s[k:2 * k] = np.asarray(p, dtype=np.float64).reshape(-1)
        if self.periodic:
            if box is None:
                raise ValueError("this FlashMD step was set up for a periodic system: pass the box vectors")
            box = np.asarray(box, dtype=np.float64).reshape(3, 3)
            check_box(torch.from_numpy(box), self.cutoff)
            s[2 * k:2 * k + 9] = box.reshape(-1)
        s[2 * k + 9:] = (np.eye(3) if rotation is None else
                         rotation.detach().to("cpu", torch.float64).numpy()).reshape(-1)
        self._input.copy_(self._staging, non_blocking=True)
        if self.capacity is None:
            self.capacity = self.initialCapacity()
        out = self._run()
        count = int(out[-1])
        if count > self.capacity:  # overflow: grow, re-capture, redo this stride (never drop pairs)
            self.numOverflows += 1
            logger.info("FlashMD neighbor list: %d pairs for %d slots; capacity -> %d", count, self.capacity,
                        int(math.ceil(count * self.margin)))
            self.capacity = int(math.ceil(count * self.margin))
            self.graph = None
            out = self._run()
            count = int(out[-1])
            if count > self.capacity:  # pragma: no cover - the inputs did not change, so neither did the count
                raise RuntimeError(f"neighbor list overflow after growing the capacity ({count} > {self.capacity})")
        self.numPairs = count
        self.stepper.numCalls += 1
        both = out[:-1].numpy().reshape(2, B, n, 3)
        return both[0], both[1]
