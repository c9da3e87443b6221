"""3D clean-up of a label map: per muscle and side, drop the small islands far from their muscle.

Rule (docs/analysis.md, measured with ``benchmarks/cleanup_effect.py``): for each muscle x side,
the 3D connected components (26-connectivity) of its voxels are found. A component is kept when

1. it holds at least ``min_fraction`` (0.10) of the voxels of that muscle-side's largest component
   (so the largest is always kept), or at least ``min_ml`` (0.5 mL) of tissue: a piece that large
   is anatomy the network saw, wherever it lies (a distal end whose middle the network missed);
2. or, chained: its nearest voxel lies within ``near_mm`` (20 mm, voxel centre to voxel centre, in
   mm) of a voxel of a kept component; a piece kept this way lets the pieces near it stay too, so a
   muscle broken into a row of fragments keeps the whole row.

The others (small and far from everything kept) become background. Components are found per side,
so a two-leg scan keeps both legs' copies, a one-leg scan its one, and a muscle cut by the field of
view keeps its remaining pieces. The nearest distances are exact, computed in numpy on a crop around
each candidate piece (its bounding box grown by ``near_mm``), from the candidate's voxels to the
surface voxels of the kept pieces in that crop.

Connected components come from ``connected-components-3d`` (``pip install "limbseg-rt[analysis]"``),
one multi-label pass over the whole volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from limbseg_rt.runtime.errors import MissingDependencyError

MIN_FRACTION = 0.10
MIN_ML = 0.5
NEAR_MM = 20.0
INSTALL_HINT = (
    'the 3D clean-up needs connected-components-3d: pip install "limbseg-rt[analysis]" (or pass --no-cleanup)'
)
# Candidate x kept-surface point pairs per distance block (bounds the float64 temporary to ~32 MB).
_PAIR_BLOCK = 4_000_000


class CleanupDependencyError(MissingDependencyError):
    """connected-components-3d is not installed (exit code 12, like every missing extra; the
    message has the install line)."""


@dataclass(frozen=True)
class CleanupResult:
    """``labels``: the cleaned ``[X, Y, Z]`` map; ``removed``: ``{(label, side): voxels removed}``
    for every muscle-side that lost voxels; ``kept_components``: ``{(label, side): components kept}``;
    ``removed_components``: ``{(label, side): components removed}``; the rule's parameters."""

    labels: np.ndarray
    removed: dict
    kept_components: dict
    min_fraction: float
    min_ml: float = MIN_ML
    near_mm: float = NEAR_MM
    removed_components: dict | None = None


def _cc3d():
    try:
        import cc3d
    except ImportError:
        raise CleanupDependencyError(INSTALL_HINT) from None
    return cc3d


def check_available() -> None:
    """``MissingDependencyError`` (exit 12, with the install line) when connected-components-3d is
    missing; called before any work so a run does not segment first and fail after."""
    _cc3d()


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (the crop's border counts as outside)."""
    inner = mask.copy()
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        inner[tuple(hi)] &= mask[tuple(lo)]
        inner[tuple(lo)] &= mask[tuple(hi)]
        edge: list[slice | int] = [slice(None)] * mask.ndim
        for end in (0, -1):
            edge[axis] = end
            inner[tuple(edge)] = False
    return mask & ~inner


def nearest_distance_mm(points_a: np.ndarray, points_b: np.ndarray, spacing) -> float:
    """Smallest Euclidean distance (mm) between two sets of voxel indices (``[N, 3]`` ints); inf if
    either is empty. Exact, by blocks of pairs."""
    if len(points_a) == 0 or len(points_b) == 0:
        return math.inf
    sp = np.asarray(spacing, np.float64)
    a = points_a.astype(np.float64) * sp
    b = points_b.astype(np.float64) * sp
    step = max(1, _PAIR_BLOCK // len(b))
    best = math.inf
    for i in range(0, len(a), step):
        d2 = ((a[i : i + step, None, :] - b[None, :, :]) ** 2).sum(axis=2)
        best = min(best, float(d2.min()))
    return math.sqrt(best)


def _distance_to_kept(cc, comp, box, group_kept, reach, spacing) -> float:
    """Nearest distance (mm) from component ``comp`` (bounding box ``box``) to the components flagged
    in ``group_kept`` (a bool lookup by component id), looked for within ``reach`` voxels per axis."""
    crop = tuple(slice(max(0, s.start - r), min(n, s.stop + r)) for s, r, n in zip(box, reach, cc.shape))
    sub = cc[crop]
    kept = group_kept[sub]
    if not kept.any():
        return math.inf
    offset = np.array([s.start for s in crop])
    mine = np.argwhere(sub == comp)
    # The candidate's surface suffices too (the nearest pair of two disjoint sets lies on both
    # surfaces); small pieces are mostly surface, so only the kept side is reduced.
    theirs = np.argwhere(_surface(kept))
    return nearest_distance_mm(mine + offset, theirs + offset, spacing)


def clean_labels(
    labels: np.ndarray,
    sides: np.ndarray,
    *,
    min_fraction: float = MIN_FRACTION,
    min_ml: float = MIN_ML,
    near_mm: float = NEAR_MM,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    voxel_volume_mm3: float | None = None,
) -> CleanupResult:
    """Remove the small 3D islands far from their muscle, per muscle and side (module docstring).

    ``labels``: integer ``[X, Y, Z]`` (0 = background, < 16384 classes); ``sides``: uint8 same shape
    (0 none, 1 R, 2 L; from ``sides.assign_sides``); ``spacing``: voxel size (mm) for ``near_mm``;
    ``voxel_volume_mm3``: for ``min_ml`` (default: the product of ``spacing``). ``min_ml=math.inf``
    turns the volume rule off, a negative ``near_mm`` the distance rule. Returns a new array; the
    input is not changed.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be within 0..1, got {min_fraction}")
    if not min_ml >= 0.0:
        raise ValueError(f"min_ml must be >= 0, got {min_ml}")
    cc3d = _cc3d()
    lab = np.asarray(labels)
    sp = tuple(float(v) for v in spacing)
    vox_mm3 = float(np.prod(sp)) if voxel_volume_mm3 is None else float(voxel_volume_mm3)
    compound = lab.astype(np.uint16) * 4 + np.asarray(sides, np.uint16)  # one id per muscle x side
    compound[lab == 0] = 0
    cc, n = cc3d.connected_components(compound, connectivity=26, return_N=True)
    params = {"min_ml": float(min_ml), "near_mm": float(near_mm)}
    if n == 0:
        return CleanupResult(lab.copy(), {}, {}, float(min_fraction), removed_components={}, **params)
    size = np.bincount(cc.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[cc.ravel()] = compound.ravel()  # every voxel of a component carries the same id
    size[0] = 0
    largest = np.zeros(int(owner.max()) + 1, np.int64)
    np.maximum.at(largest, owner[1:], size[1:])
    keep = (size >= min_fraction * largest[owner]) | (size * vox_mm3 >= min_ml * 1000.0)
    keep[0] = False
    if near_mm >= 0 and not keep[1:].all():
        boxes = cc3d.statistics(cc)["bounding_boxes"]  # per component: a slice per axis (stop exclusive)
        reach = [int(math.ceil(near_mm / v)) for v in sp]
        pending: dict[int, list[int]] = {}
        for comp in (np.flatnonzero(~keep[1:]) + 1).tolist():
            pending.setdefault(int(owner[comp]), []).append(comp)
        for group, comps in pending.items():
            # Pass 1 measures against every kept piece of the group; later passes only against the
            # pieces the previous pass added (the rest were measured already and were too far).
            against = keep & (owner == group)
            while comps and against.any():
                added = []
                for comp in comps:
                    if _distance_to_kept(cc, comp, boxes[comp], against, reach, sp) <= near_mm:
                        added.append(comp)
                if not added:
                    break
                keep[added] = True
                against = np.zeros_like(keep)
                against[added] = True
                comps = [c for c in comps if not keep[c]]
    out = np.where(keep[cc], lab, 0).astype(lab.dtype, copy=False)
    removed: dict = {}
    kept: dict = {}
    removed_n: dict = {}
    for comp in range(1, n + 1):
        key = (int(owner[comp]) // 4, int(owner[comp]) % 4)
        if keep[comp]:
            kept[key] = kept.get(key, 0) + 1
        else:
            removed[key] = removed.get(key, 0) + int(size[comp])
            removed_n[key] = removed_n.get(key, 0) + 1
    return CleanupResult(out, removed, kept, float(min_fraction), removed_components=removed_n, **params)


def rule_text(min_fraction: float = MIN_FRACTION, min_ml: float = MIN_ML, near_mm: float = NEAR_MM) -> str:
    """The rule in one sentence, for the report."""
    return (
        "per muscle and side, keep the 3D components (26-connected) with >= "
        f"{min_fraction:g} of the voxels of that muscle-side's largest component or >= {min_ml:g} mL, and, "
        f"chained, those whose nearest voxel lies within {near_mm:g} mm of a kept component; "
        "the others become background"
    )
