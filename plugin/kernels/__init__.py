"""Triton kernels behind the ``torch.ops.openmmflash.*`` seam (see ``openmmflash.plugin.ops``).

- ``csr``: destination offsets and the source-sorted permutation of a dst-sorted pair list, on the device.
- ``w16a16``: per-output-channel 16-bit weight quantization.
- ``pairdist``: pair distances of a symmetric list with a row-owned positions gradient.
- ``cfconv_table``: CFConv with tabulated (cubic Hermite) filters, row-owned forward and backward.
- ``cfconv``: the flash CFConv (fused RBF + filter MLP + gather + CSR segment reduction) and its backward.
"""
