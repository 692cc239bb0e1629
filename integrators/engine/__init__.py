"""openmmflash.integrators.engine: see openmmflash.integrators."""
