"""Learned CompactMD codec: an autoencoder trained on each chunk predicts the frames, and the residual is coded on
the error-bounded grid, so the maximum error is still guaranteed.

Per chunk (F frames of N atoms, positions x in nm):

1. **Alignment.** Each frame is centred (centroid c_t) and rotated onto frame 0 (Kabsch, rotation R_t). c_t is
   stored on the grid, R_t as a quaternion on a 2**-14 grid; the decoder uses the stored (quantized) values.
2. **Autoencoder.** Aligned, standardized frames y_t (3N) train ``3N -> hidden -> latent -> hidden -> 3N`` (ELU;
   ``hidden=0`` gives a linear encoder-decoder) with Adam, in bfloat16 autocast on a GPU and float32 on the CPU.
   The decoder weights are stored as bfloat16 and the mean/scale as float16; **they are part of the chunk's
   bytes and of every ratio**. Latents are stored as int8 with a per-dimension scale.
3. **Residual.** The prediction p_t = decoder(z_t) R_t^T + c_t is computed from the stored values in float64;
   ``k = rint((x - p) / gridStep)`` (``gridStep = 2 maxError (1 - 2**-6)``) is coded losslessly by
   :mod:`~openmmflash.compactmd.residualcoder`, and the decoder returns ``p + k * gridStep``. So
   ``|x_hat - x| <= maxError`` for every coordinate, whatever the network learned; the 1/64 margin absorbs
   floating-point differences of the decoder between machines.

Caution: the model is trained per chunk, so its bytes are paid once per chunk; use large ``chunkFrames``
(the whole trajectory when compressing a file). Tested on CPU; on CUDA training runs in bfloat16 autocast.
"""

import struct
import time

import numpy as np

from openmmflash.compactmd import residualcoder, valuestream
from openmmflash.compactmd.codec import GridCodec

_VERSION = 1


def _bf16(a):
    """float32 -> bfloat16 bit patterns (uint16, round to nearest even)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _from_bf16(b, shape):
    return (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)


def _kabsch(a, b):
    """Rotation (3, 3) minimizing |a R - b| for centred (n, 3) arrays."""
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _rot_to_quat(r):
    """Rotation matrix (acting as x @ r) -> unit quaternion (w, x, y, z) with w >= 0."""
    m = r.T
    w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2
    y = np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2
    z = np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2
    x = np.copysign(x, m[2, 1] - m[1, 2])
    y = np.copysign(y, m[0, 2] - m[2, 0])
    z = np.copysign(z, m[1, 0] - m[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def _quat_to_rot(q):
    """(F, 4) quaternions -> (F, 3, 3) matrices acting as x @ r."""
    q = q / np.sqrt((q * q).sum(-1, keepdims=True))
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    m = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                  2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                  2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(-1, 3, 3)
    return np.transpose(m, (0, 2, 1))


class LearnedCodec(GridCodec):
    """Autoencoder prediction + residual on the error-bounded grid (name ``"learned"``).

    Parameters
    ----------
    maxError : float   guaranteed bound per coordinate, nm (default 0.05)
    latent : int       latent size per frame
    hidden : int       hidden width of encoder and decoder (0: linear)
    steps : int        Adam steps of training per chunk
    device : str       "cuda", "cpu" or None (CUDA when available)
    """

    name = "learned"
    bufferDtype = np.float32

    encode_tail = None  # trains per chunk: files are written in whole chunks (no per-frame tail)

    def __init__(self, maxError=0.05, latent=8, hidden=0, steps=300, lr=1e-3, seed=0, device=None, level=1,
                 blockAtoms=4096):
        super().__init__(level, blockAtoms)
        self.maxError = float(maxError)
        if not self.maxError > 0:
            raise ValueError(f"maxError must be a positive number of nm, got {maxError}")
        self.gridStep = 2.0 * self.maxError * (1.0 - 2.0**-6)
        self.latent, self.hidden, self.steps, self.lr, self.seed = int(latent), int(hidden), int(steps), lr, seed
        self.device = device
        self.lastStats = {}

    def params(self):
        return dict(super().params(), maxError=self.maxError, latent=self.latent, hidden=self.hidden,
                    steps=self.steps, lr=self.lr, seed=self.seed)

    # The writer buffers validated float positions; prediction needs them unquantized.
    def quantize(self, x):
        x, _ = self._check(x)
        return x.astype(np.float32)

    def dequantize(self, q, dtype=np.float32):
        return np.asarray(q).astype(dtype, copy=False)

    # ------------------------------------------------------------------ training
    def _train(self, y):
        """Train on y (F, D) float32 standardized; returns (decoder weights list, latents (F, L) float32)."""
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        g = torch.Generator().manual_seed(self.seed)
        d, lat, hid = y.shape[1], min(self.latent, y.shape[1]), self.hidden

        def layer(i, o):
            w = (torch.randn(i, o, generator=g) / np.sqrt(i)).to(device).requires_grad_()
            return w, torch.zeros(o, device=device, requires_grad=True)

        enc = [layer(d, hid), layer(hid, lat)] if hid else [layer(d, lat)]
        dec = [layer(lat, hid), layer(hid, d)] if hid else [layer(lat, d)]
        if not hid:  # linear: start from the principal components (the optimum of the linear problem)
            _, _, vt = np.linalg.svd(y - y.mean(axis=0), full_matrices=False)
            with torch.no_grad():
                basis = torch.as_tensor(vt[:lat].T.copy(), dtype=torch.float32, device=device)
                enc[0][0].copy_(basis)
                dec[0][0].copy_(basis.T)
        params = [p for pair in enc + dec for p in pair]
        opt = torch.optim.Adam(params, lr=self.lr)
        yt = torch.as_tensor(y, device=device)

        def run(layers, h):
            for k, (w, b) in enumerate(layers):
                h = h @ w + b
                if k < len(layers) - 1:
                    h = torch.nn.functional.elu(h)
            return h

        start = time.perf_counter()
        loss = None
        for _ in range(self.steps):
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = ((run(dec, run(enc, yt)) - yt).float() ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            z = run(enc, yt).float().cpu().numpy()
        if device == "cuda":
            torch.cuda.synchronize()
        self.lastStats = {"train_s": time.perf_counter() - start, "device": device,
                          "loss": float(loss.detach()) if self.steps else None}
        return [(w.detach().float().cpu().numpy(), b.detach().float().cpu().numpy()) for w, b in dec], z

    @staticmethod
    def _decode_net(weights, z):
        h = z.astype(np.float64)
        for k, (w, b) in enumerate(weights):
            h = h @ w.astype(np.float64) + b.astype(np.float64)
            if k < len(weights) - 1:
                h = np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
        return h

    # ------------------------------------------------------------------ coding
    def encode(self, x, layout):
        """Positions (F, N, 3) nm -> bytes."""
        x = np.asarray(x, np.float64)
        nf, n, _ = x.shape
        # 1. alignment: centroids on the grid, quaternions on a 2**-14 grid.
        cq = np.rint(x.mean(axis=1) / self.gridStep).astype(np.int32)
        c = cq * self.gridStep
        ref = x[0] - c[0]
        quats = np.array([_rot_to_quat(_kabsch(x[t] - c[t], ref)) for t in range(nf)])
        qq = np.rint(quats * 16384).astype(np.int32)
        rots = _quat_to_rot(qq.astype(np.float64))
        y = np.einsum("fni,fij->fnj", x - c[:, None], rots).reshape(nf, -1)
        # 2. autoencoder on standardized aligned coordinates.
        mean = y.mean(axis=0).astype(np.float16)
        scale = np.float16(max(float(y.std()), 1e-3))
        yn = ((y - mean.astype(np.float64)) / float(scale)).astype(np.float32)
        weights, z = self._train(yn)
        wbytes = b"".join(_bf16(w).tobytes() + _bf16(b).tobytes() for w, b in weights)
        weights = [(_from_bf16(_bf16(w).tobytes(), w.shape), _from_bf16(_bf16(b).tobytes(), b.shape))
                   for w, b in weights]
        zs = np.maximum(np.abs(z).max(axis=0), 1e-6).astype(np.float32) / 127.0
        zq = np.rint(z / zs).astype(np.int32)
        pred = self._predict(weights, zq, zs, mean, scale, qq, cq, n)
        # 3. residual on the grid.
        k = np.rint((x - pred) / self.gridStep).astype(np.int32)
        parts = {"scale": np.float16(scale), "mean": mean, "zs": zs.astype(np.float32), "wbytes": wbytes,
                 "hidden": self.hidden, "zq": zq, "qq": qq, "cq": cq, "k": k}
        return self._serialize(parts, layout)

    def _serialize(self, p, layout):
        nf, n, _ = p["k"].shape
        blob = residualcoder.encode(p["k"], layout, level=self.level)
        side = self._side(p["zq"], p["qq"], p["cq"])
        head = struct.pack("<BIIII", _VERSION, nf, n, p["zq"].shape[1], p["hidden"])
        out = b"".join([head, np.float16(p["scale"]).tobytes(), p["mean"].astype("<f2").tobytes(),
                        p["zs"].astype("<f4").tobytes(), struct.pack("<I", len(p["wbytes"])), p["wbytes"],
                        struct.pack("<I", len(side)), side, blob])
        self.lastStats.update(modelBytes=len(p["wbytes"]) + 2 + 2 * p["mean"].size + 4 * p["zs"].size,
                              residualBytes=len(blob), sideBytes=len(side), totalBytes=len(out))
        return out

    def reencodePrefix(self, blob, n, nAtoms, layout):
        """The blob of the first ``n`` frames of a chunk, bit-identical on decoding (used to truncate files)."""
        p = self._parse(blob, None, nAtoms, layout)
        for key in ("zq", "qq", "cq", "k"):
            p[key] = p[key][:n]
        return self._serialize(p, layout)

    def _side(self, zq, qq, cq):
        """Latents, quaternions and centroids as time differences, one residual-coder value stream."""
        import zstandard

        a = np.concatenate([zq, qq, cq], axis=1).astype(np.int32)
        d = np.diff(a, axis=0, prepend=np.zeros((1, a.shape[1]), np.int32))
        return valuestream._encode_values(d.T.reshape(-1), zstandard.ZstdCompressor(level=self.level))

    def _predict(self, weights, zq, zs, mean, scale, qq, cq, n):
        yn = self._decode_net(weights, zq * zs.astype(np.float64))
        y = (yn * float(scale) + mean.astype(np.float64)).reshape(len(zq), n, 3)
        rots = _quat_to_rot(qq.astype(np.float64))
        return np.einsum("fnj,fij->fni", y, rots) + (cq * self.gridStep)[:, None]

    def _parse(self, blob, nFrames, nAtoms, layout):
        import zstandard

        blob = memoryview(blob)
        version, nf, n, lat, hid = struct.unpack_from("<BIIII", blob, 0)
        if version != _VERSION or n != nAtoms or (nFrames is not None and nf != nFrames):
            raise ValueError("learned chunk header does not match the chunk")
        pos = 17
        scale = np.frombuffer(blob[pos:pos + 2], "<f2")[0]
        mean = np.frombuffer(blob[pos + 2:pos + 2 + 6 * n], "<f2")
        pos += 2 + 6 * n
        zs = np.frombuffer(blob[pos:pos + 4 * lat], "<f4")
        pos += 4 * lat
        (wlen,) = struct.unpack_from("<I", blob, pos)
        wbytes = bytes(blob[pos + 4:pos + 4 + wlen])
        shapes = [(lat, hid), (hid,), (hid, 3 * n), (3 * n,)] if hid else [(lat, 3 * n), (3 * n,)]
        arrays, p = [], 0
        for shape in shapes:
            size = 2 * int(np.prod(shape))
            arrays.append(_from_bf16(wbytes[p:p + size], shape))
            p += size
        if p != wlen:
            raise ValueError("learned chunk weights have the wrong size")
        pos += 4 + wlen
        (slen,) = struct.unpack_from("<I", blob, pos)
        d, _ = valuestream._decode_values(blob, pos + 4, nf * (lat + 7), zstandard.ZstdDecompressor())
        a = np.cumsum(d.reshape(lat + 7, nf).T, axis=0, dtype=np.int64).astype(np.int32)
        pos += 4 + slen
        k = residualcoder.decode(blob[pos:], nf, n, layout)
        return {"scale": scale, "mean": mean, "zs": zs, "wbytes": wbytes, "hidden": hid,
                "weights": list(zip(arrays[::2], arrays[1::2])), "zq": a[:, :lat], "qq": a[:, lat:lat + 4],
                "cq": a[:, lat + 4:], "k": k}

    def decode(self, blob, nFrames, nAtoms, layout):
        """bytes -> positions (F, N, 3) float64 nm."""
        p = self._parse(blob, nFrames, nAtoms, layout)
        pred = self._predict(p["weights"], p["zq"], p["zs"], p["mean"], p["scale"], p["qq"], p["cq"], nAtoms)
        return pred + p["k"] * self.gridStep
