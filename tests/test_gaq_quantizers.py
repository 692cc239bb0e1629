"""GAQ building blocks: sphere codebooks and the vector/scalar activation quantizers."""

import math

import pytest
import torch

from openmmflash.gaq.codebook import coveringAngle, nearestCodeword, sphereCodebook
from openmmflash.gaq.quantizers import MDDQuantizer, NaiveVectorQuantizer, ScalarQuantizer


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_codebook_is_antipodal_and_unit(bits):
    c = sphereCodebook(bits)
    k = 2 ** bits
    assert c.shape == (k, 3)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(k))
    torch.testing.assert_close(c[k // 2:], -c[: k // 2])
    # no two codewords coincide
    gram = c @ c.T - 2 * torch.eye(k)
    assert float(gram.max()) < 1 - 1e-4


@pytest.mark.parametrize("bits", [6, 8])
def test_covering_angle_matches_size(bits):
    """Nearly uniform: covering angle between 0.55 and 0.8 of the mean spacing sqrt(4 pi / K)."""
    spacing = math.sqrt(4 * math.pi / 2 ** bits)
    angle = coveringAngle(sphereCodebook(bits), samples=40_000)
    assert 0.55 * spacing < angle < 0.8 * spacing
    # and it shrinks with the size as 1/sqrt(K)
    assert coveringAngle(sphereCodebook(bits + 2), samples=40_000) < 0.6 * angle


def test_nearest_codeword_is_odd():
    c = sphereCodebook(6)
    u = torch.nn.functional.normalize(torch.randn(5000, 3), dim=1)
    i, j = nearestCodeword(u, c), nearestCodeword(-u, c)
    torch.testing.assert_close(c[j], -c[i])


def test_codebook_bits_validated():
    with pytest.raises(ValueError, match="integer in 1..14"):
        sphereCodebook(0)
    with pytest.raises(ValueError, match="bits must be an integer in 2..16"):
        MDDQuantizer(4, magBits=1)


def test_mddq_round_trip_bounds():
    q = MDDQuantizer(6, magBits=6, dirBits=8)
    v = torch.randn(400, 3, 6) * torch.linspace(0.1, 10.0, 6)
    out = q(v)
    step = q.amax / (2 ** 6 - 1)
    # magnitude within half a step (per channel), direction within the covering angle
    assert torch.all((out.norm(dim=1) - v.norm(dim=1)).abs() <= step / 2 + 1e-6)
    cos = (out * v).sum(1) / (out.norm(dim=1) * v.norm(dim=1)).clamp(min=1e-30)
    keep = out.norm(dim=1) > 0
    assert float(torch.arccos(cos[keep].clamp(-1, 1)).max()) <= coveringAngle(q.codebook, 100_000) + 1e-3
    # the stored form decodes to the same tensor
    codes, index = q.quantize(v)
    torch.testing.assert_close(q.dequantize(codes, index), out)
    assert int(codes.max()) <= 2 ** 6 - 1 and int(index.max()) < 2 ** 8


def test_mddq_parity_and_magnitude_invariance():
    q = MDDQuantizer(4, magBits=8, dirBits=8)
    v = torch.randn(300, 3, 4)
    q(v)
    q.observe = False
    torch.testing.assert_close(q(-v), -q(v))
    rot = torch.linalg.qr(torch.randn(3, 3))[0]
    rv = torch.einsum("ij,njc->nic", rot, v)
    # magnitudes are exactly rotation invariant; only directions carry rotation error
    torch.testing.assert_close(q(rv).norm(dim=1), q(v).norm(dim=1))


def test_straight_through_gradient():
    for quantizer, x in [(MDDQuantizer(3, 4, 6), torch.randn(10, 3, 3)), (NaiveVectorQuantizer(3, 4),
                         torch.randn(10, 3, 3)), (ScalarQuantizer(3, 4), torch.randn(10, 3))]:
        x.requires_grad_(True)
        quantizer(x).sum().backward()
        torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_observer_freezes_scale():
    q = ScalarQuantizer(2, 8)
    q(torch.tensor([[1.0, 2.0]]))
    q.observe = False
    q(torch.tensor([[10.0, 20.0]]))
    torch.testing.assert_close(q.amax, torch.tensor([1.0, 2.0]))
    assert float(q(torch.tensor([[10.0, 20.0]]))[0, 0]) == pytest.approx(1.0)  # clamped to the calibrated range


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_quantization_round_trip_and_storage(bits):
    from openmmflash.gaq.weights import QuantizedLinear, quantize_per_channel

    linear = torch.nn.Linear(13, 7)
    q = QuantizedLinear(linear, bits)
    codes, scales = quantize_per_channel(linear.weight, bits)
    torch.testing.assert_close(q.weight(), codes.float() * scales[:, None])
    assert torch.all((q.weight() - linear.weight).abs() <= scales[:, None] / 2 + 1e-7)
    stored = q.codes.numel() * q.codes.element_size()
    assert stored == (7 * 7 if bits == 4 else 7 * 13)  # int4: two codes a byte (13 -> 7 bytes a row)
    x = torch.randn(5, 13)
    torch.testing.assert_close(q(x), torch.nn.functional.linear(x, q.weight(), linear.bias.detach()))


def test_channel_mixing_with_quantized_weights_is_exactly_equivariant():
    from openmmflash.gaq.weights import QuantizedLinear

    mix = QuantizedLinear(torch.nn.Linear(16, 8, bias=False), 4)
    v = torch.randn(50, 3, 16, dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    rotated_first = mix(torch.einsum("ij,njc->nic", rot, v))
    rotated_after = torch.einsum("ij,njc->nic", rot, mix(v))
    torch.testing.assert_close(rotated_first, rotated_after, rtol=1e-12, atol=1e-12)


def test_bad_weight_bits():
    from openmmflash.gaq.weights import quantize_per_channel

    with pytest.raises(ValueError, match="weight bits must be one of"):
        quantize_per_channel(torch.randn(3, 3), 3)


def _equivariance_error(quantizer, v, rot):
    rv = torch.einsum("ij,njc->nic", rot, v)
    return float((quantizer(rv) - torch.einsum("ij,njc->nic", rot, quantizer(v))).norm() / v.norm())


def test_frame_mddq_is_equivariant_where_naive_is_not():
    from openmmflash.gaq.quantizers import FrameMDDQuantizer

    v = torch.randn(500, 3, 8, dtype=torch.float64)
    frame_q = FrameMDDQuantizer(8, magBits=4, dirBits=8).double()
    naive = NaiveVectorQuantizer(8, 4).double()
    plain = MDDQuantizer(8, magBits=4, dirBits=8).double()
    for q in (frame_q, naive, plain):
        q(v)
        q.observe = False
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    rot = rot if torch.det(rot) > 0 else -rot
    assert _equivariance_error(frame_q, v, rot) < 1e-12
    assert _equivariance_error(naive, v, rot) > 1e-2
    assert _equivariance_error(plain, v, rot) > 1e-2  # a fixed-frame codebook is only approximately equivariant
    # same 12 bits per vector (4 + 8 vs 3 x 4): smaller quantization error than per-component rounding
    err = lambda q: float((q(v) - v).norm() / v.norm())  # noqa: E731
    assert err(frame_q) < err(naive)


def test_frame_parity_option_gives_exact_o3_equivariance():
    from openmmflash.gaq.quantizers import FrameMDDQuantizer

    v = torch.randn(400, 3, 8, dtype=torch.float64)
    reflections = [-torch.eye(3, dtype=torch.float64), torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))]
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))[0]
    reflections.append(rot if torch.det(rot) < 0 else -rot)   # a generic improper rotation
    errors = {}
    for parity in (True, False):
        q = FrameMDDQuantizer(8, magBits=6, dirBits=8, parity=parity).double()
        q(v)
        q.observe = False
        errors[parity] = [_equivariance_error(q, v, R) for R in reflections]
    assert max(errors[True]) < 1e-12
    assert min(errors[False]) > 1e-3   # the right-handed frame alone is only SO(3)-equivariant
