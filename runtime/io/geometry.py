"""Voxel-grid geometry: orientation codes, canonical (RAS+) reorientation and its exact inverse.

Vocabulary (nibabel's): an *affine* is a 4x4 float64 matrix mapping voxel indices ``(i, j, k, 1)``
to world millimetres in RAS+ (x to the Right, y to the Anterior, z to the Superior). An *ornt* is,
for each array axis ``a``, the pair ``(world_axis, sign)``: array axis ``a`` runs along world axis
``world_axis`` (0 = x, 1 = y, 2 = z), towards + when ``sign == 1`` and towards - when ``sign == -1``.

The *canonical* array is the input reordered by flips and axis permutations only (no resampling,
values never change): canonical axis ``w`` is the input axis whose ornt is ``(w, sign)``, flipped when
``sign == -1``. So canonical index 0 along z is the most inferior slice and ``canon[:, :, k]`` is
axial. ``from_canonical(to_canonical(a))`` returns ``a`` bit for bit (both are pure index maps).
The reorientation itself is nibabel's (``nibabel.orientations``: ``ornt_transform``,
``apply_orientation``, ``inv_ornt_aff``, ``axcodes2ornt``); this module adds the checks (shear,
degenerate axes), the tilt and the names.

Only numpy and nibabel here (runtime side).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from limbseg_rt.runtime.errors import InputError

# Largest |cos| allowed between two voxel axes (unit columns of the affine). NIfTI stores the
# sform in float32, so an orthogonal grid shows rounding near 1e-7; a real shear (e.g. a CT
# gantry tilt) is orders of magnitude larger. 1e-3 is about 0.06 degrees off 90.
SHEAR_TOLERANCE = 1e-3

_POSITIVE = "RAS"
_NEGATIVE = "LPI"

Ornt = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


def axcodes(ornt: Ornt) -> tuple[str, str, str]:
    """Orientation letters of the array axes, e.g. ``('L', 'A', 'S')`` (where each axis points)."""
    a, b, c = ((_POSITIVE if s == 1 else _NEGATIVE)[w] for w, s in ornt)
    return a, b, c


def ornt_from_axcodes(codes) -> Ornt:
    """Inverse of ``axcodes``: ``'LPS'`` -> ``((0, -1), (1, -1), (2, 1))`` (nibabel's ``axcodes2ornt``).

    The one parser of orientation codes (``--assume-orientation``, the phantom's ``--orientation``).
    Raises ValueError unless ``codes`` names each of the three world axes exactly once.
    """
    from nibabel.orientations import axcodes2ornt

    letters = [str(c).upper() for c in codes]
    for c in letters:
        if c not in _POSITIVE and c not in _NEGATIVE:
            raise ValueError(f"orientation letter {c!r} is not one of R, L, A, P, S, I")
    if len(letters) != 3 or sorted(_axis_of(c) for c in letters) != [0, 1, 2]:
        raise ValueError(f"orientation {''.join(letters)!r} must name each axis once (e.g. RAS, LPS, LAS)")
    return _as_ornt(axcodes2ornt(letters))


def _axis_of(letter: str) -> int:
    return _POSITIVE.index(letter) if letter in _POSITIVE else _NEGATIVE.index(letter)


def _as_ornt(raw) -> Ornt:
    a, b, c = ((int(w), int(s)) for w, s in np.asarray(raw))
    return a, b, c


def _nib_ornt(ornt: Ornt) -> np.ndarray:
    return np.asarray(ornt, dtype=np.float64)


def check_affine(affine: np.ndarray, *, source: str, form: str = "affine") -> np.ndarray:
    """Validated float64 copy of a 4x4 voxel-to-world affine.

    Raises InputError (naming ``source``) if it is not finite, is degenerate (a voxel axis of zero
    length, or two axes parallel) or is sheared (voxel axes not perpendicular within
    ``SHEAR_TOLERANCE``). Oblique (rotated) grids are fine.
    """
    a = np.array(affine, dtype=np.float64, copy=True)
    if a.shape != (4, 4):
        raise InputError(
            f"{source}: the {form} is not a 4x4 matrix (shape {a.shape}); the header is damaged; export the image again"
        )
    if not np.all(np.isfinite(a)):
        raise InputError(
            f"{source}: the {form} contains NaN or infinite numbers; the header is damaged; export the image again"
        )
    cols = a[:3, :3]
    lengths = np.linalg.norm(cols, axis=0)
    if np.any(lengths <= 0) or abs(np.linalg.det(cols)) <= 1e-12 * max(1.0, float(np.prod(lengths))):
        raise InputError(
            f"{source}: the {form} is degenerate (voxel size {_fmt(lengths)} mm or parallel axes); "
            "the header is damaged; export the image again"
        )
    unit = cols / lengths
    cosines = np.abs(unit.T @ unit - np.eye(3))
    worst = float(cosines.max())
    if worst > SHEAR_TOLERANCE:
        angle = 90.0 - math.degrees(math.acos(min(1.0, worst)))
        raise InputError(
            f"{source}: the {form} is sheared (voxel axes {angle:.2f} degrees from perpendicular, e.g. a "
            "gantry-tilted acquisition); resample it to a rectangular grid before segmenting"
        )
    return a


def ornt_from_affine(affine: np.ndarray) -> Ornt:
    """For each array axis, the nearest world axis and direction (nibabel's ``io_orientation``).

    The affine must have passed ``check_affine`` (non-degenerate), so every axis gets a world axis.
    """
    from nibabel.orientations import io_orientation

    raw = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.any(np.isnan(raw)):
        raise ValueError("affine is degenerate; call check_affine first")
    return _as_ornt(raw)


def slice_axis(ornt: Ornt) -> int:
    """The input array axis that runs along superior-inferior (becomes canonical z)."""
    return next(a for a, (w, _) in enumerate(ornt) if w == 2)


def axis_tilt_degrees(affine: np.ndarray, axis: int) -> float:
    """Angle (degrees) between voxel axis ``axis`` and the world axis nearest to it (0 = not oblique)."""
    col = np.asarray(affine, dtype=np.float64)[:3, axis]
    cos = float(np.max(np.abs(col)) / np.linalg.norm(col))
    return math.degrees(math.acos(min(1.0, cos)))


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Length (mm) of each voxel axis, in array-axis order."""
    x, y, z = (float(v) for v in np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0))
    return x, y, z


def affine_from_axcodes(spacing, codes, shape=None) -> np.ndarray:
    """A 4x4 affine whose array axes point along ``codes`` (e.g. ``'LPS'``) with ``spacing`` mm.

    Used when a file carries no geometry and the user states the orientation. The origin is put at
    the centre of the grid when ``shape`` is given (any origin is arbitrary without geometry),
    else at voxel 0.
    """
    ornt = ornt_from_axcodes(codes)
    a = np.eye(4)
    for axis, (w, s) in enumerate(ornt):
        a[:3, axis] = 0.0
        a[w, axis] = s * float(spacing[axis])
    if shape is not None:
        centre = (np.asarray(shape[:3], dtype=np.float64) - 1) / 2
        a[:3, 3] = -a[:3, :3] @ centre
    return a


def canonical_shape(shape, ornt: Ornt) -> tuple[int, int, int]:
    """Shape after ``canonical_array``: canonical axis ``w`` has the length of the input axis on ``w``."""
    out = [0, 0, 0]
    for axis, (w, _) in enumerate(ornt):
        out[w] = int(shape[axis])
    return out[0], out[1], out[2]


def _to_ras(ornt: Ornt) -> np.ndarray:
    """nibabel transform taking an array in ``ornt`` to RAS+ (``ornt_transform(ornt, RAS)``)."""
    from nibabel.orientations import ornt_transform

    return ornt_transform(_nib_ornt(ornt), _RAS)


def _from_ras(ornt: Ornt) -> np.ndarray:
    from nibabel.orientations import ornt_transform

    return ornt_transform(_RAS, _nib_ornt(ornt))


def canonical_index_map(shape, ornt: Ornt) -> np.ndarray:
    """4x4 matrix M with ``input_index = M @ canonical_index`` (homogeneous, integer-valued).

    nibabel's ``inv_ornt_aff`` of the transform to RAS+ for an input of ``shape``.
    """
    from nibabel.orientations import inv_ornt_aff

    return inv_ornt_aff(_to_ras(ornt), tuple(int(s) for s in shape[:3])) + 0.0  # + 0.0: no -0.0 entries


def canonical_affine(affine: np.ndarray, shape, ornt: Ornt) -> np.ndarray:
    """Affine of the canonical array: it maps each canonical voxel to the same world point."""
    return np.asarray(affine, dtype=np.float64) @ canonical_index_map(shape, ornt)


def canonical_array(array: np.ndarray, ornt: Ornt) -> np.ndarray:
    """Input-grid array ``[..3 spatial axes..]`` -> canonical RAS+ view (nibabel ``apply_orientation``: no copy).

    Extra trailing axes (if any) are carried along unchanged.
    """
    from nibabel.orientations import apply_orientation

    return apply_orientation(np.asarray(array), _to_ras(ornt))


def input_array(canon: np.ndarray, ornt: Ornt) -> np.ndarray:
    """Exact inverse of ``canonical_array``: canonical view -> input-grid view (no copy)."""
    from nibabel.orientations import apply_orientation

    return apply_orientation(np.asarray(canon), _from_ras(ornt))


def to_canonical(array: np.ndarray, props) -> np.ndarray:
    """Input-grid array of shape ``props.shape`` -> canonical view of shape ``props.canonical_shape``."""
    arr = np.asarray(array)
    if tuple(arr.shape[:3]) != tuple(props.shape):
        raise ValueError(f"array shape {arr.shape} is not the input grid {props.shape}")
    return canonical_array(arr, props.ornt)


def from_canonical(canon: np.ndarray, props) -> np.ndarray:
    """Canonical array (e.g. labels ``[X, Y, Z]``) -> view on the input grid ``props.shape``.

    Exact: ``from_canonical(to_canonical(a, p), p)`` equals ``a`` element for element.
    """
    arr = np.asarray(canon)
    want = canonical_shape(props.shape, props.ornt)
    if tuple(arr.shape[:3]) != want:
        raise ValueError(f"array shape {arr.shape} is not the canonical grid {want}")
    return input_array(arr, props.ornt)


def all_orientations() -> list[Ornt]:
    """The 48 axis orientations (3! permutations x 2^3 directions), for tests and tools."""
    out: list[Ornt] = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            out.append(_as_ornt(list(zip(perm, signs))))
    return out


def _fmt(values) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)
