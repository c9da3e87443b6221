"""3D clean-up of a label map: per muscle and side, drop the islands that do not belong.

Rule (docs/analysis.md): for each muscle x side, the 3D connected components (26-connectivity) of
its voxels are found; a component is kept when it has at least ``min_fraction`` (default 0.10) of
the voxels of that muscle-side's largest component, or when its bounding box lies within
``near_mm`` (default 10 mm) of the largest component's bounding box along every axis (a piece the
slice spacing or a septum split off); the others become background. Components are
found per side, so a two-leg scan keeps both legs' copies, a one-leg scan its one, and a muscle
cut by the field of view keeps its remaining (largest) piece. A muscle split into two similar
pieces (both >= 10 %) keeps both.

Connected components come from ``connected-components-3d`` (``pip install "limbseg-rt[analysis]"``),
one multi-label pass over the whole volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from limbseg_rt.runtime.errors import EXIT_USAGE, LimbsegError

MIN_FRACTION = 0.10
NEAR_MM = 10.0
INSTALL_HINT = 'the 3D clean-up needs connected-components-3d: pip install "limbseg-rt[analysis]" (or pass --no-clean)'


class MissingExtraError(LimbsegError):
    """An optional dependency is not installed (exit code 2, with the install line)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class CleanupResult:
    """``labels``: the cleaned uint8 ``[X, Y, Z]`` map; ``removed``: ``{(label, side): voxels removed}``
    for every muscle-side that lost voxels; ``components``: ``{(label, side): components kept}``."""

    labels: np.ndarray
    removed: dict
    kept_components: dict
    min_fraction: float


def _cc3d():
    try:
        import cc3d
    except ImportError:
        raise MissingExtraError(INSTALL_HINT) from None
    return cc3d


def check_available() -> None:
    """``MissingExtraError`` (exit 2, with the install line) when connected-components-3d is missing;
    called before any work so a run does not segment first and fail after."""
    _cc3d()


def clean_labels(
    labels: np.ndarray,
    sides: np.ndarray,
    *,
    min_fraction: float = MIN_FRACTION,
    near_mm: float = NEAR_MM,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> CleanupResult:
    """Remove small 3D islands per muscle and side (see module docstring).

    ``labels``: integer ``[X, Y, Z]`` (0 = background, < 256 classes); ``sides``: uint8 same shape
    (0 none, 1 R, 2 L; from ``sides.assign_sides``); ``spacing``: voxel size (mm) for ``near_mm``
    (a negative ``near_mm`` turns the proximity rule off). Returns a new array; the input is not
    changed.
    """
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be within 0..1, got {min_fraction}")
    cc3d = _cc3d()
    lab = np.asarray(labels)
    compound = lab.astype(np.uint16) * 4 + np.asarray(sides, np.uint16)  # one id per muscle x side
    compound[lab == 0] = 0
    cc, n = cc3d.connected_components(compound, connectivity=26, return_N=True)
    if n == 0:
        return CleanupResult(lab.copy(), {}, {}, float(min_fraction))
    size = np.bincount(cc.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[cc.ravel()] = compound.ravel()  # every voxel of a component carries the same id
    size[0] = 0
    largest = np.zeros(int(owner.max()) + 1, np.int64)
    np.maximum.at(largest, owner[1:], size[1:])
    keep = size >= min_fraction * largest[owner]
    keep[0] = False
    if near_mm >= 0 and not keep[1:].all():
        boxes = cc3d.statistics(cc)["bounding_boxes"]  # per component: a slice per axis (stop exclusive)
        big_of: dict = {}
        for comp in range(1, n + 1):
            if size[comp] == largest[owner[comp]]:
                big_of.setdefault(int(owner[comp]), comp)
        reach = [near_mm / float(v) for v in spacing]
        for comp in (np.flatnonzero(~keep[1:]) + 1).tolist():
            big = boxes[big_of[int(owner[comp])]]
            box = boxes[comp]
            gaps = [max(0, max(box[a].start, big[a].start) - min(box[a].stop, big[a].stop) + 1) for a in range(3)]
            if all(g <= r for g, r in zip(gaps, reach)):
                keep[comp] = True
    out = np.where(keep[cc], lab, 0).astype(lab.dtype, copy=False)
    removed: dict = {}
    kept: dict = {}
    for comp in range(1, n + 1):
        key = (int(owner[comp]) // 4, int(owner[comp]) % 4)
        if keep[comp]:
            kept[key] = kept.get(key, 0) + 1
        else:
            removed[key] = removed.get(key, 0) + int(size[comp])
    return CleanupResult(out, removed, kept, float(min_fraction))  # near_mm: see the rule above
