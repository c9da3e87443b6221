"""Left/right from the anatomy: every muscle voxel of the phantom gets its true side, whatever the
file's orientation, with the patient off-centre or rolled, and one-leg scans say which leg."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.analysis.sides import SIDE_LEFT, SIDE_RIGHT, assign_sides
from limbseg_rt.runtime.model.labels import default_label_table

TABLE = default_label_table()


def _wrong(sa, labels, truth) -> int:
    m = labels > 0
    return int((sa.sides[m] != truth[m]).sum())


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS", "PIR", "ASL"])
def test_sides_are_right_in_every_file_orientation(tmp_path, orientation):
    """Written by the phantom in another orientation and read back through the runtime's reader."""
    from limbseg_rt.runtime.io.nifti import read_image
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    imgs = make_dixon_phantom(5, slices=24, shape=(128, 112), spacing=(3.5, 3.5, 16.0), orientation=orientation)
    assert "".join(nib.aff2axcodes(imgs["image"].affine)) == orientation
    canon = {}
    for k in ("image", "labels", "sides"):
        nib.save(imgs[k], tmp_path / f"{k}.nii.gz")
        canon[k], props = read_image(tmp_path / f"{k}.nii.gz")
    labels = canon["labels"].astype(np.uint8)
    sa = assign_sides(labels, canon["image"], props.canonical_spacing, TABLE)
    assert sa.legs == "both"
    assert _wrong(sa, labels, canon["sides"].astype(np.uint8)) == 0
    assert all(v["agree"] >= 4 and v["disagree"] == 0 for v in sa.anatomy_check.values())


@pytest.mark.parametrize("shift", [-16, 16])
def test_a_patient_lying_off_centre_keeps_every_side(phantom7, shift):
    ph, truth = phantom7["ph"], phantom7["sides"]
    # 16 voxels = 56 mm: the image's own midline now runs through one leg.
    img, lab, tr = (np.roll(a, shift, axis=0) for a in (ph.image, ph.labels, truth))
    sa = assign_sides(lab, img, ph.spacing, TABLE)
    assert _wrong(sa, lab, tr) == 0
    naive = np.where(np.arange(lab.shape[0])[:, None, None] >= (lab.shape[0] - 1) / 2, SIDE_RIGHT, SIDE_LEFT)
    assert int(((naive != tr) & (lab > 0)).sum()) > 1000  # the image's half would have been wrong


def _rotate_xy(a: np.ndarray, deg: float) -> np.ndarray:
    """Nearest-neighbour rotation about the slice centre (outside -> 0)."""
    nx, ny, _ = a.shape
    t = np.radians(deg)
    x, y = np.meshgrid(np.arange(nx) - (nx - 1) / 2, np.arange(ny) - (ny - 1) / 2, indexing="ij")
    xs = np.cos(t) * x + np.sin(t) * y + (nx - 1) / 2
    ys = -np.sin(t) * x + np.cos(t) * y + (ny - 1) / 2
    xi, yi = np.rint(xs).astype(int), np.rint(ys).astype(int)
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    out = a[np.clip(xi, 0, nx - 1), np.clip(yi, 0, ny - 1), :]
    out[~inside] = 0
    return out


@pytest.mark.parametrize("deg", [-12.0, 9.0])
def test_a_rolled_patient_keeps_every_side(phantom7, deg):
    ph, truth = phantom7["ph"], phantom7["sides"]
    img, lab, tr = (_rotate_xy(a, deg) for a in (ph.image, ph.labels, truth))
    sa = assign_sides(lab, img, ph.spacing, TABLE)
    assert _wrong(sa, lab, tr) == 0
    finite = [a for a in sa.angle_deg if a is not None]
    assert abs(float(np.median(finite)) - deg) < 4.0  # the body's long axis turned with the patient


@pytest.mark.parametrize("keep", ["right", "left"])
def test_one_leg_scans_report_that_leg_only(phantom7, keep):
    ph, truth = phantom7["ph"], phantom7["sides"]
    nx = ph.labels.shape[0]
    gone = slice(0, nx // 2 - 1) if keep == "right" else slice(nx // 2 + 1, nx)
    img, lab = ph.image.copy(), ph.labels.copy()
    img[gone] = 0
    lab[gone] = 0
    sa = assign_sides(lab, img, ph.spacing, TABLE)
    assert sa.legs == keep
    assert _wrong(sa, lab, truth) == 0
    assert any("one leg" in n for n in sa.notes)
