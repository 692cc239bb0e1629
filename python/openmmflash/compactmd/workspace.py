"""Reusable scratch arrays for the large temporaries of the CompactMD coder.

Coding a chunk needs several temporaries of the chunk's size (gathered atom classes, zigzagged residuals, byte
planes, decoded residual streams). Allocated afresh for every chunk, each is new memory the operating system
has to map page by page (thousands of page faults per chunk of a solvated system, a large part of the coding
time); taken from here, the memory of the previous chunk is reused. One buffer per name and thread, grown to the
largest request and kept for the life of the thread, at most ``MAX_POOLED_BYTES`` per thread in all (a request
that does not fit is allocated afresh). A scratch array is valid until the next request of the same name in the
same thread, so it must never be returned to a caller.
"""

import math
import threading

import numpy as np

_local = threading.local()
MAX_POOLED_BYTES = 256 << 20


def scratch(name, shape, dtype):
    """Uninitialized C-contiguous array of ``shape`` and ``dtype`` backed by this thread's buffer ``name``."""
    if not isinstance(shape, tuple):
        shape = (int(shape),)
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    buf = pool.get(name)
    if buf is None or buf.nbytes < nbytes:
        held = sum(b.nbytes for b in pool.values()) - (buf.nbytes if buf is not None else 0)
        if held + nbytes > MAX_POOLED_BYTES:
            return np.empty(shape, dtype)
        buf = pool[name] = np.empty(max(nbytes, 64), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def borrow(shape, dtype):
    """An uninitialized C-contiguous array owned by the caller until :func:`give_back` (a long-lived buffer such
    as a writer's chunk buffer): memory given back earlier in this thread when it is large enough, else new."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize * math.prod(shape)
    spare = getattr(_local, "spare", None)
    if spare is not None and spare.nbytes >= nbytes:
        _local.spare = None
        return spare[:nbytes].view(dtype).reshape(shape)
    return np.empty(max(nbytes, 64), np.uint8)[:nbytes].view(dtype).reshape(shape)


def give_back(a):
    """Return an array of :func:`borrow` (no longer used by the caller) for the next :func:`borrow` in this thread;
    one is kept, of at most ``MAX_POOLED_BYTES``."""
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    if base.dtype == np.uint8 and base.ndim == 1 and base.nbytes <= MAX_POOLED_BYTES:
        spare = getattr(_local, "spare", None)
        if spare is None or spare.nbytes < base.nbytes:
            _local.spare = base
