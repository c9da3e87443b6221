"""Orientation, canonical reorientation and its exact inverse (runtime/io/geometry.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io import geometry

ORIENTATIONS = geometry.all_orientations()
SHAPE = (5, 6, 7)  # distinct lengths so a wrong permutation cannot go unnoticed


def _affine_for(ornt, spacing=(0.8, 1.1, 3.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = 0.0
    for axis, (w, s) in enumerate(ornt):
        a[w, axis] = s * spacing[axis]
    a[:3, 3] = origin
    return a


def _rotation_x(deg: float) -> np.ndarray:
    t = math.radians(deg)
    r = np.eye(4)
    r[1:3, 1:3] = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    return r


def test_there_are_48_distinct_orientations():
    assert len(set(ORIENTATIONS)) == 48
    assert len({geometry.axcodes(o) for o in ORIENTATIONS}) == 48


@pytest.mark.parametrize("ornt", ORIENTATIONS, ids=lambda o: "".join(geometry.axcodes(o)))
def test_canonical_round_trip_is_exact_for_every_orientation(ornt):
    rng = np.random.default_rng(abs(hash(ornt)) % 2**32)
    vol = rng.standard_normal(SHAPE).astype(np.float32)
    affine = _rotation_x(7.0) @ _affine_for(ornt)  # mildly oblique: orientation must still be found
    assert geometry.ornt_from_affine(affine) == ornt

    canon = geometry.canonical_array(vol, ornt)
    assert canon.shape == geometry.canonical_shape(SHAPE, ornt)
    back = geometry.input_array(np.ascontiguousarray(canon), ornt)
    assert back.shape == vol.shape
    assert np.array_equal(back, vol)

    # Every canonical voxel sits at the same world point as the input voxel it came from.
    c_aff = geometry.canonical_affine(affine, SHAPE, ornt)
    m = geometry.canonical_index_map(SHAPE, ornt)
    for c in [(0, 0, 0), tuple(s - 1 for s in canon.shape), (1, 2, 3)]:
        i = (m @ np.array([*c, 1.0]))[:3].astype(int)
        assert canon[c] == vol[tuple(i)]
        np.testing.assert_allclose(c_aff @ [*c, 1.0], affine @ [*i, 1.0], atol=1e-9)
    # The canonical grid is RAS+: each canonical axis runs towards +x, +y, +z.
    assert geometry.ornt_from_affine(c_aff) == ((0, 1), (1, 1), (2, 1))
    # Inverse of the affine map too: canonical affine composed with the inverse index map is the input affine.
    np.testing.assert_allclose(c_aff @ np.linalg.inv(m), affine, atol=1e-12)


def test_canonical_slice_zero_is_most_inferior():
    ornt = geometry.ornt_from_axcodes("LPI")  # z index grows downwards in the file
    aff = _affine_for(ornt)
    c_aff = geometry.canonical_affine(aff, SHAPE, ornt)
    z0 = (c_aff @ [0, 0, 0, 1])[2]
    z1 = (c_aff @ [0, 0, 1, 1])[2]
    assert z0 < z1
    assert geometry.slice_axis(ornt) == 2


def test_slice_axis_follows_superior_inferior():
    ornt = geometry.ornt_from_axcodes("SRA")  # sagittal-stored: first axis runs superior
    assert geometry.slice_axis(ornt) == 0
    assert geometry.canonical_shape((10, 20, 30), ornt) == (20, 30, 10)


def test_axcodes_round_trip_and_validation():
    for ornt in ORIENTATIONS:
        assert geometry.ornt_from_axcodes("".join(geometry.axcodes(ornt))) == ornt
    assert geometry.axcodes(geometry.ornt_from_axcodes("las")) == ("L", "A", "S")
    for bad in ("RRS", "RA", "XYZ", "RASP"):
        with pytest.raises(ValueError):
            geometry.ornt_from_axcodes(bad)


def test_affine_from_axcodes_points_axes_as_named():
    a = geometry.affine_from_axcodes((0.5, 0.6, 4.0), "LPS", shape=(11, 11, 11))
    assert geometry.axcodes(geometry.ornt_from_affine(a)) == ("L", "P", "S")
    assert geometry.voxel_spacing(a) == pytest.approx((0.5, 0.6, 4.0))
    np.testing.assert_allclose(a @ [5, 5, 5, 1], [0, 0, 0, 1])  # grid centred on the origin


def test_tilt_angle_of_an_oblique_slice_axis():
    aff = _rotation_x(12.5) @ _affine_for(geometry.ornt_from_axcodes("RAS"))
    assert geometry.axis_tilt_degrees(aff, 2) == pytest.approx(12.5, abs=1e-9)
    assert geometry.axis_tilt_degrees(aff, 0) == pytest.approx(0.0, abs=1e-9)
    assert geometry.axis_tilt_degrees(np.diag([1.0, 2.0, 3.0, 1.0]), 2) == 0.0


def test_check_affine_accepts_oblique_and_rejects_shear_and_degenerate():
    # Scaling applied after a rotation bends the axes away from 90 degrees: that is shear.
    with pytest.raises(InputError, match="sheared"):
        geometry.check_affine(np.diag([1.0, 1.0, 3.0, 1.0]) @ _rotation_x(30), source="x.nii")
    oblique = _rotation_x(30) @ np.diag([1.0, 1.0, 3.0, 1.0])
    np.testing.assert_array_equal(geometry.check_affine(oblique, source="x.nii"), oblique)

    sheared = np.diag([1.0, 1.0, 3.0, 1.0])
    sheared[0, 2] = 0.3  # slice axis leans along x while the x axis does not move: a gantry tilt
    with pytest.raises(InputError, match=r"x\.nii: the sform is sheared .*resample"):
        geometry.check_affine(sheared, source="x.nii", form="sform")

    degenerate = np.diag([1.0, 0.0, 3.0, 1.0])
    with pytest.raises(InputError, match="degenerate"):
        geometry.check_affine(degenerate, source="x.nii")
    parallel = np.eye(4)
    parallel[:3, 1] = parallel[:3, 0]
    with pytest.raises(InputError, match="degenerate"):
        geometry.check_affine(parallel, source="x.nii")
    with pytest.raises(InputError, match="NaN"):
        geometry.check_affine(np.full((4, 4), np.nan), source="x.nii")


def test_float32_rounding_is_not_shear():
    aff = (_rotation_x(17) @ np.diag([0.7, 0.7, 5.0, 1.0])).astype(np.float32).astype(np.float64)
    geometry.check_affine(aff, source="x.nii")


class _Props:
    def __init__(self, shape, ornt):
        self.shape, self.ornt = shape, ornt


def test_to_and_from_canonical_check_shapes():
    ornt = geometry.ornt_from_axcodes("PIR")
    props = _Props(SHAPE, ornt)
    vol = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    canon = geometry.to_canonical(vol, props)
    assert np.array_equal(geometry.from_canonical(canon, props), vol)
    with pytest.raises(ValueError):
        geometry.to_canonical(canon, props)
    with pytest.raises(ValueError):
        geometry.from_canonical(vol, props)
