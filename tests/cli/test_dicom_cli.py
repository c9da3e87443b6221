"""``limbseg-rt run`` / ``info`` on DICOM inputs: same labels as the NIfTI path, a valid SEG, clean refusals."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_helpers import (
    NIBABEL_DICOM,
    dciodvfy_errors,
    folder_digest,
    gunzip,
    pydicom,
    reoriented,
    tilted,
    write_series,
)

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, EXIT_EMPTY, EXIT_INPUT, EXIT_OK

hd = pytest.importorskip("highdicom")
SHAPE, SLICES = (64, 56), 12


@pytest.fixture(scope="module")
def phantom():
    from limbseg_rt.runtime.phantom.generate import make_phantom

    return make_phantom(9, slices=SLICES, shape=SHAPE, spacing=(1.75, 1.75, 5.0))


def _run(args, capsys, model) -> tuple[int, str, str]:
    code = cli_main(["run", *map(str, args), "--model", str(model), "--provider", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def _study(tmp_path: Path, img, *, localizer=True) -> Path:
    """A study folder: the series in random file names and order, a localizer series, a text file."""
    study = tmp_path / "study"
    write_series(img, study / "t1", names="random", seed=5, series_number=3, description="T1 legs")
    if localizer:
        sag = nib.Nifti1Image(
            np.asarray(img.dataobj)[30:31].transpose(1, 2, 0).astype(np.int16),
            np.array([[0, 0, -1.75, 0], [-1.75, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 0, 1.0]]),
        )
        write_series(
            sag,
            study / "loc",
            names="random",
            series_number=1,
            description="3-plane loc",
            image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        )
    (study / "DICOMDIR.txt").write_text("not DICOM")
    return study


def _canonical_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize("codes,tilt", [("LPS", 0.0), ("ASL", 0.0), ("LPS", 9.0)])
def test_run_on_a_dicom_study_equals_run_on_the_nifti(tmp_path, phantom, tiny_unet_path, capsys, codes, tilt):
    img = tilted(reoriented(phantom[0], codes), tilt)
    study = _study(tmp_path, img)
    before = folder_digest(study)
    nib.save(img, tmp_path / "scan.nii.gz")
    code, _, err = _run([tmp_path / "scan.nii.gz"], capsys, tiny_unet_path)
    assert code == EXIT_OK, err
    code, out, err = _run([study], capsys, tiny_unet_path)
    assert code == EXIT_OK, err
    assert folder_digest(study) == before  # input untouched, nothing written into it
    written = {p.name for p in tmp_path.iterdir()}
    assert {
        "study_labels.nii.gz",
        "study_report.json",
        "study_volumes.csv",
        "study_seg.dcm",
        "study_labels.itksnap.txt",
        "study_labels.ctbl",
    } <= written
    dicom_labels, dicom_affine = _canonical_labels(tmp_path / "study_labels.nii.gz")
    nifti_labels, nifti_affine = _canonical_labels(tmp_path / "scan_labels.nii.gz")
    assert np.array_equal(dicom_labels, nifti_labels)
    np.testing.assert_allclose(dicom_affine, nifti_affine, atol=1e-4)
    # the report: same volumes; UIDs but no patient data
    rep = json.loads((tmp_path / "study_report.json").read_text())
    ref = json.loads((tmp_path / "scan_report.json").read_text())
    assert [m["volume_ml"] for m in rep["muscles"]] == pytest.approx([m["volume_ml"] for m in ref["muscles"]], rel=1e-5)
    info = rep["manifest"]["input"]["dicom"]
    assert info["series_number"] == 3 and info["slices"] == img.shape[2] and info["skipped_non_dicom_files"] == 1
    for path in ("study_report.json", "study_volumes.csv"):
        text = (tmp_path / path).read_text()
        assert "PHANTOM" not in text and "19600101" not in text
    assert "PHANTOM" not in out + err
    # the SEG: valid, on the source slices, equal to the NIfTI labels voxel for voxel
    seg_path = tmp_path / "study_seg.dcm"
    assert dciodvfy_errors(seg_path) == []
    seg = hd.seg.segread(seg_path)
    uids = info["sop_instance_uids"]
    assert seg.SeriesDescription.startswith("limbseg-rt unet") and "DEMO" not in seg.SeriesDescription  # a test model
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    present = sorted(int(v) for v in np.unique(nifti_labels) if v)
    assert numbers == list(range(1, len(present) + 1))
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        combine_segments=True,
        skip_overlap_checks=True,
        assert_missing_frames_are_empty=True,
    )
    lut = np.array([0, *present])
    back = nib.Nifti1Image(
        lut[arr].transpose(2, 1, 0).astype(np.uint8), nib.load(tmp_path / "study_labels.nii.gz").affine
    )
    assert np.array_equal(_canonical_labels_img(back), dicom_labels)


def _canonical_labels_img(img) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(img).dataobj)


def test_zip_input_series_choice_and_labelmap(tmp_path, phantom, tiny_unet_path, capsys):
    study = tmp_path / "in"
    write_series(phantom[0], study / "a", series_number=2, description="T1 left")
    write_series(reoriented(phantom[0], "LPS"), study / "b", series_number=7, description="T1 right")
    with zipfile.ZipFile(tmp_path / "exam.zip", "w") as zf:
        for p in sorted(study.rglob("*.dcm")):
            zf.write(p, str(p.relative_to(study)))
    code, _, err = _run([tmp_path / "exam.zip"], capsys, tiny_unet_path)
    assert code == EXIT_INPUT and err.count("\n") == 1 and "--series" in err and "T1 left" in err and "T1 right" in err
    assert not list(tmp_path.glob("exam_*"))
    seg = tmp_path / "out" / "exam.seg.dcm"
    seg.parent.mkdir()
    code, _, err = _run(
        [tmp_path / "exam.zip", "--series", "7", "--seg", seg, "--seg-type", "labelmap"], capsys, tiny_unet_path
    )
    assert code == EXIT_OK, err
    ds = pydicom.dcmread(seg)
    assert ds.SegmentationType == "LABELMAP" and (tmp_path / "exam_labels.nii.gz").is_file()
    rep = json.loads((tmp_path / "exam_report.json").read_text())
    assert rep["manifest"]["input"]["dicom"]["series_description"] == "T1 right"


def test_enhanced_mr_file_with_no_signal_exits_6_and_writes_no_seg(tmp_path, tiny_unet_path, capsys):
    """nibabel's Philips Enhanced MR test file holds zero pixels: an empty image (exit 6), no SEG."""
    src = gunzip(NIBABEL_DICOM / "philips_mprage.dcm.gz", tmp_path / "mprage.dcm")
    code, _, err = _run([src], capsys, tiny_unet_path)
    assert code == EXIT_EMPTY, err
    assert (tmp_path / "mprage_labels.nii.gz").is_file() and not (tmp_path / "mprage_seg.dcm").exists()
    assert "no DICOM SEG was written" in json.loads((tmp_path / "mprage_report.json").read_text())["warnings"][-1]


def _break(kind: str, paths: list[Path], folder: Path, phantom_img) -> None:
    if kind == "gap":
        paths[5].unlink()
    elif kind == "duplicate":
        ds = pydicom.dcmread(paths[2])
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / "t1" / "dup")
    elif kind == "missing IPP":
        ds = pydicom.dcmread(paths[3])
        del ds.ImagePositionPatient
        ds.save_as(paths[3])
    elif kind == "two series":
        write_series(phantom_img, folder / "t2", series_number=8, description="again")
    elif kind == "mixed size":
        ds = pydicom.dcmread(paths[3])
        ds.Rows, ds.Columns = 32, 32
        ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
        ds.save_as(paths[3])
    elif kind == "truncated":
        data = paths[4].read_bytes()
        paths[4].write_bytes(data[:-300])


@pytest.mark.parametrize(
    "kind,words",
    [
        ("gap", "missing between positions"),
        ("duplicate", "two slices at the same position"),
        ("missing IPP", "no usable ImagePositionPatient"),
        ("two series", "pick one with --series"),
        ("mixed size", "mixes image sizes"),
        ("truncated", "copy"),
        ("tilted", "shift in-plane"),
    ],
)
def test_bad_series_one_line_exit_3_nothing_written(tmp_path, phantom, tiny_unet_path, capsys, kind, words):
    folder = tmp_path / "study"
    shear = (0.0, 0.6) if kind == "tilted" else (0.0, 0.0)
    paths = write_series(phantom[0], folder / "t1", names="ordered", shear_mm_per_slice=shear)
    _break(kind, paths, folder, phantom[0])
    before = folder_digest(folder)
    code, out, err = _run([folder], capsys, tiny_unet_path)
    assert code == EXIT_INPUT
    assert err.count("\n") == 1 and err.startswith("limbseg-rt: error: ") and words in err, err
    assert "Traceback" not in err and "PHANTOM" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]
    assert folder_digest(folder) == before


def test_shuffled_names_and_order_do_not_matter(tmp_path, phantom, tiny_unet_path, capsys):
    write_series(phantom[0], tmp_path / "a", names="ordered")
    write_series(phantom[0], tmp_path / "b", names="random", seed=99)
    for name in ("a", "b"):
        code, _, err = _run([tmp_path / name], capsys, tiny_unet_path)
        assert code == EXIT_OK, err
    assert np.array_equal(
        _canonical_labels(tmp_path / "a_labels.nii.gz")[0], _canonical_labels(tmp_path / "b_labels.nii.gz")[0]
    )


def test_info_lists_the_series(tmp_path, phantom, capsys):
    study = _study(tmp_path, phantom[0])
    assert cli_main(["info", str(study)]) == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "13 DICOM file(s), 1 non-DICOM file(s) skipped" in lines[0]
    row3 = next(line for line in lines if line.split()[:1] == ["3"])
    assert row3.split()[1:5] == ["MR", "axial", str(SLICES), "1.75x1.75x5"] and " yes " in row3 and "T1 legs" in row3
    row1 = next(line for line in lines if line.split()[:1] == ["1"])
    assert "sagittal" in row1 and " no " in row1 and "[localizer]" in row1


def test_missing_extra_exit_12_with_install_line(tmp_path, phantom, tiny_unet_path, capsys, monkeypatch):
    write_series(phantom[0], tmp_path / "s")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    code, _, err = _run([tmp_path / "s"], capsys, tiny_unet_path)
    assert code == EXIT_DEPENDENCY
    assert err.strip() == 'limbseg-rt: error: DICOM needs the dicom extra: pip install "limbseg-rt[dicom]"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_bundled_demo_model_says_demo_in_the_seg(tmp_path, phantom, capsys):
    write_series(phantom[0], tmp_path / "s")
    code = cli_main(["run", str(tmp_path / "s"), "--provider", "cpu", "--threads", "1"])
    _, err = capsys.readouterr()
    assert code in (EXIT_OK, EXIT_EMPTY), err
    ds = pydicom.dcmread(tmp_path / "s_seg.dcm")
    assert "DEMO" in ds.SeriesDescription
    algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "demo_model=yes" in algo.AlgorithmParameters
    assert dciodvfy_errors(tmp_path / "s_seg.dcm") == []


def test_phantom_dicom_option_writes_the_same_scan(tmp_path, capsys):
    from limbseg_rt.runtime.io.dicom import read_dicom
    from limbseg_rt.runtime.io.nifti import read_image

    args = [
        "phantom",
        str(tmp_path / "p.nii.gz"),
        "--labels",
        str(tmp_path / "l.nii.gz"),
        "--seed",
        "2",
        "--slices",
        "6",
        "--shape",
        "40",
        "40",
        "--orientation",
        "LPS",
        "--dicom",
        str(tmp_path / "dcm"),
    ]
    assert cli_main(args) == EXIT_OK
    vol, props, _ = read_dicom(tmp_path / "dcm")
    ref, ref_props = read_image(tmp_path / "p.nii.gz")
    assert np.array_equal(vol, ref)
    np.testing.assert_allclose(props.canonical_affine, ref_props.canonical_affine, atol=1e-4)
    capsys.readouterr()
    assert cli_main(args) != EXIT_OK  # the folder is not empty any more: refused, nothing overwritten
    assert "empty or new folder" in capsys.readouterr().err


def test_qc_pictures_for_a_dicom_input(tmp_path, phantom, tiny_unet_path, capsys):
    pytest.importorskip("PIL")
    write_series(phantom[0], tmp_path / "s")
    code, _, err = _run([tmp_path / "s", "--qc"], capsys, tiny_unet_path)
    assert code == EXIT_OK, err
    assert (tmp_path / "s_report.html").is_file() and (tmp_path / "s_seg.dcm").is_file()
    assert len(list(tmp_path.glob("s_qc_*.png"))) >= 3
