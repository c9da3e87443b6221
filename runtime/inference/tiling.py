"""Sliding-window inference for ``--fit tile``: a splitter, a Gaussian-weighted merger, and a driver.

The model sees windows of its trained size ``input_hw`` cut from slices already resampled to the
model's trained pixel spacing, so anatomy keeps the scale the model learned. Windows overlap
(50 % by default) and their logits are blended with a Gaussian weight that favours window centres,
where the network saw the most context.

Nothing here knows about sessions: the driver takes a callable
``predict(batch float32 [B, 1, h, w], coords: list[TileCoord]) -> logits float32 [B, C, h, w]``
(coords tell the caller which slice each tile came from, e.g. to attach SC-UNet positions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileCoord:
    """One window: slice ``index`` within the batch of images, top-left corner (pixels) and size."""

    index: int
    top: int
    left: int
    height: int
    width: int


def _starts(n: int, win: int, step: int) -> list[int]:
    """Window starts along one axis of length ``n >= win``: first at 0, last flush with the end."""
    if n <= win:
        return [0]
    count = math.ceil((n - win) / step) + 1
    # Spread the windows evenly so the overlap is as uniform as possible.
    return sorted({int(round(i * (n - win) / (count - 1))) for i in range(count)})


@dataclass(frozen=True)
class SlidingWindowSplitter:
    """Yields window positions covering an image of size ``[H, W]`` (padded up to the window if smaller).

    ``window_hw``: window size in pixels. ``overlap``: fraction in ``[0, 1)`` shared by neighbouring
    windows (the step is ``window * (1 - overlap)``, at least 1 pixel).
    """

    window_hw: tuple[int, int]
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"tile overlap must be in [0, 1), got {self.overlap}")
        if min(self.window_hw) < 1:
            raise ValueError(f"window size must be positive, got {self.window_hw}")

    def padded_shape(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The image size after zero-padding (bottom/right) to at least one window."""
        return max(image_hw[0], self.window_hw[0]), max(image_hw[1], self.window_hw[1])

    def __call__(self, image_hw: tuple[int, int]) -> Iterator[tuple[int, int]]:
        ph, pw = self.padded_shape(image_hw)
        wh, ww = self.window_hw
        step_h = max(1, int(wh * (1.0 - self.overlap)))
        step_w = max(1, int(ww * (1.0 - self.overlap)))
        for top in _starts(ph, wh, step_h):
            for left in _starts(pw, ww, step_w):
                yield top, left


def gaussian_weights(window_hw: tuple[int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """float32 ``[h, w]`` Gaussian centred on the window, peak 1, sigma = ``sigma_scale`` x size.

    Strictly positive everywhere (floored at 1e-4), so every covered pixel gets a non-zero weight.
    """
    axes = []
    for n in window_hw:
        d = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        axes.append(np.exp(-0.5 * (d / sigma) ** 2))
    w = np.outer(axes[0], axes[1])
    w /= w.max()
    return np.maximum(w, 1e-4).astype(np.float32)


class WeightedMerger:
    """Accumulates weighted window logits into ``[N, C, H, W]`` and divides by the weight sum.

    ``image_hw`` is the padded size; ``finalize(crop_hw)`` crops the padding away. The channel
    count is taken from the first aggregated batch (the model decides it). ``finalize`` divides
    once (``is_finalized`` then turns true): later calls return the same values, and aggregating
    after it is an error, as nothing could be added to a normalised buffer correctly.
    """

    def __init__(self, n_images: int, image_hw: tuple[int, int], weights: np.ndarray):
        self._n = int(n_images)
        self._hw = (int(image_hw[0]), int(image_hw[1]))
        self._weights = np.asarray(weights, dtype=np.float32)
        self._sum: np.ndarray | None = None
        self._wsum = np.zeros((self._n, 1) + self._hw, dtype=np.float32)
        self.is_finalized = False

    def aggregate(self, logits: np.ndarray, coords: Sequence[TileCoord]) -> None:
        """Add ``logits`` float32 ``[B, C, h, w]`` for the ``B`` windows described by ``coords``."""
        if self.is_finalized:
            raise ValueError("this merger is finalized; start a new one for more tiles")
        if logits.ndim != 4 or logits.shape[0] != len(coords):
            raise ValueError(f"expected logits [{len(coords)}, C, h, w], got {logits.shape}")
        if self._sum is None:
            self._sum = np.zeros((self._n, logits.shape[1]) + self._hw, dtype=np.float32)
        w = self._weights
        for tile, c in zip(logits, coords):
            sl = (c.index, slice(None), slice(c.top, c.top + c.height), slice(c.left, c.left + c.width))
            self._sum[sl] += tile * w
            self._wsum[sl] += w

    def finalize(self, crop_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Blended logits float32 ``[N, C, H, W]`` (cropped to ``crop_hw`` when given), a new array
        the caller owns. The first call divides the whole buffer by the weights, in place (no second
        full-size buffer); repeated calls only crop and copy."""
        if self._sum is None:
            raise ValueError("no tiles were aggregated")
        h, w = crop_hw if crop_hw is not None else self._hw
        if np.any(self._wsum[:, :, :h, :w] <= 0):  # the weight sums are never modified: check every call
            raise ValueError("some pixels were not covered by any tile")
        if not self.is_finalized:
            np.divide(self._sum, self._wsum, out=self._sum, where=self._wsum > 0)
            self.is_finalized = True
        return np.array(self._sum[:, :, :h, :w], copy=True)


def sliding_window_logits(
    images: np.ndarray,
    predict: Callable[[np.ndarray, list[TileCoord]], np.ndarray],
    *,
    window_hw: tuple[int, int],
    overlap: float = 0.5,
    batch_size: int = 8,
    sigma_scale: float = 0.125,
) -> np.ndarray:
    """Blended logits float32 ``[N, C, H, W]`` for images float32 ``[N, 1, H, W]``.

    Tiles of all ``N`` images are sent to ``predict`` in batches of at most ``batch_size``.
    Images smaller than the window are zero-padded (0 = the normalised intensity floor).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images [N, 1, H, W], got {x.shape}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n, _, h, w = x.shape
    splitter = SlidingWindowSplitter((int(window_hw[0]), int(window_hw[1])), overlap)
    ph, pw = splitter.padded_shape((h, w))
    if (ph, pw) != (h, w):
        x = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)))
    wh, ww = splitter.window_hw
    merger = WeightedMerger(n, (ph, pw), gaussian_weights((wh, ww), sigma_scale))
    locations = list(splitter((h, w)))
    coords = [TileCoord(i, top, left, wh, ww) for i in range(n) for top, left in locations]
    for start in range(0, len(coords), batch_size):
        chunk = coords[start : start + batch_size]
        batch = np.stack([x[c.index, :, c.top : c.top + wh, c.left : c.left + ww] for c in chunk])
        logits = np.asarray(predict(batch, chunk), dtype=np.float32)
        merger.aggregate(logits, chunk)
    return merger.finalize((h, w))
