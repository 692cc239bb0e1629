"""GAQ Triton kernels against their plain-PyTorch references (interpreter on CPU; real GPU with the cuda marker)."""

import pytest
import torch

from openmmflash.gaq.codebook import sphereCodebook
from openmmflash.gaq.kernels import (nearest_codeword, nearest_codeword_indexed, quantized_linear,
                                     quantized_linear_reference)
from openmmflash.gaq.weights import QuantizedLinear, pack_int4, quantize_per_channel

SHAPES = [(37, 13, 7, 4), (70, 64, 192, 4), (20, 1, 64, 4), (33, 64, 2, 8), (5, 128, 64, 8), (0, 16, 8, 4)]


def _check_linear(device):
    gen = torch.Generator().manual_seed(0)
    for M, K, N, bits in SHAPES:
        w = torch.randn(N, K, generator=gen)
        codes, scales = quantize_per_channel(w, bits)
        codes = pack_int4(codes) if bits == 4 else codes
        bias = torch.randn(N, generator=gen)
        x = torch.randn(M, K, generator=gen)
        args = [t.to(device) for t in (x, codes, scales, bias)]
        y = quantized_linear(*args, K, bits)
        ref = quantized_linear_reference(x.double(), codes, scales.double(), bias.double(), K, bits)
        assert y.shape == (M, N)
        torch.testing.assert_close(y.cpu().double(), ref, rtol=1e-5, atol=1e-5)
        y_nobias = quantized_linear(args[0], args[1], args[2], None, K, bits)
        torch.testing.assert_close(y_nobias.cpu().double(), ref - bias.double(), rtol=1e-5, atol=1e-5)


def _check_codeword(device, sizes=(4, 8)):
    gen = torch.Generator().manual_seed(1)
    for bits in sizes:
        c = sphereCodebook(bits)
        u = torch.nn.functional.normalize(torch.randn(1000, 3, generator=gen), dim=1)
        idx = nearest_codeword(u.to(device), c.to(device)).cpu()
        scores = u.double() @ c.double().T
        best = scores.max(dim=1).values
        # the chosen codeword is a nearest one (ties / 1-ulp differences allowed), and odd: Q(-u) = -Q(u)
        assert torch.all(scores.gather(1, idx[:, None]).squeeze(1) >= best - 1e-6)
        assert float((idx == scores.argmax(1)).float().mean()) > 0.999
        neg = nearest_codeword((-u).to(device), c.to(device)).cpu()
        torch.testing.assert_close(c[neg], -c[idx])


def _check_codeword_indexed(device, bits=(8, 10)):
    """The cube-map kernel picks the same codeword as the PyTorch index (same cells, same candidate order) and as
    the full argmax, also on cube edges and corners and for zero vectors."""
    from openmmflash.gaq.codebookindex import CodebookIndex
    gen = torch.Generator().manual_seed(2)
    edges = torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [0.0, 0.0, -1.0]])
    for b in bits:
        c = sphereCodebook(b)
        u = torch.cat([torch.nn.functional.normalize(torch.randn(3000, 3, generator=gen), dim=1),
                       edges / edges.norm(dim=1, keepdim=True), torch.zeros(2, 3)])
        idx = nearest_codeword_indexed(u.to(device), c.to(device)).cpu()
        assert torch.equal(idx, CodebookIndex(c).nearest(u))
        full = (u.double() @ c.double().T)
        assert torch.all(full.gather(1, idx[:, None]).squeeze(1) >= full.max(1).values - 1e-6)
        assert idx[-2:].tolist() == [0, 0]


def test_nearest_codeword_indexed_kernel_matches_index_and_argmax():
    _check_codeword_indexed("cpu")


def test_quantized_linear_kernel_matches_reference():
    _check_linear("cpu")


def test_nearest_codeword_kernel_matches_argmax():
    _check_codeword("cpu")


def test_quantized_linear_module_uses_kernel_and_matches_torch_path():
    layer = QuantizedLinear(torch.nn.Linear(24, 40), 4)
    x = torch.randn(30, 24)
    fast = layer(x)
    QuantizedLinear.useKernel = False
    try:
        slow = layer(x)
    finally:
        QuantizedLinear.useKernel = True
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_kernels_on_gpu():
    _check_linear("cuda")
    _check_codeword("cuda", (4, 8, 10, 12))
    _check_codeword_indexed("cuda", (8, 10, 12))
