"""Reading NIfTI into a canonical volume (runtime/io/nifti.py): every refusal and every fix-up.

Corrupt files are made here from small valid ones (byte patches of the header, cut or flipped
gzip streams); the real files are nibabel's bundled test data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.io.nifti import GIB, ReadOptions, from_nibabel, read_image, read_raw

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
SHAPE = (6, 7, 8)
# NIfTI-1 header byte offsets (little-endian files written by nibabel on this machine).
DIM, PIXDIM, VOX_OFFSET, SCL_SLOPE = 40, 76, 108, 112  # SCL_INTER follows at 116
QFORM_CODE, MAGIC = 252, 344  # SFORM_CODE follows at 254


def _volume(shape=SHAPE, dtype=np.int16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=shape).astype(dtype)


def _image(data, affine=None, *, version=1, qform=None, sform=None):
    """A nibabel image; ``qform``/``sform`` = (affine, code) to set them independently."""
    klass = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    if affine is None and qform is None and sform is None:
        affine = np.diag([1.0, 1.2, 3.0, 1.0])
    img = klass(data, affine)
    if qform is not None or sform is not None:
        hdr = img.header
        hdr.set_qform(*(qform or (None, 0)))
        hdr.set_sform(*(sform or (None, 0)))
        hdr.set_zooms(hdr.get_zooms())
        img = klass(data, None, hdr)
    return img


def _nii_bytes(img) -> bytearray:
    return bytearray(img.to_bytes())


def _save(tmp_path: Path, name: str, raw: bytes, *, gz: bool | None = None, level: int = 6) -> Path:
    path = tmp_path / name
    if gz is None:
        gz = name.endswith(".gz")
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=level) if gz else bytes(raw))
    return path


def _patch(raw: bytearray, offset: int, fmt: str, *values) -> bytearray:
    struct.pack_into("<" + fmt, raw, offset, *values)
    return raw


def _input_error(path, match: str, **options) -> str:
    with pytest.raises(InputError, match=match) as info:
        read_image(path, options=ReadOptions(**options))
    msg = str(info.value)
    assert "\n" not in msg, "messages are one line"
    assert str(path) in msg, "messages name the file"
    return msg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- real files (nibabel's test data) --------------------------------------------------------------


def test_anatomical_big_endian_las_reads_and_round_trips_exactly():
    path = NIB_DATA / "anatomical.nii"
    before = _sha(path)
    vol, props = read_image(path)
    raw = nib.load(path)
    assert raw.header.get_data_dtype().byteorder == ">"  # the file really is big-endian
    assert vol.dtype == np.float32 and vol.dtype.isnative
    assert props.orientation == ("L", "A", "S")
    assert props.shape == (33, 41, 25) and vol.shape == (33, 41, 25)
    assert props.voxel_volume_mm3 == pytest.approx(8.0)
    back = geometry.from_canonical(vol, props)
    assert np.array_equal(back, np.asarray(raw.dataobj).astype(np.float32))
    np.testing.assert_array_equal(props.affine, raw.affine)
    assert props.affine.dtype == np.float64 and props.affine.shape == (4, 4)
    # Canonical x runs to the right: the LAS file's first column is the canonical last one.
    assert np.array_equal(vol[0], np.asarray(raw.dataobj)[-1].astype(np.float32))
    assert _sha(path) == before


def test_example4d_needs_a_volume_and_reports_its_tilt():
    path = NIB_DATA / "example4d.nii.gz"
    msg = _input_error(path, r"4D with 2 volumes .*--volume")
    assert "0..1" in msg
    vol, props = read_image(path, options=ReadOptions(volume_index=1))
    assert props.shape == (128, 96, 24) and props.file_shape == (128, 96, 24, 2)
    assert props.volume_index == 1
    assert 5.0 < props.tilt_deg < 15.0  # the slice axis is rotated about x (about 9.3 degrees)
    expected = np.asarray(nib.load(path).dataobj[..., 1]).astype(np.float32)
    assert np.array_equal(geometry.from_canonical(vol, props), expected)
    _input_error(path, "volume 2 does not exist", volume_index=2)


def test_standard_uses_the_sform_when_qform_code_is_zero():
    img = nib.load(NIB_DATA / "standard.nii.gz")
    assert img.header["qform_code"] == 0 and img.header["sform_code"] == 2
    vol, props = read_image(NIB_DATA / "standard.nii.gz")
    assert props.affine_source == "sform"
    np.testing.assert_array_equal(props.affine, img.header.get_sform())
    assert props.spacing == pytest.approx((1.0, 3.0, 2.0))
    assert props.canonical_spacing == pytest.approx((1.0, 3.0, 2.0))


def test_nifti2_reads():
    path = NIB_DATA / "example_nifti2.nii.gz"
    vol, props = read_image(path, options=ReadOptions(volume_index=0))
    assert props.nifti_version == 2
    assert vol.shape == (32, 20, 12)
    expected = np.asarray(nib.load(path).dataobj[..., 0]).astype(np.float32)
    assert np.array_equal(geometry.from_canonical(vol, props), expected)


# -- names, magic and gzip -------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    _input_error(tmp_path / "nope.nii.gz", "file not found")
    _input_error(tmp_path, "is a folder")


def test_uncompressed_file_named_nii_gz(tmp_path):
    path = _save(tmp_path, "scan.nii.gz", _nii_bytes(_image(_volume())), gz=False)
    _input_error(path, r"not gzip-compressed; rename it to end in \.nii$")


def test_compressed_file_named_nii(tmp_path):
    path = _save(tmp_path, "scan.nii", _nii_bytes(_image(_volume())), gz=True)
    _input_error(path, r"gzip-compressed but named \.nii; rename it to end in \.nii\.gz")


def test_nifti_with_another_extension(tmp_path):
    path = _save(tmp_path, "scan.dat", _nii_bytes(_image(_volume())), gz=False)
    _input_error(path, r"rename it to end in \.nii$")


def test_png_renamed_to_nii_gz(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(600)
    _input_error(_save(tmp_path, "scan.nii.gz", png, gz=False), "is a PNG picture, not a NIfTI image")
    _input_error(_save(tmp_path, "scan.png", png, gz=False), "PNG")


def test_not_nifti_at_all(tmp_path):
    junk = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    _input_error(_save(tmp_path, "junk.nii", junk), "has no NIfTI header")
    _input_error(_save(tmp_path, "junk.nii.gz", junk), "has no NIfTI header inside the gzip")
    _input_error(_save(tmp_path, "tiny.nii", b"abc"), "has no NIfTI header")
    dicom = bytes(128) + b"DICM" + bytes(400)
    _input_error(_save(tmp_path, "image.nii", dicom), "DICOM")


def test_wrong_header_magic(tmp_path):
    raw = _patch(_nii_bytes(_image(_volume())), MAGIC, "4s", b"xx1\x00")
    _input_error(_save(tmp_path, "bad.nii", raw), "header magic")


def test_hdr_img_pair_header_is_refused(tmp_path):
    raw = _patch(_nii_bytes(_image(_volume())), MAGIC, "4s", b"ni1\x00")
    _input_error(_save(tmp_path, "pair.nii", raw), r"\.hdr/\.img pair")


def test_truncated_gzip(tmp_path):
    gz = gzip.compress(bytes(_nii_bytes(_image(_volume((20, 20, 20))))))
    for cut in (len(gz) // 2, len(gz) - 4, 30):
        path = tmp_path / f"cut{cut}.nii.gz"
        path.write_bytes(gz[:cut])
        _input_error(path, "truncated|damaged")


def test_flipped_byte_in_stored_gzip_is_caught_by_crc(tmp_path):
    # Level 0 stores the data verbatim, so only the CRC32 can notice a changed byte.
    raw = _nii_bytes(_image(_volume((20, 20, 20))))
    gz = bytearray(gzip.compress(bytes(raw), compresslevel=0))
    gz[len(gz) // 2] ^= 0x01
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(gz)
    _input_error(path, r"damaged \(CRC check failed")


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75, 0.95])
def test_flipped_byte_in_deflated_gzip_is_caught(tmp_path, where):
    gz = bytearray(gzip.compress(bytes(_nii_bytes(_image(_volume((20, 20, 20)))))))
    gz[int(len(gz) * where)] ^= 0x10
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(gz)
    _input_error(path, "damaged|truncated")


def test_wrong_gzip_length_field_is_caught(tmp_path):
    gz = bytearray(gzip.compress(bytes(_nii_bytes(_image(_volume())))))
    struct.pack_into("<I", gz, len(gz) - 4, struct.unpack_from("<I", gz, len(gz) - 4)[0] + 1)
    path = tmp_path / "isize.nii.gz"
    path.write_bytes(gz)
    _input_error(path, "damaged")


def test_valid_gzip_of_a_short_file_is_truncated(tmp_path):
    raw = _nii_bytes(_image(_volume()))
    path = _save(tmp_path, "short.nii.gz", raw[:-10])
    _input_error(path, r"truncated: \d+ bytes but the header needs \d+")


def test_uncompressed_file_shorter_than_header_says(tmp_path):
    raw = _nii_bytes(_image(_volume()))
    _input_error(_save(tmp_path, "short.nii", raw[:-1]), r"file is truncated: \d+ bytes")


def test_trailing_bytes_are_reported(tmp_path):
    raw = _nii_bytes(_image(_volume())) + b"\x00" * 12
    _, props = read_image(_save(tmp_path, "extra.nii.gz", raw))
    assert any("12 bytes after the image data" in w for w in props.warnings)


# -- dimensions and datatypes ----------------------------------------------------------------------


@pytest.mark.parametrize("dims", [(3, 6, 0, 8), (3, 6, -7, 8)])
def test_zero_or_negative_dimension(tmp_path, dims):
    raw = _patch(_nii_bytes(_image(_volume())), DIM, "4h", *dims)
    _input_error(_save(tmp_path, "dims.nii", raw), "impossible dimensions")


@pytest.mark.parametrize("ndim", [0, 8, -1])
def test_impossible_number_of_dimensions(tmp_path, ndim):
    raw = _patch(_nii_bytes(_image(_volume())), DIM, "h", ndim)
    _input_error(_save(tmp_path, "ndim.nii", raw), "dimensions")


def test_lying_dimensions_hit_the_memory_limit_before_allocating(tmp_path):
    raw = _patch(_nii_bytes(_image(_volume())), DIM, "4h", 3, 30000, 30000, 30000)
    _input_error(_save(tmp_path, "huge.nii.gz", raw), "above the memory limit of 4.0 GiB")
    small = _save(tmp_path, "small.nii", _nii_bytes(_image(_volume())))
    _input_error(small, "memory limit", max_bytes=100)


def test_absurd_data_offset_is_refused_before_allocating(tmp_path):
    raw = _patch(_nii_bytes(_image(_volume())), VOX_OFFSET, "f", 1e30)
    _input_error(_save(tmp_path, "offset.nii.gz", raw), "puts the image data")
    raw = _patch(_nii_bytes(_image(_volume())), VOX_OFFSET, "f", -4.0)
    _input_error(_save(tmp_path, "negative.nii.gz", raw), r"vox_offset -4\) is invalid")


def test_header_extensions_are_read_and_kept(tmp_path):
    img = _image(_volume())
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"limbseg test extension"))
    vol, props = read_image(_save(tmp_path, "ext.nii.gz", _nii_bytes(img)))
    assert np.array_equal(geometry.from_canonical(vol, props), _volume().astype(np.float32))
    assert [e.get_content() for e in props.header.extensions] == [b"limbseg test extension"]


def test_singleton_dimensions_are_squeezed(tmp_path):
    data = _volume((6, 7, 8, 1))
    vol, props = read_image(_save(tmp_path, "s.nii", _nii_bytes(_image(data))))
    assert props.shape == (6, 7, 8) and props.file_shape == (6, 7, 8, 1)
    assert np.array_equal(vol, data[..., 0].astype(np.float32))
    _input_error(_save(tmp_path, "s1.nii", _nii_bytes(_image(data))), "volume 1 does not exist", volume_index=1)


def test_5d_vector_data_is_refused(tmp_path):
    path = _save(tmp_path, "v.nii", _nii_bytes(_image(_volume((6, 7, 8, 1, 3)))))
    _input_error(path, "vector or 5D")


@pytest.mark.parametrize("shape", [(6, 7), (6, 7, 1)])
def test_single_slice_needs_allow_2d(tmp_path, shape):
    data = _volume(shape)
    path = _save(tmp_path, "slice.nii", _nii_bytes(_image(data)))
    _input_error(path, r"single 2D slice .*--allow-2d")
    vol, props = read_image(path, options=ReadOptions(allow_2d=True))
    assert vol.shape == (6, 7, 1)
    assert np.array_equal(vol[:, :, 0], data.reshape(6, 7).astype(np.float32))


def test_a_line_of_voxels_is_refused_even_with_allow_2d(tmp_path):
    path = _save(tmp_path, "line.nii", _nii_bytes(_image(_volume((9, 1, 1)))))
    _input_error(path, "along one line", allow_2d=True)


@pytest.mark.parametrize(
    "dtype, match", [(np.complex64, "complex64"), (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB colour")]
)
def test_complex_and_rgb_are_refused(tmp_path, dtype, match):
    data = np.zeros(SHAPE, dtype=dtype)
    path = _save(tmp_path, "odd.nii.gz", _nii_bytes(nib.Nifti1Image(data, np.eye(4))))
    _input_error(path, match + " is not a greyscale")


@pytest.mark.parametrize("dtype", [">f4", ">i2", ">u2", "<f8", "u1", "i1", "<i4"])
def test_every_supported_type_becomes_native_float32(tmp_path, dtype):
    data = _volume(dtype=np.int16).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]))
    img.set_data_dtype(np.dtype(dtype))
    path = _save(tmp_path, "t.nii.gz", _nii_bytes(img))
    vol, _ = read_image(path)
    assert vol.dtype == np.dtype(np.float32) and vol.dtype.isnative
    assert vol.flags.f_contiguous
    assert np.array_equal(vol, data.astype(np.float32))


# -- scaling and non-finite voxels ----------------------------------------------------------------


def _scaled(tmp_path, slope, inter, name="scaled.nii"):
    return _save(tmp_path, name, _patch(_nii_bytes(_image(_volume())), SCL_SLOPE, "2f", slope, inter))


def test_slope_and_intercept_are_applied(tmp_path):
    vol, props = read_image(_scaled(tmp_path, 2.0, 10.0))
    assert np.array_equal(vol, _volume().astype(np.float32) * 2 + 10)
    assert props.warnings == ()


@pytest.mark.parametrize("slope", [0.0, float("nan")])
def test_zero_or_nan_slope_means_no_scaling_silently(tmp_path, slope):
    vol, props = read_image(_scaled(tmp_path, slope, 0.0))
    assert np.array_equal(vol, _volume().astype(np.float32))
    assert props.warnings == ()


def test_intercept_ignored_without_slope_is_reported(tmp_path):
    vol, props = read_image(_scaled(tmp_path, 0.0, 5.0))
    assert np.array_equal(vol, _volume().astype(np.float32))
    assert any("scl_inter 5 ignored" in w for w in props.warnings)


def test_infinite_slope_is_ignored_with_a_warning(tmp_path):
    vol, props = read_image(_scaled(tmp_path, float("inf"), 0.0))
    assert np.array_equal(vol, _volume().astype(np.float32))
    assert any("scl_slope is inf" in w for w in props.warnings)


def test_negative_slope_is_applied_with_a_warning(tmp_path):
    vol, props = read_image(_scaled(tmp_path, -1.0, 0.0))
    assert np.array_equal(vol, -_volume().astype(np.float32))
    assert any("negative" in w for w in props.warnings)


def test_valid_slope_with_infinite_intercept_is_refused(tmp_path):
    _input_error(_scaled(tmp_path, 1.5, float("inf")), "scl_inter is inf")


def test_a_few_nan_voxels_become_background(tmp_path):
    data = _volume(dtype=np.float32) + 50
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = np.inf
    data[2, 2, 2] = -np.inf
    vol, props = read_image(_save(tmp_path, "nan.nii.gz", _nii_bytes(_image(data))))
    assert np.all(np.isfinite(vol))
    finite_min = np.nanmin(np.where(np.isfinite(data), data, np.nan))
    back = geometry.from_canonical(vol, props)
    assert back[0, 0, 0] == back[1, 2, 3] == back[2, 2, 2] == finite_min
    assert any(w.startswith("3 NaN/infinite voxels") for w in props.warnings)
    assert props.data_min == finite_min


def test_mostly_nan_is_refused(tmp_path):
    data = np.full(SHAPE, np.nan, dtype=np.float32)
    data[:2] = 1.0
    _input_error(_save(tmp_path, "nan.nii", _nii_bytes(_image(data))), r"\d+% of the voxels are NaN")


def test_empty_and_constant_images_read_and_are_flagged(tmp_path):
    vol, props = read_image(_save(tmp_path, "zero.nii.gz", _nii_bytes(_image(np.zeros(SHAPE, np.int16)))))
    assert props.is_constant and not vol.any()
    _, props = read_image(_save(tmp_path, "seven.nii.gz", _nii_bytes(_image(np.full(SHAPE, 7, np.int16)))))
    assert props.is_constant and props.data_min == 7
    _, props = read_image(_save(tmp_path, "noise.nii.gz", _nii_bytes(_image(_volume()))))
    assert not props.is_constant


# -- geometry --------------------------------------------------------------------------------------

LAS = np.diag([-1.0, 1.2, 3.0, 1.0])
RAS = np.diag([1.0, 1.2, 3.0, 1.0])


def test_qform_and_sform_with_different_directions_are_ambiguous(tmp_path):
    img = _image(_volume(), qform=(LAS, 1), sform=(RAS, 2))
    path = _save(tmp_path, "lr.nii.gz", _nii_bytes(img))
    msg = _input_error(path, r"qform \(LAS\) and sform \(RAS\) disagree")
    assert "left/right" in msg and "--prefer-qform" in msg and "--prefer-sform" in msg
    _, props = read_image(path, options=ReadOptions(prefer="sform"))
    assert props.orientation == ("R", "A", "S") and props.affine_source == "sform"
    _, props = read_image(path, options=ReadOptions(prefer="qform"))
    assert props.orientation == ("L", "A", "S") and props.affine_source == "qform"


def test_agreeing_forms_use_the_sform_and_warn_when_far_apart(tmp_path):
    shifted = RAS.copy()
    shifted[:3, 3] = [5.0, 0.0, 0.0]
    _, props = read_image(
        _save(tmp_path, "far.nii.gz", _nii_bytes(_image(_volume(), qform=(RAS, 1), sform=(shifted, 1))))
    )
    assert props.affine_source == "sform" and props.affine[0, 3] == 5.0
    assert any("5.0 mm apart" in w for w in props.warnings)


def test_only_a_qform(tmp_path):
    _, props = read_image(_save(tmp_path, "q.nii", _nii_bytes(_image(_volume(), qform=(LAS, 1)))))
    assert props.affine_source == "qform" and props.orientation == ("L", "A", "S")
    _, props = read_image(
        _save(tmp_path, "q2.nii", _nii_bytes(_image(_volume(), qform=(LAS, 1)))), options=ReadOptions(prefer="sform")
    )
    assert props.affine_source == "qform" and any("no sform" in w for w in props.warnings)


def test_no_geometry_needs_an_assumed_orientation(tmp_path):
    raw = _nii_bytes(_image(_volume()))
    _patch(raw, QFORM_CODE, "2h", 0, 0)
    _patch(raw, PIXDIM + 4, "3f", 0.5, 0.6, 4.0)
    path = _save(tmp_path, "nogeo.nii.gz", raw)
    msg = _input_error(path, "has no orientation")
    assert "--assume-orientation" in msg and "left and right" in msg
    vol, props = read_image(path, options=ReadOptions(assume_orientation="LPS"))
    assert props.orientation == ("L", "P", "S") and props.affine_source == "assumed"
    assert props.spacing == pytest.approx((0.5, 0.6, 4.0))
    assert np.array_equal(vol, np.flip(_volume(), (0, 1)).astype(np.float32))
    with pytest.raises(ValueError):
        ReadOptions(assume_orientation="RRS")


@pytest.mark.parametrize(
    "offset, fmt, values, match",
    [
        (PIXDIM + 4, "f", (0.0,), "qform is degenerate"),
        (PIXDIM + 4, "f", (-2.0,), "qform cannot be computed"),
        (PIXDIM + 4, "f", (float("nan"),), "NaN or infinite"),
        (256, "3f", (0.9, 0.9, 0.9), "qform cannot be computed"),  # quaternion b, c, d longer than 1
    ],
)
def test_damaged_qform_is_refused(tmp_path, offset, fmt, values, match):
    raw = _nii_bytes(_image(_volume(), qform=(RAS, 1)))
    _input_error(_save(tmp_path, "q.nii", _patch(raw, offset, fmt, *values)), match)


def test_sheared_sform_is_refused(tmp_path):
    sheared = RAS.copy()
    sheared[0, 2] = 0.5
    msg = _input_error(
        _save(tmp_path, "shear.nii", _nii_bytes(_image(_volume(), sform=(sheared, 1)))), "sform is sheared"
    )
    assert "resample" in msg
    both = _image(_volume(), qform=(RAS, 1), sform=(sheared, 1))
    _input_error(_save(tmp_path, "shear2.nii", _nii_bytes(both)), r"sheared .*--prefer-qform")


def test_oblique_is_fine_and_its_tilt_is_reported(tmp_path):
    t = np.radians(20.0)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    _, props = read_image(_save(tmp_path, "obl.nii.gz", _nii_bytes(_image(_volume(), rot @ RAS))))
    assert props.tilt_deg == pytest.approx(20.0, abs=1e-3)
    assert props.slice_axis == 2


@pytest.mark.parametrize("codes", ["LPS", "SRA", "IPL", "ALI"])
def test_canonical_volume_is_ras_with_axial_last(tmp_path, codes):
    data = _volume()
    aff = geometry.affine_from_axcodes((1.0, 2.0, 3.0), codes)
    vol, props = read_image(_save(tmp_path, "o.nii.gz", _nii_bytes(_image(data, aff))))
    assert props.orientation == tuple(codes)
    assert geometry.ornt_from_affine(props.canonical_affine) == ((0, 1), (1, 1), (2, 1))
    assert vol.shape == props.canonical_shape
    assert np.array_equal(geometry.from_canonical(vol, props), data.astype(np.float32))
    # The slice axis is the one that was S or I; its length is the canonical z length.
    assert props.shape[props.slice_axis] == vol.shape[2]


# -- in-memory images and file safety --------------------------------------------------------------


def test_from_nibabel_matches_read_image(tmp_path):
    img = _image(_volume(), geometry.affine_from_axcodes((1.0, 2.0, 3.0), "PIR"))
    path = _save(tmp_path, "mem.nii.gz", _nii_bytes(img))
    vol_f, props_f = read_image(path)
    vol_m, props_m = from_nibabel(img)
    assert np.array_equal(vol_f, vol_m)
    assert props_m.orientation == props_f.orientation and props_m.source == "in-memory image"
    np.testing.assert_array_equal(props_m.affine, props_f.affine)
    # A file-backed image: nibabel applies its scaling; the 4D checks apply unchanged.
    with pytest.raises(InputError, match="4D"):
        from_nibabel(nib.load(NIB_DATA / "example4d.nii.gz"))
    vol4, props4 = from_nibabel(nib.load(NIB_DATA / "example4d.nii.gz"), options=ReadOptions(volume_index=0))
    assert vol4.shape == (128, 96, 24) and props4.tilt_deg > 5


def test_from_nibabel_refuses_complex_arrays():
    with pytest.raises(InputError, match="greyscale"):
        from_nibabel(nib.Nifti1Image(np.zeros(SHAPE, np.complex64), np.eye(4)))


def test_reading_never_modifies_the_input(tmp_path):
    path = _save(tmp_path, "keep.nii.gz", _nii_bytes(_image(_volume())))
    before, mtime = _sha(path), path.stat().st_mtime_ns
    vol, _ = read_image(path)
    vol[:] = 0  # the returned volume is ours, not a view of anything on disk
    read_raw(path)
    assert _sha(path) == before and path.stat().st_mtime_ns == mtime


def test_read_raw_returns_the_file_grid(tmp_path):
    data = _volume((6, 7, 8, 2))
    header, version, raw, warnings = read_raw(_save(tmp_path, "r.nii", _nii_bytes(_image(data))))
    assert version == 1 and raw.shape == (6, 7, 8, 2) and raw.dtype == np.int16
    assert np.array_equal(raw, data) and warnings == []
    assert int(header["datatype"]) == 4


def test_options_are_validated():
    with pytest.raises(ValueError):
        ReadOptions(prefer="best")
    with pytest.raises(ValueError):
        ReadOptions(volume_index=-1)
    assert ReadOptions().max_bytes == 4 * GIB
