"""A fixed-shape FlashMD step for B replicas of a small non-periodic molecule, replayed as one CUDA graph.

The general stepper (stepper.py) builds a neighbor list every call, whose length changes from step to step, so each
call launches a few hundred small kernels from Python. For a molecule of n particles without a box (a CG protein,
n ~ 50) every ordered pair inside a replica can be an edge instead: B n (n - 1) edges of fixed shape. Edges beyond
the network's cutoff carry a cosine-cutoff weight of exactly 0 (painn.cosine_cutoff), so the messages, and hence the
result, equal those of the neighbor-list step (up to float summation order). With fixed shapes the whole step (edge
vectors, rotation, network, unscaling, centre-of-mass constraints and, optionally, the PyTorch part of the
rescale's energy at q', energyeval.TorchEnergy) is captured once as a CUDA graph and replayed.

Math (as FlashMDStepper.step): e_ij = R (r_i - r_j), x = R p / sqrt(m) / s;  (a, b) = network;
dq = R^T a stride s / sqrt(m), p' = R^T b s sqrt(m); then the total momentum of each replica is kept and its centre
of mass moves by P / M stride. R is the rotation (identity when none).
"""

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from openmmflash.integrators.engine.stepper import FlashMDStepper


def captureGraph(compute, warmup: int):
    """Run ``compute()`` ``warmup`` times on a side stream (allocator and autotuning settle), then capture one call:
    returns (torch.cuda.CUDAGraph, the captured call's outputs, which every replay overwrites)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            compute()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compute()
    return graph, out


def denseEdges(replicas: int, n: int, device=None) -> Tuple[Tensor, Tensor]:
    """All ordered pairs (src, dst), src != dst, inside each of ``replicas`` blocks of n particles: [B n (n-1)] each."""
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    src, dst = i[keep], j[keep]
    offset = (torch.arange(replicas) * n).view(-1, 1)
    return (src.view(1, -1) + offset).reshape(-1).to(device), (dst.view(1, -1) + offset).reshape(-1).to(device)


class DenseReplicaStep:
    """Callable (q [B, n, 3] nm, p [B, n, 3] amu nm/ps, R [3, 3] or None) -> (q', p' as float64 numpy arrays,
    E(q') kJ/mol or None).

    Parameters
    ----------
    stepper : FlashMDStepper for the n particles of one replica (its model, masses, types, stride and device)
    replicas : B
    useCUDAGraph : capture the step as a CUDA graph (only on a CUDA device; otherwise it runs eagerly)
    energy : optional energyeval.TorchEnergy of all B n particles, evaluated at q' inside the same graph (the
        part of the rescale's V(q') computed in PyTorch); None: the third output is None
    """

    def __init__(self, stepper: FlashMDStepper, replicas: int, useCUDAGraph: bool = True, energy=None):
        self.stepper = stepper
        self.replicas = int(replicas)
        self.energy = energy
        dev = stepper.device
        n = stepper.masses.shape[0]
        self.n = n
        self.src, self.dst = denseEdges(self.replicas, n, dev)
        m = stepper.masses.to(dev, torch.float64)
        self.sqrt_m = torch.sqrt(m).repeat(self.replicas).unsqueeze(-1)   # [B n, 1]
        self.type_idx = stepper.type_idx.repeat(self.replicas)
        self.q = torch.zeros(self.replicas, n, 3, dtype=torch.float64, device=dev)
        self.p = torch.zeros_like(self.q)
        self.R = torch.eye(3, dtype=torch.float64, device=dev)
        self.graph = None
        if useCUDAGraph and dev.type == "cuda":
            try:
                self._capture()
            except RuntimeError as err:  # capture unsupported here: same step, eager
                import logging
                logging.getLogger("openmmflash.flashmd").warning("CUDA graph capture of the FlashMD step failed "
                                                                 "(%s); running it eagerly", err)
                self.graph = None

    @torch.no_grad()
    def update(self, q: Tensor, p: Tensor) -> Tuple[Tensor, Tensor]:
        """(q', p') [B, n, 3] float64 from (q, p) [B, n, 3] float64 on the device, in the frame of the rotation
        buffer R; a pure function of its arguments (no buffer is written)."""
        B, n = self.replicas, self.n
        flat = q.reshape(B * n, 3)
        edge_vec = (flat[self.src] - flat[self.dst]) @ self.R.T
        pin = p.reshape(B * n, 3) @ self.R.T
        dq, p1 = self.stepper.learnedUpdate(p, pin, self.type_idx, self.sqrt_m, self.src, self.dst, edge_vec, self.R)
        return q + dq, p1

    @torch.no_grad()
    def _compute(self) -> Tuple[Tensor, Tensor, Tensor]:
        B, n = self.replicas, self.n
        q1, p1 = self.update(self.q, self.p)
        e = (self.energy.tensor(q1.reshape(B * n, 3)) if self.energy is not None
             else torch.zeros((), dtype=torch.float64, device=q1.device))
        return q1, p1, e

    def _capture(self) -> None:
        self.graph, (self.out_q, self.out_p, self.out_e) = captureGraph(self._compute, warmup=3)

    def __call__(self, q, p, rotation: Optional[Tensor] = None) -> Tuple[np.ndarray, np.ndarray, Optional[float]]:
        self.q.copy_(torch.as_tensor(np.asarray(q, dtype=np.float64)).view(self.replicas, self.n, 3))
        self.p.copy_(torch.as_tensor(np.asarray(p, dtype=np.float64)).view(self.replicas, self.n, 3))
        if rotation is not None:
            self.R.copy_(rotation.to(torch.float64))
        else:
            self.R.copy_(torch.eye(3, dtype=torch.float64))
        if self.graph is not None:
            self.graph.replay()
            q1, p1, e = self.out_q, self.out_p, self.out_e
        else:
            q1, p1, e = self._compute()
        self.stepper.numCalls += 1
        # one device -> host copy for all outputs
        flat = torch.cat([q1.reshape(-1), p1.reshape(-1), e.reshape(1)]).cpu().numpy()
        k = q1.numel()
        energy = float(flat[-1]) if self.energy is not None else None
        return flat[:k].reshape(q1.shape), flat[k:2 * k].reshape(q1.shape), energy
