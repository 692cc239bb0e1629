"""Potential energy per replica for the per-replica FlashMD guard, and the fallback substeps of some replicas only.

A System of B identical, contiguous, non-interacting replicas of n particles (``openmmflash.plugin.replicas``) has
V(q) = sum_b V_b(q_b). :class:`ReplicaEnergy` holds V_b as one PyTorch function of any number k of replicas'
positions, so the guard checks every replica's learned stride against its own energy (one batched call for all B),
and a rejected replica is advanced with velocity-Verlet substeps of -dV_b/dq_b alone: the fallback costs k / B of a
whole-System fallback. Units: nm, nm/ps, amu, kJ/mol; arrays float64.
"""

from typing import Callable, Tuple

import numpy as np
import torch
from torch import Tensor


class ReplicaEnergy:
    """V_b of B replicas of n particles as a differentiable PyTorch function.

    Parameters
    ----------
    fn : (x [k, n, 3] float64 nm on ``device``, any 1 <= k <= replicas) -> [k] kJ/mol; the energy of each replica,
        the same function for every replica (identical copies)
    replicas : B;  numParticles : n per replica;  device : torch device of ``fn``
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], replicas: int, numParticles: int, device):
        self.fn = fn
        self.replicas = int(replicas)
        self.n = int(numParticles)
        self.device = torch.device(device)

    @torch.no_grad()
    def energies(self, q: np.ndarray) -> np.ndarray:
        """V_b [B] kJ/mol at positions q [B n, 3] nm."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.replicas * self.n, 3):
            raise ValueError(f"positions must have shape ({self.replicas * self.n}, 3), got {q.shape}")
        x = torch.from_numpy(q).to(self.device).view(self.replicas, self.n, 3)
        return self.fn(x).to(torch.float64).reshape(self.replicas).cpu().numpy()

    def forces(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(V_b [k], f = -dV_b/dq [k, n, 3] kJ/mol/nm) at x [k, n, 3] nm float64 on the device."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = self.fn(x).to(torch.float64)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), -g.detach()

    def substeps(self, q: np.ndarray, v: np.ndarray, masses: np.ndarray, h: float, count: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` velocity-Verlet substeps of length h ps of k replicas alone: q, v [k, n, 3], masses [n] ->
        (q', v' [k, n, 3], V_b(q') [k])."""
        f64 = dict(dtype=torch.float64, device=self.device)
        x = torch.as_tensor(np.asarray(q), **f64)
        u = torch.as_tensor(np.asarray(v), **f64)
        m = torch.as_tensor(np.asarray(masses), **f64).view(1, -1, 1)
        e, f = self.forces(x)
        for _ in range(int(count)):
            u = u + 0.5 * h * f / m
            x = x + h * u
            e, f = self.forces(x)
            u = u + 0.5 * h * f / m
        return x.cpu().numpy(), u.cpu().numpy(), e.cpu().numpy()
