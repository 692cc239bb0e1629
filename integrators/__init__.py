"""openmmflash.integrators: FlashMD learned long-stride integrators for OpenMM."""
