"""openmmflash.integrators.network: see openmmflash.integrators."""
