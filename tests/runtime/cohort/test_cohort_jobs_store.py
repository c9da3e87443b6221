"""Cohort inputs (manifest, ids, input hashes) and the cohort folder (publish, recover, lock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from limbseg_rt.runtime.cohort import store
from limbseg_rt.runtime.cohort.jobs import ManifestError, input_kind, input_sha256, jobs_from_paths, load_manifest
from limbseg_rt.runtime.errors import EXIT_USAGE, OutputError


def _manifest(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cohort.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_manifest_paths_are_relative_to_the_manifest_and_limb_ranges_parse(tmp_path, monkeypatch):
    (tmp_path / "scans").mkdir()
    m = _manifest(tmp_path, "\ufeffid,path,limb_range\nA01,scans/a.nii.gz,0:0.5\nB02,/abs/b.nii,\n\n")
    monkeypatch.chdir("/")  # the manifest's folder, not the working directory, anchors relative paths
    jobs = load_manifest(m)
    assert [j.id for j in jobs] == ["A01", "B02"]
    assert jobs[0].source == str(tmp_path / "scans" / "a.nii.gz")
    assert jobs[0].limb_range == (0.0, 0.5) and jobs[1].limb_range is None
    assert jobs[1].source == "/abs/b.nii"


@pytest.mark.parametrize(
    "text, match",
    [
        ("id,file\nA,a.nii\n", "missing column"),
        ("id,path,limbrange\nA,a.nii,0:1\n", "unknown column.*limbrange"),
        ("id,path\nA,a.nii\nA,b.nii\n", "line 3.*already used on line 2"),
        ("id,path\n../x,a.nii\n", "line 2.*cannot name a folder"),
        ("id,path\n.hidden,a.nii\n", "cannot name a folder"),
        ("id,path\nA,\n", "has no path"),
        ("id,path,limb_range\nA,a.nii,0.6:0.2\n", "needs 0 <= A < B <= 1"),
        ("id,path\n", "lists no scans"),
    ],
)
def test_bad_manifests_are_usage_errors_naming_the_line(tmp_path, text, match):
    with pytest.raises(ManifestError, match=match) as exc:
        load_manifest(_manifest(tmp_path, text))
    assert exc.value.exit_code == EXIT_USAGE


def test_ids_from_paths_strip_nifti_suffixes_and_refuse_duplicates(tmp_path):
    jobs = jobs_from_paths([tmp_path / "s01.nii.gz", tmp_path / "s02.NII", tmp_path / "dicom series 3"])
    assert [j.id for j in jobs] == ["s01", "s02", "dicom_series_3"]
    assert all(Path(j.source).is_absolute() for j in jobs)
    with pytest.raises(ManifestError, match="both be scan 's01'.*--manifest"):
        jobs_from_paths([tmp_path / "a" / "s01.nii.gz", tmp_path / "b" / "s01.nii"])


def test_folder_hash_follows_the_files_it_holds(tmp_path):
    d = tmp_path / "series"
    (d / "sub").mkdir(parents=True)
    (d / "1.dcm").write_bytes(b"one")
    (d / "sub" / "2.dcm").write_bytes(b"two")
    first = input_sha256(d)
    (d / ".DS_Store").write_bytes(b"junk")  # hidden files do not count
    assert input_sha256(d) == first
    (d / "sub" / "2.dcm").write_bytes(b"TWO")
    assert input_sha256(d) != first
    (d / "sub" / "2.dcm").write_bytes(b"two")
    assert input_sha256(d) == first
    (d / "sub" / "2.dcm").rename(d / "sub" / "3.dcm")
    assert input_sha256(d) != first
    assert input_kind(d) == "folder" and input_kind(d / "1.dcm") == "file" and input_kind(tmp_path / "no") == "missing"


def _scan_folder(root: Path, sid: str, text: str) -> Path:
    staging = store.new_staging_dir(root, sid)
    (staging / f"{sid}_volumes.csv").write_text(text)
    store.write_record(
        staging,
        {
            "id": sid,
            "outputs": {"csv": f"{sid}_volumes.csv"},
            "input": {"sha256": "x"},
            "model": {"sha256": "m"},
            "settings": {"fit": "resize"},
        },
    )
    return staging


def test_publish_replaces_a_scan_folder_whole(tmp_path):
    store.publish(_scan_folder(tmp_path, "s1", "old"), tmp_path, "s1")
    assert (tmp_path / "s1" / "s1_volumes.csv").read_text() == "old"
    store.publish(_scan_folder(tmp_path, "s1", "new"), tmp_path, "s1")
    assert (tmp_path / "s1" / "s1_volumes.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1"]
    rec = store.read_record(tmp_path, "s1")
    assert store.record_matches(rec, input_sha256="x", model_sha256="m", settings={"fit": "resize"})
    assert not store.record_matches(rec, input_sha256="x", model_sha256="m", settings={"fit": "tile"})
    assert not store.record_matches(rec, input_sha256="y", model_sha256="m", settings={"fit": "resize"})
    (tmp_path / "s1" / "s1_volumes.csv").unlink()  # a record whose outputs are gone is not complete
    assert store.read_record(tmp_path, "s1") is None


def test_recover_restores_a_replaced_result_and_removes_staging(tmp_path):
    store.publish(_scan_folder(tmp_path, "s1", "kept"), tmp_path, "s1")
    # A batch killed between the two renames of a redo: old result moved aside, new one still staged.
    os.rename(tmp_path / "s1", tmp_path / ".s1.replaced-0123456789ab")
    _scan_folder(tmp_path, "s1", "half")
    _scan_folder(tmp_path, "s2", "half")
    (tmp_path / "s3").mkdir()  # not ours to touch
    done = store.recover(tmp_path)
    assert done["restored"] == ["s1"] and len(done["removed"]) == 2
    assert (tmp_path / "s1" / "s1_volumes.csv").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1", "s3"]


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    with store.BatchLock(tmp_path):
        code = (
            "import sys\nfrom limbseg_rt.runtime.cohort.store import BatchLock\n"
            f"try:\n    BatchLock({str(tmp_path)!r}).__enter__()\nexcept Exception as e:\n    print(type(e).__name__, e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3
        assert "OutputError another batch is writing to" in proc.stdout and f"pid {os.getpid()}" in proc.stdout
    with store.BatchLock(tmp_path):  # released on exit
        pass
    assert OutputError.exit_code == 8
