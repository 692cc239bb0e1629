"""mlcg (CGSchNet) files as FlashSchNet models: a restricted reader (``safeunpickler``), the SchNet conversion
(``schnetconvert``), priors (``priorconvert``) and the importer (``importer``, ``openmmflash import-mlcg``)."""
