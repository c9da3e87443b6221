"""``limbseg-rt run`` / ``demo`` and the ``Segmenter`` API end to end on small phantom scans."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_EMPTY, EXIT_INPUT, EXIT_OK, EXIT_OUTPUT

SHAPE = (96, 80)
SLICES = 24


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def phantom_ras():
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, truth = make_phantom(7, slices=SLICES, shape=SHAPE, spacing=(1.5, 1.5, 5.0))
    return image, truth


def _reoriented(img: nib.Nifti1Image, codes: tuple[str, str, str]) -> nib.Nifti1Image:
    """The same voxels in world space, stored with array axes ``codes`` (e.g. ('L','P','S'))."""
    start = nib.io_orientation(img.affine)
    target = nib.orientations.axcodes2ornt(codes)
    transform = nib.orientations.ornt_transform(start, target)
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), transform)
    affine = img.affine @ nib.orientations.inv_ornt_aff(transform, img.shape)
    out = nib.Nifti1Image(data.astype(img.get_data_dtype()), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def _oblique(img: nib.Nifti1Image, degrees: float = 10.0) -> nib.Nifti1Image:
    """Same array, affine rotated ``degrees`` about the x axis (an oblique acquisition)."""
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    affine = rot @ img.affine
    out = nib.Nifti1Image(np.asarray(img.dataobj).astype(img.get_data_dtype()), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=2)
    return out


def _save(img, path: Path) -> Path:
    nib.save(img, str(path))
    return path


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli_main(["run", *args, "--provider", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_labels_report_and_csv_next_to_the_scan(phantom_ras, tiny_unet_path, tmp_path, capsys):
    scan = _save(phantom_ras[0], tmp_path / "thigh.nii.gz")
    before = _sha(scan)
    code, out, err = _run([str(scan), "--model", str(tiny_unet_path), "--batch-size", "5"], capsys)
    assert code == EXIT_OK, err
    labels_path, report_path, csv_path = (
        tmp_path / n for n in ("thigh_labels.nii.gz", "thigh_report.json", "thigh_volumes.csv")
    )
    assert labels_path.is_file() and report_path.is_file() and csv_path.is_file()
    assert _sha(scan) == before
    assert f"{SLICES}/{SLICES} slices" in err
    assert "provider cpu" in out and "precision fp32" in out and "total" in out

    src, lab = nib.load(str(scan)), nib.load(str(labels_path))
    assert lab.shape == src.shape and np.allclose(lab.affine, src.affine)
    assert int(lab.header["qform_code"]) == int(src.header["qform_code"])
    assert int(lab.header["sform_code"]) == int(src.header["sform_code"])
    labels = np.asarray(lab.dataobj)
    assert labels.dtype == np.uint8 and len(np.unique(labels)) > 3

    report = json.loads(report_path.read_text())
    m = report["manifest"]
    assert m["engine"]["provider"] == "cpu" and m["engine"]["precision"] == "fp32"
    assert m["model"]["sha256"] == _sha(tiny_unet_path)
    assert m["input"]["sha256"] == before and m["input"]["name"] == "thigh.nii.gz"
    assert m["pipeline"]["batch_size"] == 5 and m["pipeline"]["fit_requested"] == "auto"
    assert m["pipeline"]["fit"] in ("resize", "tile") and f"fit {m['pipeline']['fit']} (field of view" in out
    for stage in ("read", "preprocess", "infer", "postprocess", "write"):
        assert m["timings_s"][stage] >= 0
    assert m["peak_rss_mib"] > 0
    assert {"limbseg_rt", "onnxruntime", "numpy", "nibabel"} <= set(m["versions"])
    assert m["input"]["geometry"]["canonical_shape"] == [SHAPE[0], SHAPE[1], SLICES]
    voxel_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000
    for row in report["muscles"]:
        assert row["voxels"] == int(np.count_nonzero(labels == row["index"]))
        assert row["volume_ml"] == pytest.approx(row["voxels"] * voxel_ml)
    csv_lines = csv_path.read_text().splitlines()
    assert csv_lines[0].startswith("index,code,name,volume_ml,voxels") and len(csv_lines) == 38


@pytest.fixture(scope="module")
def ras_reference(phantom_ras, tiny_unet_path, tmp_path_factory):
    """Canonical labels of the RAS phantom, the reference the other orientations must reproduce."""
    from limbseg_rt.runtime.api import Segmenter

    with Segmenter(str(tiny_unet_path), provider="cpu", threads=1) as seg:
        result = seg.segment(phantom_ras[0])
    return np.asarray(nib.as_closest_canonical(result.labels).dataobj)


@pytest.mark.parametrize("orientation", ["LPS", "ASL", "PIR", "oblique"])
def test_labels_are_the_same_in_world_space_whatever_the_orientation(
    orientation, phantom_ras, ras_reference, tiny_unet_path, tmp_path, capsys
):
    img = _oblique(phantom_ras[0]) if orientation == "oblique" else _reoriented(phantom_ras[0], tuple(orientation))
    if orientation != "oblique":
        assert "".join(nib.aff2axcodes(img.affine)) == orientation
    scan = _save(img, tmp_path / f"scan_{orientation}.nii")
    before = _sha(scan)
    out_path = tmp_path / "out" / "labels.nii.gz"
    out_path.parent.mkdir()
    code, _, err = _run([str(scan), "--model", str(tiny_unet_path), "--out", str(out_path)], capsys)
    assert code == EXIT_OK, err
    assert _sha(scan) == before
    src, lab = nib.load(str(scan)), nib.load(str(out_path))
    assert lab.shape == src.shape
    np.testing.assert_allclose(lab.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(lab.get_qform(), src.get_qform(), atol=1e-5)
    np.testing.assert_allclose(lab.get_sform(), src.get_sform(), atol=1e-5)
    assert int(lab.header["qform_code"]) == int(src.header["qform_code"])
    assert int(lab.header["sform_code"]) == int(src.header["sform_code"])
    canonical = np.asarray(nib.as_closest_canonical(lab).dataobj)
    np.testing.assert_array_equal(canonical, ras_reference)
    report = json.loads((tmp_path / f"scan_{orientation}_report.json").read_text())
    geometry = report["manifest"]["input"]["geometry"]
    # Slice ranges in the input file's own indices match where the labels sit in the label file.
    data = np.asarray(lab.dataobj)
    axis = geometry["slice_axis"]
    others = tuple(a for a in range(3) if a != axis)
    for row in report["muscles"]:
        where = np.flatnonzero((data == row["index"]).any(axis=others))
        if where.size:
            assert (row["input_axis"], row["input_first"], row["input_last"]) == (axis, where[0], where[-1])
    assert geometry["tilt_deg"] == pytest.approx(10.0 if orientation == "oblique" else 0.0, abs=1e-3)
    if orientation != "oblique":
        assert geometry["orientation"] == orientation
    # Point by point: the label at a world position is the RAS result's label at that position.
    ras_ijk = np.array([[5, 7, 3], [50, 40, 12], [90, 70, 20], [30, 60, 23]])
    world = nib.affines.apply_affine(nib.as_closest_canonical(src).affine, ras_ijk)
    in_ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(src.affine), world)).astype(int)
    for (i, j, k), (a, b, c) in zip(in_ijk, ras_ijk):
        assert data[i, j, k] == ras_reference[a, b, c]


def test_out_equal_to_the_input_is_refused(phantom_ras, tiny_unet_path, tmp_path, capsys):
    scan = _save(phantom_ras[0], tmp_path / "scan.nii.gz")
    before = _sha(scan)
    code, out, err = _run([str(scan), "--model", str(tiny_unet_path), "--out", str(scan)], capsys)
    assert code == EXIT_OUTPUT
    assert "overwrite the input" in err and len(err.strip().splitlines()) == 1
    assert _sha(scan) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_missing_output_folder_is_refused_before_any_work(phantom_ras, tiny_unet_path, tmp_path, capsys):
    scan = _save(phantom_ras[0], tmp_path / "scan.nii.gz")
    code, _, err = _run(
        [str(scan), "--model", str(tiny_unet_path), "--out", str(tmp_path / "nope" / "l.nii.gz")], capsys
    )
    assert code == EXIT_OUTPUT and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupted_input_gives_one_error_line_and_no_output(damage, phantom_ras, tiny_unet_path, tmp_path, capsys):
    good = _save(phantom_ras[0], tmp_path / "good.nii.gz").read_bytes()
    scan = tmp_path / "bad.nii.gz"
    scan.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"not a nifti file at all" * 50)
    code, out, err = _run([str(scan), "--model", str(tiny_unet_path)], capsys)
    assert code == EXIT_INPUT, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("limbseg-rt: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz", "good.nii.gz"]


def test_a_constant_image_exits_6_with_all_background_labels_and_a_flag(tiny_unet_path, tmp_path, capsys):
    img = nib.Nifti1Image(np.full((40, 32, 6), 300, np.int16), np.diag([2.0, 2.0, 5.0, 1.0]))
    scan = _save(img, tmp_path / "flat.nii.gz")
    code, out, err = _run([str(scan), "--model", str(tiny_unet_path)], capsys)
    assert code == EXIT_EMPTY
    labels = np.asarray(nib.load(str(tmp_path / "flat_labels.nii.gz")).dataobj)
    assert labels.shape == (40, 32, 6) and not labels.any()
    report = json.loads((tmp_path / "flat_report.json").read_text())
    assert "empty_image" in report["flags"]
    assert report["totals"]["voxels"] == 0
    assert "no contrast" in err


def test_segmenter_is_reused_across_scans_without_touching_disk(phantom_ras, tiny_unet_path, tmp_path):
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.phantom.generate import make_phantom

    other, _ = make_phantom(11, slices=12, shape=(64, 72), spacing=(2.0, 2.0, 6.0))
    a_path = _save(phantom_ras[0], tmp_path / "a.nii.gz")
    listing = sorted(p.name for p in tmp_path.iterdir())
    with Segmenter(str(tiny_unet_path), provider="cpu", threads=1) as seg:
        ra = seg.segment(a_path)
        rb = seg.segment(other)
        ra2 = seg.segment(a_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # segment() wrote nothing
    assert ra.labels.shape == phantom_ras[0].shape and rb.labels.shape == other.shape
    np.testing.assert_array_equal(np.asarray(ra.labels.dataobj), np.asarray(ra2.labels.dataobj))
    assert ra.report.manifest["input"]["name"] == "a.nii.gz" and rb.report.manifest["input"]["sha256"] is None
    # A fresh Segmenter gives the same answer: reuse keeps no state between scans.
    with Segmenter(str(tiny_unet_path), provider="cpu", threads=1) as fresh:
        np.testing.assert_array_equal(np.asarray(fresh.segment(other).labels.dataobj), np.asarray(rb.labels.dataobj))
    written = ra.save(tmp_path / "a_out.nii.gz", report_json=tmp_path / "a_out.json")
    assert written["labels"].is_file() and json.loads(written["report"].read_text())["manifest"]["outputs"]


def test_sc_unet_with_limb_range_and_tile_fit(phantom_ras, tiny_scunet_path, tmp_path, capsys):
    scan = _save(phantom_ras[0], tmp_path / "s.nii.gz")
    code, _, err = _run(
        [str(scan), "--model", str(tiny_scunet_path), "--limb-range", "0:0.5", "--fit", "tile", "--batch-size", "3"],
        capsys,
    )
    assert code == EXIT_OK, err
    report = json.loads((tmp_path / "s_report.json").read_text())
    assert report["manifest"]["pipeline"]["limb_range"] == [0.0, 0.5]
    assert report["manifest"]["pipeline"]["fit"] == "tile"
    assert report["manifest"]["model"]["metadata"]["architecture"] == "sc-unet"
    # Thigh-only scan: the top slice is 1/N of the way down the upper half, the bottom slice at 0.5.
    positions = report["manifest"]["pipeline"]["positions"]
    assert positions["p_most_superior_slice"] == pytest.approx(0.5 / SLICES)
    assert positions["p_most_inferior_slice"] == pytest.approx(0.5)


def test_bad_arguments_are_usage_errors(tiny_unet_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["run", str(tmp_path / "x.nii"), "--limb-range", "0.8:0.2"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli_main(["run", str(tmp_path / "x.nii"), "--batch-size", "0"])
    assert exc.value.code == 2
    code, _, err = _run([str(tmp_path / "missing.nii.gz"), "--model", str(tiny_unet_path)], capsys)
    assert code == EXIT_INPUT and "not found" in err


def test_console_script_runs_end_to_end(phantom_ras, tiny_unet_path, tmp_path):
    scan = _save(phantom_ras[0], tmp_path / "cli.nii.gz")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "limbseg_rt",
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--csv",
            str(tmp_path / "v.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli_labels.nii.gz").is_file() and (tmp_path / "v.csv").is_file()
    assert "slices" in proc.stderr and "mL" in proc.stdout


def test_demo_makes_a_phantom_segments_it_and_scores_it(tiny_unet_path, tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code = cli_main(
        [
            "demo",
            "--out-dir",
            str(out_dir),
            "--seed",
            "3",
            "--slices",
            "8",
            "--model",
            str(tiny_unet_path),
            "--provider",
            "cpu",
            "--threads",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    names = {p.name for p in out_dir.iterdir()}
    assert {
        "phantom_seed3.nii.gz",
        "phantom_seed3_truth.nii.gz",
        "phantom_seed3_labels.nii.gz",
        "phantom_seed3_report.json",
        "phantom_seed3_volumes.csv",
    } <= names
    line = next(line for line in out.splitlines() if line.startswith("mean DSC vs ground truth:"))
    score = float(line.split(":")[1].split()[0])
    assert 0.0 <= score <= 1.0
    assert "8/8 slices" in err


def test_mean_dice_of_the_demo():
    from limbseg_rt.cli.demo import mean_dice
    from limbseg_rt.runtime.model.labels import default_label_table

    truth = np.zeros((6, 6, 2), np.uint8)
    truth[:3] = 1
    truth[3:] = 2
    assert mean_dice(truth, truth, default_label_table()) == (1.0, 2)
    pred = truth.copy()
    pred[3:] = 1  # label 1: 2*36/(72+36) = 2/3; label 2 missed: 0
    score, n = mean_dice(pred, truth, default_label_table())
    assert n == 2 and score == pytest.approx((2 / 3 + 0) / 2)


def test_progress_bar_redraws_on_a_terminal_and_writes_one_line_otherwise():
    import io

    from limbseg_rt.cli._progress import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, log = Tty(), io.StringIO()
    for stream in (tty, log):
        with ProgressBar("segmenting", stream=stream) as bar:
            for done in (4, 8, 10):
                bar.update(done, 10)
    assert tty.getvalue().count("\r") >= 3 and "10/10 slices" in tty.getvalue()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue() and "10/10 slices" in log.getvalue()


def test_demo_with_an_unusable_model_fails_before_writing_anything(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code = cli_main(["demo", "--out-dir", str(out_dir), "--model", str(tmp_path / "missing.onnx"), "--provider", "cpu"])
    _, err = capsys.readouterr()
    assert code == 4 and "not found" in err
    assert not out_dir.exists()


def test_a_2d_slice_and_one_volume_of_a_4d_scan(phantom_ras, tiny_unet_path, tmp_path, capsys):
    data = np.asarray(phantom_ras[0].dataobj)
    affine = phantom_ras[0].affine
    flat = _save(nib.Nifti1Image(data[:, :, 10], affine), tmp_path / "flat.nii.gz")
    code, _, err = _run([str(flat), "--model", str(tiny_unet_path)], capsys)
    assert code == EXIT_INPUT and "--allow-2d" in err
    code, _, err = _run([str(flat), "--model", str(tiny_unet_path), "--allow-2d"], capsys)
    assert code == EXIT_OK, err
    assert nib.load(str(tmp_path / "flat_labels.nii.gz")).shape[:2] == SHAPE
    assert "single_slice" in json.loads((tmp_path / "flat_report.json").read_text())["flags"]

    four = _save(nib.Nifti1Image(np.stack([data, data[::-1]], axis=-1), affine), tmp_path / "four.nii.gz")
    code, _, err = _run([str(four), "--model", str(tiny_unet_path), "--volume", "1"], capsys)
    assert code == EXIT_OK, err
    labels = nib.load(str(tmp_path / "four_labels.nii.gz"))
    assert labels.shape == data.shape
    whole = _save(nib.Nifti1Image(data[::-1].copy(), affine), tmp_path / "second.nii.gz")
    assert _run([str(whole), "--model", str(tiny_unet_path)], capsys)[0] == EXIT_OK
    np.testing.assert_array_equal(
        np.asarray(labels.dataobj), np.asarray(nib.load(str(tmp_path / "second_labels.nii.gz")).dataobj)
    )


def test_a_provider_fallback_is_reported_in_the_report_and_on_the_terminal(
    phantom_ras, tiny_unet_path, tmp_path, capsys, monkeypatch
):
    import limbseg_rt.runtime.engine.runners as engine

    real = engine.create_runner

    def falling_back(*args, **kwargs):
        runner = real(*args, **{**kwargs, "provider": "cpu"})
        runner.fallback = "requested cuda, running on cpu: ONNX Runtime could not use cuda (--allow-fallback)"
        return runner

    monkeypatch.setattr(engine, "create_runner", falling_back)
    scan = _save(phantom_ras[0], tmp_path / "fb.nii.gz")
    code = cli_main(["run", str(scan), "--model", str(tiny_unet_path), "--provider", "cuda", "--allow-fallback"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "provider cpu" in out
    assert "warning: requested cuda, running on cpu" in err
    report = json.loads((tmp_path / "fb_report.json").read_text())
    assert "provider_fallback" in report["flags"]
    assert report["manifest"]["engine"]["requested_provider"] == "cuda"
    assert report["manifest"]["engine"]["provider"] == "cpu"
    assert report["manifest"]["engine"]["fallback"].startswith("requested cuda")


def test_demo_runs_with_a_bundled_model_name(tiny_unet_path, tmp_path, capsys, monkeypatch):
    """The README's first command, with the bundled-model folder pointed at a tiny stand-in."""
    import shutil

    import limbseg_rt.runtime.model.bundled as bundled

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_unet_path, models / "unet-fp32.onnx")
    monkeypatch.setattr(bundled, "MODELS_DIR", models)
    monkeypatch.chdir(tmp_path)
    code = cli_main(["demo", "--slices", "6", "--provider", "cpu", "--threads", "1"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert (tmp_path / "limbseg-demo" / "phantom_seed0_labels.nii.gz").is_file()
    assert "unet-fp32.onnx" in out and "mean DSC vs ground truth" in out
