"""SC-UNet's slice-position encoding: the one rule shared by training, export and runtime.

A slice's position is ``p``, its fraction along the limb, proximal (hip) -> distal (ankle) by
default: the authors number the slices of a subject ``n = 1..N`` from the proximal end and use
``p = n / N``, so ``p`` lies in ``(0, 1]``.

The network sees ``onehot(p)`` with ``POSITION_BINS = 100`` bins. The hot index follows the authors'
numpy code exactly: ``int(p * 100) - 1`` evaluated in float32, where ``-1`` means the *last* bin
(Python indexing). Edge cases (documented because they are surprising, and tested):

- ``p = 1``      -> 100 - 1 = 99 (last bin).
- ``p = 0.999``  -> int(99.9) - 1 = 98.
- ``p = 0.5``    -> 49.
- ``p = 0.01``   -> float32(0.01) * 100 = 1.0 in float32 -> 0 (first bin).
- ``p = 0.004``  -> int(0.4) - 1 = -1 -> 99: the most proximal 1% of the limb shares the *last*
  bin with the most distal slice. That is what the authors' models were trained with, so we keep it.
- ``p = 0``      -> -1 -> 99 likewise (p = 0 never occurs with n = 1..N, but runtime may produce it).

Values outside ``[0, 1]`` (a runtime ``--limb-range`` may extrapolate) are clamped to ``[0, 1]``
first; the authors' code would index out of range there. ``int()`` truncates toward zero, which
equals floor for the clamped, non-negative values. The PyTorch model and the exported ONNX graph
implement the same arithmetic (float32 multiply, truncate, subtract 1, wrap -1 to 99) and tests
compare them with ``position_index`` on a dense grid of ``p``.
"""

from __future__ import annotations

import numpy as np

POSITION_BINS = 100


def position_index(p) -> np.ndarray:
    """Hot bin index for each position. ``p``: scalar or array of fractions; returns int64, same shape."""
    p32 = np.clip(np.asarray(p, dtype=np.float32), np.float32(0.0), np.float32(1.0))
    scaled = (p32 * np.float32(POSITION_BINS)).astype(np.float32)
    idx = np.trunc(scaled).astype(np.int64) - 1
    return np.where(idx < 0, idx + POSITION_BINS, idx)


def slice_positions(
    n_slices: int,
    *,
    proximal_first: bool = True,
    limb_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Positions ``p`` (float32 ``[n_slices]``) of the slices of a volume, in array order.

    ``proximal_first``: True when array index 0 is the most proximal (superior) slice, as in the
    authors' PNG numbering and our phantom's slice list. For a RAS-canonical volume (index 0 is the
    most *inferior* slice) pass ``proximal_first=False``.

    Slice ``n = 1..N`` counted from the proximal end has fraction ``n / N`` of the scanned extent;
    ``limb_range = (a, b)`` maps the scanned extent onto the part ``[a, b]`` of the limb
    (e.g. ``(0.0, 0.5)`` for a thigh-only scan): ``p = a + (b - a) * n / N``.
    """
    if n_slices < 1:
        raise ValueError("n_slices must be >= 1")
    a, b = float(limb_range[0]), float(limb_range[1])
    n = np.arange(1, n_slices + 1, dtype=np.float64)
    p = (a + (b - a) * n / n_slices).astype(np.float32)
    return p if proximal_first else p[::-1].copy()
