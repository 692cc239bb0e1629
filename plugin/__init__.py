"""openmmflash.plugin: everything OpenMM sees as a Force (TorchForce and PythonForce construction, the
TorchScript wrapper, the ``torch.ops.openmmflash.*`` custom ops and their kernels)."""
