"""Position codecs of CompactMD: a grid quantizer plus the lossless residual coder.

``BoundedCodec`` (name ``"bounded"``, the default) guarantees ``|decoded - original| <= maxError`` nm for every
coordinate. Its grid step is ``2 * maxError * (1 - 2**-6)``: half a step is the bound minus a margin of
``maxError / 64`` that absorbs float32 rounding of the decoded value for ``|x| < 128 nm`` at the default bound
(the float64 decode is within the bound for every coordinate the codec accepts).

``XTCCodec`` (name ``"xtc"``) re-encodes coordinates read from an XTC file bit-exactly: XTC stores integers
``round(x * precision)`` and decodes ``float32(i) * float32(1 / precision)``; this codec stores the same integers
and decodes with the same float32 arithmetic, so its output equals what an XTC reader returns. Input not on that
grid is refused.

Both accept positions of shape (F, N, 3) in nm, reject NaN/Inf and coordinates beyond ``2**28`` grid steps
(about 2.6e5 nm at the default bound), and hand int32 grid coordinates to
:mod:`openmmflash.compactmd.residualcoder`.
"""

import numpy as np

from openmmflash.compactmd import kernels, residualcoder

_NAN_HELP = "see https://github.com/openmm/openmm/wiki/Frequently-Asked-Questions#nan"
GRID_LIMIT = 2**28
# |q| <= FAST_STEPS: float32 arithmetic keeps the bound (5 |x| 2**-24 <= gridStep 2**-7 needs |q| <= 26214)
FAST_STEPS = 24000


class GridCodec:
    """Common part: quantize, check, code the grid integers. Subclasses set ``gridStep`` and ``maxError``."""

    name = None

    def __init__(self, level=1, blockAtoms=4096):
        if not 1 <= int(level) <= 22:
            raise ValueError(f"zstd level must be 1..22, got {level}")
        self.level = int(level)
        self.blockAtoms = int(blockAtoms)

    def params(self):
        """JSON-serializable parameters stored in the file header."""
        return {"level": self.level, "blockAtoms": self.blockAtoms}

    def _check(self, x):
        """Validate positions (F, N, 3) nm; returns them as a float32 or float64 array and max |x|."""
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"positions must have shape (frames, atoms, 3), got {x.shape}")
        top = max(abs(float(x.max())), abs(float(x.min()))) if x.size else 0.0  # NaN propagates through max/min
        if not np.isfinite(top):
            f, a, _ = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"Particle position is NaN or infinite (frame {f}, atom {a}); the simulation has "
                             f"blown up and nothing was written for this frame ({_NAN_HELP}).")
        limit = GRID_LIMIT * self.gridStep
        if top > limit:
            f, a, c = np.argwhere(np.abs(x) > limit)[0]
            raise ValueError(f"Position {x[f, a, c]:.6g} nm (frame {f}, atom {a}) is outside the range this file "
                             f"can store (|x| <= {limit:.6g} nm at maxError={self.maxError} nm); use a larger "
                             f"maxError or wrap the coordinates (enforcePeriodicBox=True).")
        return x, top

    def quantize(self, x, out=None):
        """Positions (F, N, 3) in nm -> int32 grid coordinates (F, N, 3), written into ``out`` (a C-contiguous
        int32 array of that shape) when given.

        Within ``FAST_STEPS`` grid steps of the origin the product is taken in float32: its rounding, plus that
        of the float32 decode, stays inside the 1/64 margin of the grid (see module docstring); beyond, float64.
        """
        if kernels.HAVE_NUMBA and type(x) is np.ndarray and x.ndim == 3 and x.shape[2] == 3 \
                and x.dtype in (np.float32, np.float64):
            # one pass; any NaN/Inf/large value sends the chunk down the checked path below
            q, ok = kernels.quantize_f32(np.ascontiguousarray(x), np.float32(1.0 / self.gridStep),
                                         np.float32(FAST_STEPS * self.gridStep), out)
            if ok:
                return out if out is not None else q.reshape(x.shape)
        x, top = self._check(x)
        if top <= FAST_STEPS * self.gridStep:
            q = np.rint(x.astype(np.float32, copy=False) * np.float32(1.0 / self.gridStep)).astype(np.int32)
        else:
            q = np.rint(x.astype(np.float64, copy=False) * (1.0 / self.gridStep)).astype(np.int32)
        if out is not None:
            out[...] = q
            return out
        return q

    def dequantize(self, q, dtype=np.float32, out=None):
        """Grid coordinates (F, N, 3) -> positions in nm (written into ``out``, C-contiguous, when given)."""
        q = np.asarray(q)
        if kernels.HAVE_NUMBA and dtype == np.float32 and q.dtype == np.int32 and q.size and \
                (out is None or (out.dtype == np.float32 and out.flags.c_contiguous)):
            x, top = kernels.dequantize_f32(np.ascontiguousarray(q), np.float32(self.gridStep), out)
            if top <= FAST_STEPS:
                return out if out is not None else x.reshape(q.shape)
        if dtype == np.float32 and q.size and max(int(q.max()), -int(q.min())) <= FAST_STEPS:
            x = q.astype(np.float32) * np.float32(self.gridStep)
        else:
            x = (q.astype(np.float64) * self.gridStep).astype(dtype, copy=False)
        if out is not None:
            out[...] = x
            return out
        return x

    def layout(self, seqMask, waterMask=None):
        """Atom classes used for prediction (see :class:`~openmmflash.compactmd.residualcoder.Layout`)."""
        return residualcoder.Layout(seqMask, waterMask, self.blockAtoms)

    def encode(self, q, layout):
        """int32 grid coordinates (F, N, 3) -> bytes (lossless)."""
        return residualcoder.encode(q, layout, level=self.level)

    def encode_tail(self, q):
        """Fast coding of a few frames (tail chunks of a file being written; no water transform)."""
        return residualcoder.encode_plain(q, level=1)

    def decode(self, blob, nFrames, nAtoms, layout, out=None):
        """bytes -> int32 grid coordinates (nFrames, nAtoms, 3) (decoded into ``out`` when given and the chunk is
        not a tail chunk: use the returned array)."""
        return residualcoder.decode(blob, nFrames, nAtoms, layout, out)


class BoundedCodec(GridCodec):
    """Error-bounded codec: every coordinate within ``maxError`` nm (default 0.0005 nm, XTC's precision)."""

    name = "bounded"

    def __init__(self, maxError=0.0005, level=1, blockAtoms=4096):
        super().__init__(level, blockAtoms)
        maxError = float(maxError)
        if not (np.isfinite(maxError) and maxError > 0):
            raise ValueError(f"maxError must be a positive number of nm, got {maxError}")
        self.maxError = maxError
        self.gridStep = 2.0 * maxError * (1.0 - 2.0**-6)

    def params(self):
        return dict(super().params(), maxError=self.maxError)


class XTCCodec(GridCodec):
    """Lossless re-encoding of XTC data at ``precision`` (XTC's default 1000, i.e. a 0.001 nm grid)."""

    name = "xtc"

    def __init__(self, precision=1000.0, level=1, blockAtoms=4096):
        super().__init__(level, blockAtoms)
        self.precision = float(precision)
        if not self.precision > 0:
            raise ValueError(f"XTC precision must be positive, got {precision}")
        self.gridStep = 1.0 / self.precision
        self.maxError = 0.5 / self.precision

    def params(self):
        return dict(super().params(), precision=self.precision)

    def quantize(self, x, out=None):
        if kernels.HAVE_NUMBA and type(x) is np.ndarray and x.ndim == 3 and x.shape[2] == 3 \
                and x.dtype in (np.float32, np.float64):  # one pass; any problem: the checked path below
            q = np.empty(x.shape, np.int32) if out is None else out
            inv = np.float32(1.0) / np.float32(self.precision)
            if kernels.quantize_exact(np.ascontiguousarray(x), self.precision, inv, float(GRID_LIMIT),
                                      q.reshape(-1)) < 0:
                return q
        x, _ = self._check(x)
        q = np.rint(x.astype(np.float64, copy=False) * self.precision).astype(np.int32)
        back = self.dequantize(q, np.float32)
        if not np.array_equal(back, x.astype(np.float32)):
            f, a, c = np.argwhere(back != x.astype(np.float32))[0]
            raise ValueError(f"Position {x[f, a, c]!r} nm (frame {f}, atom {a}) is not on the XTC grid of "
                             f"precision {self.precision:g}; codec='xtc' only re-encodes XTC data losslessly. "
                             f"Use codec='bounded' for other input.")
        if out is not None:
            out[...] = q
            return out
        return q

    def dequantize(self, q, dtype=np.float32, out=None):
        inv = np.float32(1.0) / np.float32(self.precision)
        q = np.asarray(q)
        if kernels.HAVE_NUMBA and dtype == np.float32 and q.dtype == np.int32 and q.size and \
                (out is None or (out.dtype == np.float32 and out.flags.c_contiguous)):
            x = kernels.dequantize_f32(np.ascontiguousarray(q), inv, out)[0]
            return out if out is not None else x.reshape(q.shape)
        x = (q.astype(np.float32) * inv).astype(dtype, copy=False)
        if out is not None:
            out[...] = x
            return out
        return x
