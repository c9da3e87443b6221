"""Which slices a QC picture shows, and the 2D display arrays in radiological convention (numpy only).

Everything works on the canonical RAS+ arrays (``[X, Y, Z]``, x toward the patient's right, y
anterior, z superior; the reader reorients any input by flips and permutations), so every input
orientation gives the same pictures.

Display convention (docs/qc.md): radiological. Axial and coronal images put the patient's right on
the image's left (column 0 = largest x) and anterior / superior at the top; sagittal images put
anterior on the left and superior at the top. All three are ``plane[::-1, ::-1].T`` of the plane
cut from the canonical array.

Levels (axial): chosen from the labels by the codes of the project's label table, only where those
muscles are present, hence only levels the scan covers:

- hip: the slice with the largest summed area of the deep hip muscles (GMED, GMIN, PIR, GEM, OI,
  OE, QF);
- mid-thigh: the middle slice of the z-range of the quadriceps (VL, VM, VI, RF);
- knee: the slice with the largest popliteus (POP) area; without POP, halfway between the lowest
  quadriceps slice and the highest calf (GM, GL, SOL) slice, when the first is above the second;
- mid-calf: the slice with the largest summed area of GM, GL and SOL.

A model with another table (none of these codes) gets slices at 20, 40, 60 and 80 % of the labelled
z-range instead, named by that fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIP = ("GMED", "GMIN", "PIR", "GEM", "OI", "OE", "QF")
QUADRICEPS = ("VL", "VM", "VI", "RF")
CALF = ("GM", "GL", "SOL")
KNEE = ("POP",)

LETTERS = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}
CONVENTION = {
    "axial": "radiological convention: patient's right on image left, anterior at the top",
    "coronal": "radiological convention: patient's right on image left, superior at the top",
    "sagittal": "anterior on image left, superior at the top",
}


@dataclass(frozen=True)
class View:
    """One picture. ``image``: float32 ``[rows, cols]``; ``labels``: integer ``[rows, cols]`` (same
    shape); ``pixel_mm``: (row, column) spacing in mm; ``index``: the canonical slice index along the
    cut axis (z for axial, y for coronal, x for sagittal); ``size``: that axis' length."""

    kind: str
    name: str
    index: int
    size: int
    image: np.ndarray
    labels: np.ndarray
    pixel_mm: tuple[float, float]

    @property
    def letters(self) -> dict[str, str]:
        return LETTERS[self.kind]

    @property
    def caption(self) -> str:
        axis = {"axial": "z", "coronal": "y", "sagittal": "x"}[self.kind]
        return f"{self.kind.capitalize()}, {self.name}: {axis} = {self.index} of 0-{self.size - 1} (RAS+)"

    @property
    def convention(self) -> str:
        return CONVENTION[self.kind]


def _display(plane: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def slice_areas(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Voxel count of each class in each axial slice: int64 ``[Z, n_classes]``."""
    nz = labels.shape[2]
    out = np.zeros((nz, n_classes), dtype=np.int64)
    for z in range(nz):
        out[z] = np.bincount(labels[:, :, z].ravel(), minlength=n_classes)[:n_classes]
    return out


def _indices(table, codes) -> list[int]:
    by_code = {lab.code: lab.index for lab in table.labels}
    return [by_code[c] for c in codes if c in by_code]


def axial_levels(areas: np.ndarray, table) -> list[tuple[str, int]]:
    """``[(name, z), ...]`` from superior to inferior, only levels the scan covers (see module doc)."""
    nz = areas.shape[0]

    def summed(codes):
        idx = _indices(table, codes)
        return areas[:, idx].sum(axis=1) if idx else np.zeros(nz, dtype=np.int64)

    def zrange(a):
        zs = np.flatnonzero(a > 0)
        return (int(zs[0]), int(zs[-1])) if zs.size else None

    levels: list[tuple[str, int]] = []
    hip, quad, calf, knee = summed(HIP), summed(QUADRICEPS), summed(CALF), summed(KNEE)
    if hip.any():
        levels.append(("hip", int(np.argmax(hip))))
    if (qr := zrange(quad)) is not None:
        levels.append(("mid-thigh", (qr[0] + qr[1]) // 2))
    cr = zrange(calf)
    if knee.any():
        levels.append(("knee", int(np.argmax(knee))))
    elif qr is not None and cr is not None and qr[0] > cr[1]:
        levels.append(("knee", (qr[0] + cr[1]) // 2))
    if calf.any():
        levels.append(("mid-calf", int(np.argmax(calf))))
    if not levels:
        zr = zrange(areas[:, 1:].sum(axis=1))
        if zr is None:
            return [("middle slice", nz // 2)]
        for frac in (0.8, 0.6, 0.4, 0.2):
            levels.append((f"{int(frac * 100)} % of the labelled range", int(round(zr[0] + frac * (zr[1] - zr[0])))))
    seen: set[int] = set()
    unique = []
    for name, z in sorted(levels, key=lambda item: -item[1]):
        if z not in seen:
            seen.add(z)
            unique.append((name, z))
    return unique


def make_views(volume: np.ndarray, labels: np.ndarray, spacing_mm, table) -> list[View]:
    """The views of one scan: axial at each level, one coronal through both legs, one sagittal per leg.

    ``volume``: canonical float ``[X, Y, Z]``; ``labels``: canonical integer ``[X, Y, Z]``;
    ``spacing_mm``: canonical (x, y, z) voxel size in mm; ``table``: the ``LabelTable``.
    Coronal: through the muscles' mean y. Sagittal: through the mean x of the muscle voxels on each
    side of their mean x (patient's right leg: larger x); one sagittal if only one side has muscle.
    """
    if volume.shape != labels.shape or volume.ndim != 3:
        raise ValueError(f"volume {volume.shape} and labels {labels.shape} must be the same 3D shape")
    sx, sy, sz = (float(s) for s in spacing_mm)
    nx, ny, nz = labels.shape
    areas = slice_areas(labels, max(len(table), int(labels.max()) + 1))
    views = []
    for name, z in axial_levels(areas, table):
        views.append(
            View("axial", f"{name} level", z, nz, _display(volume[:, :, z]), _display(labels[:, :, z]), (sy, sx))
        )

    mask_x = np.zeros(nx, dtype=np.int64)
    mask_y = np.zeros(ny, dtype=np.int64)
    for z in range(nz):
        m = labels[:, :, z] > 0
        if m.any():
            mask_x += m.sum(axis=1)
            mask_y += m.sum(axis=0)
    total = int(mask_x.sum())
    if total == 0:
        cy, sides = ny // 2, [("middle", nx // 2)]
    else:
        cy = int(round(float((np.arange(ny) * mask_y).sum()) / total))
        cx = float((np.arange(nx) * mask_x).sum()) / total
        sides = []
        for side, sel in (("right leg", np.arange(nx) > cx), ("left leg", np.arange(nx) <= cx)):
            w = mask_x * sel
            if w.sum() > 0:
                sides.append((side, int(round(float((np.arange(nx) * w).sum()) / float(w.sum())))))
    views.append(
        View("coronal", "through both legs", cy, ny, _display(volume[:, cy, :]), _display(labels[:, cy, :]), (sz, sx))
    )
    for side, x in sides:
        views.append(
            View(
                "sagittal",
                f"through the {side}" if side != "middle" else "middle",
                x,
                nx,
                _display(volume[x, :, :]),
                _display(labels[x, :, :]),
                (sz, sy),
            )
        )
    return views


def intensity_window(volume: np.ndarray) -> tuple[float, float]:
    """(low, high): the 1st and 99th percentiles of the finite voxels (a strided sample), for display."""
    sample = np.asarray(volume[::4, ::4, ::2], dtype=np.float32).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
