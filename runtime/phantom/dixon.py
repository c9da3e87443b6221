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


def make_dixon_phantom(
    seed: int, *, slices: int = 150, shape=(256, 256), spacing=None, orientation: str = "RAS"
) -> dict:
    """NIfTI images of phantom ``seed`` in ``orientation``: ``image`` (T1w int16, identical to
    ``make_phantom``'s), ``labels`` (uint8), ``water`` and ``fat`` (float32 Dixon), ``ff`` (true voxel
    FF of the content under the blur, float32 0..1) and ``sides`` (uint8 true side of every muscle
    voxel: 1 R, 2 L, 0 elsewhere; the phantom draws the right leg at world x >= 0)."""
    import nibabel as nib
    from nibabel import orientations as ornt

    from limbseg_rt.runtime.phantom.generate import DEFAULT_SPACING, canonical_affine, phantom_arrays

    spacing = tuple(spacing) if spacing is not None else DEFAULT_SPACING
    code = tuple(str(orientation).upper())
    ph = phantom_arrays(seed, slices=slices, shape=tuple(shape), spacing=spacing, truth=True)
    water, fat, _, pv = dixon_images(ph, seed)
    nx = ph.labels.shape[0]
    right = (np.arange(nx) >= (nx - 1) / 2)[:, None, None]
    sides = np.where(ph.labels > 0, np.where(right, 1, 2), 0).astype(np.uint8)
    xform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(code))
    affine = canonical_affine(ph.labels.shape, ph.spacing) @ ornt.inv_ornt_aff(xform, ph.labels.shape)
    out = {}
    for name, data, dtype in (
        ("image", ph.image, np.int16),
        ("labels", ph.labels, np.uint8),
        ("water", water, np.float32),
        ("fat", fat, np.float32),
        ("ff", pv, np.float32),
        ("sides", sides, np.uint8),
    ):
        arr = np.ascontiguousarray(ornt.apply_orientation(data, xform)).astype(dtype)
        img = nib.Nifti1Image(arr, affine)
        img.set_data_dtype(dtype)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = f"limbseg-rt phantom seed {int(seed)} {name}".encode()[:79]
        out[name] = img
    return out
