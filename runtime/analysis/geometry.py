"""Per muscle x side geometry on the canonical RAS+ grid: volume, ACSA profile, length, centroid.

Canonical z is the scan's slice axis (most inferior slice z = 0, most proximal = Z - 1). ACSA of a
slice = voxels x sx x sy (mm^2), in the slice plane: for an oblique acquisition that plane is tilted
by the scan's tilt from the true axial plane. Length = (z_last - z_first + 1) x sz, the extent of
the slices holding the muscle along the slice normal (the limb axis when the limb lies along the
scanner's z). Positions are measured from the muscle's most proximal slice (its z_last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """One muscle on one side. Lengths in mm, areas in mm^2, volume in mL; None when absent.

    ``acsa_profile_mm2``: area per slice from the muscle's most proximal slice to its most distal;
    ``max_acsa_position_mm``: distance of the max-ACSA slice from the most proximal slice (centre to
    centre); ``max_acsa_position_fraction``: that distance / (length - sz) (0 = proximal end, 1 =
    distal end); ``centroid_mm``: world (scanner RAS+) coordinates; flags: the muscle touches the
    first/last slice (volume and length are lower bounds), max ACSA on an edge slice (unreliable).
    """

    voxels: int
    volume_ml: float
    z_first: int | None
    z_last: int | None
    acsa_profile_mm2: tuple[float, ...]
    max_acsa_mm2: float | None
    max_acsa_z: int | None
    max_acsa_position_mm: float | None
    max_acsa_position_fraction: float | None
    length_mm: float | None
    centroid_mm: tuple[float, float, float] | None
    volume_lower_bound: bool
    length_lower_bound: bool
    max_acsa_unreliable: bool


def muscle_geometry(
    mask_counts_per_slice: np.ndarray,
    sum_x: float,
    sum_y: float,
    sum_z: float,
    spacing: tuple[float, float, float],
    canonical_affine: np.ndarray,
    voxel_volume_mm3: float,
) -> Geometry:
    """Geometry from per-slice voxel counts ``[Z]`` (int) and the sums of the voxel indices (for the
    centroid). ``spacing``: canonical (sx, sy, sz) mm; ``canonical_affine``: 4x4 voxel -> world."""
    counts = np.asarray(mask_counts_per_slice, np.int64)
    nz = counts.size
    total = int(counts.sum())
    sx, sy, sz = (float(v) for v in spacing)
    if total == 0:
        return Geometry(0, 0.0, None, None, (), None, None, None, None, None, None, False, False, False)
    zs = np.flatnonzero(counts)
    z0, z1 = int(zs[0]), int(zs[-1])
    profile = counts[z0 : z1 + 1][::-1] * (sx * sy)  # proximal (z1) first
    k = int(np.argmax(profile))  # the most proximal slice of equal maxima
    zmax = z1 - k
    length = (z1 - z0 + 1) * sz
    span = (z1 - z0) * sz
    centre = canonical_affine @ np.array([sum_x / total, sum_y / total, sum_z / total, 1.0])
    at_first, at_last = z0 == 0, z1 == nz - 1
    return Geometry(
        voxels=total,
        volume_ml=total * float(voxel_volume_mm3) / 1000.0,
        z_first=z0,
        z_last=z1,
        acsa_profile_mm2=tuple(float(v) for v in profile),
        max_acsa_mm2=float(profile[k]),
        max_acsa_z=zmax,
        max_acsa_position_mm=k * sz,
        max_acsa_position_fraction=(k * sz / span) if span > 0 else 0.0,
        length_mm=length,
        centroid_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        volume_lower_bound=bool(at_first or at_last),
        length_lower_bound=bool(at_first or at_last),
        max_acsa_unreliable=bool(zmax in (0, nz - 1)),
    )


def per_slice_counts(labels: np.ndarray, sides: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel counts ``[Z, C, 3]`` per slice, class and side (0 none, 1 R, 2 L), and index sums
    ``[C, 3, 3]`` (x, y, z) for centroids; one pass, one slice at a time (no whole-volume temporaries)."""
    lab = np.asarray(labels)
    nx, ny, nz = lab.shape
    counts = np.zeros((nz, n_classes, 3), np.int64)
    sums = np.zeros((n_classes, 3, 3), np.float64)
    xi = np.repeat(np.arange(nx, dtype=np.float64), ny)
    yi = np.tile(np.arange(ny, dtype=np.float64), nx)
    for z in range(nz):
        key = lab[:, :, z].ravel().astype(np.int64) * 3 + np.asarray(sides[:, :, z]).ravel()
        c = np.bincount(key, minlength=n_classes * 3)[: n_classes * 3].reshape(n_classes, 3)
        counts[z] = c
        if c[1:].any():
            sums[:, :, 0] += np.bincount(key, weights=xi, minlength=n_classes * 3)[: n_classes * 3].reshape(
                n_classes, 3
            )
            sums[:, :, 1] += np.bincount(key, weights=yi, minlength=n_classes * 3)[: n_classes * 3].reshape(
                n_classes, 3
            )
            sums[:, :, 2] += c * float(z)
    return counts, sums


def asymmetry_percent(right: float | None, left: float | None) -> float | None:
    """Signed (R - L) / mean(R, L) x 100; None when either side is missing or both are 0."""
    if right is None or left is None:
        return None
    mean = (right + left) / 2.0
    if mean <= 0:
        return None
    return (right - left) / mean * 100.0
