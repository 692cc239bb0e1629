"""Coarse-grained representations: all-atom -> CG mapping, bead types, priors as native OpenMM forces."""
