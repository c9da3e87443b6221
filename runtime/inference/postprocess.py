"""Stray-label suppression along the slice axis, run on the whole label volume after the slice loop.

A 2D network labels each slice on its own, so a muscle can appear as a few slices of fragments far
from where its body is: typically a neighbour's border taken for a muscle that is absent there.
At the first or last slice such a fragment makes the report claim the muscle is cut by the field
of view. Along z, a real muscle is one run of consecutive slices; strays are short runs away from it.

Rule, per muscle class ``c`` (background 0 is never touched), on canonical labels ``[X, Y, Z]``:

1. ``area[z]``: pixels of ``c`` in slice ``z``; the class is *present* in slices with any pixel.
2. Present slices form runs; runs separated by at most ``MAX_GAP`` absent slices are joined (a few
   slices the network missed do not split a muscle: on held-out phantom 200 the demo UNet misses
   three consecutive slices in the middle of one muscle).
3. The run holding the most pixels of ``c`` is kept, and so is any run holding at least
   ``KEEP_FRACTION`` of its pixels; every pixel of ``c`` in a slice outside the kept runs is stray.
   So the class's own body, however long or short, is always kept.

Stray pixels are then given the label of their in-plane surroundings: repeatedly, each stray pixel
next to (4-neighbourhood) a non-stray pixel takes that pixel's label (first of up, down, left,
right), for at most ``FILL_STEPS`` rounds; any left over become background. The muscle around a
misnamed fragment thus gets its pixels back, and a fragment in background disappears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_GAP = 3
KEEP_FRACTION = 0.25
FILL_STEPS = 32


@dataclass(frozen=True)
class StrayResult:
    """``voxels``: stray voxels relabelled; ``classes``: classes that lost any, ascending."""

    voxels: int
    classes: tuple[int, ...]


def _kept_slices(area: np.ndarray) -> np.ndarray:
    """bool ``[Z]``: slices inside the kept runs for one class's per-slice areas ``[Z]``."""
    z = area.size
    present = area > 0
    idx = np.flatnonzero(present)
    keep = np.zeros(z, dtype=bool)
    if idx.size == 0:
        return keep
    # Runs of present slices, joining gaps of up to MAX_GAP absent slices.
    breaks = np.flatnonzero(np.diff(idx) > MAX_GAP + 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    csum = np.concatenate([[0.0], np.cumsum(area, dtype=np.float64)])
    mass = csum[stops] - csum[starts]
    for a, b, m in zip(starts, stops, mass):
        if m >= KEEP_FRACTION * mass.max():
            keep[a:b] = True
    return keep


def _fill(labels: np.ndarray, stray: np.ndarray) -> None:
    """Relabel ``stray`` pixels in place from their in-plane 4-neighbours (see module docstring)."""
    todo = stray.copy()
    for _ in range(FILL_STEPS):
        if not todo.any():
            return
        known = ~todo
        taken = np.zeros_like(todo)
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            src = np.roll(labels, step, axis=axis)
            ok = np.roll(known, step, axis=axis)
            # np.roll wraps around: the wrapped row/column is not a neighbour.
            edge: list[slice | int] = [slice(None)] * 3
            edge[axis] = 0 if step == 1 else -1
            ok[tuple(edge)] = False
            grab = todo & ok & ~taken
            labels[grab] = src[grab]
            taken |= grab
        todo &= ~taken
    labels[todo] = 0


def suppress_stray_runs(labels: np.ndarray) -> StrayResult:
    """Relabel stray runs of canonical labels uint8 ``[X, Y, Z]`` in place (see module docstring).

    Memory: one ``[classes]`` count per slice, then copies of only the slices that hold strays (the
    fill is in-plane, so the other slices need nothing); no whole-volume temporary."""
    lab = labels
    nx, ny, nz = lab.shape
    if nz < 2:
        return StrayResult(0, ())
    classes = int(lab.max()) + 1
    area = np.stack([np.bincount(lab[:, :, z].ravel(), minlength=classes) for z in range(nz)])  # [Z, classes]
    stray_slices = {}
    for c in range(1, classes):
        if not area[:, c].any():
            continue
        drop = ~_kept_slices(area[:, c].astype(np.float64)) & (area[:, c] > 0)
        if drop.any():
            stray_slices[c] = np.flatnonzero(drop)
    if not stray_slices:
        return StrayResult(0, ())
    zs = np.unique(np.concatenate(list(stray_slices.values())))
    sub = lab[:, :, zs]  # a copy of the slices with strays
    stray = np.zeros(sub.shape, dtype=bool)
    for c, zc in stray_slices.items():
        at = np.searchsorted(zs, zc)
        stray[:, :, at] |= sub[:, :, at] == c
    count = int(stray.sum())
    _fill(sub, stray)
    lab[:, :, zs] = sub
    return StrayResult(count, tuple(sorted(stray_slices)))
