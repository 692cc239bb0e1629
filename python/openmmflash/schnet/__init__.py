"""FlashSchNet: a CGSchNet-compatible SchNet coarse-grained potential."""
