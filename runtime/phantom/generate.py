"""Synthetic T1-weighted lower-limb MRI phantom with ground-truth muscle labels (numpy + nibabel only).

Anatomy model (tables: ``phantom_anatomy.py``; 2D renderer: ``phantom_slice.py``; image formation:
``phantom_signal.py``). The scan covers both legs from the lower iliac wing (level ``s = 0``) to just
above the ankle joint (``s = 1``) whatever the number of slices: the subject's limb is mapped onto the
slices, with per-subject jitter of the top/bottom levels and of the knee (about +-1.5 % of the limb).
Each axial slice is built in 2D, per leg, in a leg-local polar frame (the left leg mirrors the right
and uses the same label indices):

- skin (thin, intermediate signal) and subcutaneous fat (bright) around a deep-fascia outline
  (ellipse with small per-subject lobes; thighs that touch meet skin to skin); above the crotch the
  legs merge with a central pelvic region: pelvic cavity (fat, bladder, rectum), sacrum and
  *unlabelled* muscle (rectus abdominis, pelvic floor) that a network must leave as background;
- bones with dark cortex and marrow (red marrow, intermediate, in pelvis and proximal femur; yellow
  marrow, bright, elsewhere): ilium, acetabulum, pubic rami, ischium, spherical femoral head, neck,
  trochanters, shaft, condyles, patella, tibia, fibula, malleoli;
- the 37 labelled muscles as keyframed ellipses whose centre, size and presence change linearly with
  ``s`` (hip muscles only around the pelvis, thigh muscles in the thigh, calf muscles below the knee);
  overlapping ellipses are partitioned by normalised elliptical distance (smooth curved borders),
  thin fat/fascia septa separate neighbours, compartment space no muscle reaches is intermuscular fat;
- guarantees that keep every muscle learnable: semi-axes >= 5 mm, a protected core (60 % of the
  ellipse) that bigger neighbours cannot take, and >= 40 mm^2 per leg and slice wherever the muscle
  is present (a muscle squeezed by bone or vessels is regrown around its centre);
- femoral/popliteal/tibial vessels (flow voids), sciatic/tibial nerve, great saphenous vein, patellar,
  Achilles and distal calf tendons (dark, background).

Subject variation: size, sex, age-driven atrophy and fat infiltration (marbling, stronger in the
hamstrings, adductor magnus, gastrocnemius and soleus), subcutaneous and intermuscular fat, leg
separation, left/right size asymmetry, per-muscle position/size/signal jitter, scanner gain.
Image formation: tissue signal + texture -> partial-volume blur (3-tap in-plane, slice profile
through-plane) -> smooth multiplicative bias field -> Rician noise -> rounded int16-range values.

Geometry: default voxels 1.75 x 1.75 x 5 mm, so 256 x 256 gives a 448 mm field of view (real both-leg
FOVs are 400-450 mm); anatomy is in mm, so another spacing or shape shows more or less of it (a
too-small FOV crops the hips; no wrap-around is simulated).

Limits: muscles are convex blobs, not true fascicle geometry; the muscle tables are one reference
anatomy with per-subject jitter, not a statistical shape model; the distal ends of calf muscles are
kept as small bellies rather than thinning to tendons; no feet, no motion, no fat-water swaps, no
menisci/ligaments; left and right legs differ only in size.

Array convention: ``image[x, y, z]`` in RAS+ voxel order (index increases toward the subject's Right,
Anterior, Superior); ``z = 0`` is the most inferior slice (ankle), ``z = Z - 1`` the most superior
(hip). For SC-UNet, ``slice_positions(Z, proximal_first=False)`` gives each canonical slice's ``p``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom.cross_section import MIN_AREA_MM2, TISSUE_NAMES, render_slice
from limbseg_rt.runtime.phantom.mr_signal import form_image

__all__ = ["DEFAULT_SPACING", "TISSUE_NAMES", "PhantomArrays", "canonical_affine", "make_phantom", "phantom_arrays"]

DEFAULT_SPACING: tuple[float, float, float] = (1.75, 1.75, 5.0)  # 256 x 1.75 mm = 448 mm FOV (both legs)


@dataclass(frozen=True, eq=False)
class PhantomArrays:
    """One phantom subject in canonical RAS+ array order.

    ``image``: float32 ``[X, Y, Z]`` scanner-like integer values (fat ~ 1000); ``labels``: uint8
    ``[X, Y, Z]`` with 0 = background and 1..37 the muscles of ``default_label_table()``;
    ``spacing``: voxel size (mm) along x, y, z; ``subject``: the parameters drawn for this seed;
    ``tissue``: uint8 ``[X, Y, Z]`` tissue class of each voxel (index into ``TISSUE_NAMES``);
    ``fat_fraction``: with ``phantom_arrays(..., truth=True)`` only, float32 ``[X, Y, Z]`` true
    voxel fat fraction 0..1 (muscle marbling before partial-volume blur; see ``mr_signal``).
    The arrays are views of slice-major buffers: ``a[:, :, z]`` is contiguous, the whole array is not
    (use ``np.ascontiguousarray`` if a C-ordered volume is needed).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    subject: dict = field(default_factory=dict)
    tissue: np.ndarray | None = None
    fat_fraction: np.ndarray | None = None


def _check_args(slices: int, shape, spacing) -> tuple[int, tuple[int, int], tuple[float, float, float]]:
    if int(slices) < 2:
        raise InputError(f"phantom needs at least 2 slices (got {slices})")
    if len(shape) != 2 or min(int(v) for v in shape) < 32:
        raise InputError(f"phantom slice shape must be two sizes >= 32 (got {tuple(shape)})")
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"phantom spacing must be three positive sizes in mm (got {tuple(spacing)})")
    return int(slices), (int(shape[0]), int(shape[1])), (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _draw_subject(rng: np.random.Generator, n_muscles: int) -> dict:
    female = bool(rng.random() < 0.5)
    age = float(rng.uniform(20, 85))
    old = float(np.clip((age - 40) / 45, 0, 1))
    fat = (13.0 if female else 7.0) * float(np.exp(rng.normal(0, 0.35)))
    atrophy = old * float(rng.uniform(0.0, 0.22))
    return {
        "female": female,
        "age": round(age, 1),
        "scale": float(np.clip(rng.normal(0.94 if female else 1.0, 0.04), 0.86, 1.08)),
        "fat_mm": float(np.clip(fat + 25 * atrophy, 3.0, 26.0)),
        "atrophy": atrophy,
        "infiltration": float(0.03 + old * rng.uniform(0.04, 0.24) * (1.3 if female else 1.0)),
        "septum_mm": float(rng.uniform(0.35, 0.8) + 0.5 * old * rng.random()),
        # How far (normalised) a muscle may spread into free compartment space: low = more
        # intermuscular fat (older, fatter subjects).
        "fill": float(np.clip(rng.uniform(1.5, 1.9) - 0.3 * old * rng.random(), 1.3, 1.9)),
        "muscle_signal": float(rng.uniform(0.26, 0.36)),
        "noise": float(rng.uniform(0.015, 0.04)),
        "bias": float(rng.uniform(0.08, 0.28)),
        "gain": float(rng.uniform(700, 1300)),
        "knee_shift": float(np.clip(rng.normal(0, 0.012), -0.025, 0.025)),
        "s_top": float(rng.uniform(0.0, 0.02)),
        "s_bottom": float(rng.uniform(0.975, 1.0)),
        "separation": float(rng.uniform(0.94, 1.10)),
        "left_scale": float(rng.normal(1.0, 0.02)),
        "lobes": rng.normal(0, 0.015, size=4).tolist(),
        # per-muscle constants: angle (deg), rho, size factor, signal offset
        "m_ang": rng.normal(0, 4.0, n_muscles).tolist(),
        "m_rho": rng.normal(0, 0.025, n_muscles).tolist(),
        "m_size": np.exp(rng.normal(0, 0.08, n_muscles)).tolist(),
        "m_signal": rng.normal(0, 0.02, n_muscles).tolist(),
        # Leg rotation in the scanner (degrees, external rotation positive) plus extra rotation of
        # the lower leg (tibial torsion); the left leg also gets its own small per-muscle jitter.
        "rotation": rng.normal(4.0, 5.0, 2).tolist(),
        "torsion": rng.normal(6.0, 4.0, 2).tolist(),
        "m_ang_left": rng.normal(0, 2.5, n_muscles).tolist(),
        "m_rho_left": rng.normal(0, 0.015, n_muscles).tolist(),
        "warp": [_warp_wave(rng, comp) for comp in (0, 0, 1, 1, 0, 1)],
        # Sideways shift of each leg (mm, world x): legs lie a little apart or together, not mirrored.
        "leg_shift": rng.normal(0, 5.0, 2).tolist(),
    }


def _warp_wave(rng: np.random.Generator, component: int) -> list[float]:
    """One sinusoid of the muscle-border warp: wave vector (rad/mm), phase, phase drift per unit of
    level ``s``, amplitude (mm) and which coordinate (0 = u, 1 = v) it displaces."""
    wavelength = rng.uniform(35.0, 90.0)
    direction = rng.uniform(0, 2 * np.pi)
    k = 2 * np.pi / wavelength
    return [
        float(k * np.cos(direction)),
        float(k * np.sin(direction)),
        float(rng.uniform(0, 2 * np.pi)),
        float(rng.uniform(-25.0, 25.0)),
        float(rng.uniform(1.5, 4.0)),
        component,
    ]


def _level(frac_from_top: np.ndarray, subj: dict) -> np.ndarray:
    """Anatomical level ``s`` of each slice from its fraction of the scan (0 top .. 1 bottom)."""
    s_lin = subj["s_top"] + (subj["s_bottom"] - subj["s_top"]) * frac_from_top
    knee = 0.55 + subj["knee_shift"]
    return np.interp(s_lin, [0.0, knee, 1.0], [0.0, 0.55, 1.0])


def phantom_arrays(
    seed: int,
    *,
    slices: int = 150,
    shape: tuple[int, int] = (256, 256),
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    truth: bool = False,
) -> PhantomArrays:
    """Generate phantom subject ``seed`` (deterministic) in canonical RAS+ array order.

    ``slices``: Z (>= 2), always spanning hip to ankle; ``shape``: (X, Y) in-plane size (>= 32 each);
    ``spacing``: (sx, sy, sz) in mm; the anatomy is in mm, so a smaller FOV crops it.
    Returns float32 image and uint8 labels, both ``[X, Y, Z]``; ``z = 0`` is the ankle end.
    ``truth``: also keep the true fat-fraction map (opt-in: it costs a float32 volume; the image
    and labels are byte-identical either way).
    """
    n_z, (n_x, n_y), spacing = _check_args(slices, shape, spacing)
    table = default_label_table()
    codes_to_index = {lab.code: lab.index for lab in table.muscles}
    rng = np.random.default_rng(int(seed))
    subj = _draw_subject(rng, len(table.muscles))
    xs = ((np.arange(n_x) - (n_x - 1) / 2) * spacing[0]).astype(np.float32)
    ys = ((np.arange(n_y) - (n_y - 1) / 2) * spacing[1]).astype(np.float32)
    y_table = -0.25 * n_y * spacing[1]  # posterior skin rests on the table, body near isocentre
    # Built slice-major [Z, X, Y] (contiguous slices), transposed to [X, Y, Z] at the end.
    tissue = np.zeros((n_z, n_x, n_y), np.uint8)
    labels = np.zeros((n_z, n_x, n_y), np.uint8)
    # Every present muscle keeps at least this many voxels per leg and slice (>= ~40 mm^2).
    min_px = max(3, int(np.ceil(MIN_AREA_MM2 / (spacing[0] * spacing[1]))))
    levels = _level((n_z - 1 - np.arange(n_z)) / (n_z - 1), subj)
    for z in range(n_z):
        s = float(levels[z])
        t2 = tissue[z]
        l2 = labels[z]
        render_slice(t2, l2, s, subj, xs, ys, y_table, codes_to_index, min_px)
    formed = form_image(rng, tissue, labels, subj, table, (spacing[2], spacing[0], spacing[1]), return_ff=truth)
    image, ff = formed if truth else (formed, None)
    return PhantomArrays(
        image=image.transpose(1, 2, 0),  # views: each z-slice stays contiguous in memory
        labels=labels.transpose(1, 2, 0),
        spacing=spacing,
        subject=subj,
        tissue=tissue.transpose(1, 2, 0),
        fat_fraction=ff.transpose(1, 2, 0) if ff is not None else None,
    )


def canonical_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """RAS+ voxel-to-world affine (mm) of a canonical ``[X, Y, Z]`` phantom: volume centred on the origin."""
    aff = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    aff[:3, 3] = [-(n - 1) / 2 * sp for n, sp in zip(shape, spacing)]
    return aff


def make_phantom(
    seed: int,
    *,
    slices: int = 150,
    shape: tuple[int, int] = (256, 256),
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    orientation: str = "RAS",
):
    """Phantom subject ``seed`` as NIfTI images ``(image, labels)`` stored in ``orientation``.

    ``orientation``: any 3-letter axis code (``RAS``, ``LPS``, ``ASL``, ...) giving the direction each
    stored array axis increases toward. Data are flipped/permuted from the canonical RAS+ arrays and
    the affine follows, so every orientation puts the same anatomy at the same world (mm) position.
    Image data int16 (scanner-like), labels uint8; qform and sform both set to the affine with code 1
    (scanner), units mm.
    """
    import nibabel as nib
    from nibabel import orientations as ornt

    try:
        target = np.asarray(geometry.ornt_from_axcodes(str(orientation)), dtype=np.float64)
    except ValueError:
        raise InputError(
            f"orientation {orientation!r} is not a 3-letter axis code with one of L/R, A/P and S/I each "
            "(e.g. RAS, LPS, ASL)"
        ) from None
    ph = phantom_arrays(seed, slices=slices, shape=shape, spacing=spacing)
    xform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), target)
    affine = canonical_affine(ph.labels.shape, ph.spacing) @ ornt.inv_ornt_aff(xform, ph.labels.shape)
    out = []
    for data, dtype in ((ph.image, np.int16), (ph.labels, np.uint8)):
        arr = np.ascontiguousarray(ornt.apply_orientation(data, xform)).astype(dtype)
        img = nib.Nifti1Image(arr, affine)
        img.set_data_dtype(dtype)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = f"limbseg-rt phantom seed {int(seed)}".encode()[:79]
        out.append(img)
    return out[0], out[1]
