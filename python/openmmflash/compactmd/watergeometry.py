"""Exactly invertible integer transform of rigid water hydrogens: H1 on a sphere around O, H2 on a circle.

For a rigid water (constraints or SETTLE), with grid-integer offsets d1 = H1 - O and d2 = H2 - O:

- **H1**: the two smaller components of d1 are kept; the largest one (axis ``a``, sign ``s``) is predicted as
  ``s * rint(sqrt(R1^2 - b^2 - c^2))``, and slot 0 stores ``(zigzag(e) * 2 + [s < 0]) * 3 + a`` with ``e`` the
  prediction error (a few grid units), slots 1-2 the kept components (axes a+1, a+2 mod 3).
- **H2**: on the circle of radius ``rho = R2 sin(theta)`` around ``R2 cos(theta) u`` (u = d1/|d1|) in the plane
  spanned by ``w = unit(u x e_min)`` and ``v = u x w``; the encoder picks the angle index ``k`` (steps of one grid
  unit of arc) and stores ``k`` and the integer error ``d2 - rint(centre + rho (cos w + sin v))`` (3 values: two in
  the H2 slot, one in an extra row).

The decoder uses only +, -, *, /, sqrt and rint on float64 (IEEE-exact, so every machine decodes the same
integers); the cosines and sines of ``k * step`` come from a rotation recurrence seeded by Taylor series.
Shapes: (F, nw, 3) per atom kind, nw waters.
"""

import math

import numpy as np

from openmmflash.compactmd import kernels

_MAX_OFFSET = 4096  # grid units; a "water" whose atoms lie further apart is coded without the transform
_MAX_PARAM = math.sqrt(3.0) * _MAX_OFFSET  # largest |offset| forward() accepts, so the largest meaningful radius


def fit(q, first):
    """(R1, R2, cosTheta) in grid units from frame 0, or None when the waters are not rigid enough to pay."""
    d1 = (q[0, first + 1] - q[0, first]).astype(np.float64)
    d2 = (q[0, first + 2] - q[0, first]).astype(np.float64)
    n1, n2 = np.linalg.norm(d1, axis=1), np.linalg.norm(d2, axis=1)
    if not len(first) or n1.min() < 4.0 or n2.min() < 4.0:
        return None
    if n1.max() > _MAX_OFFSET or n2.max() > _MAX_OFFSET:  # not water-sized: forward() would refuse it anyway, and
        return None                                        # the angle table grows with R2 (memory ~ 16 R2 bytes)
    cos = np.sum(d1 * d2, axis=1) / (n1 * n2)
    if n1.std() > 3.0 or n2.std() > 3.0 or np.std(cos) > 0.05 or abs(np.mean(cos)) > 0.95:
        return None
    return float(np.mean(n1)), float(np.mean(n2)), float(np.mean(cos))


def _table(step, kmax):
    """cos(k step), sin(k step) for k = 0..kmax with +, -, * only (reproducible bit for bit)."""
    c1 = 1.0 - step**2 / 2.0 + step**4 / 24.0 - step**6 / 720.0
    s1 = step - step**3 / 6.0 + step**5 / 120.0 - step**7 / 5040.0
    if kernels.HAVE_NUMBA:
        return kernels.rotation_table(c1, s1, int(kmax))
    cs, sn = [1.0], [0.0]
    for _ in range(kmax):
        c, s = cs[-1], sn[-1]
        cs.append(c * c1 - s * s1)
        sn.append(s * c1 + c * s1)
    return np.array(cs), np.array(sn)


def _circle(params):
    r1, r2, cos = params
    if not (0.0 < r2 <= _MAX_PARAM and 0.0 < r1 <= _MAX_PARAM and -1.0 <= cos <= 1.0):
        raise ValueError(f"water geometry parameters {tuple(params)} are outside the range any encoder writes "
                         f"(radii in (0, {_MAX_PARAM:.0f}] grid units); the file is corrupt")
    rho = r2 * math.sqrt(max(0.0, 1.0 - cos * cos))
    step = 1.0 / max(rho, 1.0)
    kmax = int(math.ceil(math.pi / step)) + 1
    return r2 * cos, rho, step, kmax


def _frame(d1):
    """Unit vectors u, w, v (each (..., 3)) from integer offsets d1."""
    d1 = d1.astype(np.float64)
    n = np.sqrt(d1[..., 0] * d1[..., 0] + d1[..., 1] * d1[..., 1] + d1[..., 2] * d1[..., 2])
    u = d1 / n[..., None]
    amin = np.argmin(np.abs(u), axis=-1)
    e = np.zeros_like(u)
    np.put_along_axis(e, amin[..., None], 1.0, axis=-1)
    w = _cross(u, e)
    w = w / np.sqrt(w[..., 0] * w[..., 0] + w[..., 1] * w[..., 1] + w[..., 2] * w[..., 2])[..., None]
    return u, w, _cross(u, w)


def _cross(a, b):
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], axis=-1)


def _zz(e):
    return np.where(e >= 0, 2 * e, -2 * e - 1)


def _unzz(z):
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)


def _predict_h2(d1, k, params, frame=None):
    centre, rho, step, kmax = _circle(params)
    cs, sn = _table(step, kmax)
    u, w, v = _frame(d1) if frame is None else frame
    c = cs[np.abs(k)]
    s = np.where(k < 0, -sn[np.abs(k)], sn[np.abs(k)])
    return np.rint(centre * u + rho * (c[..., None] * w + s[..., None] * v)).astype(np.int64)


def forward(o, h1, h2, params):
    """Integer arrays (F, nw, 3) -> (slots for H1, slots for H2, extra row), or None if out of the safe range."""
    if kernels.HAVE_NUMBA:
        centre, rho, step, kmax = _circle(params)
        cs, sn = _table(step, kmax)
        c32 = lambda a: np.ascontiguousarray(a, np.int32)  # noqa: E731
        s1, s2, extra, ok = kernels.geometry_forward(c32(o), c32(h1), c32(h2), float(params[0]), centre, rho, step,
                                                     cs, sn, _MAX_OFFSET)
        return (s1, s2, extra) if ok else None
    d1 = h1.astype(np.int64) - o
    d2 = h2.astype(np.int64) - o
    if np.abs(d1).max(initial=0) > _MAX_OFFSET or np.abs(d2).max(initial=0) > _MAX_OFFSET:
        return None
    r1 = params[0]
    if (np.sqrt((d1.astype(np.float64) ** 2).sum(-1)) < 0.5 * r1).any():
        return None
    # H1: largest component predicted from the sphere.
    a = np.argmax(np.abs(d1), axis=-1)
    b, c = (a + 1) % 3, (a + 2) % 3
    da = np.take_along_axis(d1, a[..., None], -1)[..., 0]
    db = np.take_along_axis(d1, b[..., None], -1)[..., 0]
    dc = np.take_along_axis(d1, c[..., None], -1)[..., 0]
    mag = np.rint(np.sqrt(np.maximum(0.0, r1 * r1 - (db * db + dc * dc).astype(np.float64)))).astype(np.int64)
    neg = (da < 0).astype(np.int64)
    err = da - np.where(neg == 1, -mag, mag)
    s1 = np.stack([(_zz(err) * 2 + neg) * 3 + a, db, dc], axis=-1)
    # H2: angle index on the circle plus the integer error.
    centre, rho, step, kmax = _circle(params)
    u, w, v = _frame(d1)
    rel = d2.astype(np.float64) - centre * u
    phi = np.arctan2((rel * v).sum(-1), (rel * w).sum(-1))
    k = np.clip(np.rint(phi / step).astype(np.int64), -kmax, kmax)
    e2 = d2 - _predict_h2(d1, k, params, (u, w, v))
    s2 = np.stack([k, e2[..., 0], e2[..., 1]], axis=-1)
    extra = np.zeros_like(s2)
    extra[..., 0] = e2[..., 2]
    return s1.astype(np.int32), s2.astype(np.int32), extra.astype(np.int32)


def inverse(o, s1, s2, extra, params):
    """Inverse of :func:`forward`: (h1, h2) int32 arrays (F, nw, 3)."""
    if kernels.HAVE_NUMBA:
        centre, rho, step, kmax = _circle(params)
        cs, sn = _table(step, kmax)
        c32 = lambda a: np.ascontiguousarray(a, np.int32)  # noqa: E731
        h1, h2, ok = kernels.geometry_inverse(c32(o), c32(s1), c32(s2), c32(extra), float(params[0]), centre,
                                              rho, cs, sn)
        if not ok:
            raise ValueError("water geometry angle index out of range")
        return h1, h2
    s1 = s1.astype(np.int64)
    code = s1[..., 0]
    a = code % 3
    neg = (code // 3) % 2
    err = _unzz(code // 6)
    db, dc = s1[..., 1], s1[..., 2]
    r1 = params[0]
    mag = np.rint(np.sqrt(np.maximum(0.0, r1 * r1 - (db * db + dc * dc).astype(np.float64)))).astype(np.int64)
    da = np.where(neg == 1, -mag, mag) + err
    d1 = np.empty(s1.shape, np.int64)
    np.put_along_axis(d1, a[..., None], da[..., None], -1)
    np.put_along_axis(d1, ((a + 1) % 3)[..., None], db[..., None], -1)
    np.put_along_axis(d1, ((a + 2) % 3)[..., None], dc[..., None], -1)
    k = s2[..., 0].astype(np.int64)
    e2 = np.stack([s2[..., 1], s2[..., 2], extra[..., 0]], axis=-1).astype(np.int64)
    d2 = _predict_h2(d1, k, params) + e2
    o = o.astype(np.int64)
    return (o + d1).astype(np.int32), (o + d2).astype(np.int32)
