"""Slice preprocessing shared by training and runtime (and specified exactly for the C library).

The canonical slice layout: the volume is reoriented (flips/permutations only) to RAS+ array axes
``(x, y, z)``; slice ``k`` is ``volume[:, :, k]``, a 2D array ``[H, W] = [x, y]``. Models are trained
on ``[H, W] = [272, 240]`` slices.

Intensity normalisation (``NormalisationSpec``, method ``"percentile"``, scope ``"volume"``):
1. ``lo``/``hi`` are nearest-rank percentiles of the finite voxels of the whole volume: with the
   finite values sorted ascending as ``v[0..n-1]``, ``percentile(q) = v[floor(q / 100 * (n - 1) + 0.5)]``
   (index computed in float64).
2. ``y = clip((x - lo) / (hi - lo), 0, 1)`` in float32, where ``x``, ``lo``, ``hi`` are float32 and
   ``hi - lo`` is computed once in float32. ``hi <= lo`` means a constant image (see ``is_constant``).

Resizing (``resize_bilinear``): separable linear interpolation with half-pixel centres
(``align_corners=False``, no antialiasing), first along H then along W. For an axis of ``n_in`` ->
``n_out`` samples: ``src = (d + 0.5) * (n_in / n_out) - 0.5`` (float64), clamped to ``[0, n_in - 1]``;
``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in - 1)``, ``w = float32(src - i0)``;
``out = a * (1 - w) + b * w`` evaluated in float32 (two products, one sum, no fused multiply-add).
Labels use nearest neighbour: ``i = min(floor((d + 0.5) * n_in / n_out), n_in - 1)``.

Two resampling modes (``RESAMPLING_MODES``; the model metadata's ``resampling`` says which one the
model was trained with, and the runtime feeds it the same):

- ``"exact"``: the linear interpolation above on every axis, the paper's and the authors'
  checkpoints' preprocessing, kept bit for bit (models whose metadata has no ``resampling`` entry
  were all trained this way).
- ``"antialias"``: an axis that shrinks (``s = n_in / n_out > 1``) is filtered with a triangle
  kernel stretched to the output pixel, so every input pixel contributes (no aliasing when a 512
  grid becomes 272 x 240). Output ``d`` has centre ``c = (d + 0.5) * s`` in input coordinates; input
  pixel ``i`` (centre ``i + 0.5``) gets weight ``max(0, 1 - |i + 0.5 - c| / s)`` (float64), taps
  ``i`` from ``floor(c - s)`` to ``ceil(c + s)`` clipped to ``[0, n_in - 1]``; the weights are divided
  by their sum (float64), cast to float32, and ``out = sum_k w_k * x[i_k]`` accumulates in float32
  in increasing ``i`` (products then sums, no fused multiply-add). An axis that grows or keeps its
  size is interpolated exactly as in ``"exact"``. H first, then W.
"""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW, RESAMPLING_MODES, NormalisationSpec


def _nearest_rank(sorted_or_partitioned: np.ndarray, q: float) -> int:
    n = sorted_or_partitioned.size
    return int(np.floor(q / 100.0 * (n - 1) + 0.5))


def intensity_window(
    values: np.ndarray, spec: NormalisationSpec = NormalisationSpec()
) -> tuple[np.float32, np.float32]:
    """``(lo, hi)`` float32 for an array of any shape (non-finite values are ignored).

    Returns ``(0, 0)`` when there is no finite value.
    """
    # Memory: one float32 working copy of the finite values (partitioned in place), never a
    # whole-volume mask plus filtered copy plus partition copy.
    flat = np.asarray(values, dtype=np.float32).ravel(order="K")
    chunk = 1 << 22
    all_finite = all(np.isfinite(flat[i : i + chunk]).all() for i in range(0, flat.size, chunk))
    work = flat.copy() if all_finite else flat[np.isfinite(flat)]
    if work.size == 0:
        return np.float32(0.0), np.float32(0.0)
    k_lo = _nearest_rank(work, spec.lower_percentile)
    k_hi = _nearest_rank(work, spec.upper_percentile)
    work.partition((k_lo, k_hi))
    return np.float32(work[k_lo]), np.float32(work[k_hi])


def is_constant(lo: np.float32, hi: np.float32) -> bool:
    """True when the window is empty: the image carries no contrast to segment."""
    return not float(hi) > float(lo)


def normalise(array: np.ndarray, lo: np.float32, hi: np.float32) -> np.ndarray:
    """float32 array in ``[0, 1]``; a constant window gives all zeros. Non-finite inputs become 0."""
    x = np.asarray(array, dtype=np.float32)
    if is_constant(lo, hi):
        return np.zeros(x.shape, dtype=np.float32)
    lo32, d32 = np.float32(lo), np.float32(np.float32(hi) - np.float32(lo))
    y = (x - lo32) / d32
    y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(y, np.float32(0.0), np.float32(1.0)).astype(np.float32, copy=False)


def linear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.arange(n_out, dtype=np.float64)
    src = (d + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (src - i0).astype(np.float32)
    return i0, i1, w


def antialias_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps ``idx`` int64 ``[n_out, K]`` and weights ``w`` float32 ``[n_out, K]`` of the triangle
    filter for shrinking ``n_in`` -> ``n_out`` samples (``n_in > n_out``; see the module docstring).
    Unused taps have weight 0 and repeat a valid index."""
    s = n_in / n_out
    centre = (np.arange(n_out, dtype=np.float64) + 0.5) * s
    first = np.maximum(np.floor(centre - s).astype(np.int64), 0)
    last = np.minimum(np.ceil(centre + s).astype(np.int64), n_in - 1)
    k = int((last - first).max()) + 1
    idx = first[:, None] + np.arange(k, dtype=np.int64)[None, :]
    valid = idx <= last[:, None]
    idx = np.where(valid, idx, last[:, None])
    w = np.maximum(0.0, 1.0 - np.abs(idx + 0.5 - centre[:, None]) / s) * valid
    w /= w.sum(axis=1, keepdims=True)
    return idx, w.astype(np.float32)


def _antialias_last(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, w = antialias_axis(x.shape[-1], n_out)
    out = x[..., idx[:, 0]] * w[:, 0]
    for k in range(1, idx.shape[1]):
        out = out + x[..., idx[:, k]] * w[:, k]
    return out


def resize_linear(array: np.ndarray, out_hw: tuple[int, int], resampling: str = "exact") -> np.ndarray:
    """Resize the last two axes of a float array ``[..., H, W]`` to ``out_hw`` with ``resampling``
    (``"exact"`` or ``"antialias"``, see the module docstring); returns float32."""
    if resampling == "exact":
        return resize_bilinear(array, out_hw)
    if resampling != "antialias":
        raise ValueError(f"resampling must be one of {RESAMPLING_MODES}, got {resampling!r}")
    x = np.asarray(array, dtype=np.float32)
    h_in, w_in = x.shape[-2:]
    h_out, w_out = int(out_hw[0]), int(out_hw[1])
    if h_out < h_in:
        x = np.swapaxes(_antialias_last(np.swapaxes(x, -1, -2), h_out), -1, -2)
    elif h_out > h_in:
        x = resize_bilinear(x, (h_out, x.shape[-1]))
    if w_out < w_in:
        x = _antialias_last(x, w_out)
    elif w_out > w_in:
        x = resize_bilinear(x, (h_out, w_out))
    return np.ascontiguousarray(x, dtype=np.float32)


def resize_bilinear(array: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of a float array ``[..., H, W]`` to ``out_hw``; returns float32."""
    x = np.asarray(array, dtype=np.float32)
    h_in, w_in = x.shape[-2:]
    h_out, w_out = int(out_hw[0]), int(out_hw[1])
    if (h_in, w_in) != (h_out, w_out):
        if h_in != h_out:
            i0, i1, w = linear_axis(h_in, h_out)
            wc = w[:, None]
            x = x[..., i0, :] * (np.float32(1.0) - wc) + x[..., i1, :] * wc
        if w_in != w_out:
            i0, i1, w = linear_axis(w_in, w_out)
            x = x[..., i0] * (np.float32(1.0) - w) + x[..., i1] * w
    return np.ascontiguousarray(x, dtype=np.float32)


def resize_nearest(array: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes (labels); dtype preserved."""
    x = np.asarray(array)
    h_in, w_in = x.shape[-2:]
    h_out, w_out = int(out_hw[0]), int(out_hw[1])
    ih = np.minimum(np.floor((np.arange(h_out) + 0.5) * (h_in / h_out)).astype(np.int64), h_in - 1)
    iw = np.minimum(np.floor((np.arange(w_out) + 0.5) * (w_in / w_out)).astype(np.int64), w_in - 1)
    return np.ascontiguousarray(x[..., ih, :][..., iw])


def preprocess_slices(
    slices: np.ndarray,
    lo: np.float32,
    hi: np.float32,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    resampling: str = "exact",
) -> np.ndarray:
    """Raw slices ``[N, H, W]`` (any real dtype) -> model input float32 ``[N, 1, h, w]`` in ``[0, 1]``.

    Normalise with the volume's window ``(lo, hi)`` (see ``intensity_window``), then resize to
    ``input_hw`` with ``resampling`` (the model metadata's). Training and runtime both call this,
    so they cannot drift apart.
    """
    x = normalise(slices, lo, hi)
    x = resize_linear(x, input_hw, resampling)
    return x[:, None, :, :]
