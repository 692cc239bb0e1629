"""Triton kernels for quantized FlashMD inference: an int4/int8 weight linear layer and a nearest-codeword search.

1. ``quantized_linear``: y = x W^T + b with W = codes * scale (per output channel), codes stored packed (int4, two a
   byte, low nibble = even input index) or as int8. The kernel loads the packed bytes, unpacks and sign-extends the
   nibbles in registers and accumulates codes-times-x in float32; the per-channel scale factors out of the sum,

       y_mn = scale_n * sum_k x_mk c_nk + b_n,

   so it is applied once in the epilogue. The weight never exists in float in memory.
2. ``nearest_codeword``: k*(u) = argmax_k <u, c_k> for unit vectors u [M, 3] and a codebook c [K, 3], without
   materializing the [M, K] score matrix (a running maximum over the codewords, one row per lane; ties go to the
   lower index, as ``torch.argmax``). A first version with [128, 128] score tiles and tl.argmax made the W4A8 frame
   model's call 7x slower than its weights-only call at 64 replicas (H100, results/gaq.json, speedWeightsOnly).

3. ``nearest_codeword_indexed``: the same argmax through the cube-map index of codebookindex.py: each lane finds
   its direction's cell (face = largest |u_i| and its sign; (i, j) = floor((u_j / |u_i| + 1) R / 2), clamped) and
   scans only that cell's W candidates (table [6 R^2, W], increasing codeword order, so ties still go to the lower
   index); W ~ 5-10 instead of K = 1024 dots.

Each has a launcher and a plain-PyTorch reference (``quantized_linear_reference``; codebook.nearestCodeword's torch
path); tests compare them. Only float32 inputs on CUDA (or under TRITON_INTERPRET=1) use the kernels.
"""

import os

import torch
from torch import Tensor

from openmmflash.gaq.codebookindex import codebookIndex

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:  # pragma: no cover
    HAVE_TRITON = False


ENABLED = True   # set False to force the PyTorch paths everywhere


def triton_usable(x: Tensor) -> bool:
    """Whether the kernels can run on ``x``: float32 on CUDA, or on the CPU under TRITON_INTERPRET=1 (tests)."""
    if not (ENABLED and HAVE_TRITON) or x.dtype != torch.float32:
        return False
    return x.is_cuda or (os.environ.get("TRITON_INTERPRET") == "1" and x.device.type == "cpu")


if HAVE_TRITON:
    @triton.jit
    def _quantized_linear_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, ldw,
                                 PACKED: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
            if PACKED:
                rh = k0 // 2 + tl.arange(0, BLOCK_K // 2)
                p = tl.load(w_ptr + rn[:, None] * ldw + rh[None, :], mask=(rn[:, None] < N) & (rh[None, :] < ldw),
                            other=0).to(tl.int32)
                lo = p & 15
                hi = (p >> 4) & 15
                lo = tl.where(lo > 7, lo - 16, lo)
                hi = tl.where(hi > 7, hi - 16, hi)
                w = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K)).to(tl.float32)   # even, odd interleaved
            else:
                w = tl.load(w_ptr + rn[:, None] * ldw + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K),
                            other=0).to(tl.float32)
            acc += tl.dot(x, tl.trans(w), input_precision="ieee")
        scale = tl.load(s_ptr + rn, mask=rn < N, other=0.0)
        acc = acc * scale[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0)[None, :]
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))

    @triton.jit
    def _nearest_codeword_kernel(u_ptr, c_ptr, out_ptr, M, K, BLOCK_M: tl.constexpr):
        # One row (unit vector) per lane; the codewords are visited one at a time (scalar, cached loads), keeping a
        # running maximum of <u, c_k> and its index. No [BLOCK_M, K] tile and no argmax reduction.
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        mm = rm < M
        ux = tl.load(u_ptr + rm * 3 + 0, mask=mm, other=0.0)
        uy = tl.load(u_ptr + rm * 3 + 1, mask=mm, other=0.0)
        uz = tl.load(u_ptr + rm * 3 + 2, mask=mm, other=0.0)
        best = tl.full((BLOCK_M,), -float("inf"), tl.float32)
        best_idx = tl.zeros((BLOCK_M,), dtype=tl.int32)
        for k in range(0, K):
            cx = tl.load(c_ptr + k * 3 + 0)
            cy = tl.load(c_ptr + k * 3 + 1)
            cz = tl.load(c_ptr + k * 3 + 2)
            score = ux * cx + uy * cy + uz * cz
            better = score > best          # strict: the lower index wins ties, as torch.argmax
            best_idx = tl.where(better, k, best_idx)
            best = tl.where(better, score, best)
        tl.store(out_ptr + rm, best_idx.to(tl.int64), mask=mm)


    @triton.jit
    def _nearest_codeword_indexed_kernel(u_ptr, c_ptr, table_ptr, out_ptr, M, R, W, BLOCK_M: tl.constexpr):
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        mm = rm < M
        ux = tl.load(u_ptr + rm * 3 + 0, mask=mm, other=0.0)
        uy = tl.load(u_ptr + rm * 3 + 1, mask=mm, other=0.0)
        uz = tl.load(u_ptr + rm * 3 + 2, mask=mm, other=0.0)
        ax, ay, az = tl.abs(ux), tl.abs(uy), tl.abs(uz)
        is_x = (ax >= ay) & (ax >= az)                 # the first largest |u_i|, as torch.argmax
        is_y = (ay > ax) & (ay >= az)
        lead = tl.where(is_x, ux, tl.where(is_y, uy, uz))
        a = tl.where(is_x, uy, ux)                     # the other two axes in increasing order
        b = tl.where(is_x | is_y, uz, uy)
        axis = tl.where(is_x, 0, tl.where(is_y, 1, 2))
        face = 2 * axis + (lead < 0).to(tl.int32)
        denom = tl.maximum(tl.abs(lead), 1e-30)
        fi = tl.floor((a / denom + 1.0) * (0.5 * R))
        fj = tl.floor((b / denom + 1.0) * (0.5 * R))
        i = tl.minimum(tl.maximum(fi, 0.0), R - 1.0).to(tl.int32)
        j = tl.minimum(tl.maximum(fj, 0.0), R - 1.0).to(tl.int32)
        cell = (face * R + i) * R + j
        best = tl.full((BLOCK_M,), -float("inf"), tl.float32)
        best_idx = tl.zeros((BLOCK_M,), dtype=tl.int32)
        for s in range(0, W):
            k = tl.load(table_ptr + cell * W + s, mask=mm, other=0)
            cx = tl.load(c_ptr + k * 3 + 0, mask=mm, other=0.0)
            cy = tl.load(c_ptr + k * 3 + 1, mask=mm, other=0.0)
            cz = tl.load(c_ptr + k * 3 + 2, mask=mm, other=0.0)
            score = ux * cx + uy * cy + uz * cz
            better = score > best
            best_idx = tl.where(better, k, best_idx)
            best = tl.where(better, score, best)
        best_idx = tl.where(tl.maximum(ax, tl.maximum(ay, az)) > 0, best_idx, 0)   # zero vector -> 0
        tl.store(out_ptr + rm, best_idx.to(tl.int64), mask=mm)


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


def quantized_linear_reference(x: Tensor, codes: Tensor, scales: Tensor, bias, in_features: int, bits: int):
    """Plain PyTorch: unpack, dequantize, F.linear. x [..., in] -> [..., out]."""
    c = unpack_int4(codes, in_features) if bits == 4 else codes
    w = c.to(x.dtype) * scales.to(x.dtype)[:, None]
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


def quantized_linear(x: Tensor, codes: Tensor, scales: Tensor, bias, in_features: int, bits: int) -> Tensor:
    """y = x (codes * scales)^T + bias with the Triton kernel. x [..., in] float32, codes uint8 [out, ceil(in/2)]
    (bits 4) or int8 [out, in] (bits 8), scales float32 [out], bias float32 [out] or None."""
    shape = x.shape
    x2 = x.reshape(-1, in_features).contiguous()
    M, K = x2.shape
    N = codes.shape[0]
    y = torch.empty(M, N, dtype=torch.float32, device=x.device)
    if M == 0:
        return y.reshape(*shape[:-1], N)
    block_m = 64 if M >= 64 else 16
    block_n = 64 if N >= 64 else (32 if N > 16 else 16)
    block_k = 32 if K > 16 else 16
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    b = bias if bias is not None else scales
    _quantized_linear_kernel[grid](x2, codes.contiguous(), scales.contiguous(), b, y, M, N, K, codes.shape[1],
                                   PACKED=bits == 4, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n,
                                   BLOCK_K=block_k)
    return y.reshape(*shape[:-1], N)


def nearest_codeword(u: Tensor, codebook: Tensor) -> Tensor:
    """Index of the codeword with the largest dot product for each row of u [M, 3] (float32), codebook [K, 3]."""
    u = u.reshape(-1, 3).contiguous()
    c = codebook.to(u.device, torch.float32).contiguous()
    M, K = u.shape[0], c.shape[0]
    out = torch.empty(M, dtype=torch.int64, device=u.device)
    if M == 0:
        return out
    block_m = 128
    _nearest_codeword_kernel[(triton.cdiv(M, block_m),)](u, c, out, M, K, BLOCK_M=block_m)
    return out


def nearest_codeword_indexed(u: Tensor, codebook: Tensor) -> Tensor:
    """As :func:`nearest_codeword` through the codebook's cube-map index (codebookindex.codebookIndex)."""
    u = u.reshape(-1, 3).contiguous()
    index = codebookIndex(codebook)
    c = index.codebookOn(u.device)
    table = index.tableOn(u.device)
    M = u.shape[0]
    out = torch.empty(M, dtype=torch.int64, device=u.device)
    if M == 0:
        return out
    block_m = 128
    _nearest_codeword_indexed_kernel[(triton.cdiv(M, block_m),)](u, c, table, out, M, index.resolution,
                                                                 table.shape[1], BLOCK_M=block_m)
    return out
