"""FlashSchNet hyperparameters and units."""

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

# Model length unit -> nm and model energy unit -> kJ/mol.
LENGTH_UNITS = {"angstrom": 0.1, "nanometer": 1.0}
ENERGY_UNITS = {"kcal/mol": 4.184, "kJ/mol": 1.0}
# CFConv implementations and number formats of the fused filter MLPs (the reference is used on CPU, for float64 and
# when selected). ``precision`` elsewhere means the OpenMM-facing "single" | "double".
BACKENDS = ("flash", "reference")
FILTER_PRECISIONS = ("fp32", "w16a16")
# Radial bases (mlcg.nn.radial_basis) and cutoff envelopes (mlcg.nn.cutoff); see openmmflash.schnet.basis.
RBF_TYPES = ("gaussian", "expnormal")
CUTOFF_TYPES = ("cosine", "identity", "shiftedcosine")
ACTIVATIONS = ("tanh",)
# Configuration keys of older model files -> their current names (read by ``FlashSchNetConfig.fromDict``).
RENAMED_KEYS = {"precision": "filterPrecision"}


@dataclass
class FlashSchNetConfig:
    """Hyperparameters of a FlashSchNet model (CGSchNet semantics; see ``openmmflash.schnet.model``).

    Lengths (``cutoff``) are in ``lengthUnit``; energies in ``energyUnit``.
    """

    numBeadTypes: int = 64          # embedding table size (bead types are 0 .. numBeadTypes - 1)
    hiddenChannels: int = 128       # F, node feature width
    numFilters: int = 128           # F', filter / message width
    numRbf: int = 50                # R, Gaussians between 0 and the cutoff
    numInteractions: int = 3        # T, interaction blocks
    cutoff: float = 15.0            # r_c, in lengthUnit
    rbfCutoff: bool = True          # the Gaussian basis carries the cosine cutoff too (CGSchNet's CosineCutoff basis)
    readoutHidden: List[int] = field(default_factory=lambda: [128])  # hidden widths of the tanh readout MLP
    lengthUnit: str = "angstrom"
    energyUnit: str = "kcal/mol"
    backend: str = "flash"          # CFConv on CUDA float32: "flash" (fused Triton kernels) or "reference" (plain torch)
    filterPrecision: str = "fp32"   # flash filter MLP: "fp32" or "w16a16" (fp16 weights with per-channel scales)
    # Options of mlcg's StandardSchNet; the defaults are the Gaussian/cosine model above. ``cutoff`` is the
    # neighbour-list cutoff and the basis's upper bound (mlcg: rbf_layer.cutoff.cutoff_upper).
    rbfType: str = "gaussian"       # "gaussian": exp(gamma (d - mu_k)^2); "expnormal": exp(-beta_k (e^{alpha(lo - d)} - mu_k)^2)
    rbfLower: float = 0.0           # basis lower bound (mlcg: rbf_layer.cutoff.cutoff_lower)
    rbfGamma: Optional[float] = None  # Gaussian width coefficient (None: -0.5 / spacing^2 of linspace(rbfLower, cutoff, R))
    rbfCutoffType: str = "cosine"   # envelope inside the basis when rbfCutoff (else identity)
    rbfSmoothWidth: float = 0.5     # shifted-cosine smoothing width of the basis envelope
    filterCutoffType: str = "cosine"  # envelope C(d) multiplying each filter in the CFConv
    filterCutoffLower: float = 0.0
    filterCutoffUpper: Optional[float] = None  # None: cutoff
    filterSmoothWidth: float = 0.5
    activation: str = "tanh"        # filter, block and readout activation
    readoutLastBias: bool = False   # bias on the last readout layer
    maxNumNeighbors: int = 0        # > 0: a bead with more neighbours makes the energy NaN (mlcg would drop some)

    def __post_init__(self):
        for name in ("numBeadTypes", "hiddenChannels", "numFilters", "numInteractions"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FlashSchNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.numRbf < 2:
            raise ValueError(f"FlashSchNetConfig.numRbf must be >= 2, got {self.numRbf}")
        if not self.cutoff > 0:
            raise ValueError(f"FlashSchNetConfig.cutoff must be > 0, got {self.cutoff}")
        if self.lengthUnit not in LENGTH_UNITS:
            raise ValueError(f"unknown lengthUnit {self.lengthUnit!r}; choose one of {sorted(LENGTH_UNITS)}")
        if self.energyUnit not in ENERGY_UNITS:
            raise ValueError(f"unknown energyUnit {self.energyUnit!r}; choose one of {sorted(ENERGY_UNITS)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {list(BACKENDS)}")
        if self.filterPrecision not in FILTER_PRECISIONS:
            raise ValueError(f"unknown filterPrecision {self.filterPrecision!r}; choose one of "
                             f"{list(FILTER_PRECISIONS)}")
        self.readoutHidden = [int(w) for w in self.readoutHidden]
        if self.rbfType not in RBF_TYPES:
            raise ValueError(f"unsupported radial basis {self.rbfType!r}; supported: {list(RBF_TYPES)}")
        for name in ("rbfCutoffType", "filterCutoffType"):
            if getattr(self, name) not in CUTOFF_TYPES:
                raise ValueError(f"unsupported cutoff function {name}={getattr(self, name)!r}; supported: "
                                 f"{list(CUTOFF_TYPES)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r}; supported: {list(ACTIVATIONS)}")
        if not 0 <= self.rbfLower < self.cutoff:
            raise ValueError(f"FlashSchNetConfig.rbfLower must lie in [0, cutoff), got {self.rbfLower}")

    @property
    def filterUpper(self) -> float:
        """Upper bound of the filter envelope C(d) (model length unit)."""
        return float(self.cutoff if self.filterCutoffUpper is None else self.filterCutoffUpper)

    @property
    def isGaussianCosine(self) -> bool:
        """True for the Gaussian basis with cosine envelopes from 0 to ``cutoff`` (the fused kernels' form)."""
        return (self.rbfType == "gaussian" and self.rbfLower == 0.0 and self.filterCutoffType == "cosine"
                and self.filterCutoffLower == 0.0 and self.filterUpper == float(self.cutoff)
                and (not self.rbfCutoff or self.rbfCutoffType == "cosine"))

    @property
    def lengthScale(self) -> float:
        """Model length units per nm (10 for Angstrom)."""
        return 1.0 / LENGTH_UNITS[self.lengthUnit]

    @property
    def energyScale(self) -> float:
        """kJ/mol per model energy unit (4.184 for kcal/mol)."""
        return ENERGY_UNITS[self.energyUnit]

    def toDict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def fromDict(cls, values: dict) -> "FlashSchNetConfig":
        values = dict(values)
        for old, new in RENAMED_KEYS.items():  # files written before a key was renamed
            if old in values and new not in values:
                values[new] = values.pop(old)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FlashSchNet configuration keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)
