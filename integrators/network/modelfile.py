"""FlashMD model files (the model itself: :mod:`openmmflash.integrators.network.flashmdmodel`).

A model file (``torch.save`` of plain types, loadable with ``weights_only=True``) holds:
format/version, the PaiNN configuration and weights, ``stride`` (ps), ``species`` (integer species ids),
``speciesMasses`` (amu, one per species), ``speciesKind`` (what the ids are: "element" = atomic numbers, "cgBead" =
the bead types of a FlashSchNet CG model; version-1 files have no key and are "element"), optional
``speciesLabels`` (a name per species, e.g. "TYR:CA"), ``momentumScale`` (sqrt(kJ/mol)), ``provenance`` (how it was
trained) and ``validation`` (metrics measured on held-out pairs). Shipped models live in ``integrators/models/`` and are
addressed by file name without the ``.pt`` suffix (see :func:`availableModels`).

Prediction in mass-scaled form (x = p / sqrt(m) / momentumScale, dimensionless, ~1):

    dq * sqrt(m) = stride * momentumScale * (x + out_0)        (free flight plus a learned correction)
    p' / sqrt(m) = momentumScale * (x + out_1)
"""

import difflib
import json
import os
from typing import List, Optional

import torch

from openmmflash.integrators.network.gaqfile import modelFromBlob
from openmmflash.integrators.network.flashmdmodel import SPECIES_KINDS, FlashMDModel, _plain  # noqa: F401

FORMAT = "openmmflash-flashmd"
VERSION = 2  # 2 added speciesKind / speciesLabels (version 1 = element species)
MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def saveModel(model: FlashMDModel, path: str) -> None:
    """Write ``model`` to ``path`` (written to a temporary file first, so a crash never leaves half a file)."""
    blob = {"format": FORMAT, "version": VERSION, "species": model.species, "speciesMasses": model.speciesMasses,
            "speciesKind": model.speciesKind, "speciesLabels": model.speciesLabels, "stride": model.stride,
            "momentumScale": model.momentumScale, "config": model.config,
            "provenance": _plain(model.provenance), "validation": _plain(model.validation),
            "integratorDefaults": _plain(getattr(model, "integratorDefaults", {})),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(blob, tmp)
    os.replace(tmp, path)


def shippedName(model) -> Optional[str]:
    """The shipped model's name for ``model`` (a shipped name, the path of a shipped file, or a model that
    :func:`loadModel` read from one), or None for anything else."""
    source = getattr(model, "sourcePath", model)
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        path = os.path.abspath(modelPath(source))
    except ValueError:  # neither a file nor a shipped name
        return None
    # a file elsewhere that merely shares a shipped model's name is not that model
    return os.path.basename(path)[:-3] if os.path.dirname(path) == MODEL_DIR else None


def ensembleNote(model) -> Optional[str]:
    """What the closed-loop validation of a shipped model found wrong with the ensemble it samples (measured against
    ordinary MD with the same force; models/ensemble_notes.json), or None. ``model``: as for :func:`shippedName`."""
    name = shippedName(model)
    notes_path = os.path.join(MODEL_DIR, "ensemble_notes.json")
    if name is None or not os.path.exists(notes_path):
        return None
    with open(notes_path) as f:
        return json.load(f).get(name)


def availableModels() -> List[str]:
    """Names of the models shipped in ``openmmflash/integrators/models``."""
    if not os.path.isdir(MODEL_DIR):
        return []
    return sorted(f[:-3] for f in os.listdir(MODEL_DIR) if f.endswith(".pt"))


def modelPath(model) -> str:
    """The file of a FlashMD model given as a file path or a shipped model's name."""
    path = str(model)
    if not os.path.exists(path):
        named = os.path.join(MODEL_DIR, path + ".pt")
        if not os.path.exists(named):
            raise ValueError(_unknownModelMessage(path))
        path = named
    return path


def _unknownModelMessage(name: str) -> str:
    """Why ``name`` is no FlashMD model: the shipped names, the closest one, or that it names a FlashSchNet model."""
    from openmmflash.schnet.modelfile import bundledModels

    names = availableModels()
    message = (f"no FlashMD model file or shipped model named {name!r}; shipped FlashMD models: "
               f"{', '.join(names) or 'none'}")
    if name in bundledModels():
        related = [n for n in names if n.startswith(name)]
        return (f"{message}. {name!r} is a bundled FlashSchNet model, a force field: use it with createCGSystem or "
                "addFlashSchNetForce" + (f"; the FlashMD models of its protein are {related}" if related else ""))
    close = difflib.get_close_matches(os.path.basename(name), names, n=1)
    return message + (f"; did you mean {close[0]!r}?" if close else "")


def loadModel(model, device=None) -> FlashMDModel:
    """Load a FlashMD model from a FlashMDModel (returned as is), a file path or a shipped model's name."""
    if isinstance(model, FlashMDModel):
        return model.to(device) if device is not None else model
    path = modelPath(model)
    m = _modelFromBlob(torch.load(path, map_location="cpu", weights_only=True), path)
    m.sourcePath = os.path.abspath(path)  # the file it came from (shippedName, ensembleNote); not saved
    return m.to(device) if device is not None else m


def _modelFromBlob(blob, path: str):
    """The model in a loaded model file's contents (plain or GAQ-quantized); ``path`` for messages."""
    if isinstance(blob, dict) and blob.get("format") == "openmmflash-flashmd-gaq":  # quantized (openmmflash.gaq)
        return modelFromBlob(blob, path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a FlashMD model file (expected format {FORMAT!r})")
    if blob["version"] > VERSION:
        raise ValueError(f"{path} has model-file version {blob['version']}; this openmm-flash reads up to "
                         f"{VERSION}. Upgrade openmm-flash.")
    m = FlashMDModel(blob["species"], blob["speciesMasses"], blob["stride"], blob["momentumScale"], blob["config"],
                     speciesKind=blob.get("speciesKind", "element"), speciesLabels=blob.get("speciesLabels"))
    m.load_state_dict(blob["state_dict"])
    m.provenance = blob.get("provenance", {})
    m.validation = blob.get("validation", {})
    m.integratorDefaults = blob.get("integratorDefaults", {})
    m.eval()
    return m
