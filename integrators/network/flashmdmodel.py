"""FlashMD model: the network plus what a run must match (stride, species masses); its file format is
in :mod:`openmmflash.integrators.network.modelfile`.

Prediction in mass-scaled form (x = p / sqrt(m) / momentumScale, dimensionless, ~1):

    dq * sqrt(m) = stride * momentumScale * (x + out_0)        (free flight plus a learned correction)
    p' / sqrt(m) = momentumScale * (x + out_1)
"""

import json
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from openmmflash.integrators.network.painn import PaiNN

SPECIES_KINDS = ("element", "cgBead")
_ELEMENT = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 11: "Na", 15: "P", 16: "S", 17: "Cl", 19: "K"}


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
