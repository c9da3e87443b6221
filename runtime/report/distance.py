"""Exact Euclidean distance transforms and object surfaces in numpy (no scipy at runtime).

The squared distance transform is separable: one pass per axis, each a 1D problem
``g(q) = min_p f(p) + (s * (q - p))**2`` (``s`` = voxel size along that axis in mm).
The first pass only needs the nearest feature along each line (forward/backward scans);
later passes use the lower envelope of parabolas of Felzenszwalb & Huttenlocher (2012), run
for all lines of the volume at once so numpy does the work, one step per position on the axis.
The results are exact (up to float64 rounding), not approximations.

Surfaces follow the usual definition used by medpy: a voxel of a mask is on the surface when
it is in the mask but not in the mask eroded once with the face-connected (connectivity 1)
structuring element, voxels outside the array counting as background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask (any number of dimensions >= 1).

    A voxel is on the surface when it is True and at least one of its 2*ndim face neighbours is
    False or outside the array. Returns a bool array of the same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    eroded = mask.copy()
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for shift in (0, 2):
            sl = list(core)
            sl[axis] = slice(shift, shift + mask.shape[axis])
            eroded &= padded[tuple(sl)]
    return mask & ~eroded


def _first_pass(features: np.ndarray, spacing: float) -> np.ndarray:
    """Squared distance (mm^2) to the nearest feature along axis 0; inf when a line has none."""
    n = features.shape[0]
    pos = np.arange(n).reshape((n,) + (1,) * (features.ndim - 1))
    # Sentinels far outside the line so a line without features gives a distance > n.
    before = np.maximum.accumulate(np.where(features, pos, -2 * n - 1), axis=0)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(features, pos, 3 * n + 1), 0), axis=0), 0)
    steps = np.minimum(pos - before, after - pos)
    out = (steps * float(spacing)) ** 2
    out[steps > n] = np.inf
    return out


def _envelope_pass(f: np.ndarray, spacing: float) -> np.ndarray:
    """One lower-envelope pass along the last axis of ``f`` (L lines x n positions).

    ``f`` holds squared distances in mm^2 (inf = no feature yet). Returns
    ``min_p f[:, p] + (spacing * (q - p))**2`` for every line and position q, shape (L, n).
    """
    n_lines, n = f.shape
    w = float(spacing) ** 2
    qs = np.arange(n, dtype=np.float64)
    h = f + w * qs * qs  # parabola offsets; intersections only need these differences
    v = np.zeros((n_lines, n), dtype=np.intp)  # positions of the parabolas on the envelope
    z = np.full((n_lines, n + 1), np.inf)  # z[l, j] = left boundary of parabola j on line l
    k = np.full(n_lines, -1, dtype=np.intp)  # index of the last parabola (-1 = none yet)
    finite = np.isfinite(f)
    for q in range(n):
        act = finite[:, q]
        new = act & (k < 0)
        if new.any():
            k[new] = 0
            v[new, 0] = q
            z[new, 0] = -np.inf
            z[new, 1] = np.inf
        lines = np.flatnonzero(act & ~new)
        if lines.size == 0:
            continue
        hq = h[lines, q]
        kk = k[lines]
        s_final = np.empty(lines.size)
        todo = np.arange(lines.size)
        # Pop parabolas hidden by the new one; each line pops at most as often as it pushed.
        while todo.size:
            li = lines[todo]
            kt = kk[todo]
            p = v[li, kt]
            s = (hq[todo] - h[li, p]) / (2.0 * w * (q - p))
            pop = s <= z[li, kt]
            keep = ~pop
            s_final[todo[keep]] = s[keep]
            todo = todo[pop]
            kk[todo] -= 1
        kk += 1
        k[lines] = kk
        v[lines, kk] = q
        z[lines, kk] = s_final
        z[lines, kk + 1] = np.inf

    out = np.full((n_lines, n), np.inf)
    has = np.flatnonzero(k >= 0)
    if has.size == 0:
        return out
    # The parabola that owns position q is the number of boundaries z[1..k] below q; count them
    # with one histogram per line and a cumulative sum instead of a per-position scan.
    kh = k[has]
    zh = z[has, 1:n]  # boundaries 1..n-1 (only the first kh are real)
    real = np.arange(1, n)[None, :] <= kh[:, None]
    first_q = np.clip(np.floor(zh) + 1.0, 0, n).astype(np.intp)  # smallest q with z < q
    rows = np.broadcast_to(np.arange(has.size)[:, None], zh.shape)
    counts = np.bincount(
        (rows[real] * (n + 1) + first_q[real]).ravel(), minlength=has.size * (n + 1)
    ).reshape(has.size, n + 1)
    owner = np.cumsum(counts, axis=1)[:, :n]
    p = np.take_along_axis(v[has], owner, axis=1)
    fh = f[has]
    out[has] = np.take_along_axis(fh, p, axis=1) + w * (qs[None, :] - p) ** 2
    return out


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive voxel sizes in mm, got {tuple(spacing)}")
    return sp


def squared_edt(features: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Exact squared Euclidean distance (mm^2) from every voxel to the nearest True voxel.

    ``features``: bool array, any shape with ndim >= 1. ``spacing``: voxel size in mm per axis
    (default 1). Returns float64 of the same shape; all inf when there is no True voxel.
    Equals ``scipy.ndimage.distance_transform_edt(~features, sampling=spacing) ** 2``.
    """
    features = np.asarray(features, dtype=bool)
    sp = _check_spacing(spacing, features.ndim)
    out = _first_pass(features, sp[0])
    for axis in range(1, features.ndim):
        moved = np.moveaxis(out, axis, -1)
        shape = moved.shape
        res = _envelope_pass(np.ascontiguousarray(moved).reshape(-1, shape[-1]), sp[axis])
        out = np.moveaxis(res.reshape(shape), -1, axis)
    return np.ascontiguousarray(out)


def label_surfaces(label_map: np.ndarray) -> dict[int, np.ndarray]:
    """Surface voxels of every label of an integer label map, in one pass over the volume.

    A voxel is on the surface of its label when a face neighbour has another label or lies
    outside the array -- exactly ``surface(label_map == i)`` for each label i, without building
    one mask per label. Returns {label: int64 array (n_i, ndim) of voxel indices, C order}.
    """
    lab = np.asarray(label_map)
    edge = np.zeros(lab.shape, dtype=bool)
    for axis in range(lab.ndim):
        lo = [slice(None)] * lab.ndim
        hi = [slice(None)] * lab.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        differ = lab[tuple(lo)] != lab[tuple(hi)]
        edge[tuple(lo)] |= differ
        edge[tuple(hi)] |= differ
        first = [slice(None)] * lab.ndim
        first[axis] = [0, -1] if lab.shape[axis] > 1 else [0]
        edge[tuple(first)] = True
    flat = np.flatnonzero(edge)
    values = lab.ravel()[flat]
    order = np.argsort(values, kind="stable")  # stable keeps C order within a label
    values, flat = values[order], flat[order]
    ids, starts = np.unique(values, return_index=True)
    bounds = list(starts) + [flat.size]
    coords = np.stack(np.unravel_index(flat, lab.shape), axis=1).astype(np.int64)
    return {int(ids[n]): coords[bounds[n]:bounds[n + 1]] for n in range(ids.size)}


def distances_to(
    features: np.ndarray, query: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Euclidean distance (mm) from each True voxel of ``query`` to the nearest True of ``features``.

    ``features``, ``query``: bool arrays of one shape. Same values as
    ``sqrt(squared_edt(features, spacing))[query]`` (query voxels in C order). Returns float64,
    shape (n_query,); inf everywhere when ``features`` is empty.
    """
    features = np.asarray(features, dtype=bool)
    query = np.asarray(query, dtype=bool)
    if features.shape != query.shape:
        raise ValueError(f"features {features.shape} and query {query.shape} differ in shape")
    sp = _check_spacing(spacing, features.ndim)
    if features.ndim > 3:
        return np.sqrt(squared_edt(features, sp)[query])
    pts = np.stack(np.nonzero(features), axis=1)
    qry = np.stack(np.nonzero(query), axis=1)
    return nearest_distances(pts, qry, sp)


def nearest_distances(
    points: np.ndarray, queries: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Exact Euclidean distance (mm) from each query voxel to the nearest of ``points``.

    ``points`` (M, ndim) and ``queries`` (Q, ndim): integer voxel indices, ndim 1 to 3;
    ``spacing``: voxel size per axis in mm. Returns float64 (Q,), inf when M == 0. This is the
    separable transform restricted to where it matters, so the work follows the number of
    feature columns and queries rather than the volume: the first pass runs only on the lines
    (along the shortest axis of the bounding box) that hold a point, the envelope pass only at
    positions with a finite value and is read out only where a query needs it, and the longest
    axis is minimised at the query voxels directly.
    """
    points = np.asarray(points, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    if points.ndim != 2 or queries.ndim != 2 or points.shape[1] != queries.shape[1]:
        raise ValueError(f"points {points.shape} and queries {queries.shape} must be (n, ndim) arrays")
    ndim = points.shape[1]
    if not 1 <= ndim <= 3:
        raise ValueError("nearest_distances supports 1 to 3 dimensions")
    sp = _check_spacing(spacing, ndim)
    if queries.shape[0] == 0:
        return np.empty(0)
    if points.shape[0] == 0:
        return np.full(queries.shape[0], np.inf)
    # Work in the bounding box of both sets; 1D/2D become 3D with leading axes of length 1.
    origin = np.minimum(points.min(axis=0), queries.min(axis=0))
    extent = np.maximum(points.max(axis=0), queries.max(axis=0)) - origin + 1
    pad = 3 - ndim
    shape3 = (1,) * pad + tuple(int(e) for e in extent)
    sp3 = (1.0,) * pad + sp
    zeros_p = [np.zeros(points.shape[0], np.int64)] * pad
    zeros_q = [np.zeros(queries.shape[0], np.int64)] * pad
    f_coords = zeros_p + [points[:, a] - origin[a] for a in range(ndim)]
    q_coords = zeros_q + [queries[:, a] - origin[a] for a in range(ndim)]
    order = sorted(range(3), key=lambda a: shape3[a])  # shortest axis first, longest last
    s0, s1, s2 = (sp3[a] for a in order)
    n0, n1, n2 = (shape3[a] for a in order)
    fx0, fx1, fx2 = (f_coords[a] for a in order)

    # First pass, only on the axis-0 columns that hold a feature: f0 is (n0, n_columns).
    cols, col_of = np.unique(fx1 * n2 + fx2, return_inverse=True)  # sorted by (x1, x2)
    dense = np.zeros((n0, cols.size), dtype=bool)
    dense[fx0, col_of] = True
    f0 = _first_pass(dense, s0)
    c1, c2 = cols // n2, cols % n2
    x2_used, c2_compact = np.unique(c2, return_inverse=True)
    m2 = x2_used.size

    # Envelope pass along axis 1 on lines (x0, x2) with x2 in x2_used: line id x0 * m2 + x2c.
    env = _Envelope(n0 * m2, n1, s1, int(np.bincount(c2_compact).max()))
    starts = np.searchsorted(c1, np.arange(n1 + 1))
    x0_off = (np.arange(n0) * m2)[:, None]
    for q in range(n1):
        grp = slice(starts[q], starts[q + 1])
        if starts[q] == starts[q + 1]:
            continue
        env.push(q, (x0_off + c2_compact[grp][None, :]).ravel(), f0[:, grp].ravel())

    # Read the envelope where queries need it -- at (x0, x1) of every query, on all used x2 --
    # then brute-force the last axis at the query voxels. Chunked over (x0, x1) pairs so the
    # (pairs, m2) temporaries stay small.
    qx0, qx1, qx2 = (q_coords[a] for a in order)
    s_keys, s_of = np.unique(qx0 * n1 + qx1, return_inverse=True)
    by_pair = np.argsort(s_of, kind="stable")
    pair_start = np.searchsorted(s_of[by_pair], np.arange(s_keys.size + 1))
    env.finish()
    out = np.empty(qx0.size)
    step = max(1, 2_000_000 // m2)
    for first in range(0, s_keys.size, step):
        keys = s_keys[first:first + step]
        sx0, sx1 = keys // n1, keys % n1
        line = (sx0[:, None] * m2 + np.arange(m2)[None, :]).ravel()
        g = env.values(line, np.repeat(sx1, m2)).reshape(keys.size, m2)
        qi = by_pair[pair_start[first]:pair_start[min(first + step, s_keys.size)]]
        off = (qx2[qi, None] - x2_used[None, :]) * s2
        out[qi] = np.min(g[s_of[qi] - first] + off * off, axis=1)
    return np.sqrt(out)


class _Envelope:
    """Lower envelopes of parabolas ``f_p + (s (q - p))**2`` on many lines, built left to right.

    ``n``: positions per line; ``max_pushes``: most parabolas any single line will receive.

    ``push(q, lines, f)`` adds, at position q, one parabola to each listed line (each line at most
    once per q, positions increasing); after ``finish()``, ``values(lines, q)`` reads the
    envelopes at given points.
    Felzenszwalb & Huttenlocher's algorithm, vectorised over the lines pushed together.
    """

    def __init__(self, n_lines: int, n: int, spacing: float, max_pushes: int):
        self.n = n
        self.w = float(spacing) ** 2
        # Flat storage, line l's slots at l * width + j (1D indexing is much faster in numpy
        # than 2D fancy indexing). A line holds at most as many parabolas as were pushed to it.
        self.width = width = max_pushes + 1
        self.v = np.zeros(n_lines * width, dtype=np.int64)  # parabola positions
        self.fv = np.zeros(n_lines * width)  # their f values
        self.h = np.zeros(n_lines * width)  # f + w p^2, what the intersections need
        self.z = np.full(n_lines * width, np.inf)  # left boundary of each parabola
        self.k = np.full(n_lines, -1, dtype=np.int64)  # last parabola index (-1 = none)

    def push(self, q: int, lines: np.ndarray, f: np.ndarray) -> None:
        v, fv, h, z, k, w = self.v, self.fv, self.h, self.z, self.k, self.w
        hq = f + w * q * q
        base = lines * self.width
        kk = k[lines]
        new = kk < 0
        if new.any():
            b = base[new]
            k[lines[new]] = 0
            v[b] = q
            fv[b] = f[new]
            h[b] = hq[new]
            z[b] = -np.inf
            z[b + 1] = np.inf
            old = ~new
            lines, f, hq, base, kk = lines[old], f[old], hq[old], base[old], kk[old]
        if lines.size == 0:
            return
        slot = base + kk
        s_final = np.empty(lines.size)
        todo = np.arange(lines.size)
        two_w = 2.0 * w
        # Pop parabolas hidden by the new one; z = -inf in slot 0 stops every line at its first.
        while todo.size:
            st = slot[todo]
            s = (hq[todo] - h[st]) / (two_w * (q - v[st]))
            pop = s <= z[st]
            s_final[todo[~pop]] = s[~pop]
            todo = todo[pop]
            slot[todo] -= 1
        slot += 1
        k[lines] = slot - base
        v[slot] = q
        fv[slot] = f
        h[slot] = hq
        z[slot] = s_final
        z[slot + 1] = np.inf

    def finish(self) -> None:
        """Index the boundaries of all lines for ``values`` (call after the last push)."""
        k, n = self.k, self.n
        # Parabola j owns q when z_j < q <= z_{j+1}; z < q  <=>  q >= floor(z) + 1, an integer,
        # so the boundaries of all lines sort exactly in one int64 key (no float offsets).
        counts = np.maximum(k, 0)
        self.start = np.concatenate([[0], np.cumsum(counts)])
        rows = np.repeat(np.arange(k.size), counts)
        cols = np.arange(int(counts.sum())) - self.start[rows] + 1
        first_q = np.clip(np.floor(self.z[rows * self.width + cols]) + 1.0, 0, n + 1).astype(np.int64)
        self.keys = rows.astype(np.int64) * (n + 2) + first_q

    def values(self, lines: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Envelope of ``lines[i]`` at integer position ``q[i]``; inf for lines never pushed."""
        out = np.full(lines.size, np.inf)
        live = self.k[lines] >= 0
        li, qi = lines[live], q[live]
        owner = np.searchsorted(self.keys, li * (self.n + 2) + qi, side="right") - self.start[li]
        slot = li * self.width + owner
        d = (qi - self.v[slot]) * np.sqrt(self.w)
        out[live] = self.fv[slot] + d * d
        return out
