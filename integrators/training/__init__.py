"""openmmflash.integrators.training: see openmmflash.integrators."""
