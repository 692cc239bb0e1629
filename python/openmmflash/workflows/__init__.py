"""Runs that compose forces, models and integrators: CG simulations, validation and FlashMD CG systems, and the
command-line groups that drive them."""
