"""QC overlays: each muscle's colour is where its labels are, and the patient's left leg is drawn on
the side the picture's caption says, whatever orientation the input file is stored in."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.io.nifti import read_image
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.qc import views
from limbseg_rt.runtime.qc.write import render_overlays

PIL = pytest.importorskip("PIL", reason='QC pictures need Pillow (pip install "limbseg-rt[qc]")')
from PIL import Image  # noqa: E402

TABLE = default_label_table()
CODE = {lab.code: lab.index for lab in TABLE.labels}
SHAPE = (80, 60, 30)
SPACING = (1.5, 1.25, 4.0)
# Canonical RAS+ boxes (x0, x1, y0, y1) inclusive; x grows toward the patient's right.
LEFT_LEG = {"VL": (12, 22, 18, 34), "SAR": (24, 28, 36, 44)}  # small x: the patient's left
RIGHT_LEG = {"TA": (56, 66, 22, 38), "VM": (50, 54, 40, 46)}  # large x: the patient's right


def _volume():
    img = np.zeros(SHAPE, dtype=np.int16)
    lab = np.zeros(SHAPE, dtype=np.uint8)
    xx, yy = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    for cx in (20, 60):
        img[((xx - cx) / 16.0) ** 2 + ((yy - 30) / 24.0) ** 2 <= 1.0] = 300
    for code, (x0, x1, y0, y1) in {**LEFT_LEG, **RIGHT_LEG}.items():
        lab[x0 : x1 + 1, y0 : y1 + 1, 4:26] = CODE[code]
        img[x0 : x1 + 1, y0 : y1 + 1, 4:26] = 200
    return img, lab


def _store(data, orientation: str, path):
    """Save canonical RAS data as a NIfTI stored in ``orientation`` (same anatomy, same world mm)."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-40.0, -30.0, -50.0)
    t = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(orientation))
    )
    stored = nib.orientations.apply_orientation(data, t)
    new_affine = affine @ nib.orientations.inv_ornt_aff(t, data.shape)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), new_affine), str(path))
    return path


@pytest.fixture(scope="module", params=["RAS", "LPS"])
def rendered(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"qc-{request.param}")
    img, lab = _volume()
    vol, props = read_image(_store(img, request.param, d / "scan.nii.gz"))
    labc, _ = read_image(_store(lab, request.param, d / "labels.nii.gz"))
    assert "".join(props.orientation) == request.param
    labels = np.rint(labc).astype(np.uint8)
    return request.param, render_overlays(vol, labels, props.canonical_spacing, TABLE), props


def _png(data: bytes):
    im = Image.open(io.BytesIO(data))
    im.load()
    box = tuple(int(v) for v in im.text["limbseg-rt:image_box"].split())
    return np.asarray(im.convert("RGB")), im.text, box


def _pixels_of(rgb, box, colour):
    x0, y0, x1, y1 = box
    area = rgb[y0:y1, x0:x1]
    ys, xs = np.nonzero(np.all(area == np.asarray(colour, dtype=np.uint8), axis=2))
    return xs, ys, area.shape


def _by_slug(overlays, slug):
    return next(png for s, _, png in overlays if s == slug)


def test_levels_come_from_the_labels_present():
    img, lab = _volume()
    levels = views.axial_levels(views.slice_areas(lab, len(TABLE)), TABLE)
    assert [name for name, _ in levels] == ["mid-thigh"]  # only thigh muscles: no hip, knee or calf level
    assert levels[0][1] == (4 + 25) // 2


def test_each_muscle_colour_is_drawn_where_its_labels_are(rendered):
    _, overlays, props = rendered
    rgb, text, box = _png(_by_slug(overlays, "axial_mid-thigh"))
    mm_per_px = float(text["limbseg-rt:mm_per_pixel"])
    sx, sy, _ = props.canonical_spacing
    nx, ny, _ = SHAPE
    for code, (x0, x1, y0, y1) in {**LEFT_LEG, **RIGHT_LEG}.items():
        colour = TABLE[CODE[code]].colour
        xs, ys, _ = _pixels_of(rgb, box, colour)
        assert xs.size > 20, f"{code}: its colour {colour} is not in the picture"
        # Where the box must appear: radiological display, column 0 = largest x, row 0 = largest y.
        c_lo, c_hi = (nx - 1 - x1) * sx / mm_per_px, (nx - x0) * sx / mm_per_px
        r_lo, r_hi = (ny - 1 - y1) * sy / mm_per_px, (ny - y0) * sy / mm_per_px
        inside = (xs >= c_lo - 2) & (xs <= c_hi + 2) & (ys >= r_lo - 2) & (ys <= r_hi + 2)
        assert inside.mean() > 0.99, f"{code}: {1 - inside.mean():.1%} of its outline lies outside its labels"
        # Inside the outline the colour is blended over the grey image: tinted toward the label colour.
        centre = rgb[box[1] + int((r_lo + r_hi) / 2), box[0] + int((c_lo + c_hi) / 2)].astype(int)
        grey = centre.mean()
        assert np.corrcoef(centre - grey, np.asarray(colour) - np.mean(colour))[0, 1] > 0.9, (code, centre, colour)


def test_the_left_leg_is_on_the_side_the_caption_says(rendered):
    _, overlays, _ = rendered
    for slug in ("axial_mid-thigh", "coronal"):
        rgb, text, box = _png(_by_slug(overlays, slug))
        assert "patient's right on image left" in text["Description"]
        assert "left=R" in text["limbseg-rt:letters"] and "right=L" in text["limbseg-rt:letters"]
        half = (box[2] - box[0]) / 2
        shown = {int(i) for i in text["limbseg-rt:labels"].split()}
        left = [c for c in LEFT_LEG if CODE[c] in shown]
        right = [c for c in RIGHT_LEG if CODE[c] in shown]
        assert left and right, f"{slug} cuts both legs"
        for code in left:
            xs, _, _ = _pixels_of(rgb, box, TABLE[CODE[code]].colour)
            assert xs.size and xs.min() > half, f"{slug}: the left leg's {code} is not on the image's right"
        for code in right:
            xs, _, _ = _pixels_of(rgb, box, TABLE[CODE[code]].colour)
            assert xs.size and xs.max() < half, f"{slug}: the right leg's {code} is not on the image's left"


def test_one_sagittal_per_leg_shows_only_that_leg(rendered):
    _, overlays, _ = rendered
    for slug, mine, other in (("sagittal_right", RIGHT_LEG, LEFT_LEG), ("sagittal_left", LEFT_LEG, RIGHT_LEG)):
        rgb, text, box = _png(_by_slug(overlays, slug))
        shown = {int(i) for i in text["limbseg-rt:labels"].split()}
        assert shown and shown <= {CODE[c] for c in mine}, (slug, shown)
        assert not shown & {CODE[c] for c in other}


def test_every_input_orientation_draws_the_same_pictures(tmp_path):
    img, lab = _volume()
    out = {}
    for orientation in ("RAS", "LPS", "ASL"):
        vol, props = read_image(_store(img, orientation, tmp_path / f"{orientation}.nii.gz"))
        labc, _ = read_image(_store(lab, orientation, tmp_path / f"{orientation}_labels.nii.gz"))
        overlays = render_overlays(vol, np.rint(labc).astype(np.uint8), props.canonical_spacing, TABLE)
        out[orientation] = {s: np.asarray(Image.open(io.BytesIO(p)).convert("RGB")) for s, _, p in overlays}
    assert out["RAS"].keys() == out["LPS"].keys() == out["ASL"].keys()
    for slug in out["RAS"]:
        assert np.array_equal(out["RAS"][slug], out["LPS"][slug]), slug
        assert np.array_equal(out["RAS"][slug], out["ASL"][slug]), slug


def test_a_scale_bar_of_round_length_is_drawn(rendered):
    _, overlays, _ = rendered
    rgb, text, box = _png(_by_slug(overlays, "axial_mid-thigh"))
    x0, y0, x1, y1 = box
    # The scale bar: rows of pure white pixels in the bottom band of the image area, as long as a
    # round number of mm (the drawn length is the rounded pixel count, +1 for the inclusive end).
    band = rgb[y1 - 16 : y1 - 8, x0 : x0 + (x1 - x0) // 3]
    longest = int(np.all(band == 255, axis=2).sum(axis=1).max())
    mm = float(text["limbseg-rt:mm_per_pixel"])
    assert any(abs(longest - (step / mm + 1)) <= 2 for step in (10, 20, 50, 100, 200)), longest * mm
