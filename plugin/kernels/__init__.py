"""Triton kernels behind the ``torch.ops.openmmflash.*`` seam (see ``openmmflash.plugin.ops``).

- ``csr``: destination offsets and the source-sorted permutation of a dst-sorted pair list, on the device.
- ``w16a16``: per-output-channel 16-bit weight quantization.
- ``pairdist``: pair distances of a dst-sorted list with a one-pass positions gradient.
- ``cfconv_table``: CFConv with tabulated (cubic Hermite) filters: each unordered pair once (atomics to the other
  end) or every directed pair from its destination row.
- ``neighborlist``: the padded neighbor list of open replicas in two passes (count, ordered fill).
- ``cfconv``: the flash CFConv (fused RBF + filter MLP + gather + CSR segment reduction) and its backward.
"""
