"""W16A16: 16-bit weights with per-output-channel scales, 16-bit activations, fp32 accumulation.

For a weight W [out, in] the scale of output channel o is s_o = max_k |W_ok| (1 for an all-zero row) and the stored
weight Wq = fp16(W / s), so every row uses the full fp16 mantissa at unit magnitude (no subnormals, no overflow,
whatever the weights' range). A layer y = x W^T is then evaluated as y_o = s_o * sum_k fp16(x_k) Wq_ok with fp32
accumulation (``tl.dot`` with an fp32 accumulator). Positions, distances, energies and forces stay fp32.
"""

from typing import Tuple

import torch
from torch import Tensor

PRECISIONS = ("fp32", "w16a16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")


def quantize_per_channel(weight: Tensor) -> Tuple[Tensor, Tensor]:
    """(fp16 weight [out, in] scaled to max |w| = 1 per row, fp32 scales [out]) of ``weight`` [out, in]."""
    w = weight.detach().to(torch.float32)
    scale = w.abs().amax(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (w / scale.unsqueeze(1)).to(torch.float16).contiguous(), scale.contiguous()


def dequantize_per_channel(weight_q: Tensor, scale: Tensor) -> Tensor:
    """fp32 weight [out, in] represented by (fp16 weight, scales); what the W16 kernels multiply by."""
    return weight_q.to(torch.float32) * scale.unsqueeze(1)
