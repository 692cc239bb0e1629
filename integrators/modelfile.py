"""FlashMD model: the network plus what a run must match (stride, species masses), and its file format.

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
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .painn import PaiNN

FORMAT = "openmmflash-flashmd"
VERSION = 2  # 2 added speciesKind / speciesLabels (version 1 = element species)
SPECIES_KINDS = ("element", "cgBead")
_ELEMENT = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 11: "Na", 15: "P", 16: "S", 17: "Cl", 19: "K"}
MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


class FlashMDModel(nn.Module):
    """A learned stride map for one set of species and masses.

    Parameters
    ----------
    species : list of int
        Species ids the model knows, in type-index order: atomic numbers, or CG bead types (see speciesKind).
    speciesMasses : list of float
        Mass of each species, amu. A run must use exactly these masses (no isotopes, no mass repartitioning).
    stride : float
        Time the model advances in one call, ps.
    momentumScale : float
        Typical |p| / sqrt(m), sqrt(kJ/mol) (about sqrt(kT)); sets the network's internal units.
    config : dict
        Keyword arguments for :class:`PaiNN` (channels, num_layers, num_rbf, cutoff in nm).
    speciesKind : "element" or "cgBead"
        "cgBead": the species are a CG model's bead types; several share a mass, so an integrator needs the
        particles' types from ``setAtomTypes`` instead of matching masses.
    speciesLabels : list of str, optional
        A readable name per species (e.g. "N", "TYR:CA"), used in per-species reports.
    """

    def __init__(self, species: Sequence[int], speciesMasses: Sequence[float], stride: float,
                 momentumScale: float = 1.6, config: Optional[Dict] = None, speciesKind: str = "element",
                 speciesLabels: Optional[Sequence[str]] = None):
        super().__init__()
        if len(species) != len(speciesMasses):
            raise ValueError(f"species ({len(species)}) and speciesMasses ({len(speciesMasses)}) differ in length")
        if speciesKind not in SPECIES_KINDS:
            raise ValueError(f"speciesKind must be one of {SPECIES_KINDS}, got {speciesKind!r}")
        if speciesLabels is not None and len(speciesLabels) != len(species):
            raise ValueError(f"speciesLabels ({len(speciesLabels)}) and species ({len(species)}) differ in length")
        if stride <= 0:
            raise ValueError(f"stride must be > 0 ps, got {stride}")
        self.species = [int(z) for z in species]
        self.speciesMasses = [float(m) for m in speciesMasses]
        self.speciesKind = speciesKind
        self.speciesLabels = None if speciesLabels is None else [str(x) for x in speciesLabels]
        self.stride = float(stride)
        self.momentumScale = float(momentumScale)
        self.config = dict(config or {})
        self.network = PaiNN(num_types=len(self.species), num_out=2, **self.config)
        self.cutoff = self.network.cutoff
        self.provenance: Dict = {}
        self.validation: Dict = {}
        # integrator options this model was validated with, used where the user leaves them unset (e.g. modeRescale)
        self.integratorDefaults: Dict = {}

    def speciesLabel(self, z: int) -> str:
        """Readable name of species ``z``: its stored label, the element symbol, or "bead<z>"."""
        if self.speciesLabels is not None and int(z) in self.species:
            return self.speciesLabels[self.species.index(int(z))]
        if self.speciesKind == "cgBead":
            return f"bead{int(z)}"
        return _ELEMENT.get(int(z), str(int(z)))

    def typeIndices(self, types: Sequence[int]) -> Tensor:
        """Map species ids [N] (atomic numbers or bead types) to this model's type indices; unknown ids raise."""
        lookup = {z: i for i, z in enumerate(self.species)}
        missing = sorted({int(t) for t in types} - set(lookup))
        if missing:
            what = "CG bead types" if self.speciesKind == "cgBead" else "atomic numbers"
            raise ValueError(f"the model knows species {self.species} ({what}) but the system also has "
                             f"{missing}; train a model on data that contains them")
        return torch.tensor([lookup[int(t)] for t in types], dtype=torch.int64)

    def normalized(self, type_idx: Tensor, x: Tensor, src: Tensor, dst: Tensor, edge_vec: Tensor):
        """Dimensionless predictions (x + out_0, x + out_1), each [N, 3]; x = p / sqrt(m) / momentumScale."""
        out = self.network(type_idx, x, src, dst, edge_vec)
        return x + out[..., 0], x + out[..., 1]

    def forward(self, type_idx: Tensor, p: Tensor, sqrt_m: Tensor, src: Tensor, dst: Tensor, edge_vec: Tensor):
        """Mass-scaled predictions: (dq * sqrt(m) [N, 3] nm amu^0.5, p' / sqrt(m) [N, 3] amu^0.5 nm/ps).

        p [N, 3] amu nm/ps, sqrt_m [N, 1] amu^0.5, edges as in :class:`PaiNN`.
        """
        x = p / sqrt_m / self.momentumScale
        a, b = self.normalized(type_idx, x, src, dst, edge_vec)
        return self.stride * self.momentumScale * a, self.momentumScale * b

    def numParameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self) -> str:
        kind = " (CG bead types)" if self.speciesKind == "cgBead" else ""
        return (f"FlashMD model: stride {self.stride * 1000:g} fs, species {self.species}{kind}, masses "
                f"{self.speciesMasses} amu, cutoff {self.cutoff} nm, {self.numParameters()} parameters")


def _plain(obj):
    """Plain JSON types only (numpy scalars, TorchVersion, tuples -> float/str/list), so weights_only loads it."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


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
        from openmmflash.gaq.export import modelFromBlob
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
