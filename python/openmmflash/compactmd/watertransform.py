"""In-molecule water transform of CompactMD: water atoms after the oxygen are replaced by integer residuals of
predictions made inside the molecule (linear, with fitted coefficients for virtual sites, or by rigid geometry,
see :mod:`~openmmflash.compactmd.watergeometry`), chosen per chunk and group of waters of the same size.
Shapes: grid integers ``q`` (F, N, 3) int32; ``layout.groups`` lists (size, first-atom indices)."""

import numpy as np

from openmmflash.compactmd import kernels, watergeometry, workspace

_DECIDE_WATERS = 512  # molecules per group on which the transform is chosen

_FIT_WATERS = 2048  # molecules per group the linear coefficients are fitted on


def fit_water(q, size, first):
    """Least-squares coefficients (float64) predicting each water atom k >= 2 from the offsets of atoms 1..k-1
    (fitted on frame 0 of up to ``_FIT_WATERS`` evenly spaced molecules)."""
    first = first[::max(1, len(first) // _FIT_WATERS)]
    coefs = []
    rel = [None] + [(q[0, first + j] - q[0, first]).astype(np.float64).reshape(-1) for j in range(1, size)]
    for k in range(2, size):
        a = np.stack(rel[1:k], axis=1)
        c = np.linalg.lstsq(a, rel[k], rcond=None)[0] if len(first) else np.zeros(k - 1)
        c = np.clip(np.nan_to_num(c), -2.0, 2.0)
        # Only a near-exact relation (a virtual site) pays: otherwise the rounded prediction adds noise in time.
        if not np.sum((rel[k] - a @ c) ** 2) < 0.01 * np.sum(rel[k] ** 2):
            c = np.zeros(k - 1)
        coefs.append(c)
    return coefs


def water_pred(q, first, k, coefs):
    """int64 prediction of water atom k from atom 0 (and, for k >= 2, the offsets of atoms 1..k-1)."""
    if kernels.HAVE_NUMBA:
        c = np.asarray(coefs[k - 2], np.float64) if k >= 2 else np.zeros(0)
        return kernels.water_pred(np.ascontiguousarray(q), np.asarray(first, np.int64), int(k), c)
    base = q[:, first].astype(np.int64)
    if k == 1:
        return base
    acc = np.zeros(base.shape, np.float64)
    for j, c in enumerate(coefs[k - 2], start=1):
        acc = acc + c * (q[:, first + j].astype(np.int64) - base)
    return base + np.rint(acc).astype(np.int64)


def l1_cost(a):
    """Cheap size proxy of an int array (F, n, 3): L1 of its values, first or second time differences (the
    smallest, per frame)."""
    if kernels.HAVE_NUMBA and a.ndim == 3 and a.shape[2] == 3 and a.dtype in (np.int32, np.int64):
        nf = a.shape[0]
        s0, s1, s2 = kernels.l1_sums(a)
        return min([float(s0) / nf] + ([float(s1) / (nf - 1)] if nf >= 2 else [])
                   + ([float(s2) / (nf - 2)] if nf >= 3 else []))
    a = a.astype(np.int64)
    costs = [float(np.abs(a).sum()) / a.shape[0]]
    if a.shape[0] >= 2:
        d = a[1:] - a[:-1]
        costs.append(float(np.abs(d).sum()) / d.shape[0])
        if a.shape[0] >= 3:
            costs.append(float(np.abs(d[1:] - d[:-1]).sum()) / (d.shape[0] - 1))
    return min(costs)


def choose(q, size, first):
    """Per chunk and group: (choice, geometry params or None, coefs) with choice "raw", "linear" or "geometry",
    decided on a few frames and evenly spaced molecules (the choice is stored, so decoding does not depend on how
    it was made)."""
    coefs = fit_water(q, size, first)
    params = watergeometry.fit(q, first)
    few = q[:4]
    sub = first[::max(1, len(first) // _DECIDE_WATERS)]
    if kernels.HAVE_NUMBA:
        options = _stream_costs(np.ascontiguousarray(few), sub, size, params, coefs)
        choice = min(options, key=options.get)
        return choice, (params if choice == "geometry" else None), coefs
    options = {"raw": sum(l1_cost(few[:, sub + k]) for k in range(1, size)),
               "linear": sum(l1_cost(few[:, sub + k].astype(np.int64) - water_pred(few, sub, k, coefs))
                             for k in range(1, size))}
    if params is not None:
        geo = watergeometry.forward(few[:, sub], few[:, sub + 1], few[:, sub + 2], params)
        if geo is not None:
            options["geometry"] = l1_cost(geo[0]) + l1_cost(geo[1]) + l1_cost(geo[2]) + sum(
                l1_cost(few[:, sub + k].astype(np.int64) - water_pred(few, sub, k, coefs))
                for k in range(3, size))
    choice = min(options, key=options.get)
    return choice, (params if choice == "geometry" else None), coefs


def _stream_costs(few, sub, size, params, coefs):
    """The size proxies of :func:`choose` from the compiled W stream of the molecules ``sub``."""
    ns, m = len(sub), size - 1
    rows = np.arange(ns * m, dtype=np.int64).reshape(ns, m)
    a = np.empty((few.shape[0], ns * m + ns, 3), np.int32)
    options = {}
    for name, p in (("raw", "raw"), ("linear", None), ("geometry", params)):
        if name == "geometry" and params is None:
            continue
        kind, cm, r1, centre, rho, step, cs, sn = _kernel_args(p, coefs, size)
        if kernels.water_stream_forward(few, sub, rows, kind, cm, r1, centre, rho, step, cs, sn,
                                        watergeometry._MAX_OFFSET, a, ns * m):
            options[name] = sum(l1_cost(a[:, k:ns * m:m]) for k in range(m)) + \
                (l1_cost(a[:, ns * m:]) if kind == 1 else 0.0)
    return options


def forward(q, layout):
    """q -> (t, groups, extra): water atoms replaced by in-molecule residuals (H1/H2 by rigid geometry when it
    pays, see :mod:`watergeometry`); ``groups`` = [(size, geometry params or None, coefs)]; ``extra`` rows
    (F, n, 3) for the W stream. Returns (None, None, None) when the molecules are too spread out."""
    if not layout.groups:
        return q, [], np.zeros((q.shape[0], 0, 3), np.int32)
    t = q.copy()
    groups, extras = [], []
    for size, first in layout.groups:
        choice, params, coefs = choose(q, size, first)
        if choice == "raw":
            groups.append((size, "raw", coefs))
            continue
        geo = watergeometry.forward(q[:, first], q[:, first + 1], q[:, first + 2], params) if params else None
        plain = []
        for k in range(1, size):
            if geo is not None and k <= 2:
                plain.append(geo[k - 1])
                continue
            r = q[:, first + k].astype(np.int64) - water_pred(q, first, k, coefs)
            if np.abs(r).max(initial=0) > 2**28:
                return None, None, None
            plain.append(r.astype(np.int32))
        if geo is not None:
            extras.append(geo[2])
        else:
            params = None
        for k in range(1, size):
            t[:, first + k] = plain[k - 1]
        groups.append((size, params, coefs))
    extra = np.concatenate(extras, axis=1) if extras else np.zeros((q.shape[0], 0, 3), np.int32)
    return t, groups, extra


def _kernel_args(params, coefs, size):
    """Arguments of the compiled group kernels: kind, padded coefficient matrix, geometry constants and table."""
    kind = 2 if params == "raw" else int(params is not None)
    cm = np.zeros((max(size - 2, 1), max(size - 2, 1)))
    for k in range(2, size):
        cm[k - 2, :k - 1] = coefs[k - 2]
    if kind == 1:
        centre, rho, step, kmax = watergeometry._circle(params)
        cs, sn = watergeometry._table(step, kmax)
        return kind, cm, float(params[0]), centre, rho, step, cs, sn
    return kind, cm, 0.0, 0.0, 0.0, 1.0, np.ones(1), np.zeros(1)


def forward_stream(q, layout):
    """Compiled form of :func:`forward` that writes the W stream directly: (a, groups) with ``a`` (F, m, 3) int32
    equal to ``concatenate([t[:, layout.W], extra], axis=1)`` of :func:`forward` (up to the stored angle index,
    which any choice decodes), or (None, None) when the molecules are too spread out."""
    q = np.ascontiguousarray(q, np.int32)
    choices = [(size, first) + choose(q, size, first) for size, first in layout.groups]
    nextra = sum(len(first) for size, first, choice, params, coefs in choices if params is not None)
    a = workspace.scratch("wstream", (q.shape[0], len(layout.W) + nextra, 3), np.int32)
    pos, groups = len(layout.W), []
    for (size, first, choice, params, coefs), rows in zip(choices, layout.waterRows()):
        params = "raw" if choice == "raw" else params
        kind, cm, r1, centre, rho, step, cs, sn = _kernel_args(params, coefs, size)
        if not kernels.water_stream_forward(q, first, rows, kind, cm, r1, centre, rho, step, cs, sn,
                                            watergeometry._MAX_OFFSET, a, pos):
            return None, None
        pos += len(first) if kind == 1 else 0
        groups.append((size, params, coefs))
    return a, groups


def inverse_stream(q, a, layout, groups, slotOrder=True):
    """Inverse of :func:`forward_stream`: fills the W atoms of ``q`` (F, N, 3) in place from the W stream ``a``
    (rows in slot order, or in atom order for blob version 3)."""
    pos = len(layout.W)
    for (size, first), rows, (_, params, coefs) in zip(layout.groups, layout.waterRows(slotOrder), groups):
        kind, cm, r1, centre, rho, step, cs, sn = _kernel_args(params, coefs, size)
        if kind == 1 and a.shape[1] < pos + len(first):
            raise ValueError("water geometry extra rows missing")
        if not kernels.water_stream_inverse(q, a, first, rows, kind, cm, r1, centre, rho, cs, sn, pos):
            raise ValueError("water geometry angle index out of range")
        pos += len(first) if kind == 1 else 0
    return q


def inverse(t, layout, groups, extra):
    q = t
    pos = 0
    for (size, first), (_, params, coefs) in zip(layout.groups, groups):
        k0 = 1
        if params == "raw":
            continue
        if params is not None:
            nw = len(first)
            h1, h2 = watergeometry.inverse(kernels.take_atoms(q, first), kernels.take_atoms(t, first + 1),
                                           kernels.take_atoms(t, first + 2), extra[:, pos:pos + nw], params)
            pos += nw
            kernels.put_atoms(q, first + 1, h1)
            kernels.put_atoms(q, first + 2, h2)
            k0 = 3
        for k in range(k0, size):
            q[:, first + k] = (t[:, first + k].astype(np.int64) + water_pred(q, first, k, coefs)).astype(np.int32)
    return q


