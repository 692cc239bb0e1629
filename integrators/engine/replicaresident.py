"""Device-resident FlashMD strides with the guard and the fallback per replica (B replicas of n particles).

As residentloop.py, but every replica b has its own energy V_b (replicaenergy.ReplicaEnergy), its own guard and its
own outcome:

    learned:  v <- O(v, xi0);  H_b = V_b(q_b) + K_b(v_b);  (q', p') = network(q, m v);  V_b' = V_b(q_b')
              ok_b = finite_b & max_{i in b} |q'_i - q_i| <= dmax & H_b - V_b' > 0 & 1/r <= alpha_b <= r
              ok_b:  (q_b, v_b, V_b) <- (q_b', O(alpha_b v_b', xi1), V_b')     else: (q_b, O(v_b, xi0), V_b)
              all ok: v <- v - v_com
    fallback: n_sub velocity-Verlet substeps of every replica (fixed shapes: a CUDA graph), f = -dV_b/dq_b; the
              rejected replicas take the result and O(v, xi1), the accepted ones keep their learned state;
              v <- v - v_com

The fallback integrates all B replicas and keeps the rejected ones' results: it costs as much as a whole-System
fallback (one batched force call per substep), while the accepted replicas keep their learned stride. Units: nm,
nm/ps, amu, kJ/mol.
"""

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from openmmflash.integrators.engine.residentloop import ResidentLoop, counterNormal


class ReplicaResidentLoop(ResidentLoop):
    """A :class:`residentloop.ResidentLoop` guarding and falling back per replica.

    Parameters as ResidentLoop, plus ``replicaEnergy``: replicaenergy.ReplicaEnergy of the same replicas (its ``fn``
    (x [B, n, 3] float64 nm) -> [B] kJ/mol, differentiable); ``energy`` is still used to check the whole System
    against OpenMM. ``status`` holds one row (code, alpha, max displacement nm, H_b - V_b' kJ/mol) per replica.
    """

    def __init__(self, dense, energy, replicaEnergy, masses, stride: float, substeps: int, maxDisplacement: float,
                 maxRescale: float, removeCOM: bool, useCUDAGraph: bool = True, compile: bool = False):
        self.replicaFn = replicaEnergy.fn
        self.B = int(dense.replicas)
        super().__init__(dense, energy, masses, stride, substeps, maxDisplacement, maxRescale, removeCOM,
                         useCUDAGraph, compile)
        f64 = dict(dtype=torch.float64, device=self.q.device)
        self.n = self.N // self.B
        self.V = torch.zeros(self.B, **f64)
        self.status = torch.zeros(self.B, 4, **f64)
        self.fallbackFinite = torch.ones((), dtype=torch.bool, device=self.q.device)

    def _compile(self) -> None:
        super()._compile()  # the learned stride (this class's) and the whole energy (checkAgainst)
        self._replicaGrad = torch.compile(self.replicaFn, dynamic=False) if self.compiled else self.replicaFn

    def _perParticle(self, x: Tensor) -> Tensor:
        """[B] -> [N, 1], each replica's value on its particles."""
        return x[:, None].expand(self.B, self.n).reshape(self.N, 1)

    def replicaForces(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        """(V_b [B], f = -dV_b/dq [N, 3]) at q [N, 3] nm, float64."""
        with torch.enable_grad():
            x = q.detach().requires_grad_(True)
            e = self._replicaGrad(x.view(self.B, self.n, 3)).to(torch.float64)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), -g.detach()

    @torch.no_grad()
    def _learnedMath(self, q: Tensor, v: Tensor, V: Tensor, counter: Tensor) -> Tuple[Tensor, ...]:
        B, n, m = self.B, self.n, self.m
        z0 = self._noise(counter, 0)
        z1 = self._noise(counter, 1)
        vh = self._half(v, z0)
        mb = m.view(B, n, 1)
        H = V + 0.5 * (mb * vh.view(B, n, 3) ** 2).sum((1, 2))
        q1, p1 = self.dense.update(q.view(self.dense.q.shape), (m * vh).view(self.dense.q.shape))
        q1, v1 = q1.reshape(self.N, 3), p1.reshape(self.N, 3) / m
        finite_q = torch.isfinite(q1).view(B, -1).all(1)
        V1 = self.replicaFn(torch.where(self._perParticle(finite_q), q1, q).view(B, n, 3)).to(torch.float64)
        K1 = 0.5 * (mb * v1.view(B, n, 3) ** 2).sum((1, 2))
        disp = torch.sqrt(((q1 - q) ** 2).sum(-1).view(B, n).max(1).values)
        E = H - V1
        alpha = torch.sqrt(torch.clamp(E, min=0.0) / K1)
        finite = finite_q & torch.isfinite(v1).view(B, -1).all(1) & torch.isfinite(V1) & (K1 > 0)
        fails = torch.stack([~finite, disp > self.maxDisplacement, ~(E > 0), alpha < 1.0 / self.maxRescale,
                             alpha > self.maxRescale])  # [len(CODES), B]
        ok = ~fails.any(0)
        code = torch.where(ok, 0, fails.to(torch.int64).argmax(0) + 1)
        okp = self._perParticle(ok)
        mixed = torch.where(okp, self._half(self._perParticle(alpha) * v1, z1), vh)
        v_out = torch.where(ok.all(), self._atRest(mixed), mixed)
        return (torch.where(okp, q1, q), v_out, torch.where(ok, V1, V), z1,
                torch.stack([code.to(torch.float64), alpha, disp, E], 1))

    def _noise(self, counter: Tensor, stream: int) -> Tensor:
        return counterNormal(self.seed, counter, stream, self.index).view(self.N, 3)

    def _fallback(self) -> None:
        h = self.stride / self.substeps
        q, v = self.q.clone(), self.v.clone()
        V, f = self.replicaForces(q)
        for _ in range(self.substeps):
            v = v + 0.5 * h * f / self.m
            q = q + h * v
            V, f = self.replicaForces(q)
            v = v + 0.5 * h * f / self.m
        with torch.no_grad():
            rejected = self.status[:, 0] != 0
            rp = self._perParticle(rejected)
            self.fallbackFinite.copy_((torch.isfinite(q).view(self.B, -1).all(1) & torch.isfinite(v).view(
                self.B, -1).all(1) & torch.isfinite(V) | ~rejected).all())
            self.q.copy_(torch.where(rp, q, self.q))
            self.v.copy_(self._atRest(torch.where(rp, self._half(v, self.z1), self.v)))
            self.V.copy_(torch.where(rejected, V, self.V))

    def load(self, q: np.ndarray, v: np.ndarray, counter: int, seed: int) -> None:
        super().load(q, v, counter, seed)
        with torch.no_grad():
            self.V.copy_(self.replicaFn(self.q.view(self.B, self.n, 3)).to(torch.float64))

    def learnedStride(self) -> np.ndarray:
        """One learned stride of every replica: status [B, 4] (code, alpha, max displacement nm, H_b - V_b');
        code 0: accepted, else 1 + index in CODES (that replica then holds O(v) for :meth:`fallbackStride`)."""
        if self.graphs is not None:
            self.graphs[0].replay()
        else:
            self._learned()
        return self.status.cpu().numpy()

    def fallbackStride(self) -> None:
        """Advance the rejected replicas with velocity-Verlet substeps; RuntimeError if their result is not
        finite."""
        if self.graphs is not None:
            self.graphs[1].replay()
        else:
            self._fallback()
        if not bool(self.fallbackFinite):
            raise RuntimeError(f"the {self.substeps} velocity-Verlet substeps of rejected FlashMD replicas gave "
                               "non-finite positions or energy (their forces blew up); the Context keeps the state "
                               "from before this step() call")
