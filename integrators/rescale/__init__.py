"""openmmflash.integrators.rescale: see openmmflash.integrators."""
