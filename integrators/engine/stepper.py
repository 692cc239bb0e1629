"""Engine-independent FlashMD step: (q, p, masses, types, box) -> (q', p') one stride later. No OpenMM import.

Units: positions nm, momenta amu nm/ps, masses amu, stride ps, box nm (rows are box vectors, OpenMM's reduced
form). Tensors may carry a leading replica axis: q, p [B, N, 3] (or [N, 3] for one replica), box [3, 3] shared by
all replicas or [B, 3, 3].

After the network call the physical constraints are imposed exactly (FlashMD ``enforce_physical_constraints``):
the total momentum is unchanged (the correction is distributed in proportion to mass, i.e. a uniform velocity
shift), and the centre of mass moves by P_tot / M_tot * stride.

Optional random rotation: a Haar-random O(3) matrix R (improper with probability 1/2) is applied to the edge
vectors and momenta the network sees, and its outputs are rotated back with R^T. Because the neighbor search is
rotation invariant, this equals rotating the whole system (and its box) and rotating the result back.

Caution: the step is not symplectic; energy is conserved only by the rescaling done by the engine adapter
(flashmdintegrator.py). Tested on CPU (float32 and float64) with periodic cubic boxes and without a box.
"""

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from openmmflash.neighbors import build_neighbor_list, check_box

from openmmflash.integrators.network.modelfile import FlashMDModel, loadModel


def random_rotation(generator: Optional[torch.Generator] = None, dtype=torch.float64, improper: bool = True) -> Tensor:
    """A Haar-random rotation matrix [3, 3]; with ``improper`` a reflection is included with probability 1/2."""
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    qm, r = torch.linalg.qr(a)
    qm = qm * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(qm) < 0:
        qm[:, 0] = -qm[:, 0]
    if improper and bool(torch.rand((), generator=generator, dtype=torch.float64) < 0.5):
        qm = -qm
    return qm.to(dtype)


def check_masses(model: FlashMDModel, masses: Tensor, types: Sequence[int], rtol: float = 1e-4) -> None:
    """Raise ValueError unless every particle's mass equals the model's mass for its species."""
    idx = model.typeIndices(types)
    expected = torch.tensor(model.speciesMasses, dtype=torch.float64)[idx]
    got = masses.detach().to("cpu", torch.float64).reshape(-1)
    if got.shape != expected.shape:
        raise ValueError(f"{got.shape[0]} masses for {expected.shape[0]} particles")
    bad = (got - expected).abs() > rtol * expected
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"particle {i} (atomic number {int(list(types)[i])}) has mass {float(got[i]):.6g} amu but "
                         f"the FlashMD model was trained with {float(expected[i]):.6g} amu; {int(bad.sum())} "
                         "particles differ. FlashMD models do not transfer across masses (no isotopes or hydrogen "
                         "mass repartitioning): use the System's standard masses or train a model for these.")


def check_stride(model: FlashMDModel, stride: float, rtol: float = 1e-6) -> None:
    """Raise ValueError unless ``stride`` (ps) equals the model's stride."""
    if abs(stride - model.stride) > rtol * model.stride:
        raise ValueError(f"step size {stride * 1000:g} fs does not match the FlashMD model's stride "
                         f"{model.stride * 1000:g} fs; a FlashMD model works only at the stride it was trained for. "
                         "Pass stepSize=None (use the model's stride) or load a model trained at this stride.")


def batch_edges(q: Tensor, box: Optional[Tensor], cutoff: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Neighbor pairs over all replicas of q [B, N, 3] (nm) -> (src [P], dst [P], edge_vec [P, 3] = r_src - r_dst).

    box: None, [3, 3] shared, or [B, 3, 3] (one call per distinct box)."""
    B, N, _ = q.shape
    flat = q.reshape(B * N, 3)
    if box is not None and box.dim() == 3 and bool((box == box[:1]).all()):
        box = box[0]
    if box is None or box.dim() == 2:
        if box is not None:
            check_box(box, cutoff)
        src, dst, shifts, _ = build_neighbor_list(flat, B, cutoff, box, 0)
    else:
        parts = []
        for b in range(B):
            check_box(box[b], cutoff)
            s, d, sh, _ = build_neighbor_list(q[b], 1, cutoff, box[b], 0)
            parts.append((s + b * N, d + b * N, sh))
        src, dst, shifts = (torch.cat(x) for x in zip(*parts))
    return src, dst, flat[src] - flat[dst] + shifts


class FlashMDStepper:
    """Learned NVE step for a fixed set of particles, batched over replicas.

    Parameters
    ----------
    model : FlashMDModel, path or shipped model name
    masses : tensor or sequence [N], amu
    types : sequence [N] of atomic numbers
    stride : float or None
        Step length in ps; must equal the model's stride (None: the model's).
    randomRotation : bool
        Apply a Haar-random O(3) rotation around every network call.
    device, dtype : where and in which precision the network runs (outputs are returned in the input dtype).
    generator : torch.Generator for the rotations (CPU).
    """

    def __init__(self, model, masses, types: Sequence[int], stride: Optional[float] = None,
                 randomRotation: bool = False, device=None, dtype=torch.float32,
                 generator: Optional[torch.Generator] = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = loadModel(model).to(self.device, dtype)
        self.model.eval()
        self.dtype = dtype
        self.stride = self.model.stride if stride is None else float(stride)
        check_stride(self.model, self.stride)
        masses = torch.as_tensor(masses, dtype=torch.float64).reshape(-1)
        self.types = [int(t) for t in types]
        if len(self.types) != masses.shape[0]:
            raise ValueError(f"{len(self.types)} types for {masses.shape[0]} masses")
        check_masses(self.model, masses, self.types)
        self.masses = masses.to(self.device)
        self.type_idx = self.model.typeIndices(self.types).to(self.device)
        self.randomRotation = bool(randomRotation)
        self.generator = generator
        self.numCalls = 0

    def _edges(self, q: Tensor, box: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        return batch_edges(q, box, self.model.cutoff)

    @torch.no_grad()
    def step(self, q: Tensor, p: Tensor, box: Optional[Tensor] = None,
             rotation: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Advance (q [B, N, 3] or [N, 3] nm, p same shape amu nm/ps) by one stride; returns (q', p')."""
        single = q.dim() == 2
        if single:
            q, p = q.unsqueeze(0), p.unsqueeze(0)
        if q.shape != p.shape or q.shape[1] != self.masses.shape[0] or q.shape[-1] != 3:
            raise ValueError(f"positions {tuple(q.shape)} and momenta {tuple(p.shape)} must both be "
                             f"[B, {self.masses.shape[0]}, 3]")
        in_dtype = q.dtype
        qd = q.to(self.device, torch.float64)
        pd = p.to(self.device, torch.float64)
        B, N, _ = qd.shape
        boxd = None if box is None else box.to(self.device, torch.float64)
        src, dst, edge_vec = self._edges(qd, boxd)
        pin = pd.reshape(B * N, 3)
        if rotation is None and self.randomRotation:
            rotation = random_rotation(self.generator)
        if rotation is not None:
            R = rotation.to(self.device, torch.float64)
            edge_vec, pin = edge_vec @ R.T, pin @ R.T
        sqrt_m = torch.sqrt(self.masses.repeat(B).unsqueeze(-1))
        dq, p1 = self.learnedUpdate(pd, pin, self.type_idx.repeat(B), sqrt_m, src, dst, edge_vec,
                                    R if rotation is not None else None)
        self.numCalls += 1
        q1 = (qd + dq).to(in_dtype)
        p1 = p1.to(in_dtype)
        return (q1[0], p1[0]) if single else (q1, p1)

    def learnedUpdate(self, p: Tensor, pin: Tensor, type_idx: Tensor, sqrt_m: Tensor, src: Tensor, dst: Tensor,
                      edge_vec: Tensor, R: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The network's (dq, p') [B, N, 3] float64, back in the lab frame and with the constraints imposed.

        p [B, N, 3]: momenta before the step (lab frame); pin [B N, 3]: the momenta the network sees (R p);
        type_idx [B N]; sqrt_m [B N, 1] float64; src, dst [P]; edge_vec [P, 3] (rotated); R [3, 3] or None."""
        B, N, _ = p.shape
        dq_s, p_s = self.model(type_idx, pin.to(self.dtype), sqrt_m.to(self.dtype), src, dst, edge_vec.to(self.dtype))
        dq = dq_s.to(torch.float64) / sqrt_m
        p1 = p_s.to(torch.float64) * sqrt_m
        if R is not None:
            dq, p1 = dq @ R, p1 @ R
        return self.enforceConstraints(p, dq.reshape(B, N, 3), p1.reshape(B, N, 3))

    def enforceConstraints(self, p: Tensor, dq: Tensor, p1: Tensor) -> Tuple[Tensor, Tensor]:
        """Keep total momentum exact and move the centre of mass by P_tot / M * stride ([B, N, 3] tensors)."""
        m = self.masses.to(p.dtype).view(1, -1, 1)
        M = m.sum(1, keepdim=True)
        P0 = p.sum(1, keepdim=True)
        p1 = p1 - m / M * (p1.sum(1, keepdim=True) - P0)
        com_shift = (m * dq).sum(1, keepdim=True) / M
        dq = dq - com_shift + P0 / M * self.stride
        return dq, p1
