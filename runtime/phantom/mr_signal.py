"""Image formation of the phantom: tissue map -> T1w-like signal with texture, partial volume,
bias field and Rician noise (numpy only)."""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.phantom.cross_section import (
    AIR,
    BOWEL,
    CARTILAGE,
    CORTEX,
    FAT,
    FLUID,
    MUSCLE,
    NERVE,
    OTHER_MUSCLE,
    RED,
    SKIN,
    TENDON,
    TISSUE_NAMES,
    VESSEL,
    YELLOW,
)

_INFILTRATION_WEIGHT = {
    "GM": 1.6,
    "GL": 1.3,
    "SOL": 1.4,
    "SM": 1.3,
    "ST": 1.2,
    "BFL": 1.3,
    "BFS": 1.2,
    "ADM": 1.2,
    "GRA": 1.1,
    "SAR": 1.2,
    "PL": 1.1,
    "RF": 0.8,
    "TA": 0.7,
    "VI": 0.8,
}


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    w = pos - i0
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] = 1 - w
    if n_in > 1:
        m[np.arange(n_out), i0 + 1] += w
    return m


def smooth_field(rng: np.random.Generator, shape, cells) -> np.ndarray:
    """Zero-mean, roughly unit-variance smooth random field: coarse Gaussian grid, trilinear upsampling."""
    cells = tuple(max(2, min(int(c), n)) for c, n in zip(cells, shape))
    coarse = rng.standard_normal(cells).astype(np.float32)
    out = coarse
    for axis, n in enumerate(shape):
        m = _interp_matrix(n, cells[axis])
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    return out / max(float(out.std()), 1e-6)


def blur3(vol: np.ndarray, axis: int, w: float) -> np.ndarray:
    """Separable 3-tap blur ``[w, 1 - 2w, w]`` along ``axis`` (edges replicated), float32."""
    v = np.moveaxis(vol, axis, 0)
    w32 = np.float32(w)
    out = v * np.float32(1 - 2 * w)
    out[1:] += w32 * v[:-1]
    out[:-1] += w32 * v[1:]
    out[0] += w32 * v[0]
    out[-1] += w32 * v[-1]
    return np.moveaxis(out, 0, axis)


def form_image(rng, tissue, labels, subj, table, spacing, *, return_ff: bool = False):
    """Tissue map ``[Z, X, Y]`` -> T1w-like signal (fat = 1), blur, bias, Rician noise, gain, rounding.

    ``spacing`` is in the same (z, x, y) order as the arrays. With ``return_ff`` also returns the
    true voxel fat fraction (float32 ``[Z, X, Y]``, before blur: see ``true_fat_fraction``); the
    random draws and the image are the same either way.
    """
    shape = tissue.shape
    fat = float(rng.uniform(0.95, 1.05))
    # Haematopoietic (red) marrow of the pelvis turns fatty with age: intermediate -> bright.
    red = float(np.clip(0.5 + 0.35 * (subj["age"] - 20) / 65, 0.5, 0.85)) * fat
    lut = np.zeros(len(TISSUE_NAMES), np.float32)
    lut[CARTILAGE] = 0.4  # hyaline cartilage: intermediate on T1
    lut[[AIR, SKIN, FAT, OTHER_MUSCLE, CORTEX, YELLOW, RED, FLUID, VESSEL, NERVE, TENDON, BOWEL]] = [
        0.0,
        0.55,
        fat,
        subj["muscle_signal"],
        0.04,
        0.85 * fat,
        red,
        0.12,
        0.07,
        0.5,
        0.05,
        0.38,
    ]
    img = lut[tissue]
    m_lut = np.zeros(256, np.float32)
    m_lut[1 : 1 + len(table.muscles)] = subj["muscle_signal"] + np.asarray(subj["m_signal"], np.float32)
    w_lut = np.ones(256, np.float32)
    for lab in table.muscles:
        w_lut[lab.index] = _INFILTRATION_WEIGHT.get(lab.code, 1.0)
    # Mm-scale cells: fine texture ~2 mm, marbling ~4 mm in-plane and ~15 mm along the fibres (z).
    # Marbling: streaks ~2-4 mm across in-plane, elongated along the fibres (z); texture: finer noise.
    marbling = rng.standard_normal(shape, dtype=np.float32)
    for axis in (1, 2, 1, 2, 0, 0):
        marbling = blur3(marbling, axis, 0.25)
    marbling *= np.float32(1.0 / max(float(marbling[::4, ::4, ::4].std()), 1e-6))
    texture = rng.standard_normal(shape, dtype=np.float32)
    texture = blur3(blur3(texture, 1, 0.25), 2, 0.25) * np.float32(1 / 0.61)
    is_m = tissue == MUSCLE
    infil_lut = np.clip(subj["infiltration"] * w_lut, 0, 0.6).astype(np.float32)
    infil = infil_lut[labels]
    # Marbling: fat fraction rises where the field exceeds a threshold set by the infiltration level.
    ff = (
        np.clip((marbling - (2.4 - 3.5 * infil)) * np.float32(1 / 0.6), 0, 1) * np.float32(0.8)
        + np.float32(0.3) * infil
    )
    np.clip(ff, 0, 1, out=ff)
    sig = m_lut[labels] * (1 + np.float32(0.05) * texture)
    img = np.where(
        is_m, sig * (1 - ff) + np.float32(fat) * ff, img * (1 + np.float32(0.02) * texture * (tissue == FAT))
    )
    # Partial volume: in-plane ~0.7-voxel blur, slice profile through-plane.
    img = blur3(blur3(img, 1, 0.22), 2, 0.22)
    img = blur3(img, 0, 0.12)
    bias = smooth_field(rng, shape, (3, 3, 3))
    img *= np.exp(subj["bias"] * bias).astype(np.float32)
    sigma = subj["noise"] * fat
    n1 = rng.standard_normal(shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(shape, dtype=np.float32) * sigma
    img = np.sqrt((img + n1) ** 2 + n2 * n2)
    out = np.round(np.clip(img * subj["gain"], 0, 32767)).astype(np.float32)
    if return_ff:
        return out, true_fat_fraction(tissue, is_m, ff)
    return out


# Fat fraction of the tissues other than labelled muscle, for the Dixon truth: subcutaneous fat is
# not pure triglyceride (~ 0.9), yellow marrow ~ 0.85, red marrow ~ 0.45; the rest is water.
TISSUE_FF = {FAT: 0.9, YELLOW: 0.85, RED: 0.45}


def true_fat_fraction(tissue: np.ndarray, is_muscle: np.ndarray, muscle_ff: np.ndarray) -> np.ndarray:
    """Voxel fat fraction 0..1 (float32, same shape): muscle voxels their marbling FF, other
    tissues ``TISSUE_FF`` (0 when not listed)."""
    lut = np.zeros(len(TISSUE_NAMES), np.float32)
    for t, v in TISSUE_FF.items():
        lut[t] = v
    return np.where(is_muscle, muscle_ff, lut[tissue]).astype(np.float32)
