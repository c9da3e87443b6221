"""Geometry per muscle and side against shapes whose numbers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from limbseg_rt.runtime.analysis.geometry import asymmetry_percent
from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom.generate import canonical_affine

TABLE = default_label_table()
NO_FAT = AnalysisOptions(clean=False, imat=False)


def _two_cylinders(spacing=(0.5, 0.5, 4.0), shape=(240, 120, 30), r_mm=(20.0, 16.0), z=(5, 24)):
    """Label 1 as a cylinder in each leg (right leg at +x), body signal around both."""
    nx, ny, nz = shape
    x = (np.arange(nx) - (nx - 1) / 2) * spacing[0]
    y = (np.arange(ny) - (ny - 1) / 2) * spacing[1]
    X, Y = np.meshgrid(x, y, indexing="ij")
    lab = np.zeros(shape, np.uint8)
    img = np.zeros(shape, np.float32)
    for cx, r in ((30.0, r_mm[0]), (-30.0, r_mm[1])):
        leg = (X - cx) ** 2 + Y**2 <= (r + 6) ** 2
        cyl = (X - cx) ** 2 + Y**2 <= r**2
        img[leg, :] = 1000.0
        img[cyl, :] = 300.0
        lab[:, :, z[0] : z[1] + 1][cyl] = 1
    return lab, img, spacing


def test_acsa_length_and_centroid_of_cylinders_are_exact():
    lab, img, sp = _two_cylinders()
    an = analyse(lab, img, sp, canonical_affine(lab.shape, sp), float(np.prod(sp)), TABLE, NO_FAT)
    rec = {r.side: r for r in an.records}
    assert set(rec) == {"R", "L"}
    for side, r_mm in (("R", 20.0), ("L", 16.0)):
        r = rec[side]
        xs = np.arange(lab.shape[0]) - (lab.shape[0] - 1) / 2
        half = (xs > 0) if side == "R" else (xs < 0)
        voxels_slice = int(lab[half, :, 10].sum())
        assert r.acsa_profile_mm2 == tuple([voxels_slice * 0.25] * 20)  # every slice, exactly
        assert r.max_acsa_mm2 == pytest.approx(np.pi * r_mm**2, rel=0.01)  # the disc, to its pixels
        assert r.length_mm == 20 * 4.0 and (r.z_first, r.z_last) == (5, 24)
        assert r.volume_ml == pytest.approx(voxels_slice * 20 * 0.5 * 0.5 * 4.0 / 1000)
        assert r.centroid_mm[0] == pytest.approx(30.0 if side == "R" else -30.0, abs=0.3)
        assert r.centroid_mm[2] == pytest.approx(((5 + 24) / 2 - (30 - 1) / 2) * 4.0)
        assert not (r.volume_lower_bound or r.length_lower_bound or r.max_acsa_unreliable)
    a = an.asymmetry[0]
    assert a.volume_percent == pytest.approx(asymmetry_percent(rec["R"].volume_ml, rec["L"].volume_ml))
    assert a.volume_percent == pytest.approx((400 - 256) / 328 * 100, rel=0.02)


def test_max_acsa_position_on_a_cone_and_edge_flags():
    sp = (1.0, 1.0, 5.0)
    nx, ny, nz = 200, 100, 20
    X, Y = np.meshgrid(np.arange(nx) - 99.5, np.arange(ny) - 49.5, indexing="ij")
    lab = np.zeros((nx, ny, nz), np.uint8)
    img = np.zeros((nx, ny, nz), np.float32)
    for cx in (45.0, -45.0):
        img[(X - cx) ** 2 + Y**2 <= 40**2, :] = 1000
    for z in range(0, 12):  # widest at z = 3, touching the first slice (z = 0)
        r = 30 - 2.5 * abs(z - 3)
        for cx in (45.0, -45.0):
            lab[(X - cx) ** 2 + Y**2 <= r**2, z] = 2
    an = analyse(lab, img, sp, np.diag([1, 1, 5, 1.0]), 5.0, TABLE, NO_FAT)
    r = an.records[0]
    assert (r.z_first, r.z_last, r.max_acsa_z) == (0, 11, 3)
    assert r.max_acsa_position_mm == (11 - 3) * 5.0  # from the most proximal slice (z = 11)
    assert r.max_acsa_position_fraction == pytest.approx(8 / 11)
    assert r.acsa_profile_mm2[0] == pytest.approx(np.pi * 10**2, rel=0.03)  # proximal end first
    assert r.acsa_profile_mm2[-1] == pytest.approx(np.pi * 22.5**2, rel=0.03)
    assert r.volume_lower_bound and r.length_lower_bound and not r.max_acsa_unreliable
    lab2 = lab.copy()
    lab2[:, :, 0] = np.where(lab[:, :, 3] > 0, 2, 0)  # now the largest slice is the edge slice
    lab2[:, :, 3] = lab[:, :, 4]
    r2 = analyse(lab2, img, sp, np.diag([1, 1, 5, 1.0]), 5.0, TABLE, NO_FAT).records[0]
    assert r2.max_acsa_z == 0 and r2.max_acsa_unreliable


def test_oblique_scans_say_areas_are_in_the_slice_plane():
    lab, img, sp = _two_cylinders()
    an = analyse(lab, img, sp, np.eye(4), 1.0, TABLE, NO_FAT, tilt_deg=12.0)
    assert "12.0 degrees" in an.geometry_info["acsa_plane"] and an.geometry_info["tilt_deg"] == 12.0


def test_left_and_right_volumes_of_the_phantom_truth_add_up_exactly(phantom7):
    ph, truth = phantom7["ph"], phantom7["sides"]
    vox = float(np.prod(ph.spacing))
    an = analyse(ph.labels, ph.image, ph.spacing, canonical_affine(ph.labels.shape, ph.spacing), vox, TABLE, NO_FAT)
    by = {(r.index, r.side): r for r in an.records}
    for lb in TABLE.muscles:
        total = int((ph.labels == lb.index).sum())
        for side, code in (("R", 1), ("L", 2)):
            true_vox = int(((ph.labels == lb.index) & (truth == code)).sum())
            got = by.get((lb.index, side))
            assert (got.voxels if got else 0) == true_vox, (lb.code, side)
        assert sum(by[(lb.index, s)].voxels for s in "RL" if (lb.index, s) in by) == total
    for a in an.asymmetry:  # from the true per-side volumes
        r, left = (int(((ph.labels == a.index) & (truth == c)).sum()) for c in (1, 2))
        assert a.volume_percent == pytest.approx((r - left) / ((r + left) / 2) * 100)


def test_asymmetry_formula():
    assert asymmetry_percent(110.0, 90.0) == pytest.approx(20.0)
    assert asymmetry_percent(90.0, 110.0) == pytest.approx(-20.0)
    assert asymmetry_percent(None, 3.0) is None and asymmetry_percent(0.0, 0.0) is None
