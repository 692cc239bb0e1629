"""Per-output-channel weight quantization, stored at its bit width (int4 packed two per byte, or int8).

For a weight W [out, in]: scale_o = max_i |W_oi| / qmax (qmax = 2^(bits-1) - 1), codes = round(W / scale) in
[-qmax, qmax]. A linear map that mixes channels of vector features, v'_{:,o} = sum_i W_oi v_{:,i} (applied to each
Cartesian component alike), commutes with rotations for any W, so quantizing W keeps equivariance exactly.
"""

import torch
from torch import Tensor, nn

from openmmflash.gaq.kernels import pack_int4, quantized_linear, triton_usable, unpack_int4  # noqa: F401

SUPPORTED_BITS = (4, 8)


def quantize_per_channel(weight: Tensor, bits: int):
    """(codes int8 [out, in], scales float32 [out]) of a weight matrix."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"weight bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    qmax = 2 ** (bits - 1) - 1
    scales = weight.detach().abs().amax(dim=1).clamp(min=1e-12).float() / qmax
    codes = torch.clamp(torch.round(weight.detach().float() / scales[:, None]), -qmax, qmax).to(torch.int8)
    return codes, scales


class QuantizedLinear(nn.Module):
    """A linear layer whose weight is stored per-channel quantized (int4 packed or int8) with float32 scales.

    ``forward`` runs the Triton kernel (kernels.quantized_linear: codes unpacked in registers, float32 accumulation)
    for float32 inputs on CUDA; otherwise it dequantizes the weight (W = codes * scale) and applies it in the input's
    dtype. The bias, if any, stays float32. Set ``QuantizedLinear.useKernel = False`` to force the PyTorch path.
    """

    useKernel = True

    def __init__(self, linear: nn.Linear, bits: int):
        super().__init__()
        codes, scales = quantize_per_channel(_weight_of(linear), bits)
        self.bits = bits
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("codes", pack_int4(codes) if bits == 4 else codes)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def weight(self) -> Tensor:
        codes = unpack_int4(self.codes, self.in_features) if self.bits == 4 else self.codes
        return codes.float() * self.scales[:, None]

    def forward(self, x: Tensor) -> Tensor:
        if QuantizedLinear.useKernel and triton_usable(x):
            return quantized_linear(x, self.codes, self.scales, self.bias, self.in_features, self.bits)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, self.weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}"


def _weight_of(module: nn.Module) -> Tensor:
    """The unquantized weight of a (possibly parametrized) layer: the original under a fake-quant parametrization."""
    param = getattr(module, "parametrizations", None)
    if param is not None and "weight" in param:
        return param["weight"].original
    return module.weight


class QuantizedVectorLinear(nn.Module):
    """Channel mixing of vector features, [N, 3, C_in] -> [N, 3, C_out], with a per-output-channel quantized weight.

    Built from a ``VectorLinear`` (weight [C_in, C_out]); stored as a QuantizedLinear over [C_out, C_in] and applied
    to the three Cartesian components alike, so it commutes with rotations exactly.
    """

    def __init__(self, vector_linear: nn.Module, bits: int):
        super().__init__()
        weight = _weight_of(vector_linear).detach()
        c_in, c_out = weight.shape
        self.linear = QuantizedLinear(nn.Linear(c_in, c_out, bias=False), bits)
        codes, scales = quantize_per_channel(weight.T, bits)
        self.linear.codes = pack_int4(codes) if bits == 4 else codes
        self.linear.scales = scales

    def forward(self, v: Tensor) -> Tensor:
        return self.linear(v)
