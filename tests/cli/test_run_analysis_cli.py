"""``limbseg-rt run --analysis``: per muscle x side CSV, side-split label maps with side-aware viewer
tables, Dixon options, and every written report valid against runtime/report/report.schema.json."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, EXIT_OK, EXIT_USAGE
from limbseg_rt.runtime.report.run_report import schema_path

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def dixon_scan(tmp_path_factory):
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    d = tmp_path_factory.mktemp("dixon")
    imgs = make_dixon_phantom(7, slices=16, shape=(96, 80), spacing=(4.5, 4.5, 20.0), orientation="LPS")
    for k, img in imgs.items():
        nib.save(img, d / f"{k}.nii.gz")
    return d


def _validate(path):
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    report = json.loads(path.read_text())
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)
    return report


def _copy_scan(dixon_scan, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes((dixon_scan / "image.nii.gz").read_bytes())
    return scan


def test_plain_run_report_is_valid_and_has_no_analysis(dixon_scan, tiny_unet_path, tmp_path):
    scan = _copy_scan(dixon_scan, tmp_path)
    assert cli_main(["run", str(scan), "--model", str(tiny_unet_path)]) == EXIT_OK
    report = _validate(tmp_path / "scan_report.json")
    assert "analysis" not in report and "analysis" not in report["manifest"]
    assert not (tmp_path / "scan_muscles.csv").exists()
    assert report["manifest"]["outputs"]["labels"].endswith("scan_labels.nii.gz")
    assert report["manifest"]["timings_s"]["write"] is not None


def test_analysis_with_dixon_writes_sides_csv_and_a_valid_report(dixon_scan, tiny_unet_path, tmp_path, capsys):
    scan = _copy_scan(dixon_scan, tmp_path)
    code = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--dixon-fat",
            str(dixon_scan / "fat.nii.gz"),
            "--dixon-water",
            str(dixon_scan / "water.nii.gz"),
            "--ff-erode",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == EXIT_OK
    report = _validate(tmp_path / "scan_report.json")
    an = report["analysis"]
    assert an["asymmetry_formula"].startswith("(R - L) / ((R + L) / 2)")
    assert (
        report["manifest"]["analysis"]["dixon_fat"].endswith("fat.nii.gz") and an["fat"]["dixon"]["erode_voxels"] == 1
    )
    rows = list(csv.DictReader((tmp_path / "scan_muscles.csv").open()))
    assert {r["side"] for r in rows} <= {"R", "L"} and len(rows) == len(an["muscles"]) > 0
    for col in (
        "code",
        "name",
        "side",
        "volume_ml",
        "max_acsa_mm2",
        "max_acsa_position_mm",
        "length_mm",
        "imat_percent",
        "ff_mean",
        "ff_median",
        "ff_weighted",
    ):
        assert col in rows[0]
    # Sides add up to the side-less volume of each muscle in the same report.
    merged = {m["code"]: m["volume_ml"] for m in report["muscles"]}
    for code_ in {r["code"] for r in rows}:
        assert sum(float(r["volume_ml"]) for r in rows if r["code"] == code_) == pytest.approx(merged[code_], abs=2e-4)
    assert "R mL" in out and "L mL" in out and "R FF %" in out


def test_split_sides_label_map_and_viewer_tables(dixon_scan, tiny_unet_path, tmp_path):
    scan = _copy_scan(dixon_scan, tmp_path)
    assert cli_main(["run", str(scan), "--model", str(tiny_unet_path), "--split-sides", "--no-clean"]) == EXIT_OK
    report = _validate(tmp_path / "scan_report.json")
    img = nib.load(tmp_path / "scan_labels.nii.gz")
    assert np.allclose(img.affine, nib.load(scan).affine)
    data = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.uint8 and int(data.max()) <= 74 and img.header["cal_max"] == 74
    itk = (tmp_path / "scan_labels.itksnap.txt").read_text()
    slicer = (tmp_path / "scan_labels.ctbl").read_text()
    assert '"adductor brevis (R)"' in itk and '"adductor brevis (L)"' in itk
    assert "38 adductor_brevis_(L)" in slicer
    # Every right record's voxels are label i, every left one's i + 37, in the written file.
    for rec in report["analysis"]["muscles"]:
        value = rec["index"] + (37 if rec["side"] == "L" else 0)
        assert int((data == value).sum()) == rec["voxels"]
    assert report["analysis"]["cleanup"] == {"enabled": False}
    assert report["manifest"]["analysis"]["clean"] is False


def test_the_written_labels_are_the_cleaned_ones_the_measures_use(dixon_scan, tiny_unet_path, tmp_path):
    """--analysis: the label map on disk, the report's volumes and the per muscle x side records all
    come from the same cleaned labels; the manifest and the report record the rule and its parameters.
    --no-cleanup (and its alias --no-clean) keeps what the network gave."""
    from limbseg_rt.runtime.analysis.cleanup import MIN_FRACTION, MIN_ML, NEAR_MM

    runs = {}
    for name, extra in (("on", []), ("off", ["--no-cleanup"]), ("alias", ["--no-clean"])):
        d = tmp_path / name
        d.mkdir()
        scan = _copy_scan(dixon_scan, d)
        assert cli_main(["run", str(scan), "--model", str(tiny_unet_path), "--analysis", *extra]) == EXIT_OK
        report = _validate(d / "scan_report.json")
        runs[name] = (report, np.asarray(nib.load(d / "scan_labels.nii.gz").dataobj))
    report, data = runs["on"]
    cu = report["analysis"]["cleanup"]
    assert cu["enabled"] and (cu["min_fraction"], cu["min_ml"], cu["near_mm"]) == (MIN_FRACTION, MIN_ML, NEAR_MM)
    assert cu["voxels_removed"] > 0 and cu["components_removed"] > 0  # the tiny test model leaves islands
    settings = report["manifest"]["analysis"]
    assert settings["clean"] is True and (settings["min_ml"], settings["near_mm"]) == (MIN_ML, NEAR_MM)
    for m in report["muscles"]:
        assert int((data == m["index"]).sum()) == m["voxels"]
    for rec in report["analysis"]["muscles"]:
        both = [r["voxels"] for r in report["analysis"]["muscles"] if r["index"] == rec["index"]]
        assert int((data == rec["index"]).sum()) == sum(both)
    raw = runs["off"][1]
    assert int(np.count_nonzero(raw)) - int(np.count_nonzero(data)) == cu["voxels_removed"]
    assert np.array_equal(runs["alias"][1], raw) and runs["off"][0]["analysis"]["cleanup"] == {"enabled": False}


def test_sides_in_the_csv_match_the_phantom_truth_on_true_labels(dixon_scan, tmp_path):
    """The API on the ground-truth labels' world positions: side from anatomy, not file axes (LPS)."""
    from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse_scan
    from limbseg_rt.runtime.io.nifti import read_image
    from limbseg_rt.runtime.model.labels import default_label_table

    img, props = read_image(dixon_scan / "image.nii.gz")
    lab, _ = read_image(dixon_scan / "labels.nii.gz")
    sides, _ = read_image(dixon_scan / "sides.nii.gz")
    an = analyse_scan(
        lab.astype(np.uint8),
        img,
        props,
        default_label_table(),
        AnalysisOptions(clean=False, fat=dixon_scan / "fat.nii.gz", water=dixon_scan / "water.nii.gz"),
    )
    assert np.array_equal(an.sides, sides.astype(np.uint8))
    for r in an.records:  # right leg at world x > 0 (RAS), whatever the file's axes
        assert (r.centroid_mm[0] > 0) == (r.side == "R")


@pytest.mark.parametrize(
    "argv",
    [
        ["--dixon-fat", "f.nii.gz"],
        ["--fat-fraction", "ff.nii.gz", "--dixon-fat", "f.nii.gz", "--dixon-water", "w.nii.gz"],
        ["--no-clean"],
        ["--no-cleanup"],
    ],
)
def test_analysis_options_that_do_not_fit_exit_2(dixon_scan, tiny_unet_path, tmp_path, capsys, argv):
    scan = _copy_scan(dixon_scan, tmp_path)
    assert cli_main(["run", str(scan), "--model", str(tiny_unet_path), *argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_dixon_on_another_grid_exits_3_and_writes_nothing(dixon_scan, tiny_unet_path, tmp_path, capsys):
    scan = _copy_scan(dixon_scan, tmp_path)
    fat = nib.load(dixon_scan / "fat.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(fat.dataobj)[:, :, :-1], fat.affine), tmp_path / "short_fat.nii.gz")
    code = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(tiny_unet_path),
            "--dixon-fat",
            str(tmp_path / "short_fat.nii.gz"),
            "--dixon-water",
            str(dixon_scan / "water.nii.gz"),
        ]
    )
    assert code == 3 and "not on the scan's grid" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz", "short_fat.nii.gz"]


def test_without_the_analysis_extra_run_stops_before_segmenting(
    dixon_scan, tiny_unet_path, tmp_path, capsys, monkeypatch
):
    import builtins

    real = builtins.__import__

    def no_cc3d(name, *a, **k):
        if name == "cc3d":
            raise ImportError("no cc3d")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cc3d)
    monkeypatch.setattr("limbseg_rt.runtime.api.files.Segmenter", None)  # any segmentation attempt would crash
    scan = _copy_scan(dixon_scan, tmp_path)
    assert cli_main(["run", str(scan), "--model", str(tiny_unet_path), "--analysis"]) == EXIT_DEPENDENCY
    err = capsys.readouterr().err
    assert 'pip install "limbseg-rt[analysis]"' in err and "--no-cleanup" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_wide_form_csv_has_one_row_per_muscle_with_both_sides(dixon_scan, tiny_unet_path, tmp_path):
    scan = _copy_scan(dixon_scan, tmp_path)
    long_dir = tmp_path / "long"
    long_dir.mkdir()
    long_scan = long_dir / "scan.nii.gz"
    long_scan.write_bytes(scan.read_bytes())
    common = [
        "--model",
        str(tiny_unet_path),
        "--fat",
        str(dixon_scan / "fat.nii.gz"),
        "--water",
        str(dixon_scan / "water.nii.gz"),
    ]
    assert cli_main(["run", str(long_scan), *common]) == EXIT_OK
    assert cli_main(["run", str(scan), *common, "--measures-wide"]) == EXIT_OK
    long_rows = list(csv.DictReader((long_dir / "scan_muscles.csv").open()))
    wide_rows = list(csv.DictReader((tmp_path / "scan_muscles.csv").open()))
    assert len(wide_rows) == len({r["code"] for r in long_rows}) > 0
    by_side = {(r["code"], r["side"]): r for r in long_rows}
    for w in wide_rows:
        for side in ("R", "L"):
            got = w[f"volume_ml_{side}"]
            assert got == (by_side[(w["code"], side)]["volume_ml"] if (w["code"], side) in by_side else "")
            assert w[f"ff_mean_{side}"] == (
                by_side[(w["code"], side)]["ff_mean"] if (w["code"], side) in by_side else ""
            )
    both = [w for w in wide_rows if w["volume_ml_R"] and w["volume_ml_L"]]
    for w in both:  # the asymmetry column follows the formula the report states
        r, l_ = float(w["volume_ml_R"]), float(w["volume_ml_L"])
        assert float(w["volume_asymmetry_percent"]) == pytest.approx((r - l_) / ((r + l_) / 2) * 100, abs=0.02)
