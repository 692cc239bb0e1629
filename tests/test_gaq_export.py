"""Low-bit export of a quantized FlashMD model: file round trip, stored bit widths, sizes, loadModel dispatch."""

import os

import pytest
import torch

from openmmflash.integrators.network.gaqfile import freezeModel, loadQuantizedModel, saveQuantizedModel
from openmmflash.gaq.quantize import quantizeModel, setObserving
from openmmflash.gaq.weights import QuantizedLinear, QuantizedVectorLinear
from openmmflash.integrators.network.modelfile import FlashMDModel, loadModel, saveModel
from openmmflash.neighbors import build_neighbor_list


def small_model(channels=32):
    torch.manual_seed(0)
    return FlashMDModel([1, 8], [1.007947, 15.99943], 0.002,
                        config=dict(channels=channels, num_layers=2, num_rbf=8, cutoff=0.5))


def inputs(n=24, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    q = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.9
    src, dst, shifts, _ = build_neighbor_list(q, 1, 0.5, None, 0)
    types = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return types, x.to(dtype), src, dst, (q[src] - q[dst] + shifts).to(dtype)


def calibrated(scheme, method, dtype=torch.float64):
    model = quantizeModel(small_model().to(dtype), scheme, method, dirBits=8)
    with torch.no_grad():
        model.network(*inputs(dtype=dtype))
    setObserving(model, False)
    return model


@pytest.mark.parametrize("method", ["frame", "naive"])
def test_frozen_model_computes_the_fake_quantized_function(method):
    model = calibrated("w4a8", method)
    data = inputs(dtype=torch.float64)
    with torch.no_grad():
        fake = model.network(*data)
        freezeModel(model)
        frozen = model.network(*data)
    # same codes; the stored per-channel scales are float32, hence differences at the 1e-7 relative level
    torch.testing.assert_close(frozen, fake, rtol=1e-5, atol=1e-7)
    kinds = {type(m) for m in model.modules()}
    assert QuantizedLinear in kinds and QuantizedVectorLinear in kinds
    assert not any(name.endswith("original") for name, _ in model.named_parameters())


def test_file_round_trip_and_bit_width(tmp_path):
    model = calibrated("w4a8", "frame", torch.float32)
    data = inputs()
    with torch.no_grad():
        expected = model.network(*data)
    path = str(tmp_path / "q.pt")
    size = saveQuantizedModel(model, path)
    assert size == os.path.getsize(path) and not os.path.exists(path + ".tmp")
    for loaded in (loadQuantizedModel(path), loadModel(path)):   # loadModel dispatches on the file format
        assert loaded.gaq["scheme"] == "w4a8" and loaded.gaq["method"] == "frame" and loaded.gaq["dirBits"] == 8
        with torch.no_grad():
            torch.testing.assert_close(loaded.network(*data), expected, rtol=1e-5, atol=1e-6)
    blob = torch.load(path, weights_only=True)
    codes = [v for k, v in blob["state_dict"].items() if k.endswith("codes")]
    assert codes and all(c.dtype == torch.uint8 for c in codes)   # int4, two per byte
    assert not any(v.dtype == torch.float32 and v.dim() == 2 and v.shape[0] > 2 for k, v in blob["state_dict"].items()
                   if not k.endswith("embedding.weight"))  # no float weight matrix is stored


def test_file_sizes_shrink_with_bits(tmp_path):
    fp = str(tmp_path / "fp32.pt")
    saveModel(small_model(64), fp)
    sizes = {}
    for scheme in ("w8a8", "w4a8"):
        model = quantizeModel(small_model(64), scheme, "frame", dirBits=8)
        with torch.no_grad():
            model.network(*inputs())
        sizes[scheme] = saveQuantizedModel(model, str(tmp_path / f"{scheme}.pt"))
    fp_size = os.path.getsize(fp)
    assert fp_size / sizes["w4a8"] >= 4.0       # the target for W4A8 (64 channels, as shipped)
    assert sizes["w4a8"] < sizes["w8a8"] < fp_size


def test_bad_quantized_files(tmp_path):
    model = calibrated("w8a8", "naive", torch.float32)
    path = str(tmp_path / "q.pt")
    saveQuantizedModel(model, path)
    blob = torch.load(path, weights_only=True)
    blob["version"] = 99
    torch.save(blob, str(tmp_path / "future.pt"))
    with pytest.raises(ValueError, match="quantized-model version 99"):
        loadModel(str(tmp_path / "future.pt"))
    blob["version"] = 1
    blob["gaq"]["scheme"] = "w4a8"    # codes stored at 8 bits do not fit a 4-bit layout
    torch.save(blob, str(tmp_path / "mismatch.pt"))
    with pytest.raises(ValueError, match="do not fit the recorded scheme"):
        loadModel(str(tmp_path / "mismatch.pt"))
    with pytest.raises(ValueError, match="not quantized"):
        freezeModel(small_model())


def test_shipped_quantized_model_is_small_and_exactly_o3_equivariant_in_float64():
    from openmmflash.integrators.network.modelfile import MODEL_DIR, availableModels
    name = "water-tip3pfb-8fs-gaq-w4a8"
    assert name in availableModels()
    fp_size = os.path.getsize(os.path.join(MODEL_DIR, "water-tip3pfb-8fs.pt"))
    assert fp_size / os.path.getsize(os.path.join(MODEL_DIR, name + ".pt")) >= 4.0
    model = loadModel(name).double()
    assert model.gaq["scheme"] == "w4a8" and model.gaq["method"] == "frame" and model.gaq["qat"]["steps"] > 0
    types, x, src, dst, edges = inputs(dtype=torch.float64)
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))[0]
    assert model.gaq["frameParity"]   # the frame is oriented by a third mix: reflections are exact too
    with torch.no_grad():
        out = model.network(types, x, src, dst, edges)
        for R in (rot, -rot):          # one proper, one improper
            rotated = model.network(types, x @ R.T, src, dst, edges @ R.T)
            expected = torch.einsum("ij,njk->nik", R, out)
            assert float((rotated - expected).norm() / out.norm()) < 1e-9
