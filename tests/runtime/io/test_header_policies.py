"""Header fields decided at read time (issue 17, "Other"): units, xform codes, vox_offset, float range.

Files are written by nibabel and then patched byte by byte where nibabel would refuse to write the
odd value (NIfTI-1 offsets: vox_offset float32 at 108, xyzt_units char at 123, qform_code int16 at
252, sform_code int16 at 254).
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io import labelio
from limbseg_rt.runtime.io.nifti import read_image
from limbseg_rt.runtime.model.labels import default_label_table

SHAPE = (12, 10, 4)


def _scan(path: Path, affine=None, data=None, units="mm") -> Path:
    arr = data if data is not None else (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 50).astype(np.int16)
    img = nib.Nifti1Image(arr, affine if affine is not None else np.diag([1.5, 1.5, 4.0, 1.0]))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units(units, "sec")
    nib.save(img, str(path))
    return path


def _patch(path: Path, offset: int, fmt: str, value) -> Path:
    raw = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return path


def test_positions_in_metres_are_converted_to_mm(tmp_path):
    mm = _scan(tmp_path / "mm.nii", np.diag([1.5, 1.5, 4.0, 1.0]))
    m = _scan(tmp_path / "m.nii", np.diag([0.0015, 0.0015, 0.004, 1.0]), units="meter")
    _, p_mm = read_image(mm)
    _, p_m = read_image(m)
    assert p_m.voxel_volume_mm3 == pytest.approx(p_mm.voxel_volume_mm3, rel=1e-6)
    assert p_m.spacing == pytest.approx(p_mm.spacing, rel=1e-6)
    assert any("converted to mm" in w for w in p_m.warnings)
    # The label file keeps the file's own units and geometry (and passes its read-back check).
    labels = np.zeros(p_m.canonical_shape, np.uint8)
    out = labelio.write_labels(labels, tmp_path / "m_labels.nii", p_m, table=default_label_table(), descriptions=False)
    back = nib.load(out.labels)
    assert back.header.get_xyzt_units()[0] == "meter"
    assert np.array_equal(back.header.get_sform(), nib.load(m).header.get_sform())


def test_microns_and_unknown_unit_codes(tmp_path):
    um = _scan(tmp_path / "um.nii", np.diag([1500.0, 1500.0, 4000.0, 1.0]), units="micron")
    assert read_image(um)[1].spacing == pytest.approx((1.5, 1.5, 4.0))
    bad = _patch(_scan(tmp_path / "bad.nii"), 123, "B", 6)
    with pytest.raises(InputError, match="spatial unit code"):
        read_image(bad)


@pytest.mark.parametrize("offset", [252, 254])
def test_xform_codes_out_of_range_are_refused_at_read_time(tmp_path, offset):
    path = _patch(_scan(tmp_path / "s.nii"), offset, "h", 99)
    with pytest.raises(InputError, match=r"is 99, not a NIfTI code"):
        read_image(path)


def test_a_vox_offset_inside_the_header_is_read_and_the_labels_still_write(tmp_path):
    path = _patch(_scan(tmp_path / "s.nii"), 108, "f", 100.0)
    _, props = read_image(path)
    assert any("vox_offset 100" in w for w in props.warnings)
    labels = np.ones(props.canonical_shape, np.uint8)
    out = labelio.write_labels(
        labels, tmp_path / "s_labels.nii.gz", props, table=default_label_table(), descriptions=False
    )
    assert np.all(np.asarray(nib.load(out.labels).dataobj) == 1)


def test_finite_values_beyond_float32_are_not_called_nan(tmp_path):
    data = np.ones(SHAPE, np.float64)
    data[:, :5] = 1e300
    path = _scan(tmp_path / "big.nii", data=data)
    with pytest.raises(InputError, match="exceed the float32 range") as err:
        read_image(path)
    assert "NaN" not in str(err.value)


def test_a_huge_slope_is_named(tmp_path):
    path = _scan(tmp_path / "s.nii")
    img = nib.load(path)
    img.header.set_slope_inter(1e37, 0.0)
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.int16), img.affine, img.header), str(tmp_path / "slope.nii")
    )
    raw = tmp_path / "slope.nii"
    _patch(raw, 112, "f", 1e37)  # scl_slope; nibabel rescales on save otherwise
    with pytest.raises(InputError, match="scl_slope 1e\\+37 exceed the float32 range"):
        read_image(raw)


def test_real_nan_is_still_reported_as_nan(tmp_path):
    data = np.ones(SHAPE, np.float32)
    data[:, :8] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(_scan(tmp_path / "nan.nii", data=data))
