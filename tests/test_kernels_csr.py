"""CSR build (plugin/kernels/csr.py) and W16A16 quantization (plugin/kernels/w16a16.py) against plain loops."""

import pytest
import torch

from openmmflash.neighbors import build_neighbor_list
from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.plugin.kernels.w16a16 import dequantize_per_channel, quantize_per_channel

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("capacity", [0, 97])
def test_pair_csr_matches_loops(device, capacity):
    pos = (torch.randn(3 * 9, 3) * 2.0).to(device)
    src, dst, _, _ = build_neighbor_list(pos, 3, 3.0, None, capacity)
    n = pos.shape[0]
    rowptr, perm, rowptr_src = torch.ops.openmmflash.pair_csr(src, dst, n)
    src_l, dst_l, perm_l = src.tolist(), dst.tolist(), perm.tolist()
    assert rowptr.shape == (n + 1,) and rowptr_src.shape == (n + 1,) and perm.shape == src.shape
    assert sorted(perm_l) == list(range(len(src_l)))  # a permutation
    for i in range(n):
        rows = range(int(rowptr[i]), int(rowptr[i + 1]))
        assert [dst_l[e] for e in rows] == [i] * len(rows)
        assert len(rows) == dst_l.count(i)
        mine = [perm_l[k] for k in range(int(rowptr_src[i]), int(rowptr_src[i + 1]))]
        assert sorted(mine) == [e for e in range(len(src_l)) if src_l[e] == i and dst_l[e] >= 0]
    # Padding pairs belong to no segment.
    assert int(rowptr[-1]) == int(rowptr_src[-1]) == int((dst >= 0).sum())


def test_pair_csr_empty_and_unsorted():
    empty = torch.zeros(0, dtype=torch.int64)
    rowptr, perm, rowptr_src = torch.ops.openmmflash.pair_csr(empty, empty, 4)
    assert rowptr.tolist() == [0] * 5 and rowptr_src.tolist() == [0] * 5 and perm.numel() == 0
    with pytest.raises(ValueError, match="sorted by destination"):
        torch.ops.openmmflash.pair_csr(torch.tensor([0, 1]), torch.tensor([1, 0]), 2)


def test_quantize_per_channel():
    w = torch.randn(6, 9) * torch.logspace(-4, 2, 6).unsqueeze(1)  # rows spanning six decades
    w[3] = 0.0
    wq, scale = quantize_per_channel(w)
    assert wq.dtype == torch.float16 and scale.shape == (6,)
    assert torch.allclose(wq.float().abs().amax(1)[[0, 1, 2, 4, 5]], torch.ones(5))
    assert scale[3] == 1.0 and torch.equal(wq[3].float(), torch.zeros(9))
    back = dequantize_per_channel(wq, scale)
    # Per-row relative error at fp16 rounding (2^-11), however small the row; a plain cast loses the 1e-4 row.
    row_err = (back - w).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)
    assert float(row_err.max()) < 1e-3
    plain = w.half().float()
    assert float(((plain - w).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30))[0]) > float(row_err[0])
