"""``limbseg-rt batch`` with ``run``'s analysis options (issue 22): per muscle x side cohort rows equal
to ``run --analysis`` on the same scan, reruns that redo only what changed, and DICOM inputs' SEG."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import pytest

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.errors import EXIT_OK, EXIT_SCANS_FAILED, EXIT_USAGE

pytest.importorskip("scipy", reason='the analysis needs pip install -e ".[analysis]"')

MEASURES = ("volume_ml", "max_acsa_mm2", "length_mm", "imat_percent", "ff_mean", "ff_median", "ff_weighted")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def dixon(tmp_path_factory) -> Path:
    """Two small Dixon phantoms: ``{a,b}_{image,fat,water}.nii.gz``."""
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    d = tmp_path_factory.mktemp("dixon")
    for sid, seed in (("a", 7), ("b", 8)):
        imgs = make_dixon_phantom(seed, slices=10, shape=(64, 56), spacing=(6.0, 6.0, 24.0))
        for k in ("image", "fat", "water"):
            nib.save(imgs[k], d / f"{sid}_{k}.nii.gz")
    return d


def _manifest(folder: Path, dixon: Path, *, fat_b: str = "b_fat.nii.gz") -> Path:
    """Relative Dixon paths (resolved against the manifest's folder, like ``path``)."""
    for name in ("a_image", "a_fat", "a_water", "b_image", "b_water"):
        shutil.copy(dixon / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    if not (folder / fat_b).exists():
        shutil.copy(dixon / "b_fat.nii.gz", folder / fat_b)
    m = folder / "cohort.csv"
    m.write_text(
        "id,path,dixon_fat,dixon_water\n"
        "a,a_image.nii.gz,a_fat.nii.gz,a_water.nii.gz\n"
        f"b,b_image.nii.gz,{fat_b},b_water.nii.gz\n"
    )
    return m


def _batch(args, model, capsys) -> tuple[int, str, str]:
    code = cli_main(
        ["batch", *map(str, args), "--model", str(model), "--provider", "cpu", "--threads", "1", "--workers", "1"]
    )
    out, err = capsys.readouterr()
    return code, out, err


def _statuses(out: Path) -> dict[str, str]:
    return {r["id"]: r["this_run"] for r in _rows(out / "scans.csv")}


def test_batch_analysis_rows_equal_run_analysis(dixon, tiny_unet_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    m = _manifest(src, dixon)
    out = tmp_path / "cohort"
    code, _, err = _batch(["--manifest", m, "--out", out, "--analysis", "--ff-erode", "1"], tiny_unet_path, capsys)
    assert code == EXIT_OK, err
    rows = _rows(out / "cohort.csv")
    for r in rows:
        assert r["side"] in ("R", "L")
    # `limbseg-rt run --analysis` on scan a with the same Dixon images and options
    ref = tmp_path / "ref"
    ref.mkdir()
    shutil.copy(src / "a_image.nii.gz", ref / "a.nii.gz")
    assert (
        cli_main(
            [
                "run",
                str(ref / "a.nii.gz"),
                "--model",
                str(tiny_unet_path),
                "--provider",
                "cpu",
                "--threads",
                "1",
                "--dixon-fat",
                str(src / "a_fat.nii.gz"),
                "--dixon-water",
                str(src / "a_water.nii.gz"),
                "--ff-erode",
                "1",
            ]
        )
        == EXIT_OK
    )
    capsys.readouterr()
    want = _rows(ref / "a_muscles.csv")
    got = [r for r in rows if r["scan_id"] == "a"]
    assert len(got) == len(want) > 0
    assert {(r["code"], r["side"]) for r in got} == {(r["code"], r["side"]) for r in want}
    by = {(r["code"], r["side"]): r for r in got}
    for w in want:
        g = by[(w["code"], w["side"])]
        for col in MEASURES:
            assert g[col] == w[col], (w["code"], w["side"], col)
    assert any(r["ff_mean"] for r in got)  # the Dixon columns reached the analysis
    # asymmetry: the report's value, on both sides' rows
    report = json.loads((ref / "a_report.json").read_text())
    asym = {a["code"]: a for a in report["analysis"]["asymmetry"]}
    both = [c for c, a in asym.items() if a["volume_percent"] is not None]
    assert both
    for c in both:
        for side in ("R", "L"):
            assert float(by[(c, side)]["asymmetry_volume_percent"]) == pytest.approx(
                asym[c]["volume_percent"], rel=1e-12
            )
            assert float(by[(c, side)]["asymmetry_max_acsa_percent"]) == pytest.approx(
                asym[c]["max_acsa_percent"], rel=1e-12
            )
    rec = json.loads((out / "a" / "completed.json").read_text())
    assert rec["settings"]["analysis"]["ff_erode"] == 1 and set(rec["settings"]["analysis"]["dixon"]) == {
        "dixon_fat",
        "dixon_water",
    }
    assert (out / "a" / "a_muscles.csv").is_file()
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow.parquet as pq

        t = pq.read_table(out / "cohort.parquet")
        assert t.num_rows == len(rows) and set(t.column("side").to_pylist()) == {"R", "L"}

    # The cohort QC page reads the per-side table.
    pytest.importorskip("matplotlib")
    from limbseg_rt.runtime.qc.cohort_page import write_cohort_page

    html = write_cohort_page(out, build_scan_pages=False)["cohort_html"].read_text()
    assert " R" in html and " L" in html


def test_changing_an_analysis_option_redoes_only_what_changed(dixon, tiny_unet_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    m = _manifest(src, dixon)
    out = tmp_path / "cohort"
    base = ["--manifest", m, "--out", out, "--analysis"]
    assert _batch(base, tiny_unet_path, capsys)[0] == EXIT_OK
    assert _batch(base, tiny_unet_path, capsys)[0] == EXIT_OK
    assert _statuses(out) == {"a": "reused", "b": "reused"}
    # one scan's Dixon fat image changes (same name, other content): only that scan is redone
    shutil.copy(dixon / "a_fat.nii.gz", src / "b_fat.nii.gz")
    assert _batch(base, tiny_unet_path, capsys)[0] == EXIT_OK
    assert _statuses(out) == {"a": "reused", "b": "segmented"}
    # a batch-wide option changes: every scan is redone, and the records say so
    assert _batch([*base, "--no-cleanup"], tiny_unet_path, capsys)[0] == EXIT_OK
    assert _statuses(out) == {"a": "segmented", "b": "segmented"}
    assert json.loads((out / "a" / "completed.json").read_text())["settings"]["analysis"]["clean"] is False
    assert _batch([*base, "--no-clean"], tiny_unet_path, capsys)[0] == EXIT_OK  # the alias: same settings
    assert _statuses(out) == {"a": "reused", "b": "reused"}
    # --split-sides: the label maps get a left and a right label per muscle
    assert _batch([*base, "--no-clean", "--split-sides"], tiny_unet_path, capsys)[0] == EXIT_OK
    assert _statuses(out) == {"a": "segmented", "b": "segmented"}
    labels = nib.load(out / "a" / "a_labels.nii.gz").get_fdata()
    assert labels.max() > 37
    # without --analysis the rows have no side, and Dixon columns are refused
    code, _, err = _batch(["--manifest", m, "--out", tmp_path / "plain"], tiny_unet_path, capsys)
    assert code == EXIT_USAGE and "add --analysis" in err


def test_a_missing_dixon_file_fails_only_that_scan(dixon, tiny_unet_path, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    m = _manifest(src, dixon, fat_b="b_fat.nii.gz")
    (src / "b_fat.nii.gz").unlink()
    code, _, err = _batch(["--manifest", m, "--out", tmp_path / "o", "--analysis"], tiny_unet_path, capsys)
    assert code == EXIT_SCANS_FAILED
    assert "b: exit 3: " in err and "b_fat.nii.gz" in err and "Traceback" not in err
    assert _statuses(tmp_path / "o") == {"a": "segmented", "b": "failed"}


def test_manifest_dixon_columns_are_checked(tmp_path, tiny_unet_path, capsys):
    m = tmp_path / "m.csv"
    m.write_text("id,path,dixon_fat\ns1,s1.nii.gz,f.nii.gz\n")
    code, _, err = _batch(["--manifest", m, "--out", tmp_path / "o", "--analysis"], tiny_unet_path, capsys)
    assert code == EXIT_USAGE and "give both dixon_fat and dixon_water" in err
    m.write_text("id,path,fat_fraction,dixon_fat,dixon_water\ns1,s1.nii.gz,ff.nii.gz,f.nii.gz,w.nii.gz\n")
    code, _, err = _batch(["--manifest", m, "--out", tmp_path / "o", "--analysis"], tiny_unet_path, capsys)
    assert code == EXIT_USAGE and "not both" in err
    code, _, err = _batch([tmp_path / "x.nii.gz", "--out", tmp_path / "o", "--ff-erode", "1"], tiny_unet_path, capsys)
    assert code == EXIT_USAGE and "need --analysis" in err


def test_a_dicom_input_gets_its_seg_in_the_scan_folder(tiny_unet_path, tmp_path, capsys):
    pytest.importorskip("highdicom")
    import pydicom
    from dicom_helpers import dciodvfy_errors, folder_digest, write_series

    from limbseg_rt.runtime.phantom.generate import make_phantom

    img, _ = make_phantom(9, slices=12, shape=(64, 56), spacing=(3.0, 3.0, 10.0))
    series = tmp_path / "t1legs"
    files = write_series(img, series, series_number=3, description="T1 legs")
    before = folder_digest(series)
    out = tmp_path / "cohort"
    code, _, err = _batch([series, "--out", out, "--analysis"], tiny_unet_path, capsys)
    assert code == EXIT_OK, err
    assert folder_digest(series) == before and not list(tmp_path.glob("*_seg.dcm"))  # nothing beside the input
    seg_path = out / "t1legs" / "t1legs_seg.dcm"
    seg = pydicom.dcmread(seg_path)
    src = pydicom.dcmread(files[0])
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    report = json.loads((out / "t1legs" / "t1legs_report.json").read_text())
    assert report["manifest"]["dicom_seg"]["path"].endswith("t1legs_seg.dcm")
    found = {m["code"] for m in report["muscles"] if m["voxels"] > 0}
    assert len(seg.SegmentSequence) == len(found)
    rec = json.loads((out / "t1legs" / "completed.json").read_text())
    assert rec["outputs"]["seg"] == "t1legs_seg.dcm" and rec["input"]["kind"] == "folder"
    assert {r["side"] for r in _rows(out / "cohort.csv")} == {"R", "L"}
    assert dciodvfy_errors(seg_path) == []


def test_batch_analysis_without_cc3d_exits_12_before_any_scan(dixon, tiny_unet_path, tmp_path, capsys, monkeypatch):
    import builtins

    from limbseg_rt.runtime.errors import EXIT_DEPENDENCY

    real = builtins.__import__

    def no_cc3d(name, *a, **k):
        if name == "cc3d":
            raise ImportError("no cc3d")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cc3d)
    src = tmp_path / "in"
    src.mkdir()
    m = _manifest(src, dixon)
    code, _, err = _batch(["--manifest", m, "--out", tmp_path / "o", "--analysis"], tiny_unet_path, capsys)
    assert code == EXIT_DEPENDENCY and 'pip install "limbseg-rt[analysis]"' in err and "--no-cleanup" in err
    assert not (tmp_path / "o" / "a").exists()
    code, _, err = _batch(
        ["--manifest", m, "--out", tmp_path / "o2", "--analysis", "--no-cleanup"], tiny_unet_path, capsys
    )
    assert code == EXIT_OK, err
