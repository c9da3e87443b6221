"""Dixon water and fat images of a phantom subject, from its true fat-fraction map (opt-in).

``dixon_images(ph, seed)`` needs ``phantom_arrays(..., truth=True)``. Proton-density-like signal per
tissue (``PD``), split into water ``S (1 - FF)`` and fat ``S FF``, then the T1w image's partial-volume
blur (in-plane 3-tap 0.22, through-plane 0.12), one smooth multiplicative bias field shared by both
images (it cancels in F / (F + W)) and Gaussian noise of ``noise`` x the fat signal on each (as on
complex-reconstructed water/fat images; no magnitude noise floor, no fat-water swaps, single-peak
fat). Random draws come from their own generator (``seed`` plus an offset), so the T1w phantom of
the same seed is unchanged.
"""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.phantom.cross_section import AIR, CORTEX, TISSUE_NAMES, VESSEL
from limbseg_rt.runtime.phantom.mr_signal import blur3, smooth_field

_SEED_OFFSET = 7_000_003
# Proton density relative to fat; air, cortical bone and flow voids give no signal.
_PD_DEFAULT = 0.8


def _pd_lut() -> np.ndarray:
    lut = np.full(len(TISSUE_NAMES), _PD_DEFAULT, np.float32)
    lut[[AIR, CORTEX, VESSEL]] = 0.0
    return lut


def dixon_images(ph, seed: int, *, noise: float = 0.004, bias: float = 0.15, gain: float = 1000.0):
    """(water, fat, true_ff, true_ff_pv): float32 ``[X, Y, Z]`` images on the phantom's grid, the true
    FF of each voxel's tissue (before blur: ``ph.fat_fraction``) and the true FF of each voxel's
    content under the partial-volume blur (blurred fat / blurred total, no bias and no noise): what
    a perfect Dixon measurement gives on that voxel.

    ``ph``: ``PhantomArrays`` made with ``truth=True``; ``noise``: Gaussian sigma as a fraction of the
    fat signal; ``bias``: strength of the shared bias field; ``gain``: scanner scale.
    """
    if ph.fat_fraction is None:
        raise ValueError("dixon_images needs phantom_arrays(..., truth=True)")
    rng = np.random.default_rng(int(seed) + _SEED_OFFSET)
    ff = np.ascontiguousarray(ph.fat_fraction.transpose(2, 0, 1))  # [Z, X, Y] like the generator
    tissue = np.ascontiguousarray(ph.tissue.transpose(2, 0, 1))
    pd = _pd_lut()[tissue]
    pd[ff > 0.5] = 1.0  # fatty tissue: fat's own proton density
    out, clean = [], []
    field = np.exp(bias * smooth_field(rng, ff.shape, (3, 3, 3))).astype(np.float32)
    for part in (pd * (1 - ff), pd * ff):
        img = blur3(blur3(part.astype(np.float32), 1, 0.22), 2, 0.22)
        img = blur3(img, 0, 0.12)
        clean.append(img)
        img = img * field + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
        out.append((img * np.float32(gain)).transpose(1, 2, 0))
    total = clean[0] + clean[1]
    pv = np.where(total > 1e-6, clean[1] / np.maximum(total, 1e-6), 0).astype(np.float32).transpose(1, 2, 0)
    return out[0], out[1], ph.fat_fraction, pv
