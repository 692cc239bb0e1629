"""FlashSchNet hyperparameters and units."""

import dataclasses
from dataclasses import dataclass, field
from typing import List

# Model length unit -> nm and model energy unit -> kJ/mol.
LENGTH_UNITS = {"angstrom": 0.1, "nanometer": 1.0}
ENERGY_UNITS = {"kcal/mol": 4.184, "kJ/mol": 1.0}
# CFConv implementations and filter precisions (the reference is used on CPU, for float64 and when selected).
BACKENDS = ("flash", "reference")
PRECISIONS = ("fp32", "w16a16")


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
    precision: str = "fp32"         # flash filter MLP: "fp32" or "w16a16" (fp16 weights with per-channel scales)

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {list(PRECISIONS)}")
        self.readoutHidden = [int(w) for w in self.readoutHidden]

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FlashSchNet configuration keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)
