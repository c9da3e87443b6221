"""Segmentation metrics: overlap counts, surface distances, absent labels, files.

Only the tests that compare with medpy (the reference implementation) need it and skip without it
(the ``mb`` fixture); the others check against brute force written here, or against plain counts.
Surface distances need scipy (the ``eval`` extra); without it they must fail with one line naming
the extra, which a subprocess with scipy blocked checks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.report import metrics
from limbseg_rt.runtime.report.distance import label_surfaces, nearest_distances, surface
from limbseg_rt.runtime.report.metrics import (
    FLAG_ABSENT_IN_BOTH,
    FLAG_MISSING_IN_PREDICTION,
    FLAG_MISSING_IN_REFERENCE,
    FLAG_OK,
    LabelCounts,
    assd,
    confusion_matrix,
    dice,
    dice_from_confusion,
    evaluate_files,
    evaluate_labels,
    hausdorff,
    hd95,
    label_counts,
    surface_distance_metrics,
)

SPACING_3D = (0.7, 1.3, 5.0)
TOL = 1e-6


@pytest.fixture()
def mb():
    return pytest.importorskip("medpy.metric.binary")


def _grid(shape):
    return np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")


def _ellipsoid(shape, centre, radii):
    g = _grid(shape)
    return sum(((x - c) / r) ** 2 for x, c, r in zip(g, centre, radii)) <= 1.0


# ----------------------------------------------------------------------------- brute force
def _brute_surface(mask):
    """Surface by the definition, voxel by voxel: in the mask with a face neighbour outside it."""
    out = np.zeros_like(mask)
    for idx in np.argwhere(mask):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = idx.copy()
                nb[axis] += step
                if nb[axis] < 0 or nb[axis] >= mask.shape[axis] or not mask[tuple(nb)]:
                    out[tuple(idx)] = True
    return out


def _brute_metrics(a, b, spacing):
    """(hd, hd95, assd) from all pairwise distances between the two surfaces."""
    sa = np.argwhere(_brute_surface(a)) * np.asarray(spacing)
    sb = np.argwhere(_brute_surface(b)) * np.asarray(spacing)
    d = np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return pooled.max(), np.percentile(pooled, 95), pooled.mean()


def _shaped_pairs():
    """(name, a, b, spacing): the shapes the metrics meet in practice, and awkward ones."""
    s = (30, 26, 14)
    pairs = [
        ("spheres offset", _ellipsoid(s, (14, 12, 7), (8, 8, 8)), _ellipsoid(s, (16, 11, 6), (7, 7, 7))),
        ("ellipsoids", _ellipsoid(s, (15, 13, 7), (12, 6, 3)), _ellipsoid(s, (14, 13, 7), (10, 8, 4))),
    ]
    thin_a = np.zeros(s, bool)
    thin_a[3:27, 10, 5] = True  # a one-voxel line
    thin_b = np.zeros(s, bool)
    thin_b[5:20, 12:14, 5:7] = True  # a thin slab
    pairs.append(("thin structures", thin_a, thin_b))
    one_a = np.zeros(s, bool)
    one_a[4, 5, 6] = True
    one_b = np.zeros(s, bool)
    one_b[20, 3, 11] = True
    pairs.append(("single voxels", one_a, one_b))
    pairs.append(
        (
            "single voxel inside a sphere",
            one_a | _ellipsoid(s, (4, 5, 6), (0.5, 0.5, 0.5)),
            _ellipsoid(s, (6, 6, 7), (5, 5, 3)),
        )
    )
    multi_a = _ellipsoid(s, (6, 6, 4), (4, 4, 2)) | _ellipsoid(s, (22, 18, 10), (5, 4, 3))
    multi_b = (
        _ellipsoid(s, (7, 5, 4), (4, 5, 2))
        | _ellipsoid(s, (25, 5, 3), (3, 3, 2))
        | _ellipsoid(s, (21, 19, 11), (4, 4, 2))
    )
    pairs.append(("multiple components", multi_a, multi_b))
    border_a = np.zeros(s, bool)
    border_a[:8, :, :3] = True  # touches five faces of the array
    border_b = np.zeros(s, bool)
    border_b[-5:, -9:, -2:] = True
    pairs.append(("touching the border", border_a, border_b))
    pairs.append(("identical", multi_a, multi_a.copy()))
    full = np.ones(s, bool)
    pairs.append(("whole array vs sphere", full, _ellipsoid(s, (15, 13, 7), (6, 6, 6))))
    return [(name, a, b, SPACING_3D) for name, a, b in pairs]


def _random_pairs(rng, n, ndim):
    out = []
    for i in range(n):
        shape = tuple(int(x) for x in rng.integers(2, 18 if ndim == 3 else 40, ndim))
        a = rng.random(shape) < rng.uniform(0.01, 0.7)
        b = rng.random(shape) < rng.uniform(0.01, 0.7)
        a.flat[rng.integers(a.size)] = True
        b.flat[rng.integers(b.size)] = True
        spacing = tuple(float(x) for x in rng.uniform(0.3, 6.0, ndim))
        out.append((f"random {ndim}D #{i}", a, b, spacing))
    return out


def _label_volume(rng):
    shape = (40, 36, 12)
    ref = np.zeros(shape, np.int16)
    ref[_ellipsoid(shape, (12, 10, 6), (9, 7, 5))] = 1
    ref[_ellipsoid(shape, (28, 24, 6), (8, 9, 4))] = 2
    ref[_ellipsoid(shape, (30, 8, 3), (4, 4, 2))] = 4
    ref[:5, 30:, 8:] = 6  # a label in a corner: touches three faces of the volume
    pred = np.roll(ref, 1, axis=0)
    pred[_ellipsoid(shape, (20, 30, 9), (2, 2, 1))] = 1  # a false-positive island far away
    pred[pred == 4] = 0  # label 4 missed entirely
    pred[0:2, 0:2, 0] = 5  # label 5 only in the prediction
    pred[:4, 31:, 9:] = 6
    noise = rng.random(shape) < 0.01
    pred[noise] = rng.integers(0, 3, int(noise.sum()))
    return pred, ref


# ----------------------------------------------------------------------------- overlap counts (numpy only)
def test_confusion_matrix_counts_every_pair_and_gives_dice_and_volumes():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 5, (17, 13, 6))
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 5, ref.shape))
    conf = confusion_matrix(pred, ref, 6)
    assert conf.shape == (6, 6) and conf.dtype == np.int64
    for r in range(6):
        for p in range(6):
            assert conf[r, p] == np.count_nonzero((ref == r) & (pred == p))
    counts = label_counts(pred, ref, 6)
    d = counts.dice()
    for i in range(5):
        a, b = pred == i, ref == i
        assert d[i] == 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
        assert counts.pred[i] == a.sum() and counts.ref[i] == b.sum()
        assert counts.rve_percent()[i] == pytest.approx(100 * (a.sum() - b.sum()) / b.sum(), rel=1e-12)
    assert np.isnan(d[5]) and np.isnan(counts.rve_percent()[5])  # label 5 absent from both
    np.testing.assert_array_equal(dice_from_confusion(conf), d)
    mean, n = counts.mean_dice()
    assert n == 4 and mean == pytest.approx(np.mean(d[1:5]))


def test_confusion_matrix_is_layout_and_chunk_independent(monkeypatch):
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 7, (20, 11, 9)).astype(np.uint8)
    pred = rng.integers(0, 7, ref.shape).astype(np.uint8)
    want = confusion_matrix(pred, ref)
    f_pred, f_ref = np.asfortranarray(pred), np.asfortranarray(ref)  # what nibabel returns
    np.testing.assert_array_equal(confusion_matrix(f_pred, f_ref), want)
    np.testing.assert_array_equal(confusion_matrix(f_pred, ref), want)  # mixed layouts
    np.testing.assert_array_equal(confusion_matrix(pred[:, ::-1], ref[:, ::-1]), want)  # strided views
    monkeypatch.setattr(metrics, "_CHUNK", 97)  # many partial chunks
    np.testing.assert_array_equal(confusion_matrix(pred, ref), want)
    assert want.sum() == ref.size


def test_label_counts_add_over_batches_and_refuse_out_of_range_values():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, (8, 10, 10))
    pred = rng.integers(0, 4, ref.shape)
    total = label_counts(pred[:3], ref[:3], 4) + label_counts(pred[3:], ref[3:], 4)
    whole = label_counts(pred, ref, 4)
    for f in ("pred", "ref", "both"):
        np.testing.assert_array_equal(getattr(total, f), getattr(whole, f))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        label_counts(pred, ref, 3)
    with pytest.raises(ValueError, match="shape"):
        label_counts(pred, ref[:2], 4)
    empty = LabelCounts.from_confusion(np.zeros((3, 3), np.int64))
    assert empty.mean_dice() == (pytest.approx(math.nan, nan_ok=True), 0)


def test_binary_dice_on_empty_masks():
    empty = np.zeros((5, 5), bool)
    some = empty.copy()
    some[2, 2] = True
    assert math.isnan(dice(empty, empty))  # undefined (medpy says 1.0)
    assert dice(some, empty) == 0.0 and dice(empty, some) == 0.0
    assert dice(some, some) == 1.0


# ----------------------------------------------------------------------------- surfaces and distances (scipy)
def test_label_surfaces_are_the_surfaces_of_each_label():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (9, 8, 7))
    per_label = label_surfaces(labels)
    for i in range(4):
        np.testing.assert_array_equal(per_label[i], np.argwhere(_brute_surface(labels == i)))
        np.testing.assert_array_equal(surface(labels == i), _brute_surface(labels == i))
    assert sorted(label_surfaces(labels, keep=[2, 3])) == [2, 3]


def test_distances_equal_brute_force_on_anisotropic_grids():
    pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(20261203)
    for name, a, b, spacing in _shaped_pairs()[:7] + _random_pairs(rng, 12, 3) + _random_pairs(rng, 12, 2):
        got = surface_distance_metrics(a, b, spacing)
        want = _brute_metrics(a, b, spacing)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=name)
    pts, qry = np.array([[0, 0, 0], [3, 0, 0]]), np.array([[1, 2, 0]])
    np.testing.assert_allclose(nearest_distances(pts, qry, (2.0, 0.5, 1.0)), [np.hypot(2.0, 1.0)])
    assert np.all(np.isinf(nearest_distances(np.empty((0, 2), int), np.array([[1, 1]]), (1.0, 2.0))))


def test_a_label_touching_the_volume_border_counts_the_border_as_surface():
    pytest.importorskip("scipy.spatial")
    ref = np.zeros((12, 10, 6), np.uint8)
    ref[:, :, :] = 1  # fills the volume: every voxel on the border is surface
    ref[4:8, 3:7, 2:4] = 0
    pred = ref.copy()
    pred[:, :, 0] = 0  # the bottom slice missing: the new bottom face is one slice up
    row = evaluate_labels(pred, ref, spacing=SPACING_3D, label_ids=[1]).rows[0]
    np.testing.assert_allclose(
        (row.hd_mm, row.hd95_mm, row.assd_mm), _brute_metrics(pred == 1, ref == 1, SPACING_3D), atol=TOL
    )
    assert row.hd_mm == pytest.approx(SPACING_3D[2])  # the nearest surface of the cut face is one slice away


def test_cropping_and_the_one_pass_give_the_full_volume_numbers():
    """Each label's work is limited to its surface voxels (their bounding box); embedding the same
    pair in a much larger volume, at an offset and Fortran-ordered like nibabel's arrays, must not
    change a single value."""
    pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(11)
    pred, ref = _label_volume(rng)
    tight = evaluate_labels(pred, ref, spacing=SPACING_3D, label_ids=range(1, 7))
    big_p = np.zeros((90, 70, 40), np.int16)
    big_r = np.zeros_like(big_p)
    big_p[30:70, 20:56, 17:29] = pred
    big_r[30:70, 20:56, 17:29] = ref
    wide = evaluate_labels(
        np.asfortranarray(big_p), np.asfortranarray(big_r), spacing=SPACING_3D, label_ids=range(1, 7)
    )
    for t, w in zip(tight.rows, wide.rows):
        for f in ("dsc", "rve_percent", "hd_mm", "hd95_mm", "assd_mm", "vol_pred_ml", "vol_ref_ml"):
            tv, wv = getattr(t, f), getattr(w, f)
            assert (math.isnan(tv) and math.isnan(wv)) or abs(tv - wv) <= 1e-9, (t.index, f, tv, wv)
        assert t.flag == w.flag
    # The per-label path (one pass over the map) equals the per-mask path (cropped to the masks).
    for r in tight.rows:
        if r.flag == FLAG_OK:
            got = surface_distance_metrics(pred == r.index, ref == r.index, SPACING_3D)
            np.testing.assert_allclose((r.hd_mm, r.hd95_mm, r.assd_mm), got, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- against medpy
def _check_against_medpy(mb, name, a, b, spacing):
    got = surface_distance_metrics(a, b, spacing)
    want = (mb.hd(a, b, spacing), mb.hd95(a, b, spacing), mb.assd(a, b, spacing))
    for metric, g, w in zip(("hd", "hd95", "assd"), got, want):
        assert abs(g - w) <= TOL, f"{name}: {metric} {g} != medpy {w}"
    assert abs(dice(a, b) - mb.dc(a, b)) <= TOL, name
    # The single-metric functions return the same values as the combined one.
    assert hausdorff(a, b, spacing) == got[0]
    assert hd95(a, b, spacing) == got[1]
    assert assd(a, b, spacing) == got[2]


@pytest.mark.parametrize("case", _shaped_pairs(), ids=lambda c: c[0])
def test_shaped_masks_match_medpy(mb, case):
    _check_against_medpy(mb, *case)


def test_random_masks_match_medpy_in_1d_2d_3d(mb):
    rng = np.random.default_rng(20261123)
    cases = _random_pairs(rng, 40, 3) + _random_pairs(rng, 40, 2) + _random_pairs(rng, 10, 1)
    for case in cases:
        _check_against_medpy(mb, *case)


def test_2d_shapes_with_anisotropic_pixels_match_medpy(mb):
    s = (60, 45)
    a = _ellipsoid(s, (30, 20), (20, 9))
    b = _ellipsoid(s, (28, 24), (18, 12)) | _ellipsoid(s, (5, 40), (3, 3))
    _check_against_medpy(mb, "2D ellipses", a, b, (0.45, 2.5))


def test_surface_matches_medpy_definition(mb):
    ndi = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    mask = rng.random((12, 11, 9)) < 0.6
    cross = ndi.generate_binary_structure(3, 1)
    want = mask ^ ndi.binary_erosion(mask, structure=cross, iterations=1)
    np.testing.assert_array_equal(surface(mask), want)


@pytest.mark.parametrize("layout", ["C", "F"])
def test_evaluate_labels_per_label_values_match_medpy(mb, layout):
    rng = np.random.default_rng(11)
    pred, ref = _label_volume(rng)
    if layout == "F":  # nibabel's arrays; the metrics walk them transposed
        pred, ref = np.asfortranarray(pred), np.asfortranarray(ref)
    res = evaluate_labels(pred, ref, spacing=SPACING_3D, labels=default_label_table())
    voxel_ml = float(np.prod(SPACING_3D)) / 1000.0
    rows = {r.index: r for r in res.rows}
    assert sorted(rows) == list(range(1, 38))
    for i in (1, 2, 6):  # 6 touches the border of the volume
        a, b = pred == i, ref == i
        r = rows[i]
        assert r.flag == FLAG_OK
        assert r.name == default_label_table()[i].name
        assert abs(r.dsc - mb.dc(a, b)) <= TOL
        assert abs(r.hd_mm - mb.hd(a, b, SPACING_3D)) <= TOL
        assert abs(r.hd95_mm - mb.hd95(a, b, SPACING_3D)) <= TOL
        assert abs(r.assd_mm - mb.assd(a, b, SPACING_3D)) <= TOL
        assert r.vol_pred_ml == pytest.approx(a.sum() * voxel_ml, rel=1e-12)
        assert r.vol_ref_ml == pytest.approx(b.sum() * voxel_ml, rel=1e-12)
        assert r.rve_percent == pytest.approx(100.0 * (a.sum() - b.sum()) / b.sum(), rel=1e-12)


def test_phantom_pair_matches_medpy_on_every_muscle(mb):
    """The benchmark's pair at a small size: 37 muscles, both legs, anisotropic voxels."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "benchmarks"))
    from _eval_pair import make_pair

    pred, ref, spacing = make_pair((64, 64), 16, seed=4)
    res = evaluate_labels(pred, ref, spacing=spacing, labels=default_label_table())
    checked = 0
    for r in res.rows:
        a, b = pred == r.index, ref == r.index
        if r.flag != FLAG_OK:
            continue
        got = (r.dsc, r.hd_mm, r.hd95_mm, r.assd_mm)
        want = (mb.dc(a, b), mb.hd(a, b, spacing), mb.hd95(a, b, spacing), mb.assd(a, b, spacing))
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL, err_msg=r.code)
        checked += 1
    assert checked >= 20


# ----------------------------------------------------------------------------- absent labels, outputs
def test_absent_labels_are_flagged_not_raised_and_mean_ignores_nan():
    rng = np.random.default_rng(11)
    pred, ref = _label_volume(rng)
    res = evaluate_labels(pred, ref, spacing=SPACING_3D, label_ids=[1, 2, 3, 4, 5])
    rows = {r.index: r for r in res.rows}
    missing = rows[4]
    assert missing.flag == FLAG_MISSING_IN_PREDICTION
    assert missing.dsc == 0.0 and missing.rve_percent == -100.0
    assert all(math.isnan(x) for x in (missing.hd_mm, missing.hd95_mm, missing.assd_mm))
    extra = rows[5]
    assert extra.flag == FLAG_MISSING_IN_REFERENCE
    assert extra.dsc == 0.0 and math.isnan(extra.rve_percent) and math.isnan(extra.hd_mm)
    assert extra.vol_pred_ml > 0 and extra.vol_ref_ml == 0
    absent = rows[3]
    assert absent.flag == FLAG_ABSENT_IN_BOTH
    assert math.isnan(absent.dsc) and math.isnan(absent.hd95_mm) and absent.vol_pred_ml == 0
    m = res.mean
    assert m.n_labels == 4  # label 3 is absent from both maps and left out of the mean
    assert m.counts["dsc"] == 4 and m.counts["hd_mm"] == 2 and m.counts["rve_percent"] == 3
    assert m.dsc == pytest.approx(np.mean([rows[i].dsc for i in (1, 2, 4, 5)]))
    assert m.hd_mm == pytest.approx(np.mean([rows[1].hd_mm, rows[2].hd_mm]))


def test_binary_distances_on_empty_masks_return_nan():
    empty = np.zeros((5, 5), bool)
    some = empty.copy()
    some[2, 2] = True
    for f in (hausdorff, hd95, assd):
        assert math.isnan(f(some, empty, (1.0, 1.0)))
        assert math.isnan(f(empty, some, (1.0, 1.0)))
        assert math.isnan(f(empty, empty, (1.0, 1.0)))


def test_bad_inputs_raise_input_error():
    a = np.zeros((4, 4), np.uint8)
    with pytest.raises(InputError, match="shape"):
        evaluate_labels(a, np.zeros((4, 5), np.uint8), spacing=(1, 1))
    with pytest.raises(InputError, match="non-integer"):
        evaluate_labels(a + 0.5, a, spacing=(1, 1))
    with pytest.raises(InputError, match="negative"):
        evaluate_labels(a.astype(np.int8) - 1, a, spacing=(1, 1))
    with pytest.raises(InputError, match="spacing"):
        evaluate_labels(a, a, spacing=(1.0, 0.0))
    with pytest.raises(InputError, match="shape"):
        hausdorff(np.ones((3, 3), bool), np.ones((3, 4), bool))


def test_json_and_csv_outputs():
    rng = np.random.default_rng(11)
    pred, ref = _label_volume(rng)
    res = evaluate_labels(pred, ref, spacing=SPACING_3D, label_ids=[1, 3, 4])
    data = json.loads(res.to_json())  # strict JSON: NaN must have become null
    assert [r["index"] for r in data["labels"]] == [1, 3, 4]
    assert data["labels"][1]["dsc"] is None and data["labels"][1]["flag"] == FLAG_ABSENT_IN_BOTH
    assert data["labels"][0]["hd95_mm"] == pytest.approx(res.rows[0].hd95_mm)
    assert data["mean"]["n_labels"] == 2 and data["spacing_mm"] == list(SPACING_3D)
    lines = res.to_csv().strip().splitlines()
    assert lines[0].split(",")[:4] == ["index", "name", "code", "dsc"]
    assert len(lines) == 1 + 3 + 1 and lines[-1].split(",")[1] == "mean"


# ----------------------------------------------------------------------------- files
def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_evaluate_files_uses_affine_spacing_and_volume(tmp_path):
    rng = np.random.default_rng(5)
    pred, ref = _label_volume(rng)
    # Oblique grid: voxel sizes are the column lengths of the affine, not its diagonal.
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(SPACING_3D)
    affine[:3, 3] = (-20.0, 5.0, 12.0)
    p = _save(tmp_path / "pred.nii.gz", pred, affine)
    r = _save(tmp_path / "ref.nii.gz", ref, affine)
    res = evaluate_files(p, r, labels=default_label_table())
    np.testing.assert_allclose(res.spacing, SPACING_3D, atol=1e-6)
    row = res.rows[0]
    want = evaluate_labels(pred, ref, spacing=SPACING_3D, label_ids=[1]).rows[0]
    assert abs(row.hd_mm - want.hd_mm) <= 1e-5  # header stores float32
    assert row.vol_ref_ml == pytest.approx((ref == 1).sum() * np.prod(SPACING_3D) / 1000, rel=1e-6)


def test_evaluate_files_match_medpy_on_anisotropic_grid(tmp_path, mb):
    rng = np.random.default_rng(5)
    pred, ref = _label_volume(rng)
    affine = np.diag([*SPACING_3D, 1.0])
    res = evaluate_files(_save(tmp_path / "p.nii.gz", pred, affine), _save(tmp_path / "r.nii.gz", ref, affine))
    for row in res.rows:
        if row.flag == FLAG_OK:
            a, b = pred == row.index, ref == row.index
            assert abs(row.hd95_mm - mb.hd95(a, b, SPACING_3D)) <= TOL
            assert abs(row.assd_mm - mb.assd(a, b, SPACING_3D)) <= TOL


@pytest.mark.parametrize(
    "change, words",
    [
        ("shape", "shapes differ"),
        ("voxel", "voxel sizes differ"),
        ("flip", "orientations differ"),
        ("origin", "origins differ by 2.5 mm"),
    ],
)
def test_evaluate_files_refuses_mismatched_grids(tmp_path, change, words):
    ref = np.zeros((10, 9, 4), np.uint8)
    ref[2:6, 3:7, 1:3] = 1
    affine = np.diag(list(SPACING_3D) + [1.0])
    pred, aff_p = ref.copy(), affine.copy()
    if change == "shape":
        pred = np.zeros((10, 9, 5), np.uint8)
    elif change == "voxel":
        aff_p[1, 1] = 1.4
    elif change == "flip":
        aff_p[0, 0] = -aff_p[0, 0]
    else:
        aff_p[2, 3] = 2.5
    p = _save(tmp_path / "pred.nii.gz", pred, aff_p)
    r = _save(tmp_path / "ref.nii.gz", ref, affine)
    with pytest.raises(InputError, match=words) as err:
        evaluate_files(p, r)
    assert "\n" not in str(err.value)


def test_evaluate_files_accepts_tiny_affine_differences_and_singleton_4d(tmp_path):
    ref = np.zeros((10, 9, 4), np.uint8)
    ref[2:6, 3:7, 1:3] = 1
    affine = np.diag(list(SPACING_3D) + [1.0])
    aff_p = affine.copy()
    aff_p[0, 3] += 1e-5  # float32 round-trip noise, not a different grid
    p = _save(tmp_path / "pred.nii.gz", ref[..., None], aff_p)
    r = _save(tmp_path / "ref.nii.gz", ref, affine)
    res = evaluate_files(p, r)
    assert [row.index for row in res.rows] == [1] and res.rows[0].dsc == 1.0 and res.rows[0].hd_mm == 0.0


def test_evaluate_files_missing_and_corrupt_inputs(tmp_path):
    ref = _save(tmp_path / "ref.nii.gz", np.ones((3, 3, 3), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="not found"):
        evaluate_files(tmp_path / "nope.nii.gz", ref)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match="not a NIfTI"):
        evaluate_files(bad, ref)


# ----------------------------------------------------------------------------- without the eval extra
_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("scipy", "torch", "medpy"):
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
"""


def test_overlap_metrics_run_without_scipy_and_distances_name_the_extra():
    code = _BLOCK + textwrap.dedent(
        """
        import numpy as np
        from limbseg_rt.runtime.report.metrics import evaluate_labels, label_counts
        from limbseg_rt.runtime.report.distance import EvalExtraMissing
        ref = np.zeros((9, 8, 5), np.uint8); ref[2:6, 2:6, 1:4] = 1
        pred = np.roll(ref, 1, axis=0)
        d = label_counts(pred, ref).dice()[1]
        assert 0 < d < 1, d
        res = evaluate_labels(pred, ref, spacing=(0.7, 1.3, 5.0), label_ids=[2])  # no distances needed
        assert res.rows[0].flag == "absent_in_both"
        try:
            evaluate_labels(pred, ref, spacing=(0.7, 1.3, 5.0))
        except EvalExtraMissing as exc:
            print(exc.exit_code, exc)
        assert not any(m.split(".")[0] in ("scipy", "torch") for m in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip()
        == '12 surface distances (HD, HD95, ASSD) need scipy, which is not installed: pip install "limbseg-rt[eval]"'
    )
