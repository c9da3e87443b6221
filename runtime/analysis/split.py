"""Side-split label maps (``--split-sides``): a right and a left label per muscle.

Indices: 0 background; muscle ``i`` (1..N of the model's table) on the right keeps ``i``, on the left
becomes ``i + N``. Names and codes gain the side (``"adductor brevis (R)"``, ``"ADB_R"``), the
table's ``side`` column says ``R``/``L``, and left colours are the right ones at 70 % brightness, so
ITK-SNAP and 3D Slicer show both legs in matching hues.
"""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.model.labels import Label, LabelTable


def split_table(table: LabelTable) -> LabelTable:
    """The side-split table of ``table`` (``2 N + 1`` classes)."""
    n = len(table.muscles)
    out = [table[0]]
    for lab in table.muscles:
        out.append(Label(lab.index, f"{lab.name} (R)", f"{lab.code}_R", lab.colour, "R"))
    for lab in table.muscles:
        dim = tuple(int(round(c * 0.7)) for c in lab.colour)
        out.append(Label(lab.index + n, f"{lab.name} (L)", f"{lab.code}_L", dim, "L"))
    return LabelTable(tuple(out))


def split_labels(labels: np.ndarray, sides: np.ndarray, n_muscles: int) -> np.ndarray:
    """uint8 (uint16 above 254 classes) side-split labels from ``labels`` and ``sides`` (1 R, 2 L)."""
    lab = np.asarray(labels)
    dtype = np.uint8 if 2 * n_muscles <= 254 else np.uint16
    out = lab.astype(dtype, copy=True)
    left = (np.asarray(sides) == 2) & (lab > 0)
    out[left] += dtype(n_muscles)
    return out
