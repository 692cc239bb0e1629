"""Quantize an equivariant network (the FlashMD PaiNN) in place: per-channel fake-quantized weights and
quantized scalar / vector activations, for calibration, quantization-aware training and low-bit export.

Schemes name the bit widths, ``w<weight bits>a<activation bits>``: "w8a8" or "w4a8". Methods say how the vector
(equivariant) activations are quantized at A bits per component budget:

- "frame": magnitude-direction decoupled quantization in a local frame built from the features (exactly
  equivariant; magnitude A bits, direction codebook of 2^dirBits entries);
- "mddq": magnitude-direction decoupled quantization in the world frame (approximately equivariant);
- "naive": each Cartesian component on a signed A-bit grid (the baseline).

Scalar activations are quantized per channel at A bits in every method. Weights of ``nn.Linear`` layers act on
channels only and are quantized per output channel; so are the channel-mixing weights of vector features, which
keeps equivariance exact. Embedding tables stay in float32.
"""

import re
from typing import Dict, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from openmmflash.gaq.quantizers import (FrameMDDQuantizer, MDDQuantizer, NaiveVectorQuantizer, ScalarQuantizer,
                                        fake_quantize_symmetric, straight_through)

METHODS = ("frame", "mddq", "naive")


def parseScheme(scheme: str) -> Tuple[int, int]:
    """(weight bits, activation bits) of a scheme name such as "w4a8"."""
    match = re.fullmatch(r"w(\d+)a(\d+)", str(scheme).lower())
    if not match or int(match.group(1)) not in (4, 8) or not 4 <= int(match.group(2)) <= 16:
        raise ValueError(f"unknown quantization scheme {scheme!r}: use w<4|8>a<4..16>, e.g. 'w4a8' or 'w8a8'")
    return int(match.group(1)), int(match.group(2))


class PerChannelWeight(nn.Module):
    """Parametrization: weight -> per-output-channel symmetric fake quantization (straight-through).

    ``channel_dim`` is the output-channel axis (0 for nn.Linear [out, in], 1 for vector mixes [in, out]).
    """

    def __init__(self, bits: int, channel_dim: int):
        super().__init__()
        self.bits, self.channel_dim = bits, channel_dim
        self.enabled = True

    def forward(self, weight: Tensor) -> Tensor:
        if not self.enabled:
            return weight
        qmax = 2 ** (self.bits - 1) - 1
        reduce_dim = 1 - self.channel_dim
        scale = weight.detach().abs().amax(dim=reduce_dim, keepdim=True).clamp(min=1e-12) / qmax
        return straight_through(weight, fake_quantize_symmetric(weight, scale, self.bits))


def _vector_quantizer(method: str, channels: int, bits: int, dirBits: int, parity: bool) -> nn.Module:
    if method == "naive":
        return NaiveVectorQuantizer(channels, bits)
    if method == "mddq":
        return MDDQuantizer(channels, bits, dirBits)
    return FrameMDDQuantizer(channels, bits, dirBits, parity=parity)


class _FeatureQuantizer(nn.Module):
    """Quantizes the (scalar [N, C], vector [N, 3, C]) output of a block (a forward hook)."""

    def __init__(self, channels: int, bits: int, method: str, dirBits: int, parity: bool):
        super().__init__()
        self.scalar = ScalarQuantizer(channels, bits)
        self.vector = _vector_quantizer(method, channels, bits, dirBits, parity)

    def hook(self, module, inputs, output):
        s, v = output
        return self.scalar(s), self.vector(v)


def _is_vector_mix(module: nn.Module) -> bool:
    """A PaiNN ``VectorLinear`` (also once parametrized, which subclasses it as ParametrizedVectorLinear)."""
    return any(cls.__name__ == "VectorLinear" for cls in type(module).__mro__)


def quantizeModel(model: nn.Module, scheme: str = "w4a8", method: str = "frame", dirBits: int = 10,
                  frameParity: bool = True) -> nn.Module:
    """Insert quantizers into ``model`` (in place) and return it. Blocks whose output is a (scalar, vector) pair
    (PaiNN message and update blocks) get activation quantizers; every linear / vector-mixing weight is quantized.
    ``frameParity`` (method "frame"): orient the local frame so that the quantizer is O(3)- rather than only
    SO(3)-equivariant (see FrameMDDQuantizer); False reproduces models quantized before the option existed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown vector quantization method {method!r}; choose one of {METHODS}")
    if getattr(model, "gaq", None):
        raise ValueError("the model is already quantized; quantize the full-precision model")
    weight_bits, act_bits = parseScheme(scheme)
    blocks = [m for m in model.modules() if type(m).__name__ in ("PaiNNMessage", "PaiNNUpdate")]
    if not blocks:
        raise ValueError("no (scalar, vector) blocks found: quantizeModel expects a FlashMD PaiNN network")
    quantizers = nn.ModuleList()
    for block in blocks:
        fq = _FeatureQuantizer(block.channels, act_bits, method, dirBits, frameParity)
        block.register_forward_hook(fq.hook)
        quantizers.append(fq)
    model.gaq_quantizers = quantizers
    for module in list(model.modules()):
        if isinstance(module, nn.Linear):
            parametrize.register_parametrization(module, "weight", PerChannelWeight(weight_bits, 0))
        elif _is_vector_mix(module):
            parametrize.register_parametrization(module, "weight", PerChannelWeight(weight_bits, 1))
    model.gaq = {"scheme": scheme.lower(), "method": method, "weightBits": weight_bits, "activationBits": act_bits,
                 "dirBits": dirBits, "frameParity": bool(frameParity)}
    return model


def setObserving(model: nn.Module, observe: bool) -> None:
    """Turn the activation observers on (calibration, QAT) or freeze the scales."""
    for module in model.modules():
        if hasattr(module, "observe") and hasattr(module, "amax"):
            module.observe = observe


def branchParameters(model: nn.Module) -> Dict[str, list]:
    """Trainable parameters split by branch: "vector" (vector channel mixes, frame weights) and "scalar" (the rest),
    for branch-separated optimizers and schedules."""
    vector_ids = set()
    for module in model.modules():
        if _is_vector_mix(module) or isinstance(module, FrameMDDQuantizer):
            vector_ids |= {id(p) for p in module.parameters()}
    groups = {"scalar": [], "vector": []}
    for p in model.parameters():
        if p.requires_grad:
            groups["vector" if id(p) in vector_ids else "scalar"].append(p)
    return groups
