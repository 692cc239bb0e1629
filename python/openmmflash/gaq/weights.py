"""Per-output-channel weight quantization, stored at its bit width (int4 packed two per byte, or int8).

For a weight W [out, in]: scale_o = max_i |W_oi| / qmax (qmax = 2^(bits-1) - 1), codes = round(W / scale) in
[-qmax, qmax]. A linear map that mixes channels of vector features, v'_{:,o} = sum_i W_oi v_{:,i} (applied to each
Cartesian component alike), commutes with rotations for any W, so quantizing W keeps equivariance exactly.
"""

import torch
from torch import Tensor, nn

SUPPORTED_BITS = (4, 8)


def quantize_per_channel(weight: Tensor, bits: int):
    """(codes int8 [out, in], scales float32 [out]) of a weight matrix."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"weight bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    qmax = 2 ** (bits - 1) - 1
    scales = weight.detach().abs().amax(dim=1).clamp(min=1e-12).float() / qmax
    codes = torch.clamp(torch.round(weight.detach().float() / scales[:, None]), -qmax, qmax).to(torch.int8)
    return codes, scales


def pack_int4(codes: Tensor) -> Tensor:
    """int8 codes in [-8, 7], shape [out, in] -> uint8 [out, ceil(in / 2)] (low nibble first)."""
    out, width = codes.shape
    if width % 2:
        codes = torch.cat([codes, torch.zeros(out, 1, dtype=codes.dtype, device=codes.device)], dim=1)
    nibbles = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: Tensor, width: int) -> Tensor:
    """Inverse of pack_int4: uint8 [out, ceil(in / 2)] -> int8 [out, width]."""
    low = (packed & 0xF).to(torch.int16)
    high = (packed >> 4).to(torch.int16)
    both = torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)[:, :width]
    return torch.where(both > 7, both - 16, both).to(torch.int8)


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored per-channel quantized (int4 packed or int8) with float32 scales.

    ``forward`` dequantizes the weight (W = codes * scale) and applies it in the input's dtype; the bias, if any,
    stays float32.
    """

    def __init__(self, linear: nn.Linear, bits: int):
        super().__init__()
        codes, scales = quantize_per_channel(linear.weight, bits)
        self.bits = bits
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("codes", pack_int4(codes) if bits == 4 else codes)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def weight(self) -> Tensor:
        codes = unpack_int4(self.codes, self.in_features) if self.bits == 4 else self.codes
        return codes.float() * self.scales[:, None]

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}"
