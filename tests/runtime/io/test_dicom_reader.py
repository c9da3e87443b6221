"""The DICOM reader: same volume and ImageProps as the NIfTI path; dcm2niix agrees; bad series refused."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_helpers import (
    NIBABEL_DICOM,
    PYDICOM_FILES,
    canonical,
    dcm2niix,
    gunzip,
    pydicom,
    reoriented,
    tilted,
    write_series,
)

from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, InputError, MissingDependencyError
from limbseg_rt.runtime.io.dicom import list_series, read_dicom
from limbseg_rt.runtime.io.nifti import ReadOptions, from_nibabel

SHAPE, SLICES = (48, 40), 10


@pytest.fixture(scope="module")
def phantom():
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, _ = make_phantom(11, slices=SLICES, shape=SHAPE, spacing=(1.5, 1.75, 4.0))
    return image


def _same_as_nifti(folder: Path, img: nib.Nifti1Image, **kw):
    vol, props, source = read_dicom(folder, **kw)
    ref, ref_props = from_nibabel(img)
    assert vol.shape == ref.shape
    assert np.array_equal(vol, ref)
    # float32 header round trip on both sides: 1e-4 mm
    np.testing.assert_allclose(props.canonical_affine, ref_props.canonical_affine, atol=1e-4)
    assert props.canonical_spacing == pytest.approx(ref_props.canonical_spacing, abs=1e-5)
    assert props.voxel_volume_mm3 == pytest.approx(ref_props.voxel_volume_mm3, rel=1e-5)
    return vol, props, source


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR", "ASL"])
def test_phantom_series_in_any_orientation_equals_the_nifti_path(tmp_path, phantom, codes):
    img = reoriented(phantom, codes)
    write_series(img, tmp_path / "s", names="random", seed=3)  # shuffled write order, random names
    _, props, source = _same_as_nifti(tmp_path / "s", img)
    assert len(source.frames) == img.shape[2]
    assert props.affine_source == "dicom" and props.dicom is source


def test_oblique_series_equals_the_nifti_path_and_reports_the_tilt(tmp_path, phantom):
    img = tilted(phantom, 12.0)
    write_series(img, tmp_path / "s", names="random")
    _, props, _ = _same_as_nifti(tmp_path / "s", img)
    assert props.tilt_deg == pytest.approx(12.0, abs=0.01)


def test_zip_and_per_file_rescale(tmp_path, phantom):
    img = nib.Nifti1Image(np.asarray(phantom.dataobj).astype(np.float64) * 0.5 - 100.0, phantom.affine)
    paths = write_series(img, tmp_path / "s", rescale=(0.5, -100.0))
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as zf:
        for p in paths:
            zf.write(p, f"DICOM/{p.name}")
    zf_vol, _, _ = read_dicom(tmp_path / "series.zip")
    ref, _ = from_nibabel(img)
    np.testing.assert_allclose(zf_vol, ref, atol=1e-4)


def test_localizer_and_non_dicom_files_are_skipped(tmp_path, phantom):
    folder = tmp_path / "study"
    write_series(phantom, folder / "t1", series_number=4)
    sag = nib.Nifti1Image(
        np.asarray(phantom.dataobj)[20:21].transpose(1, 2, 0).astype(np.int16),
        np.array([[0, 0, -1.5, 0], [-1.75, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 0, 1.0]]),
    )
    write_series(sag, folder / "loc", series_number=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    (folder / "readme.txt").write_text("not DICOM")
    found, series = list_series(folder)
    assert found.skipped_non_dicom == 1
    assert [s.number for s in series] == [1, 4]
    assert series[0].skip_reason == "localizer" and series[1].skip_reason is None
    _, _, source = read_dicom(folder)
    assert source.series_number == 4 and source.skipped_files == 1


def test_two_series_refused_listing_both_and_series_picks_one(tmp_path, phantom):
    write_series(phantom, tmp_path / "a", series_number=2, description="T1 left")
    write_series(reoriented(phantom, "LPS"), tmp_path / "b", series_number=5, description="T1 right")
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "2 'T1 left'" in msg and "5 'T1 right'" in msg and "--series" in msg
    _, _, src = read_dicom(tmp_path, series=5)
    assert src.description == "T1 right"
    uid = list_series(tmp_path)[1][0].uid
    assert read_dicom(tmp_path, series=uid)[2].series_number == 2


def _series(tmp_path, phantom, **kw) -> list[Path]:
    return write_series(phantom, tmp_path / "s", **kw)


def _refused(folder, *words):
    with pytest.raises(InputError) as err:
        read_dicom(folder)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_gap_is_refused_naming_the_positions(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    paths[4].unlink()
    _refused(tmp_path / "s", "1 slice(s) missing between positions", "copy the complete series")


def test_duplicate_position_is_refused(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm")
    _refused(tmp_path / "s", "two slices at the same position")


def test_non_uniform_spacing_is_refused(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    for p in paths[5:]:  # every slice from the sixth on moves 1.2 mm: one step of 5.2 mm
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [
            float(ds.ImagePositionPatient[0]),
            float(ds.ImagePositionPatient[1]),
            float(ds.ImagePositionPatient[2]) + 1.2,
        ]
        ds.save_as(p)
    _refused(tmp_path / "s", "not uniform")


def test_gantry_tilt_is_refused(tmp_path, phantom):
    _series(tmp_path, phantom, shear_mm_per_slice=(0.0, 0.8))
    _refused(tmp_path / "s", "shift in-plane", "degrees")


@pytest.mark.parametrize("attr", ["ImagePositionPatient", "ImageOrientationPatient"])
def test_missing_position_or_orientation_is_refused(tmp_path, phantom, attr):
    paths = _series(tmp_path, phantom)
    ds = pydicom.dcmread(paths[2])
    delattr(ds, attr)
    ds.save_as(paths[2])
    _refused(tmp_path / "s", attr, paths[2].name)


def test_mixed_rows_columns_is_refused(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    ds = pydicom.dcmread(paths[2])
    ds.Rows, ds.Columns = 20, 24
    ds.PixelData = np.zeros((20, 24), np.int16).tobytes()
    ds.save_as(paths[2])
    _refused(tmp_path / "s", "mixes image sizes")


def test_missing_and_truncated_pixel_data(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    ds = pydicom.dcmread(paths[1])
    del ds.PixelData
    ds.save_as(paths[1])
    _refused(tmp_path / "s", "has no pixel data")
    shutil.rmtree(tmp_path / "s")
    paths = _series(tmp_path, phantom)
    data = paths[6].read_bytes()
    paths[6].write_bytes(data[: len(data) - 500])
    _refused(tmp_path / "s", paths[6].name)


def test_non_mr_and_empty_folders_are_refused(tmp_path, phantom):
    paths = _series(tmp_path, phantom)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        ds.Modality = "CT"
        ds.save_as(p)
    _refused(tmp_path / "s", "no series can be segmented", "not an MR image (CT)")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    _refused(tmp_path / "empty", "holds no DICOM images", "1 non-DICOM")


def test_siemens_mosaic_is_refused():
    with pytest.raises(InputError, match="mosaic"):
        read_dicom(NIBABEL_DICOM / "0.dcm", series=12)


def test_missing_extra_gives_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    (tmp_path / "x.dcm").write_bytes(b"\0" * 128 + b"DICM")
    with pytest.raises(MissingDependencyError) as err:
        read_dicom(tmp_path)
    assert err.value.exit_code == EXIT_DEPENDENCY == 12
    assert 'pip install "limbseg-rt[dicom]"' in str(err.value)


# -- against dcm2niix, on third-party files and on our own series ---------------------------------


def _against_dcm2niix(tmp_path, folder: Path, reference: Path | None = None, **kw):
    vol, props, _ = read_dicom(folder, **kw)
    outs = dcm2niix(reference or folder, tmp_path / "d2n")
    assert len(outs) == 1, outs
    data, affine = canonical(nib.load(outs[0]))
    assert data.squeeze().shape == vol.squeeze().shape
    # the world position of every voxel centre: same canonical grid to 1e-3 mm
    np.testing.assert_allclose(props.canonical_affine, affine, atol=1e-3)
    np.testing.assert_allclose(vol.reshape(data.shape), data, rtol=1e-5, atol=1e-3)


def test_enhanced_mr_philips_matches_dcm2niix(tmp_path):
    (tmp_path / "in").mkdir()
    gunzip(NIBABEL_DICOM / "philips_mprage.dcm.gz", tmp_path / "in" / "mprage.dcm")
    vol, props, src = read_dicom(tmp_path / "in" / "mprage.dcm")
    assert src.enhanced and len(src.frames) == 176 and vol.shape == (176, 256, 256)
    _against_dcm2niix(tmp_path, tmp_path / "in")


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ],
)
def test_pydicom_mr_files_in_several_transfer_syntaxes_match_dcm2niix(tmp_path, name):
    (tmp_path / "in").mkdir()
    shutil.copy(PYDICOM_FILES / name, tmp_path / "in" / name)
    reference = None
    if "jpeg_ls" in name:
        # Debian's dcm2niix is built without JPEG-LS: compare with its conversion of the same image
        # stored uncompressed (MR_small.dcm: same header, same pixels, lossless).
        (tmp_path / "ref").mkdir()
        reference = Path(shutil.copy(PYDICOM_FILES / "MR_small.dcm", tmp_path / "ref" / "MR_small.dcm")).parent
    uid = list_series(tmp_path / "in")[1][0].uid  # a DERIVED single slice: chosen explicitly
    _against_dcm2niix(tmp_path, tmp_path / "in", reference, series=uid, options=ReadOptions(allow_2d=True))


@pytest.mark.parametrize("codes", ["LPS", "PIR"])
def test_our_phantom_series_matches_dcm2niix(tmp_path, phantom, codes):
    write_series(tilted(reoriented(phantom, codes), 8.0), tmp_path / "s", names="random")
    _against_dcm2niix(tmp_path, tmp_path / "s")
