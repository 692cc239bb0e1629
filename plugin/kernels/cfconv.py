"""Flash CFConv: Gaussian RBF, filter MLP on tensor cores, gather and CSR segment reduction in one pass per block.

Math, per directed pair e = (j -> i) with distance d (see ``openmmflash.schnet.reference``)::

    C(d)   = 0.5 (cos(pi d / r_c) + 1) [d < r_c]          C'(d) = -0.5 (pi / r_c) sin(pi d / r_c) [d < r_c]
    g_k    = exp(gamma (d - mu_k)^2)                       rbf e_k = g_k C(d)  (e_k = g_k without the basis cutoff)
    z      = e W1^T + b1,  h = tanh(z),  y = h W2^T,  W = y C(d)                                     [F]
    m_i    = sum_{e: dst=i} x_{src(e)} * W_e                                          forward, dst-grouped

Backward (VJP) for an upstream gradient G = dL/dm [N, F], with u_e = G_{dst(e)} * x_{src(e)} = dL/dW_e::

    dL/dx_j = sum_{e: src=j} W_e * G_{dst(e)}                                          source-grouped, no atomics
    dL/dy   = u C,   dL/dC = u . y,   dL/dh = dL/dy W2,   dL/dz = dL/dh (1 - h^2),   dL/de = dL/dz W1
    dL/dg_k = dL/de_k C  (and dL/dC += dL/de . g with the basis cutoff)
    dL/dd   = sum_k dL/dg_k g_k 2 gamma (d - mu_k) + dL/dC C'(d)

Every program owns one bead: the forward one destination segment (rows rowptr[i] .. rowptr[i+1]-1 of the
dst-sorted list), the backward one source segment (through ``perm``), walked in tiles of BLOCK_E pairs. The RBF,
both filter layers (``tl.dot``) and the recomputation in the backward stay in registers and shared memory: no
[P, R] or [P, F] tensor is written. dL/dd is written once per pair (each pair has exactly one source), so no output
needs atomics. fp32 uses ``tf32x3`` dots (about fp32 accuracy on tensor cores); W16A16 (``w16a16``) uses fp16
operands with per-channel weight scales and a per-tile activation scale in the backward, fp32 accumulation.

Caution: tested on CPU (Triton interpreter) and on NVIDIA Hopper. The pair list must be dst-sorted (padding last).
Weight gradients are not computed by these kernels: when they are requested the op falls back to the reference.
"""

import os
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from openmmflash.plugin.kernels.csr import build_csr
from openmmflash.plugin.kernels.w16a16 import check_precision, quantize_per_channel
from openmmflash.schnet.reference import cfconv_reference

# (pairs per tile BLOCK_E, warps per program) of the forward and backward kernels per precision; benchmarks may
# overwrite entries. FP32_DOT is the input precision of the fp32 dots. KERNEL_INFO keeps the register and spill
# counts of the last compiled launch of each kernel (for the notes and benchmarks).
TILES = {("fwd", "fp32"): (32, 4), ("bwd", "fp32"): (32, 4), ("fwd", "w16a16"): (32, 4), ("bwd", "w16a16"): (32, 4)}
FP32_DOT = os.environ.get("OPENMMFLASH_CFCONV_FP32_DOT", "tf32x3")
KERNEL_INFO = {}


def _record(name: str, compiled) -> None:
    try:
        KERNEL_INFO[name] = {"registers": int(compiled.n_regs), "spills": int(compiled.n_spills)}
    except AttributeError:  # the interpreter returns no compiled kernel
        pass


@triton.jit
def _filter_tile(d, mu, mask_r, w1t, b1, w2t, s1, s2, gamma, cutoff, RBF_CUTOFF: tl.constexpr,
                 W16: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Filter of a tile of distances d [BE]: returns (g [BE,R], C [BE], h [BE,F], y [BE,F]); W = y C."""
    inside = d < cutoff
    c = tl.where(inside, 0.5 * (tl.cos(d * (3.141592653589793 / cutoff)) + 1.0), 0.0)
    diff = d[:, None] - mu[None, :]
    g = tl.where(mask_r[None, :], tl.exp(gamma * diff * diff), 0.0)
    e = g
    if RBF_CUTOFF:
        e = g * c[:, None]
    if W16:
        z = tl.dot(e.to(tl.float16), w1t, out_dtype=tl.float32) * s1[None, :] + b1[None, :]
    else:
        z = tl.dot(e, w1t, input_precision=DOT_PRECISION) + b1[None, :]
    h = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)  # tanh(z), overflow-safe at both ends
    if W16:
        y = tl.dot(h.to(tl.float16), w2t, out_dtype=tl.float32) * s2[None, :]
    else:
        y = tl.dot(h, w2t, input_precision=DOT_PRECISION)
    return g, c, h, y


@triton.jit
def _cfconv_fwd_kernel(
    X,          # [N, F] fp32 source features x = lin1(h), contiguous
    DIST,       # [P] fp32 pair distances, dst-sorted order
    SRC,        # [P] int64 source bead of each pair
    ROWPTR,     # [N + 1] int64 destination offsets: pairs of bead i are ROWPTR[i] .. ROWPTR[i+1]-1
    MU,         # [R] fp32 Gaussian centres
    W1,         # [F, R] filter layer 1 weight (fp32, or fp16 divided by S1 when W16)
    B1,         # [F] fp32 filter layer 1 bias
    W2,         # [F, F] filter layer 2 weight, no bias (fp32, or fp16 divided by S2 when W16)
    S1,         # [F] fp32 per-output-channel scales of W1 (used only when W16)
    S2,         # [F] fp32 per-output-channel scales of W2 (used only when W16)
    OUT,        # [N, F] fp32 output messages m, every row written
    F,          # number of filters F' (runtime)
    R,          # number of Gaussians R (runtime)
    gamma,      # Gaussian exponent (negative), 1 / length^2
    cutoff,     # cutoff radius r_c, model length unit
    RBF_CUTOFF: tl.constexpr,     # the basis carries the cosine cutoff too
    W16: tl.constexpr,            # fp16 weights and activations with per-channel scales
    DOT_PRECISION: tl.constexpr,  # input precision of the fp32 dots ("tf32x3", "ieee", "tf32")
    BLOCK_E: tl.constexpr,        # pairs per tile (>= 16)
    BLOCK_R: tl.constexpr,        # R padded to a power of two (>= 16)
    BLOCK_F: tl.constexpr,        # F' padded to a power of two (>= 16)
):
    node = tl.program_id(0).to(tl.int64)
    start = tl.load(ROWPTR + node)
    end = tl.load(ROWPTR + node + 1)
    offs_e = tl.arange(0, BLOCK_E)
    offs_r = tl.arange(0, BLOCK_R)
    offs_f = tl.arange(0, BLOCK_F)
    mask_r = offs_r < R
    mask_f = offs_f < F
    mu = tl.load(MU + offs_r, mask=mask_r, other=0.0)
    b1 = tl.load(B1 + offs_f, mask=mask_f, other=0.0)
    s1 = tl.load(S1 + offs_f, mask=mask_f, other=0.0)
    s2 = tl.load(S2 + offs_f, mask=mask_f, other=0.0)
    # W1^T [R, F'] and W2^T [F'_in, F'_out], zero outside the true sizes.
    w1t = tl.load(W1 + offs_f[None, :] * R + offs_r[:, None], mask=mask_r[:, None] & mask_f[None, :], other=0.0)
    w2t = tl.load(W2 + offs_f[None, :] * F + offs_f[:, None], mask=mask_f[:, None] & mask_f[None, :], other=0.0)
    acc = tl.zeros((BLOCK_F,), dtype=tl.float32)
    for e0 in range(start, end, BLOCK_E):
        rows = e0 + offs_e
        mask_e = rows < end
        d = tl.load(DIST + rows, mask=mask_e, other=2.0 * cutoff)
        src = tl.load(SRC + rows, mask=mask_e, other=0)
        g, c, h, y = _filter_tile(d, mu, mask_r, w1t, b1, w2t, s1, s2, gamma, cutoff, RBF_CUTOFF, W16,
                                  DOT_PRECISION)
        xs = tl.load(X + src[:, None] * F + offs_f[None, :], mask=mask_e[:, None] & mask_f[None, :], other=0.0)
        msg = tl.where(mask_e[:, None], y * c[:, None] * xs, 0.0)
        acc += tl.sum(msg, axis=0)
    tl.store(OUT + node * F + offs_f, acc, mask=mask_f)


@triton.jit
def _cfconv_bwd_kernel(
    X,          # [N, F] fp32 source features of the forward
    G,          # [N, F] fp32 upstream gradient dL/dm
    DIST,       # [P] fp32 pair distances, dst-sorted order
    DST,        # [P] int64 destination bead of each pair
    PERM,       # [P] int64 pair indices sorted by source bead
    ROWPTR_S,   # [N + 1] int64 source offsets: pairs with source j are PERM[ROWPTR_S[j] .. ROWPTR_S[j+1]-1]
    MU,         # [R] fp32 Gaussian centres
    W1,         # [F, R] filter layer 1 weight (fp32, or fp16 divided by S1 when W16)
    B1,         # [F] fp32 filter layer 1 bias
    W2,         # [F, F] filter layer 2 weight (fp32, or fp16 divided by S2 when W16)
    S1,         # [F] fp32 per-output-channel scales of W1 (used only when W16)
    S2,         # [F] fp32 per-output-channel scales of W2 (used only when W16)
    GRAD_X,     # [N, F] fp32 output dL/dx, every row written
    GRAD_DIST,  # [P] fp32 output dL/dd, written for every non-padding pair (padding stays as allocated: 0)
    F,          # number of filters F' (runtime)
    R,          # number of Gaussians R (runtime)
    gamma,      # Gaussian exponent (negative), 1 / length^2
    cutoff,     # cutoff radius r_c, model length unit
    RBF_CUTOFF: tl.constexpr,     # the basis carries the cosine cutoff too
    W16: tl.constexpr,            # fp16 weights and activations with per-channel scales
    DOT_PRECISION: tl.constexpr,  # input precision of the fp32 dots
    BLOCK_E: tl.constexpr,        # pairs per tile (>= 16)
    BLOCK_R: tl.constexpr,        # R padded to a power of two (>= 16)
    BLOCK_F: tl.constexpr,        # F' padded to a power of two (>= 16)
):
    node = tl.program_id(0).to(tl.int64)
    start = tl.load(ROWPTR_S + node)
    end = tl.load(ROWPTR_S + node + 1)
    offs_e = tl.arange(0, BLOCK_E)
    offs_r = tl.arange(0, BLOCK_R)
    offs_f = tl.arange(0, BLOCK_F)
    mask_r = offs_r < R
    mask_f = offs_f < F
    mask_rf = mask_r[:, None] & mask_f[None, :]
    mask_ff = mask_f[:, None] & mask_f[None, :]
    mu = tl.load(MU + offs_r, mask=mask_r, other=0.0)
    b1 = tl.load(B1 + offs_f, mask=mask_f, other=0.0)
    s1 = tl.load(S1 + offs_f, mask=mask_f, other=0.0)
    s2 = tl.load(S2 + offs_f, mask=mask_f, other=0.0)
    w1t = tl.load(W1 + offs_f[None, :] * R + offs_r[:, None], mask=mask_rf, other=0.0)      # [R, F'] = W1^T
    w2t = tl.load(W2 + offs_f[None, :] * F + offs_f[:, None], mask=mask_ff, other=0.0)      # [F'in, F'out]
    w1 = tl.load(W1 + offs_f[:, None] * R + offs_r[None, :], mask=mask_f[:, None] & mask_r[None, :], other=0.0)  # [F', R]
    w2 = tl.load(W2 + offs_f[:, None] * F + offs_f[None, :], mask=mask_ff, other=0.0)       # [F'out, F'in]
    xj = tl.load(X + node * F + offs_f, mask=mask_f, other=0.0)
    acc = tl.zeros((BLOCK_F,), dtype=tl.float32)
    for e0 in range(start, end, BLOCK_E):
        k = e0 + offs_e
        mask_e = k < end
        pair = tl.load(PERM + k, mask=mask_e, other=0)
        d = tl.load(DIST + pair, mask=mask_e, other=2.0 * cutoff)
        dst = tl.load(DST + pair, mask=mask_e, other=0)
        gd = tl.load(G + dst[:, None] * F + offs_f[None, :], mask=mask_e[:, None] & mask_f[None, :], other=0.0)
        g, c, h, y = _filter_tile(d, mu, mask_r, w1t, b1, w2t, s1, s2, gamma, cutoff, RBF_CUTOFF, W16,
                                  DOT_PRECISION)
        acc += tl.sum(tl.where(mask_e[:, None], y * c[:, None] * gd, 0.0), axis=0)
        u = gd * xj[None, :]
        dy = u * c[:, None]
        dc = tl.sum(u * y, axis=1)
        if W16:
            # Per-tile activation scale keeps the fp16 operands in range whatever the gradient's magnitude.
            sy = tl.max(tl.max(tl.abs(dy), axis=1), axis=0)
            sy = tl.where(sy > 0, sy, 1.0)
            dh = tl.dot(((dy * s2[None, :]) / sy).to(tl.float16), w2, out_dtype=tl.float32) * sy
        else:
            dh = tl.dot(dy, w2, input_precision=DOT_PRECISION)
        dz = dh * (1.0 - h * h)
        if W16:
            sz = tl.max(tl.max(tl.abs(dz), axis=1), axis=0)
            sz = tl.where(sz > 0, sz, 1.0)
            de = tl.dot(((dz * s1[None, :]) / sz).to(tl.float16), w1, out_dtype=tl.float32) * sz
        else:
            de = tl.dot(dz, w1, input_precision=DOT_PRECISION)
        if RBF_CUTOFF:
            dg = de * c[:, None]
            dc += tl.sum(de * g, axis=1)
        else:
            dg = de
        dcdd = tl.where(d < cutoff, -0.5 * (3.141592653589793 / cutoff) * tl.sin(d * (3.141592653589793 / cutoff)),
                        0.0)
        dd = tl.sum(dg * g * (2.0 * gamma) * (d[:, None] - mu[None, :]), axis=1) + dc * dcdd
        tl.store(GRAD_DIST + pair, dd, mask=mask_e)
    tl.store(GRAD_X + node * F + offs_f, acc, mask=mask_f)


def _blocks(f: int, r: int):
    return max(16, triton.next_power_of_2(f)), max(16, triton.next_power_of_2(r))


def _weights(w1: Tensor, b1: Tensor, w2: Tensor, precision: str):
    """Kernel operands (w1, b1, w2, s1, s2): fp32 as given, or fp16 with per-channel scales for w16a16."""
    check_precision(precision)
    b1 = b1.detach().to(torch.float32).contiguous()
    if precision == "w16a16":
        w1q, s1 = quantize_per_channel(w1)
        w2q, s2 = quantize_per_channel(w2)
        return w1q, b1, w2q, s1, s2
    return w1.detach().to(torch.float32).contiguous(), b1, w2.detach().to(torch.float32).contiguous(), b1, b1


def _check(x: Tensor, dist: Tensor, src: Tensor, rowptr: Tensor, mu: Tensor, w1: Tensor) -> None:
    if x.dtype != torch.float32 or dist.dtype != torch.float32:
        raise ValueError(f"the flash CFConv computes in float32; got x {x.dtype} and dist {dist.dtype} (use the "
                         "reference backend for float64 models)")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the flash CFConv runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1); use the "
                           "reference backend on CPU")
    if x.dim() != 2 or w1.shape != (x.shape[1], mu.shape[0]) or rowptr.shape[0] != x.shape[0] + 1:
        raise ValueError(f"inconsistent CFConv shapes: x {tuple(x.shape)}, w1 {tuple(w1.shape)} (want [F', R]), "
                         f"mu {tuple(mu.shape)}, rowptr {tuple(rowptr.shape)} (want [N + 1])")
    if dist.shape != src.shape:
        raise ValueError(f"dist and src must have one entry per pair, got {tuple(dist.shape)} and {tuple(src.shape)}")


def cfconv_flash_forward(x: Tensor, dist: Tensor, src: Tensor, rowptr: Tensor, mu: Tensor, w1: Tensor, b1: Tensor,
                         w2: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool, precision: str) -> Tensor:
    """m [N, F'] = sum over each destination's pairs of x[src] * W(d) (dst-sorted pairs, CSR ``rowptr``)."""
    _check(x, dist, src, rowptr, mu, w1)
    n, f = x.shape
    block_f, block_r = _blocks(f, mu.shape[0])
    out = torch.empty_like(x)
    if n == 0:
        return out
    w1k, b1k, w2k, s1, s2 = _weights(w1, b1, w2, precision)
    block_e, warps = TILES[("fwd", precision)]
    compiled = _cfconv_fwd_kernel[(n,)](
        x.contiguous(), dist.contiguous(), src.contiguous(), rowptr.contiguous(), mu.to(torch.float32).contiguous(),
        w1k, b1k, w2k, s1, s2, out, f, mu.shape[0], float(gamma), float(cutoff),
        RBF_CUTOFF=bool(rbf_cutoff), W16=precision == "w16a16", DOT_PRECISION=FP32_DOT, BLOCK_E=block_e,
        BLOCK_R=block_r, BLOCK_F=block_f, num_warps=warps)
    _record(f"fwd/{precision}", compiled)
    return out


def cfconv_flash_backward(grad_out: Tensor, x: Tensor, dist: Tensor, dst: Tensor, perm: Tensor, rowptr_src: Tensor,
                          mu: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, gamma: float, cutoff: float,
                          rbf_cutoff: bool, precision: str):
    """(dL/dx [N, F'], dL/dd [P]) for dL/dm = ``grad_out`` [N, F'], by recomputation over source segments."""
    _check(x, dist, dst, rowptr_src, mu, w1)
    n, f = x.shape
    block_f, block_r = _blocks(f, mu.shape[0])
    grad_x = torch.empty_like(x)
    grad_dist = torch.zeros_like(dist)
    if n == 0:
        return grad_x, grad_dist
    w1k, b1k, w2k, s1, s2 = _weights(w1, b1, w2, precision)
    block_e, warps = TILES[("bwd", precision)]
    compiled = _cfconv_bwd_kernel[(n,)](
        x.contiguous(), grad_out.to(torch.float32).contiguous(), dist.contiguous(), dst.contiguous(),
        perm.contiguous(), rowptr_src.contiguous(), mu.to(torch.float32).contiguous(), w1k, b1k, w2k, s1, s2,
        grad_x, grad_dist, f, mu.shape[0], float(gamma), float(cutoff),
        RBF_CUTOFF=bool(rbf_cutoff), W16=precision == "w16a16", DOT_PRECISION=FP32_DOT, BLOCK_E=block_e,
        BLOCK_R=block_r, BLOCK_F=block_f, num_warps=warps)
    _record(f"bwd/{precision}", compiled)
    return grad_x, grad_dist


# torch.library registration: openmmflash::pair_csr and openmmflash::cfconv_csr (fake + autograd).

@torch.library.custom_op("openmmflash::pair_csr", mutates_args=())
def pair_csr(src: Tensor, dst: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(rowptr [N+1], perm [P], rowptr_src [N+1]) of a dst-sorted pair list; see ``plugin.kernels.csr``."""
    return build_csr(src, dst, num_nodes)


@pair_csr.register_fake
def _pair_csr_fake(src, dst, num_nodes):
    rowptr = src.new_empty((num_nodes + 1,), dtype=torch.int64)
    return rowptr, src.new_empty(src.shape, dtype=torch.int64), torch.empty_like(rowptr)


@torch.library.custom_op("openmmflash::cfconv_csr", mutates_args=())
def cfconv_csr(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, rowptr: Tensor, perm: Tensor, rowptr_src: Tensor,
               mu: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool,
               precision: str) -> Tensor:
    """Flash CFConv m [N, F'] over a dst-sorted pair list with its CSR (``pair_csr``); ``precision`` fp32|w16a16."""
    return cfconv_flash_forward(x, dist, src, rowptr, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff, precision)


@cfconv_csr.register_fake
def _cfconv_csr_fake(x, dist, src, dst, rowptr, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff,
                     precision):
    return torch.empty_like(x)


def _cfconv_csr_setup(ctx, inputs, output):
    x, dist, src, dst, rowptr, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff, precision = inputs
    ctx.save_for_backward(x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2)
    ctx.params = (gamma, cutoff, rbf_cutoff, precision)


def _cfconv_csr_backward(ctx, grad_out):
    x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2 = ctx.saved_tensors
    gamma, cutoff, rbf_cutoff, precision = ctx.params
    need = ctx.needs_input_grad
    grad_x, grad_dist = cfconv_flash_backward(grad_out, x, dist, dst, perm, rowptr_src, mu, w1, b1, w2, gamma,
                                              cutoff, rbf_cutoff, precision)
    weight_grads = [None, None, None]
    if need[8] or need[9] or need[10]:
        # Weight gradients (training) are not fused: recompute them with the fp32 reference (edge tensors).
        leaves = [w.detach().requires_grad_(True) for w in (w1, b1, w2)]
        with torch.enable_grad():
            out = cfconv_reference(x.detach(), dist.detach(), src, dst, mu, leaves[0], leaves[1], leaves[2], gamma,
                                   cutoff, rbf_cutoff)
            weight_grads = list(torch.autograd.grad(out, leaves, grad_out))
    return (grad_x if need[0] else None, grad_dist if need[1] else None, None, None, None, None, None, None,
            *weight_grads, None, None, None, None)


cfconv_csr.register_autograd(_cfconv_csr_backward, setup_context=_cfconv_csr_setup)
