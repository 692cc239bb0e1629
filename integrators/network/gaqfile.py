"""Low-bit export of a quantized FlashMD model: weights stored at their bit width, loadable like any FlashMD model.

``freezeModel`` turns a fake-quantized model (quantize.quantizeModel, after calibration or QAT) into its deployed
form: every parametrized ``nn.Linear`` becomes a :class:`QuantizedLinear` and every vector channel mix a
:class:`QuantizedVectorLinear` (int4 codes packed two a byte, or int8, plus float32 per-channel scales); the
activation quantizers keep their calibrated scales (observers frozen). The deployed model computes the same
function as the fake-quantized one (same codes and scales), with the weights never stored in float.

File format (``torch.save`` of plain types, ``weights_only=True`` loadable), written atomically:

    format "openmmflash-flashmd-gaq", version, the FlashMD fields (species, speciesMasses, stride, momentumScale,
    config, provenance, validation), ``gaq`` (scheme, method, weightBits, activationBits, dirBits, quantized layer
    list, QAT settings and results) and ``state_dict`` (uint8 packed int4 / int8 codes, float32 scales, float32
    biases and embeddings, activation scales ``amax``, frame weights).

``openmmflash.integrators.network.modelfile.loadModel`` recognizes the format, so FlashMD integrators take a quantized
file
by path (or by name, when shipped in ``integrators/models``).
"""

import os
from typing import Dict

import torch
from torch import nn
from torch.nn.utils import parametrize

from openmmflash.gaq.quantize import _is_vector_mix, quantizeModel, setObserving
from openmmflash.gaq.weights import QuantizedLinear, QuantizedVectorLinear
from openmmflash.integrators.network.flashmdmodel import FlashMDModel, _plain

FORMAT = "openmmflash-flashmd-gaq"
VERSION = 1


def _set_bits(model: nn.Module) -> None:
    """All quantizers at the scheme's target bit widths (a QAT schedule may have left them elsewhere)."""
    meta = model.gaq
    for module in model.modules():
        name = type(module).__name__
        if name in ("ScalarQuantizer", "NaiveVectorQuantizer", "MDDQuantizer", "FrameMDDQuantizer"):
            module.bits = meta["activationBits"]
        elif name == "PerChannelWeight":
            module.bits = meta["weightBits"]


def freezeModel(model: nn.Module) -> nn.Module:
    """Replace fake-quantized weights by stored low-bit layers, in place; freeze observers; eval mode. Returns model."""
    if not getattr(model, "gaq", None):
        raise ValueError("the model is not quantized: call openmmflash.gaq.quantize.quantizeModel first")
    if model.gaq.get("frozen"):
        return model
    _set_bits(model)
    bits = model.gaq["weightBits"]
    layers = []
    for name, module in list(model.named_modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        if isinstance(module, nn.Linear):
            new = QuantizedLinear(module, bits)
        elif _is_vector_mix(module):
            new = QuantizedVectorLinear(module, bits)
        else:  # pragma: no cover - quantizeModel parametrizes only these two kinds
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new.to(
            module.parametrizations.weight.original.device))
        layers.append(name)
    setObserving(model, False)
    model.gaq = dict(model.gaq, frozen=True, quantizedLayers=layers)
    model.eval()
    return model


def saveQuantizedModel(model: nn.Module, path: str) -> int:
    """Freeze (if needed) and write ``model`` to ``path`` at its bit width. Returns the file size in bytes."""
    freezeModel(model)
    blob = {"format": FORMAT, "version": VERSION, "species": model.species, "speciesMasses": model.speciesMasses,
            "stride": model.stride, "momentumScale": model.momentumScale, "config": model.config,
            "speciesKind": getattr(model, "speciesKind", "element"),
            "speciesLabels": getattr(model, "speciesLabels", None),
            "provenance": _plain(model.provenance), "validation": _plain(model.validation),
            "gaq": _plain(model.gaq),
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return os.path.getsize(path)


def modelFromBlob(blob: Dict, path: str = "<blob>"):
    """Rebuild the deployed quantized FlashMDModel from a loaded file dict (used by modelfile.loadModel)."""
    if blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a quantized FlashMD model file (expected format {FORMAT!r})")
    if blob["version"] > VERSION:
        raise ValueError(f"{path} has quantized-model version {blob['version']}; this openmm-flash reads up to "
                         f"{VERSION}. Upgrade openmm-flash.")
    meta = blob["gaq"]
    model = FlashMDModel(blob["species"], blob["speciesMasses"], blob["stride"], blob["momentumScale"], blob["config"],
                         speciesKind=blob.get("speciesKind", "element"), speciesLabels=blob.get("speciesLabels"))
    # files without "frameParity" were written before the option: their frames are right-handed (SO(3) only)
    quantizeModel(model, meta["scheme"], meta["method"], meta["dirBits"], meta.get("frameParity", False))
    model.gaq.update({k: v for k, v in meta.items() if k not in model.gaq})
    model.gaq.pop("frozen", None)
    freezeModel(model)
    try:
        missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: the stored tensors do not fit the recorded scheme {meta['scheme']!r} / "
                         f"configuration; the file is damaged or was edited ({str(err).splitlines()[-1]})") from err
    if missing or unexpected:
        raise ValueError(f"{path}: quantized model file does not match its configuration (missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]})")
    model.provenance = blob.get("provenance", {})
    model.validation = blob.get("validation", {})
    model.eval()
    return model


def loadQuantizedModel(path: str, device=None):
    """Load a file written by :func:`saveQuantizedModel`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict):
        raise ValueError(f"{path} is not a quantized FlashMD model file")
    model = modelFromBlob(blob, path)
    return model.to(device) if device is not None else model
