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

Pairs are processed in tiles of BLOCK_E consecutive pairs (a program walks ``tiles_per_program`` of them): the
forward over the dst-sorted list, the backward over the source-sorted permutation ``perm`` (CSR by source). The
RBF, both filter layers (``tl.dot``) and the recomputation in the backward stay in registers and shared memory: no
[P, R] or [P, F] tensor is written. Messages are reduced per bead inside the tile by a one-hot product on tensor
cores (keys are sorted, so a tile holds a contiguous range of beads); beads strictly inside a tile's range are
stored, only the first and last bead of a tile (which may continue in the neighbouring tile) are added atomically,
so a row sees at most a few atomic adds, never per-pair contention. dL/dd is written once per pair (each pair has
one source). fp32 uses ``tf32x3`` dots (about fp32 accuracy on tensor cores); W16A16 (``w16a16``) uses fp16
operands with per-channel weight scales and a per-tile activation scale in the backward, fp32 accumulation, and
gathers fp16 copies of x and dL/dm (one per-tensor scale each, so any range stays finite). Weight tiles can be
loaded by TMA tensor descriptors (``TMA_KERNELS``: only where that measured faster on an H200).

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

# (pairs per tile BLOCK_E, warps, tiles per program, filter columns per chunk BLOCK_C) per kernel and precision
# (benchmarks may overwrite entries); FP32_DOT: input precision of the fp32 dots; KERNEL_INFO: registers and spills
# of the last compiled launch of each kernel.
TILES = {("fwd", "fp32"): (128, 8, 1, 128), ("bwd", "fp32"): (64, 8, 1, 128),
         ("fwd", "w16a16"): (64, 4, 1, 128), ("bwd", "w16a16"): (32, 4, 1, 128)}  # tuned on an H200 (Triton 3.6)
FP32_DOT = os.environ.get("OPENMMFLASH_CFCONV_FP32_DOT", "tf32x3")
# TMA: weight tiles through TMA tensor descriptors (straight to shared memory, not through registers) where the
# rows are 16-byte aligned and the GPU is Hopper or newer (and under the interpreter when strides allow); measured
# on an H200 (docs/kernels-notes.md, v4) it pays only in the fp32 backward, so TMA_KERNELS lists where it is used;
# USE_TMA (env OPENMMFLASH_CFCONV_TMA=1/0) forces it on/off for every kernel. GATHER16: the W16A16 kernels gather
# fp16 copies of the node features x and dL/dm (per-tensor scale) instead of fp32.
TMA_KERNELS = {("bwd", "fp32")}
_TMA_ENV = os.environ.get("OPENMMFLASH_CFCONV_TMA", "auto")
USE_TMA = None if _TMA_ENV == "auto" else _TMA_ENV == "1"
GATHER16 = os.environ.get("OPENMMFLASH_CFCONV_GATHER16", "1") == "1"
KERNEL_INFO = {}


def _record(name: str, compiled, tma: bool) -> None:
    try:
        KERNEL_INFO[name] = {"registers": int(compiled.n_regs), "spills": int(compiled.n_spills), "tma": tma}
    except AttributeError:  # the interpreter returns no compiled kernel
        KERNEL_INFO[name] = {"tma": tma}


@triton.jit
def _hidden_tile(d, mu, mask_r, W1, B1, S1, offs_r, offs_f, mask_f, R, F, gamma, cutoff, RBF_CUTOFF: tl.constexpr,
                 W16: tl.constexpr, DOT_PRECISION: tl.constexpr, TMA: tl.constexpr):
    """First filter layer of a tile of distances d [BE]: (g [BE,R], C [BE], h = tanh(e W1^T + b1) [BE,F'])."""
    inside = d < cutoff
    c = tl.where(inside, 0.5 * (tl.cos(d * (3.141592653589793 / cutoff)) + 1.0), 0.0)
    diff = d[:, None] - mu[None, :]
    g = tl.where(mask_r[None, :], tl.exp(gamma * diff * diff), 0.0)
    e = g
    if RBF_CUTOFF:
        e = g * c[:, None]
    w1t = _load_w1(W1, offs_r, mask_r, offs_f, mask_f, R, F, TMA).T
    b1 = tl.load(B1 + offs_f, mask=mask_f, other=0.0)
    if W16:
        s1 = tl.load(S1 + offs_f, mask=mask_f, other=0.0)
        z = tl.dot(e.to(tl.float16), w1t, out_dtype=tl.float32) * s1[None, :] + b1[None, :]
    else:
        z = tl.dot(e, w1t, input_precision=DOT_PRECISION) + b1[None, :]
    h = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)  # tanh(z), overflow-safe at both ends
    return g, c, h


@triton.jit
def _load_w1(W1, offs_r, mask_r, offs_f, mask_f, R, F, TMA: tl.constexpr):
    """W1 [BLOCK_F, BLOCK_R] (zero-padded): by TMA into shared memory, or through registers."""
    if TMA:
        w1 = tl.make_tensor_descriptor(W1, shape=[F, R], strides=[R, 1],
                                       block_shape=[offs_f.shape[0], offs_r.shape[0]]).load([0, 0])
    else:
        w1 = tl.load(W1 + offs_f[:, None] * R + offs_r[None, :], mask=mask_f[:, None] & mask_r[None, :], other=0.0)
    return w1


@triton.jit
def _load_w2_rows(W2, offs_c, mask_c, offs_f, mask_f, c0, F, TMA: tl.constexpr):
    """Rows offs_c (= c0 + arange) of W2 [F'out, F'in] as [BLOCK_C, BLOCK_F] (zero-padded)."""
    if TMA:
        w2 = tl.make_tensor_descriptor(W2, shape=[F, F], strides=[F, 1],
                                       block_shape=[offs_c.shape[0], offs_f.shape[0]]).load([c0, 0])
    else:
        w2 = tl.load(W2 + offs_c[:, None] * F + offs_f[None, :], mask=mask_c[:, None] & mask_f[None, :], other=0.0)
    return w2


@triton.jit
def _filter_chunk(h_op, W2, S2, offs_f, mask_f, offs_c, mask_c, c0, F, W16: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, TMA: tl.constexpr):
    """Columns offs_c of the second filter layer y = h W2^T: [BE, BLOCK_C] (h_op in the dot's input dtype)."""
    w2t = _load_w2_rows(W2, offs_c, mask_c, offs_f, mask_f, c0, F, TMA).T
    if W16:
        s2 = tl.load(S2 + offs_c, mask=mask_c, other=0.0)
        y = tl.dot(h_op, w2t, out_dtype=tl.float32) * s2[None, :]
    else:
        y = tl.dot(h_op, w2t, input_precision=DOT_PRECISION)
    return y


@triton.jit
def _segment_store(OUT, rows, key, mask_e, offs_f, mask_f, F, DOT_PRECISION: tl.constexpr, BLOCK_D: tl.constexpr):
    """Add rows [BE, C] into OUT[key, offs_f] for keys sorted along the tile: one-hot segment sums on tensor cores;
    rows of beads strictly inside the tile's key range belong to this tile alone (plain store), the first and last
    bead may continue in the neighbouring tiles (atomic add into the zero-initialized OUT)."""
    first = tl.min(tl.where(mask_e, key, 9223372036854775807), axis=0)
    last = tl.max(tl.where(mask_e, key, -1), axis=0)
    local = key - first
    offs_d = tl.arange(0, BLOCK_D)
    for d0 in range(0, last - first + 1, BLOCK_D):
        onehot = tl.where((local[None, :] == (d0 + offs_d)[:, None]) & mask_e[None, :], 1.0, 0.0)
        seg = tl.dot(onehot, rows, input_precision=DOT_PRECISION)
        node = first + d0 + offs_d
        live = (node <= last)[:, None] & mask_f[None, :]
        alone = ((node > first) & (node < last))[:, None]
        ptr = OUT + node[:, None] * F + offs_f[None, :]
        tl.store(ptr, seg, mask=live & alone)
        tl.atomic_add(ptr, seg, mask=live & ~alone, sem="relaxed")


@triton.jit
def _tile_setup(MU, R, F, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr):
    """Offsets and masks of a tile (pairs, Gaussians, filters) and the Gaussian centres mu [BLOCK_R]."""
    offs_e = tl.arange(0, BLOCK_E)
    offs_r = tl.arange(0, BLOCK_R)
    offs_f = tl.arange(0, BLOCK_F)
    mask_r = offs_r < R
    mask_f = offs_f < F
    mu = tl.load(MU + offs_r, mask=mask_r, other=0.0)
    return offs_e, offs_r, offs_f, mask_r, mask_f, mu


@triton.jit
def _scale(SCALE, X16: tl.constexpr):
    """Per-tensor scale of an fp16 copy (1 when the tensor is fp32)."""
    scale = 1.0
    if X16:
        scale = tl.load(SCALE)
    return scale


@triton.jit
def _cfconv_fwd_kernel(
    X,          # [N, F] source features x = lin1(h), fp32 (or fp16 x / XSCALE when X16)
    DIST,       # [P] fp32 pair distances, dst-sorted order (padding last)
    SRC,        # [P] int64 source bead of each pair
    DST,        # [P] int64 destination bead of each pair (non-decreasing over the valid pairs)
    ROWPTR,     # [N + 1] int64 destination offsets; ROWPTR[N] is the number of valid pairs
    MU,         # [R] fp32 Gaussian centres
    W1,         # [F, R] filter layer 1 weight (fp32, or fp16 divided by S1 when W16)
    B1,         # [F] fp32 filter layer 1 bias
    W2,         # [F, F] filter layer 2 weight, no bias (fp32, or fp16 divided by S2 when W16)
    S1,         # [F] fp32 per-output-channel scales of W1 (used only when W16)
    S2,         # [F] fp32 per-output-channel scales of W2 (used only when W16)
    OUT,        # [N, F] fp32 output messages m, zero-initialized
    XSCALE,     # [1] fp32 scale of X when X16 (X holds x / XSCALE in fp16)
    N,          # number of beads (runtime)
    F,          # number of filters F' (runtime)
    R,          # number of Gaussians R (runtime)
    gamma,      # Gaussian exponent (negative), 1 / length^2
    cutoff,     # cutoff radius r_c, model length unit
    tiles_per_program,            # consecutive BLOCK_E tiles walked by one program (runtime)
    RBF_CUTOFF: tl.constexpr,     # the basis carries the cosine cutoff too
    W16: tl.constexpr,            # fp16 weights and activations with per-channel scales
    DOT_PRECISION: tl.constexpr,  # input precision of the fp32 dots ("tf32x3", "ieee", "tf32")
    TMA: tl.constexpr,            # weight tiles through TMA tensor descriptors
    X16: tl.constexpr,            # X is fp16 (scaled by XSCALE)
    BLOCK_E: tl.constexpr,        # pairs per tile (>= 16)
    BLOCK_R: tl.constexpr,        # R padded to a power of two (>= 16)
    BLOCK_F: tl.constexpr,        # F' padded to a power of two (>= 16)
    BLOCK_C: tl.constexpr,        # filter columns per chunk of the second layer (divides BLOCK_F, >= 16)
    BLOCK_D: tl.constexpr,        # destinations per one-hot reduction step (>= 16)
):
    pid = tl.program_id(0).to(tl.int64)
    num_valid = tl.load(ROWPTR + N)
    offs_e, offs_r, offs_f, mask_r, mask_f, mu = _tile_setup(MU, R, F, BLOCK_E, BLOCK_R, BLOCK_F)
    xscale = _scale(XSCALE, X16)
    for t in range(0, tiles_per_program):
        e0 = (pid * tiles_per_program + t) * BLOCK_E
        if e0 < num_valid:
            rows = e0 + offs_e
            mask_e = rows < num_valid
            d = tl.load(DIST + rows, mask=mask_e, other=2.0 * cutoff)
            src = tl.load(SRC + rows, mask=mask_e, other=0)
            dst = tl.load(DST + rows, mask=mask_e, other=0)
            g, c, h = _hidden_tile(d, mu, mask_r, W1, B1, S1, offs_r, offs_f, mask_f, R, F, gamma, cutoff,
                                   RBF_CUTOFF, W16, DOT_PRECISION, TMA)
            h_op = h
            if W16:
                h_op = h.to(tl.float16)
            # Second layer, message and reduction chunk by chunk of filter columns (bounded registers).
            for c0 in tl.static_range(0, BLOCK_F, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                mask_c = offs_c < F
                y = _filter_chunk(h_op, W2, S2, offs_f, mask_f, offs_c, mask_c, c0, F, W16, DOT_PRECISION, TMA)
                xs = tl.load(X + src[:, None] * F + offs_c[None, :], mask=mask_e[:, None] & mask_c[None, :],
                             other=0.0)
                if X16:
                    msg = tl.where(mask_e[:, None], y * (c * xscale)[:, None] * xs.to(tl.float32), 0.0)
                else:
                    msg = tl.where(mask_e[:, None], y * c[:, None] * xs, 0.0)
                _segment_store(OUT, msg, dst, mask_e, offs_c, mask_c, F, DOT_PRECISION, BLOCK_D)


@triton.jit
def _cfconv_bwd_kernel(
    X,          # [N, F] source features of the forward, fp32 (or fp16 when X16)
    G,          # [N, F] upstream gradient dL/dm, fp32 (or fp16 when X16)
    DIST,       # [P] fp32 pair distances, dst-sorted order
    SRC,        # [P] int64 source bead of each pair
    DST,        # [P] int64 destination bead of each pair
    PERM,       # [P] int64 pair indices sorted by source bead (valid pairs first)
    ROWPTR_S,   # [N + 1] int64 source offsets into PERM; ROWPTR_S[N] is the number of valid pairs
    MU,         # [R] fp32 Gaussian centres
    W1,         # [F, R] filter layer 1 weight (fp32, or fp16 divided by S1 when W16)
    B1,         # [F] fp32 filter layer 1 bias
    W2,         # [F, F] filter layer 2 weight (fp32, or fp16 divided by S2 when W16)
    S1,         # [F] fp32 per-output-channel scales of W1 (used only when W16)
    S2,         # [F] fp32 per-output-channel scales of W2 (used only when W16)
    GRAD_X,     # [N, F] fp32 output dL/dx, zero-initialized
    GRAD_DIST,  # [P] fp32 output dL/dd, written for every valid pair (padding stays as allocated: 0)
    XSCALE,     # [1] fp32 scale of X when X16
    GSCALE,     # [1] fp32 scale of G when X16 (G holds dL/dm / GSCALE in fp16)
    N,          # number of beads (runtime)
    F,          # number of filters F' (runtime)
    R,          # number of Gaussians R (runtime)
    gamma,      # Gaussian exponent (negative), 1 / length^2
    cutoff,     # cutoff radius r_c, model length unit
    tiles_per_program,            # consecutive BLOCK_E tiles walked by one program (runtime)
    RBF_CUTOFF: tl.constexpr,     # the basis carries the cosine cutoff too
    W16: tl.constexpr,            # fp16 weights and activations with per-channel scales
    DOT_PRECISION: tl.constexpr,  # input precision of the fp32 dots
    TMA: tl.constexpr,            # weight tiles through TMA tensor descriptors
    X16: tl.constexpr,            # X and G are fp16 (scaled by XSCALE, GSCALE)
    BLOCK_E: tl.constexpr,        # pairs per tile (>= 16)
    BLOCK_R: tl.constexpr,        # R padded to a power of two (>= 16)
    BLOCK_F: tl.constexpr,        # F' padded to a power of two (>= 16)
    BLOCK_C: tl.constexpr,        # filter columns per chunk of the second layer (divides BLOCK_F, >= 16)
    BLOCK_D: tl.constexpr,        # sources per one-hot reduction step (>= 16)
):
    pid = tl.program_id(0).to(tl.int64)
    num_valid = tl.load(ROWPTR_S + N)
    offs_e, offs_r, offs_f, mask_r, mask_f, mu = _tile_setup(MU, R, F, BLOCK_E, BLOCK_R, BLOCK_F)
    xscale = _scale(XSCALE, X16)
    gscale = _scale(GSCALE, X16)
    for t in range(0, tiles_per_program):
        k0 = (pid * tiles_per_program + t) * BLOCK_E
        if k0 < num_valid:
            k = k0 + offs_e
            mask_e = k < num_valid
            pair = tl.load(PERM + k, mask=mask_e, other=0)
            d = tl.load(DIST + pair, mask=mask_e, other=2.0 * cutoff)
            src = tl.load(SRC + pair, mask=mask_e, other=0)
            dst = tl.load(DST + pair, mask=mask_e, other=0)
            g, c, h = _hidden_tile(d, mu, mask_r, W1, B1, S1, offs_r, offs_f, mask_f, R, F, gamma, cutoff,
                                   RBF_CUTOFF, W16, DOT_PRECISION, TMA)
            h_op = h
            if W16:
                h_op = h.to(tl.float16)
            dh = tl.zeros((BLOCK_E, BLOCK_F), dtype=tl.float32)
            dc = tl.zeros((BLOCK_E,), dtype=tl.float32)
            for c0 in tl.static_range(0, BLOCK_F, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                mask_c = offs_c < F
                mask_ec = mask_e[:, None] & mask_c[None, :]
                y = _filter_chunk(h_op, W2, S2, offs_f, mask_f, offs_c, mask_c, c0, F, W16, DOT_PRECISION, TMA)
                gd = tl.load(G + dst[:, None] * F + offs_c[None, :], mask=mask_ec, other=0.0)
                if X16:
                    gd = gd.to(tl.float32)
                    gx = y * (c * gscale)[:, None] * gd
                else:
                    gx = y * c[:, None] * gd
                _segment_store(GRAD_X, tl.where(mask_e[:, None], gx, 0.0), src, mask_e, offs_c, mask_c, F,
                               DOT_PRECISION, BLOCK_D)
                xs = tl.load(X + src[:, None] * F + offs_c[None, :], mask=mask_ec, other=0.0)
                if X16:
                    u = gd * xs.to(tl.float32) * (xscale * gscale)
                else:
                    u = gd * xs
                dc += tl.sum(u * y, axis=1)
                dy = u * c[:, None]
                w2 = _load_w2_rows(W2, offs_c, mask_c, offs_f, mask_f, c0, F, TMA)  # rows offs_c of W2
                if W16:
                    # Per-chunk activation scale keeps the fp16 operand in range whatever the gradient's size.
                    s2 = tl.load(S2 + offs_c, mask=mask_c, other=0.0)
                    dys = dy * s2[None, :]
                    sy = tl.max(tl.max(tl.abs(dys), axis=1), axis=0)
                    sy = tl.where(sy > 0, sy, 1.0)
                    dh += tl.dot((dys / sy).to(tl.float16), w2, out_dtype=tl.float32) * sy
                else:
                    dh += tl.dot(dy, w2, input_precision=DOT_PRECISION)
            dz = dh * (1.0 - h * h)
            w1 = _load_w1(W1, offs_r, mask_r, offs_f, mask_f, R, F, TMA)
            if W16:
                s1 = tl.load(S1 + offs_f, mask=mask_f, other=0.0)
                dzs = dz * s1[None, :]
                sz = tl.max(tl.max(tl.abs(dzs), axis=1), axis=0)
                sz = tl.where(sz > 0, sz, 1.0)
                de = tl.dot((dzs / sz).to(tl.float16), w1, out_dtype=tl.float32) * sz
            else:
                de = tl.dot(dz, w1, input_precision=DOT_PRECISION)
            if RBF_CUTOFF:
                dg = de * c[:, None]
                dc += tl.sum(de * g, axis=1)
            else:
                dg = de
            dcdd = tl.where(d < cutoff,
                            -0.5 * (3.141592653589793 / cutoff) * tl.sin(d * (3.141592653589793 / cutoff)), 0.0)
            dd = tl.sum(dg * g * (2.0 * gamma) * (d[:, None] - mu[None, :]), axis=1) + dc * dcdd
            tl.store(GRAD_DIST + pair, dd, mask=mask_e)


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


def _use_tma(kind: str, precision: str, w1k: Tensor, w2k: Tensor) -> bool:
    """TMA descriptors for this kernel: wanted (USE_TMA / TMA_KERNELS), 16-byte aligned bases and row strides,
    Hopper (sm_90) or newer."""
    wanted = (kind, precision) in TMA_KERNELS if USE_TMA is None else USE_TMA
    if not wanted:
        return False
    aligned = all(w.data_ptr() % 16 == 0 and (w.shape[1] * w.element_size()) % 16 == 0 for w in (w1k, w2k))
    if not aligned:
        return False
    if not w1k.is_cuda:  # the interpreter asks row strides in elements to be multiples of 16
        return os.environ.get("TRITON_INTERPRET") == "1" and w1k.shape[1] % 16 == 0 and w2k.shape[1] % 16 == 0
    if torch.cuda.get_device_capability(w1k.device)[0] < 9:
        return False
    # In-kernel descriptors need a small global scratch buffer per launch (graph-capturable torch allocation). The
    # allocator is a context variable: set on every launch, since autograd runs the backward in its own thread.
    triton.set_allocator(_scratch)
    return True


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _half(t: Tensor) -> Tuple[Tensor, Tensor]:
    """(fp16 t / s, s [1] fp32) with s = max |t| (1 for zeros): no overflow whatever t's range; no host sync."""
    s = t.detach().abs().amax().reshape(1).to(torch.float32)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (t.detach() / s).to(torch.float16).contiguous(), s


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


def _warps(tile, block_c: int) -> int:
    """Warps of a launch: at most BLOCK_C / 8, so each of 8 warps has at least one 8-column MMA tile of a chunk
    (narrower chunks at 8 warps gave wrong dL/dx and an illegal address in the fp32 backward on an H200)."""
    return max(1, min(tile[1], max(4, block_c // 8)))


def _grid(pairs: int, tile) -> Tuple[int]:
    block_e, _, per_program, _ = tile
    return (max(1, triton.cdiv(pairs, block_e * per_program)),)


def cfconv_flash_forward(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, rowptr: Tensor, mu: Tensor, w1: Tensor,
                         b1: Tensor, w2: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool,
                         precision: str) -> Tensor:
    """m [N, F'] = sum over each destination's pairs of x[src] * W(d) (dst-sorted pairs, CSR ``rowptr``)."""
    _check(x, dist, src, rowptr, mu, w1)
    n, f = x.shape
    block_f, block_r = _blocks(f, mu.shape[0])
    out = torch.zeros_like(x)
    if n == 0 or dist.shape[0] == 0:
        return out
    w1k, b1k, w2k, s1, s2 = _weights(w1, b1, w2, precision)
    tile = TILES[("fwd", precision)]
    x16 = precision == "w16a16" and GATHER16
    tma = _use_tma("fwd", precision, w1k, w2k)
    xk, xscale = _half(x) if x16 else (x.contiguous(), b1k)
    compiled = _cfconv_fwd_kernel[_grid(dist.shape[0], tile)](
        xk, dist.contiguous(), src.contiguous(), dst.contiguous(), rowptr.contiguous(),
        mu.to(torch.float32).contiguous(), w1k, b1k, w2k, s1, s2, out, xscale, n, f, mu.shape[0], float(gamma),
        float(cutoff), tile[2], RBF_CUTOFF=bool(rbf_cutoff), W16=precision == "w16a16", DOT_PRECISION=FP32_DOT,
        TMA=tma, X16=x16, BLOCK_E=tile[0], BLOCK_R=block_r, BLOCK_F=block_f, BLOCK_C=min(tile[3], block_f), BLOCK_D=16,
        num_warps=_warps(tile, min(tile[3], block_f)))
    _record(f"fwd/{precision}", compiled, tma)
    return out


def cfconv_flash_backward(grad_out: Tensor, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, perm: Tensor,
                          rowptr_src: Tensor, mu: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, gamma: float,
                          cutoff: float, rbf_cutoff: bool, precision: str):
    """(dL/dx [N, F'], dL/dd [P]) for dL/dm = ``grad_out`` [N, F'], by recomputation over source-sorted tiles."""
    _check(x, dist, dst, rowptr_src, mu, w1)
    n, f = x.shape
    block_f, block_r = _blocks(f, mu.shape[0])
    grad_x = torch.zeros_like(x)
    grad_dist = torch.zeros_like(dist)
    if n == 0 or dist.shape[0] == 0:
        return grad_x, grad_dist
    w1k, b1k, w2k, s1, s2 = _weights(w1, b1, w2, precision)
    tile = TILES[("bwd", precision)]
    x16 = precision == "w16a16" and GATHER16
    tma = _use_tma("bwd", precision, w1k, w2k)
    if x16:
        (xk, xscale), (gk, gscale) = _half(x), _half(grad_out.to(torch.float32))
    else:
        xk, xscale, gk, gscale = x.contiguous(), b1k, grad_out.to(torch.float32).contiguous(), b1k
    compiled = _cfconv_bwd_kernel[_grid(dist.shape[0], tile)](
        xk, gk, dist.contiguous(), src.contiguous(),
        dst.contiguous(), perm.contiguous(), rowptr_src.contiguous(), mu.to(torch.float32).contiguous(), w1k, b1k,
        w2k, s1, s2, grad_x, grad_dist, xscale, gscale, n, f, mu.shape[0], float(gamma), float(cutoff), tile[2],
        RBF_CUTOFF=bool(rbf_cutoff), W16=precision == "w16a16", DOT_PRECISION=FP32_DOT, TMA=tma,
        X16=x16, BLOCK_E=tile[0],
        BLOCK_R=block_r, BLOCK_F=block_f, BLOCK_C=min(tile[3], block_f), BLOCK_D=16,
        num_warps=_warps(tile, min(tile[3], block_f)))
    _record(f"bwd/{precision}", compiled, tma)
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
    return cfconv_flash_forward(x, dist, src, dst, rowptr, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff, precision)


@cfconv_csr.register_fake
def _cfconv_csr_fake(x, dist, src, dst, rowptr, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff,
                     precision):
    return torch.empty_like(x)


@torch.library.custom_op("openmmflash::cfconv_csr_backward", mutates_args=())
def cfconv_csr_backward(grad_out: Tensor, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, perm: Tensor,
                        rowptr_src: Tensor, mu: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, gamma: float,
                        cutoff: float, rbf_cutoff: bool, precision: str) -> Tuple[Tensor, Tensor]:
    """(dL/dx [N, F'], dL/ddist [P]) of ``cfconv_csr`` for dL/dm = grad_out: an op of its own, so that
    torch.compile treats the Triton backward as opaque (as it does the forward)."""
    return cfconv_flash_backward(grad_out, x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff,
                                 rbf_cutoff, precision)


@cfconv_csr_backward.register_fake
def _cfconv_csr_backward_fake(grad_out, x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff,
                              rbf_cutoff, precision):
    return torch.empty_like(x), torch.empty_like(dist)


def _cfconv_csr_setup(ctx, inputs, output):
    x, dist, src, dst, rowptr, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff, precision = inputs
    ctx.save_for_backward(x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2)
    ctx.params = (gamma, cutoff, rbf_cutoff, precision)


def _cfconv_csr_backward(ctx, grad_out):
    x, dist, src, dst, perm, rowptr_src, mu, w1, b1, w2 = ctx.saved_tensors
    gamma, cutoff, rbf_cutoff, precision = ctx.params
    need = ctx.needs_input_grad
    grad_x, grad_dist = torch.ops.openmmflash.cfconv_csr_backward(grad_out, x, dist, src, dst, perm, rowptr_src, mu,
                                                                  w1, b1, w2, gamma, cutoff, rbf_cutoff, precision)
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
