"""Activation quantizers for equivariant features, with straight-through gradients.

Vector features have shape (..., 3, C): 3 Cartesian components of C channels. Scalars have shape (..., C).

- ``MDDQuantizer`` (magnitude-direction decoupled): |v| quantized per channel on an unsigned grid of 2^magBits
  levels, v/|v| snapped to an antipodally symmetric sphere codebook of 2^dirBits directions. The magnitude is
  invariant and the codebook odd, so Q(-v) = -Q(v) exactly and the rotation error is bounded by the covering angle.
- ``NaiveVectorQuantizer``: the baseline, each Cartesian component quantized on a symmetric signed grid of
  2^bits levels per channel; rounding in a fixed frame breaks rotation equivariance.
- ``ScalarQuantizer``: symmetric signed per-channel quantization of invariant features (no symmetry cost).

Scales come from an observer: the running maximum of |x| per channel while ``observe`` is on (calibration or QAT),
frozen afterwards. Gradients pass straight through (d Q(x) / dx = 1), the usual QAT estimator.
"""

import torch
from torch import Tensor, nn

from openmmflash.gaq.codebook import nearestCodeword, sphereCodebook


def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """q in the forward pass, identity gradient to x in the backward pass."""
    return x + (q - x).detach()


def fake_quantize_symmetric(x: Tensor, scale: Tensor, bits: int) -> Tensor:
    """round(x / scale) clamped to the signed (bits)-bit range, times scale."""
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x / scale), -qmax, qmax) * scale


class _Observed(nn.Module):
    """Per-channel running-max observer shared by the quantizers (``observe`` toggles calibration)."""

    def __init__(self, channels: int, bits: int):
        super().__init__()
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"quantizer bits must be an integer in 2..16, got {bits!r}")
        self.bits = bits
        self.observe = True
        self.enabled = True
        self.register_buffer("amax", torch.zeros(channels))

    def _update(self, magnitude: Tensor) -> None:
        if self.observe and (self.training or not bool(self.amax.any())):
            dims = tuple(range(magnitude.dim() - 1))
            current = magnitude.detach().abs().amax(dim=dims) if dims else magnitude.detach().abs()
            self.amax.copy_(torch.maximum(self.amax, current.to(self.amax.dtype)))

    def scale(self, levels: int) -> Tensor:
        return torch.clamp(self.amax, min=1e-12) / levels


class ScalarQuantizer(_Observed):
    """Symmetric per-channel fake quantization of invariant features (..., C)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        self._update(x)
        scale = self.scale(2 ** (self.bits - 1) - 1).to(x.dtype)
        return straight_through(x, fake_quantize_symmetric(x, scale, self.bits))


class NaiveVectorQuantizer(_Observed):
    """Per-component (x, y, z) symmetric per-channel quantization of vector features (..., 3, C)."""

    def forward(self, v: Tensor) -> Tensor:
        if not self.enabled:
            return v
        self._update(v.reshape(-1, v.shape[-1]))  # max |component| per channel
        scale = self.scale(2 ** (self.bits - 1) - 1).to(v.dtype)
        return straight_through(v, fake_quantize_symmetric(v, scale, self.bits))


class MDDQuantizer(_Observed):
    """Magnitude-direction decoupled quantization of vector features (..., 3, C).

    Parameters
    ----------
    channels : int
        C, vector channels (one magnitude scale each).
    magBits : int
        Bits of the unsigned magnitude grid.
    dirBits : int
        Bits of the direction index: a codebook of 2**dirBits directions.
    """

    def __init__(self, channels: int, magBits: int = 8, dirBits: int = 10):
        super().__init__(channels, magBits)
        self.dirBits = dirBits
        self.register_buffer("codebook", sphereCodebook(dirBits), persistent=False)

    def quantize(self, v: Tensor):
        """(magnitude codes (..., C) int, direction indices (..., C) int64): the stored form."""
        magnitude = v.norm(dim=-2)
        levels = 2 ** self.bits - 1
        codes = torch.clamp(torch.round(magnitude / self.scale(levels).to(v.dtype)), 0, levels)
        unit = v / magnitude.clamp(min=1e-30).unsqueeze(-2)
        index = nearestCodeword(unit.transpose(-1, -2), self.codebook.to(v.device))
        return codes, index

    def dequantize(self, codes: Tensor, index: Tensor, dtype=torch.float32) -> Tensor:
        levels = 2 ** self.bits - 1
        magnitude = codes.to(dtype) * self.scale(levels).to(dtype)
        directions = self.codebook.to(codes.device, dtype)[index]       # (..., C, 3)
        return (magnitude.unsqueeze(-1) * directions).transpose(-1, -2)

    def forward(self, v: Tensor) -> Tensor:
        if not self.enabled:
            return v
        self._update(v.norm(dim=-2).reshape(-1, v.shape[-1]))
        codes, index = self.quantize(v)
        return straight_through(v, self.dequantize(codes, index, v.dtype))


class FrameMDDQuantizer(MDDQuantizer):
    """MDDQ applied in a local frame built from the features themselves, which makes it exactly equivariant.

    Per row (atom), two equivariant vectors a = V alpha and b = V beta (fixed channel mixes, learnable) give an
    orthonormal frame E = (e1, e2, e1 x e2) by Gram-Schmidt. The local coordinates E^T V are rotation invariant;
    they are quantized by MDDQ (magnitude grid + direction codebook) and rotated back, V_q = E Q(E^T V). Hence
    Q(R V) = R Q(V) for every rotation R, up to floating-point rounding. Rows whose a and b are (nearly) parallel
    fall back to the world frame.

    ``parity``: e3 = e1 x e2 is a pseudovector, so under a reflection the right-handed frame is not R E and the
    quantizer is only SO(3)-equivariant. With ``parity=True`` e3 is oriented by a third mix c = V (alpha * beta)
    (e3 <- sign(c . e1 x e2) e1 x e2), which makes E -> R E for every R in O(3): exact under reflections and
    inversion too (up to rows where c is nearly in the e1-e2 plane). Models quantized before this option have
    ``parity=False`` recorded (the default here, so their files compute what they were trained to).
    """

    def __init__(self, channels: int, magBits: int = 8, dirBits: int = 10, seed: int = 0, parity: bool = False):
        super().__init__(channels, magBits, dirBits)
        self.parity = bool(parity)
        gen = torch.Generator().manual_seed(seed)
        self.alpha = nn.Parameter(torch.randn(channels, generator=gen))
        self.beta = nn.Parameter(torch.randn(channels, generator=gen))

    def frame(self, v: Tensor) -> Tensor:
        """Orthonormal frames (..., 3, 3), columns e1, e2, e3, from vector features (..., 3, C)."""
        a = v @ self.alpha.to(v.dtype).detach()
        b = v @ self.beta.to(v.dtype).detach()
        e1 = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-30)
        b = b - (b * e1).sum(-1, keepdim=True) * e1
        e2 = b / b.norm(dim=-1, keepdim=True).clamp(min=1e-30)
        e3 = torch.linalg.cross(e1, e2, dim=-1)
        if self.parity:
            c = v @ (self.alpha * self.beta).to(v.dtype).detach()
            e3 = torch.where((c * e3).sum(-1, keepdim=True) < 0, -e3, e3)
        frame = torch.stack([e1, e2, e3], dim=-1)
        scale = v.norm(dim=(-2, -1)).clamp(min=1e-30)
        degenerate = (a.norm(dim=-1) < 1e-6 * scale) | (b.norm(dim=-1) < 1e-6 * scale)
        eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(frame)
        return torch.where(degenerate[..., None, None], eye, frame)

    def forward(self, v: Tensor) -> Tensor:
        if not self.enabled:
            return v
        frame = self.frame(v.detach())
        local = frame.transpose(-1, -2) @ v
        self._update(local.norm(dim=-2).reshape(-1, v.shape[-1]))
        codes, index = self.quantize(local)
        return straight_through(v, frame @ self.dequantize(codes, index, v.dtype))
