"""Object surfaces (numpy) and exact nearest-surface distances (scipy, the ``eval`` extra).

Surfaces follow the definition medpy uses: a voxel of a mask is on the surface when it is in the
mask but not in the mask eroded once with the face-connected (connectivity 1) structuring element,
voxels outside the array counting as background.

Distances: medpy takes, for each surface voxel of one mask, the Euclidean distance transform of
the other mask's surface at that voxel, i.e. the exact distance (mm) to the nearest surface voxel
of the other mask. We compute the same number as a nearest-neighbour query on the surface voxels
themselves, in mm coordinates (a k-d tree, ``scipy.spatial.cKDTree``, exact with ``eps=0``): the
work follows the number of surface voxels, never the volume or a bounding box. docs/metrics.md
has the measurements that chose this over our former numpy distance transform and over
``scipy.ndimage.distance_transform_edt`` on each label's bounding box.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from limbseg_rt.runtime.errors import MissingDependencyError

INSTALL_HINT = 'pip install "limbseg-rt[eval]"'


class EvalExtraMissing(MissingDependencyError):
    """Surface distances need scipy, which the lean runtime does not install (exit 12)."""


def _kdtree():
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        raise EvalExtraMissing(
            f"surface distances (HD, HD95, ASSD) need scipy, which is not installed: {INSTALL_HINT}"
        ) from None
    return cKDTree


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


def label_surfaces(label_map: np.ndarray, keep: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """Surface voxels of every label of an integer label map, in one pass over the volume.

    A voxel is on the surface of its label when a face neighbour has another label or lies
    outside the array -- exactly ``surface(label_map == i)`` for each label i, without building
    one mask per label. ``keep``: only these labels are returned (default: all, background too).
    Returns {label: int64 array (n_i, ndim) of voxel indices, C order}. Fastest on a C-contiguous
    map (on a Fortran-ordered one, as nibabel returns, pass ``label_map.T``: ten times faster).
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
        for end in (0, -1):
            face: list[slice | int] = [slice(None)] * lab.ndim
            face[axis] = end
            edge[tuple(face)] = True
    flat = np.flatnonzero(edge)
    del edge
    values = lab.reshape(-1)[flat]
    if keep is not None:
        wanted = np.isin(values, np.fromiter(keep, dtype=np.int64))
        values, flat = values[wanted], flat[wanted]
    order = np.argsort(values, kind="stable")  # stable keeps C order within a label
    values, flat = values[order], flat[order]
    ids, starts = np.unique(values, return_index=True)
    bounds = list(starts) + [flat.size]
    coords = np.stack(np.unravel_index(flat, lab.shape), axis=1).astype(np.int64)
    return {int(ids[n]): coords[bounds[n] : bounds[n + 1]] for n in range(ids.size)}


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray([float(s) for s in spacing])
    if sp.size != ndim or not np.all(np.isfinite(sp) & (sp > 0)):
        raise ValueError(f"spacing must be {ndim} positive voxel sizes in mm, got {tuple(spacing)}")
    return sp


def nearest_distances(points: np.ndarray, queries: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Exact Euclidean distance (mm) from each query voxel to the nearest of ``points``.

    ``points`` (M, ndim) and ``queries`` (Q, ndim): integer voxel indices, any ndim >= 1;
    ``spacing``: voxel size per axis in mm (default 1). Returns float64 (Q,), inf when M == 0.
    Raises ``EvalExtraMissing`` (one line with the install command) when scipy is missing.
    """
    points = np.asarray(points)
    queries = np.asarray(queries)
    if points.ndim != 2 or queries.ndim != 2 or points.shape[1] != queries.shape[1]:
        raise ValueError(f"points {points.shape} and queries {queries.shape} must be (n, ndim) arrays")
    sp = _check_spacing(spacing, points.shape[1])
    if queries.shape[0] == 0:
        return np.empty(0)
    if points.shape[0] == 0:
        return np.full(queries.shape[0], np.inf)
    tree = _kdtree()(points * sp)
    dist, _ = tree.query(queries * sp, k=1)
    return np.asarray(dist, dtype=np.float64)
