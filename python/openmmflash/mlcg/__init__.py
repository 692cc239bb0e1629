"""mlcg (CGSchNet) files as FlashSchNet models: a restricted reader (``safeunpickler``), the SchNet conversion
(``schnetconvert``), priors (``priorconvert``) and the importer (``importer``; ``openmmflash import-mlcg``).

Importing this package lets ``openmmflash.schnet.model.loadModel`` (and everything built on it: ``MLPotential``,
``createCGSystem``, ``addFlashSchNetForce``) read mlcg files directly; ``openmmflash.plugin`` imports it.
"""

from openmmflash.mlcg.importer import importMlcg, isMlcgFile
from openmmflash.schnet.modelfile import registerModelReader

registerModelReader("mlcg", isMlcgFile, importMlcg)

__all__ = ["importMlcg", "isMlcgFile"]
