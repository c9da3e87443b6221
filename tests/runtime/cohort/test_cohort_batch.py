"""``run_batch`` with the local engine, end to end on small phantoms and the tiny test model."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cohort_helpers import hidden_entries, labels_of, write_cohort, write_corrupt, write_phantom

from limbseg_rt.runtime.cohort.batch import run_batch, split_threads
from limbseg_rt.runtime.cohort.jobs import ScanJob, jobs_from_paths
from limbseg_rt.runtime.cohort.tables import write_cohort_csv
from limbseg_rt.runtime.errors import EXIT_INPUT, EXIT_OK, EXIT_SCANS_FAILED, ModelError, OutputError

N_MUSCLES = 37


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scans")
    good = write_cohort(folder, 3)
    return good + [write_corrupt(folder / "broken.nii.gz")]


def _kw(model: Path) -> dict:
    return {"model": str(model), "provider": "cpu", "threads": 2}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _mtimes(out: Path) -> dict[str, int]:
    return {
        p.name: (p / f"{p.name}_labels.nii.gz").stat().st_mtime_ns
        for p in out.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }


def test_batch_writes_each_scan_like_run_and_lists_the_bad_one(scans, tiny_unet_path, tmp_path):
    from limbseg_rt.runtime.api import segment_file

    before = {p: p.read_bytes() for p in scans}
    out = tmp_path / "cohort"
    seen = []
    res = run_batch(
        jobs_from_paths(scans),
        out,
        segmenter_kwargs=_kw(tiny_unet_path),
        workers=2,
        progress=lambda done, total, o: seen.append((done, total, o["id"])),
    )
    assert res.exit_code == EXIT_SCANS_FAILED
    assert [d for d, _, _ in seen] == [1, 2, 3, 4] and {t for _, t, _ in seen} == {4}
    assert {p: p.read_bytes() for p in scans} == before  # inputs untouched

    # The same labels and volumes that `limbseg-rt run` writes for that scan.
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref, _ = segment_file(
        scans[1],
        out=ref_dir / "l.nii.gz",
        report_json=ref_dir / "r.json",
        csv=ref_dir / "v.csv",
        model=str(tiny_unet_path),
        provider="cpu",
        threads=1,
    )
    got = out / "s01" / "s01_labels.nii.gz"
    np.testing.assert_array_equal(labels_of(got), labels_of(ref_dir / "l.nii.gz"))
    assert np.allclose(nib.load(str(got)).affine, nib.load(str(scans[1])).affine)
    assert (out / "s01" / "s01_volumes.csv").read_text() == (ref_dir / "v.csv").read_text()

    record = json.loads((out / "s01" / "completed.json").read_text())
    assert record["input"]["sha256"] == ref.report.manifest["input"]["sha256"]
    assert record["model"]["sha256"] == ref.report.manifest["model"]["sha256"]
    assert record["status"] == "ok" and record["settings"]["fit"] == "auto"

    rows = _rows(out / "cohort.csv")
    assert len(rows) == 3 * N_MUSCLES + 1
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["scan_id"], r["exit_code"]) for r in failed] == [("broken", str(EXIT_INPUT))]
    assert "not a NIfTI image" in failed[0]["message"] and failed[0]["volume_ml"] == ""
    s01 = {r["code"]: float(r["volume_ml"]) for r in rows if r["scan_id"] == "s01"}
    assert s01 == pytest.approx({m.code: m.volume_ml for m in ref.report.muscles}, abs=1e-4)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"scans": 4, "segmented": 3, "reused": 0, "failed": 1, "ok": 3, "empty": 0}
    assert summary["failures"][0]["id"] == "broken" and summary["exit_code"] == EXIT_SCANS_FAILED
    assert summary["engine"]["engine"] == "local" and summary["engine"]["workers"] == 2
    assert summary["engine"]["threads_per_worker"] == 1  # 2 threads shared by 2 workers
    assert summary["throughput"]["scans_per_hour"] > 0 and summary["versions"]["onnxruntime"]
    assert [r["this_run"] for r in _rows(out / "scans.csv")] == ["segmented"] * 3 + ["failed"]
    assert hidden_entries(out) == []
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "cohort.csv",
        "cohort.parquet",
        "s00",
        "s01",
        "s02",
        "scans.csv",
        "summary.json",
    ]


def test_parquet_holds_the_cohort_table(scans, tiny_unet_path, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "c"
    run_batch(jobs_from_paths(scans[:2]), out, segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    table = pq.read_table(out / "cohort.parquet").to_pylist()
    rows = _rows(out / "cohort.csv")
    assert len(table) == len(rows) == 2 * N_MUSCLES
    assert [t["scan_id"] for t in table] == [r["scan_id"] for r in rows]
    assert [t["volume_ml"] for t in table] == pytest.approx([float(r["volume_ml"]) for r in rows])


def test_rerun_skips_complete_scans_redoes_changed_ones_and_force_redoes_all(tiny_unet_path, tmp_path):
    src = tmp_path / "in"
    paths = write_cohort(src, 3)
    out = tmp_path / "out"
    jobs = jobs_from_paths(paths)
    assert run_batch(jobs, out, segmenter_kwargs=_kw(tiny_unet_path), workers=1).exit_code == EXIT_OK
    first = _mtimes(out)

    res = run_batch(jobs, out, segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    assert res.summary["counts"]["reused"] == 3 and res.summary["counts"]["segmented"] == 0
    assert _mtimes(out) == first
    assert len(_rows(out / "cohort.csv")) == 3 * N_MUSCLES  # reused scans stay in the cohort table

    write_phantom(paths[1], seed=42)  # a changed scan behind the same name
    changed = [ScanJob(j.id, j.source, (0.0, 0.5) if j.id == "s02" else None) for j in jobs]  # and changed settings
    res = run_batch(changed, out, segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    assert {i: o["status"] for i, o in res.outcomes.items()} == {"s00": "skipped", "s01": "ok", "s02": "ok"}
    now = _mtimes(out)
    assert now["s00"] == first["s00"] and now["s01"] != first["s01"] and now["s02"] != first["s02"]
    assert json.loads((out / "s02" / "completed.json").read_text())["settings"]["limb_range"] == [0.0, 0.5]

    res = run_batch(changed, out, segmenter_kwargs=_kw(tiny_unet_path), workers=1, force=True)
    assert res.summary["counts"]["segmented"] == 3 and all(_mtimes(out)[k] != now[k] for k in now)
    assert hidden_entries(out) == []


def test_a_failed_redo_keeps_the_earlier_result(tiny_unet_path, tmp_path):
    paths = write_cohort(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch(jobs_from_paths(paths), out, segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    good = labels_of(out / "s00" / "s00_labels.nii.gz")
    write_corrupt(paths[0])
    res = run_batch(jobs_from_paths(paths), out, segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    assert res.outcomes["s00"]["status"] == "failed" and res.exit_code == EXIT_SCANS_FAILED
    np.testing.assert_array_equal(labels_of(out / "s00" / "s00_labels.nii.gz"), good)


def test_a_folder_input_goes_to_the_segmenter_as_is(tiny_unet_path, tmp_path):
    """A folder (a DICOM series) is handed to Segmenter.segment unchanged: the reader decides. This one
    holds no image (today's reader reads no folders; a DICOM reader finds no DICOM in it), so the scan
    fails on its own row with the reader's message, hashed, and the rest of the cohort is written."""
    series = tmp_path / "series1"
    series.mkdir()
    (series / "IM0001").write_bytes(b"\0" * 200)
    good = write_phantom(tmp_path / "s00.nii.gz", 0)
    res = run_batch(jobs_from_paths([series, good]), tmp_path / "out", segmenter_kwargs=_kw(tiny_unet_path), workers=1)
    o = res.outcomes["series1"]
    assert res.outcomes["s00"]["status"] == "ok"
    assert (o["status"], o["error_type"], o["exit_code"]) == ("failed", "InputError", EXIT_INPUT), o
    assert o["input_sha256"] and "series1" in o["message"]


def test_a_model_that_cannot_load_stops_the_batch_with_its_own_error(scans, tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        run_batch(
            jobs_from_paths(scans[:1]),
            tmp_path / "out",
            segmenter_kwargs={"model": str(tmp_path / "none.onnx"), "provider": "cpu"},
        )
    assert hidden_entries(tmp_path / "out") == [] and not (tmp_path / "out" / "summary.json").exists()


def test_output_folder_checks(scans, tiny_unet_path, tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        run_batch(jobs_from_paths(scans[:1]), afile, segmenter_kwargs=_kw(tiny_unet_path))
    with pytest.raises(OutputError, match="name of a cohort output"):
        run_batch([ScanJob("summary", str(scans[0]))], tmp_path / "o", segmenter_kwargs=_kw(tiny_unet_path))
    inside = tmp_path / "o2" / "s00"
    inside.mkdir(parents=True)
    shutil.copy(scans[0], inside / "s00.nii.gz")
    with pytest.raises(OutputError, match="inside its own output folder"):
        run_batch(jobs_from_paths([inside / "s00.nii.gz"]), tmp_path / "o2", segmenter_kwargs=_kw(tiny_unet_path))


def test_cohort_table_keeps_per_side_rows_when_reports_have_sides(tmp_path):
    """The analytics report's long CSV (muscle x side) passes through; side-less reports still work."""
    from limbseg_rt.runtime.cohort import store

    def scan(sid, header, lines):
        staging = store.new_staging_dir(tmp_path, sid)
        (staging / f"{sid}_volumes.csv").write_text("\n".join([header, *lines]) + "\n")
        store.write_record(
            staging, {"id": sid, "status": "ok", "exit_code": 0, "outputs": {"csv": f"{sid}_volumes.csv"}}
        )
        store.publish(staging, tmp_path, sid)

    scan("a", "index,code,name,side,volume_ml", ["2,ADL,adductor longus,L,10.5", "2,ADL,adductor longus,R,11.0"])
    scan("b", "index,code,name,volume_ml", ["2,ADL,adductor longus,21.0"])
    outcomes = {
        "a": {"status": "ok", "exit_code": 0, "message": ""},
        "b": {"status": "skipped", "exit_code": 0, "message": "x"},
        "c": {"status": "failed", "exit_code": 3, "message": "bad"},
    }
    path = write_cohort_csv(tmp_path, [ScanJob("a", "a"), ScanJob("b", "b"), ScanJob("c", "c")], outcomes)
    rows = _rows(path)
    assert list(rows[0]) == ["scan_id", "status", "exit_code", "message", "index", "code", "name", "side", "volume_ml"]
    assert [(r["scan_id"], r["side"], r["volume_ml"]) for r in rows] == [
        ("a", "L", "10.5"),
        ("a", "R", "11.0"),
        ("b", "", "21.0"),
        ("c", "", ""),
    ]
    assert rows[2]["status"] == "ok" and rows[3]["status"] == "failed" and rows[3]["message"] == "bad"


def test_threads_are_split_between_workers():
    assert split_threads(8, 3) == 2 and split_threads(1, 4) == 1
    assert split_threads(None, 1) == (os.cpu_count() or 1)
