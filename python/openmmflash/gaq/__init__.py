"""GAQ: geometry-aware quantization of equivariant networks (magnitude-direction decoupling, spherical codebooks)."""
