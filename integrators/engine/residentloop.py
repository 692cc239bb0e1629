"""Device-resident FlashMD strides: every stride of one ``step(n)`` call runs on the network's device, fallbacks
included, and OpenMM is touched once per call instead of several times per stride.

Needs the whole System's potential energy V(q) as a PyTorch function (``setEnergyEvaluator(set(), TorchEnergy)``,
e.g. ``flashmdcg.flashSchNetEnergyEvaluator(..., priors="torch")``); the fallback's forces are -dV/dq. Before its
first stride the loop checks V and -dV/dq against OpenMM's energy and forces at the Context's state and refuses to
run if they differ. Per stride, one replay of the learned graph and, only for a rejected stride, one of the fallback
graph (eager on a CPU):

    learned:  v <- O(v, xi0);  H = V(q) + K(v);  (q', p') = network(q, m v);  v' = p' / m;  V' = V(q')
              ok = finite & max_i |q'_i - q_i| <= dmax & H - V' > 0 & 1/r <= alpha <= r,  alpha = sqrt((H - V') / K')
              ok:  (q, v, V) <- (q', O(alpha v', xi1) - v_com, V')        else: (q, O(v, xi0), V) for the fallback
    fallback: n_sub velocity-Verlet substeps, h = stride / n_sub, f = -dV/dq;  then v <- O(v, xi1) - v_com

With B replicas this loop guards and falls back on the whole System (one rejected replica sends all replicas to the
fallback substeps); replicaresident.ReplicaResidentLoop does both per replica.

O is the exact Ornstein-Uhlenbeck half step v <- a v + sqrt((1 - a^2) kT / m) xi, a = exp(-gamma stride / 2) (the
identity for NVE); v_com is removed when the System has a CMMotionRemover. The noise xi is counter-based (a
lowbias32 hash of seed, stride counter, half step and index; Box-Muller), so a run continued from a checkpoint (the
counter is the integrator's flashmdDraws) draws the same noise, on any device. Units: nm, nm/ps, amu, kJ/mol.
"""

import math
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from openmmflash.integrators.engine.densestep import DenseReplicaStep, captureGraph
from openmmflash.integrators.rescale.guard import REJECTION_KINDS, displacementReason, energyAboveReason, rescaleReason
from openmmflash.integrators.rescale.species import KB

M32 = 0xFFFFFFFF
# status codes of the learned graph: 0 accepted, else 1 + index in this tuple
CODES = ("nonFinite", "displacement", "energyAbove", "rescaleLow", "rescaleHigh")
assert set(CODES) <= set(REJECTION_KINDS)


def rejectionReason(code: int, alpha: float, disp: float, E: float, maxDisplacement: float,
                    maxRescale: float) -> str:
    """The guard's wording (guard.py) of a learned stride rejected with status ``code`` (1 + index in CODES)."""
    kind = CODES[code - 1]
    if kind == "nonFinite":
        return "non-finite prediction or energy"
    if kind == "displacement":
        return displacementReason(disp, maxDisplacement)
    if kind == "energyAbove":
        return energyAboveReason(E)
    return rescaleReason(alpha, maxRescale)


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x c) mod 2^32 for int64 0 <= x < 2^32 and 0 <= c < 2^32, in 16-bit halves so nothing overflows int64."""
    return (((((x >> 16) * c) & 0xFFFF) << 16) + (x & 0xFFFF) * c) & M32


def lowbias32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with full avalanche (C. Wellons' lowbias32) on int64 tensors holding 0 <= x < 2^32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counterNormal(seed: Tensor, counter: Tensor, stream: int, index: Tensor) -> Tensor:
    """Standard normal numbers [len(index) // 2], float64, determined by (seed, counter, stream) (int64 0-d tensors
    and an int) and ``index`` = arange(2 k) on the device: two hashed uniforms per number, Box-Muller."""
    key = lowbias32(lowbias32(lowbias32(seed & M32) ^ (counter & M32)) ^ stream)
    h = lowbias32(lowbias32(index ^ key) ^ lowbias32(key ^ 0x5BD1E995))
    u = (h.to(torch.float64) + 0.5) * 2.0 ** -32
    k = index.shape[0] // 2
    return torch.sqrt(-2.0 * torch.log(u[:k])) * torch.cos(2.0 * math.pi * u[k:])


class ResidentLoop:
    """The strides of a FlashMD integrator on its device.

    Parameters
    ----------
    dense : DenseReplicaStep of the integrator's stepper (its network, masses and replicas), without an energy
    energy : energyeval.TorchEnergy of the whole System's potential energy; its ``fn`` (q [N, 3] float64 nm on the
        device) -> 0-d kJ/mol must be differentiable
    masses : [N] amu;  stride : ps;  substeps : velocity-Verlet substeps of a fallback
    maxDisplacement : nm;  maxRescale : r > 1;  removeCOM : remove the centre-of-mass velocity after each stride
    useCUDAGraph : capture the learned and the fallback stride as CUDA graphs (CUDA devices only)
    compile : on a CUDA device, compile the learned stride and the energy with ``torch.compile`` first (fewer,
        fused kernels in the graphs); eager code if compiling fails
    """

    def __init__(self, dense: DenseReplicaStep, energy, masses, stride: float, substeps: int,
                 maxDisplacement: float, maxRescale: float, removeCOM: bool, useCUDAGraph: bool = True,
                 compile: bool = False):
        self.dense = dense
        self.energyValue = energy  # numpy positions -> kJ/mol (its own graph on CUDA)
        self.energy = energy.fn
        dev = dense.stepper.device
        m = torch.as_tensor(np.asarray(masses, dtype=np.float64), device=dev)
        self.N = m.shape[0]
        self.m = m.unsqueeze(-1)  # [N, 1]
        self.stride = float(stride)
        self.substeps = int(substeps)
        self.maxDisplacement = float(maxDisplacement)
        self.maxRescale = float(maxRescale)
        self.removeCOM = bool(removeCOM)
        f64 = dict(dtype=torch.float64, device=dev)
        self.q = torch.zeros(self.N, 3, **f64)
        self.v = torch.zeros(self.N, 3, **f64)
        self.V = torch.zeros((), **f64)
        self.z1 = torch.zeros(self.N, 3, **f64)  # noise of the second half step, shared by the fallback
        self.a = torch.ones((), **f64)  # Ornstein-Uhlenbeck half-step factor (1: no thermostat)
        self.sigma = torch.zeros(self.N, 1, **f64)
        self.seed = torch.zeros((), dtype=torch.int64, device=dev)
        self.counter = torch.zeros((), dtype=torch.int64, device=dev)
        self.index = torch.arange(2 * 3 * self.N, dtype=torch.int64, device=dev)
        self.status = torch.zeros(4, **f64)  # code, alpha, max displacement nm, H - V' kJ/mol
        self.useCUDAGraph = bool(useCUDAGraph and dev.type == "cuda")
        self.graphs = None
        self.checked = False
        self.compiled = bool(compile and dev.type == "cuda")
        self._compile()

    def _compile(self) -> None:
        """The functions the strides run: compiled (``self.compiled``) or as written."""
        if self.compiled:
            self._learnedRun = torch.compile(self._learnedMath, dynamic=False)
            self._energyGrad = torch.compile(self.energy, dynamic=False)
        else:
            self._learnedRun, self._energyGrad = self._learnedMath, self.energy

    # ------------------------------------------------------------------------------------------- pieces
    def setThermostat(self, friction: Optional[float], temperature: Optional[float]) -> None:
        """Ornstein-Uhlenbeck half steps with ``friction`` 1/ps at ``temperature`` K; None: none (NVE)."""
        if friction is None:
            self.a.fill_(1.0)
            self.sigma.zero_()
            return
        a = math.exp(-0.5 * friction * self.stride)
        self.a.fill_(a)
        self.sigma.copy_(torch.sqrt((1.0 - a * a) * KB * temperature / self.m))

    def _half(self, v: Tensor, z: Tensor) -> Tensor:
        return self.a * v + self.sigma * z

    def _atRest(self, v: Tensor) -> Tensor:
        return v - (self.m * v).sum(0) / self.m.sum() if self.removeCOM else v

    def forces(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        """(V kJ/mol 0-d, f = -dV/dq [N, 3] kJ/mol/nm) at q [N, 3] nm, float64."""
        with torch.enable_grad():
            x = q.detach().requires_grad_(True)
            e = self._energyGrad(x)
            (g,) = torch.autograd.grad(e, x)
        return e.detach().to(torch.float64), -g.detach().to(torch.float64)

    @torch.no_grad()
    def _learnedMath(self, q: Tensor, v: Tensor, V: Tensor, counter: Tensor) -> Tuple[Tensor, ...]:
        """The learned stride as a pure function (what torch.compile sees): (q, v, V, z1, status [4])."""
        m = self.m
        z0 = counterNormal(self.seed, counter, 0, self.index).view(self.N, 3)
        z1 = counterNormal(self.seed, counter, 1, self.index).view(self.N, 3)
        vh = self._half(v, z0)
        H = V + 0.5 * (m * vh * vh).sum()
        q1, p1 = self.dense.update(q.view(self.dense.q.shape), (m * vh).view(self.dense.q.shape))
        q1, v1 = q1.reshape(self.N, 3), p1.reshape(self.N, 3) / m
        V1 = self.energy(q1).to(torch.float64).reshape(())
        K1 = 0.5 * (m * v1 * v1).sum()
        disp = torch.sqrt(((q1 - q) ** 2).sum(-1).max())
        E = H - V1
        alpha = torch.sqrt(torch.clamp(E, min=0.0) / K1)
        finite = torch.isfinite(q1).all() & torch.isfinite(v1).all() & torch.isfinite(V1) & (K1 > 0)
        # one row per entry of CODES, in its order; the code is 1 + the first that fails (argmax: first maximum)
        fails = torch.stack([~finite, disp > self.maxDisplacement, ~(E > 0), alpha < 1.0 / self.maxRescale,
                             alpha > self.maxRescale])
        ok = ~fails.any()
        code = torch.where(ok, 0, fails.to(torch.int64).argmax() + 1)
        v2 = self._atRest(self._half(alpha * v1, z1))
        return (torch.where(ok, q1, q), torch.where(ok, v2, vh), torch.where(ok, V1, V), z1,
                torch.stack([code.to(torch.float64), alpha, disp, E]))

    @torch.no_grad()
    def _learned(self) -> None:
        q, v, V, z1, status = self._learnedRun(self.q, self.v, self.V, self.counter)
        self.q.copy_(q)
        self.v.copy_(v)
        self.V.copy_(V)
        self.z1.copy_(z1)
        self.status.copy_(status)
        self.counter.add_(1)

    def _fallback(self) -> None:
        h = self.stride / self.substeps
        q, v = self.q.clone(), self.v.clone()
        V, f = self.forces(q)
        for _ in range(self.substeps):
            v = v + 0.5 * h * f / self.m
            q = q + h * v
            V, f = self.forces(q)
            v = v + 0.5 * h * f / self.m
        with torch.no_grad():
            self.q.copy_(q)
            self.v.copy_(self._atRest(self._half(v, self.z1)))
            self.V.copy_(V)
            self.status[0] = torch.where(torch.isfinite(self.q).all() & torch.isfinite(self.v).all()
                                         & torch.isfinite(V), 0.0, -1.0)

    def _capture(self) -> None:
        """Capture both strides as CUDA graphs on the current state; the state is left as it was."""
        live = (self.q, self.v, self.V, self.counter, self.z1)
        saved = [t.clone() for t in live]

        def restore():
            for t, s in zip(live, saved):
                t.copy_(s)
        # the warm-up calls (which also compile) advance the state; capture itself runs nothing: put it back
        try:
            learned, _ = captureGraph(self._learned, warmup=2)
            restore()
            fallback, _ = captureGraph(self._fallback, warmup=2)
        except Exception as err:
            restore()
            if not self.compiled:
                raise RuntimeError(str(err)) from err
            import logging
            logging.getLogger("openmmflash.flashmd").warning("torch.compile of the resident FlashMD strides failed "
                                                             "(%s: %s); capturing them uncompiled",
                                                             type(err).__name__, str(err)[:300])
            self.compiled = False
            self._compile()
            return self._capture()
        restore()
        self.graphs = (learned, fallback)

    # ------------------------------------------------------------------------------------------- API
    def load(self, q: np.ndarray, v: np.ndarray, counter: int, seed: int) -> None:
        """Take the state (q, v [N, 3] nm, nm/ps), the stride counter and the seed; computes V(q)."""
        self.q.copy_(torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64)))
        self.v.copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)))
        self.counter.fill_(int(counter))
        self.seed.fill_(int(seed))
        self.V.fill_(self.energyValue(q))
        if self.useCUDAGraph and self.graphs is None:
            try:
                self._capture()
            except RuntimeError as err:  # capture unsupported here: the same strides, eager
                import logging
                logging.getLogger("openmmflash.flashmd").warning("CUDA graph capture of the resident FlashMD strides "
                                                                 "failed (%s); running them eagerly", err)
                self.useCUDAGraph = False

    def checkAgainst(self, V_openmm: float, f_openmm: np.ndarray) -> None:
        """Refuse (ValueError) a PyTorch energy whose V or -dV/dq at the loaded state differ from OpenMM's."""
        V, f = self.forces(self.q)
        V, f = float(V), f.cpu().numpy()
        scale = max(1.0, float(np.sqrt((f_openmm ** 2).mean())))
        dV, df = abs(V - V_openmm), float(np.abs(f - f_openmm).max())
        # float32 models against OpenMM's mixed precision differ by ~1e-3 of the force RMS; a missing term by ~1
        if dV > 1e-4 * max(1.0, abs(V_openmm)) + 1e-2 or df > 1e-2 * scale + 1e-2:
            raise ValueError(f"the PyTorch energy of the resident FlashMD strides does not match the System: V "
                             f"{V:.6g} vs OpenMM {V_openmm:.6g} kJ/mol, largest force difference {df:.3g} kJ/mol/nm "
                             f"(force RMS {scale:.3g}). It must cover every force of the System "
                             "(flashmdcg.flashSchNetEnergyEvaluator(..., priors='torch')); pass deviceResident=False "
                             "to use OpenMM's forces instead")
        self.checked = True

    def learnedStride(self) -> Tuple[int, float, float, float]:
        """One learned stride: (status code, alpha, max displacement nm, H - V' kJ/mol); code 0: accepted, else
        1 + index in CODES (the state then holds O(v) for :meth:`fallbackStride`)."""
        if self.graphs is not None:
            self.graphs[0].replay()
        else:
            self._learned()
        code, alpha, disp, E = self.status.tolist()
        return int(code), alpha, disp, E

    def fallbackStride(self) -> None:
        """Advance the rejected stride with velocity-Verlet substeps; RuntimeError if the result is not finite."""
        if self.graphs is not None:
            self.graphs[1].replay()
        else:
            self._fallback()
        if self.status[0].item() != 0.0:
            raise RuntimeError(f"the {self.substeps} velocity-Verlet substeps of a rejected FlashMD stride gave "
                               "non-finite positions or energy (the System's forces blew up, or a padded neighbor "
                               "list overflowed); the Context keeps the state from before this step() call")

    def state(self) -> Tuple[np.ndarray, np.ndarray]:
        """(q, v) [N, 3] float64 numpy, nm and nm/ps (one device -> host copy)."""
        flat = torch.cat([self.q.reshape(-1), self.v.reshape(-1)]).cpu().numpy()
        return flat[:3 * self.N].reshape(self.N, 3), flat[3 * self.N:].reshape(self.N, 3)
