"""The per-muscle report: volumes, slice ranges in both index systems, FOV flags, JSON/CSV."""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np
import pytest

from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.report.run_report import (
    CSV_COLUMNS,
    Report,
    muscle_stats,
    peak_rss_mib,
    runtime_versions,
    write_text_atomic,
)

TABLE = default_label_table()


def _labels():
    lab = np.zeros((10, 8, 6), dtype=np.uint8)
    lab[2:5, 1:3, 0:3] = 1  # ADB: 3*2*3 = 18 voxels, touches the first (inferior) slice
    lab[6:8, 4:7, 2:4] = 5  # BFS: 2*3*2 = 12 voxels, inside
    lab[0:1, 0:1, 5] = 37  # VM: 1 voxel on the last (superior) slice
    return lab


def test_volumes_are_voxel_count_times_voxel_volume():
    lab = _labels()
    inten = np.arange(lab.size, dtype=np.float32).reshape(lab.shape)
    stats = muscle_stats(lab, inten, TABLE, voxel_volume_mm3=2.5)
    assert len(stats) == 37 and [s.index for s in stats] == list(range(1, 38))
    by = {s.code: s for s in stats}
    assert by["ADB"].voxels == 18 and by["ADB"].volume_ml == pytest.approx(18 * 2.5 / 1000)
    assert by["BFS"].voxels == 12 and by["BFS"].volume_ml == pytest.approx(12 * 2.5 / 1000)
    assert by["VM"].voxels == 1
    assert by["ADL"].voxels == 0 and by["ADL"].volume_ml == 0 and by["ADL"].z_first is None
    assert by["ADB"].mean_intensity == pytest.approx(float(inten[lab == 1].mean()))
    assert by["ADL"].mean_intensity is None


def test_slice_ranges_and_field_of_view_flags():
    stats = {s.code: s for s in muscle_stats(_labels(), np.zeros((10, 8, 6)), TABLE, 1.0)}
    assert (stats["ADB"].z_first, stats["ADB"].z_last) == (0, 2)
    assert stats["ADB"].touches_first_slice and not stats["ADB"].touches_last_slice
    assert (stats["BFS"].z_first, stats["BFS"].z_last) == (2, 3)
    assert not stats["BFS"].touches_first_slice and not stats["BFS"].touches_last_slice
    assert stats["VM"].touches_last_slice and not stats["VM"].touches_first_slice


def test_input_slice_indices_follow_a_flipped_input_axis():
    lab = _labels()
    flipped = {s.code: s for s in muscle_stats(lab, np.zeros(lab.shape), TABLE, 1.0, input_axis=0, input_flipped=True)}
    # Canonical z 0..2 of 6 slices is input index 3..5 when the input runs superior -> inferior.
    assert (flipped["ADB"].input_axis, flipped["ADB"].input_first, flipped["ADB"].input_last) == (0, 3, 5)
    same = {s.code: s for s in muscle_stats(lab, np.zeros(lab.shape), TABLE, 1.0, input_axis=2)}
    assert (same["ADB"].input_first, same["ADB"].input_last) == (0, 2)


def test_non_finite_intensities_are_left_out_of_the_mean():
    lab = _labels()
    inten = np.ones(lab.shape, dtype=np.float32)
    inten[2, 1, 0] = np.nan
    stats = {s.code: s for s in muscle_stats(lab, inten, TABLE, 1.0)}
    assert stats["ADB"].mean_intensity == pytest.approx(1.0)
    assert stats["ADB"].voxels == 18


def test_report_json_and_csv_carry_every_muscle(tmp_path):
    stats = muscle_stats(_labels(), np.ones((10, 8, 6)), TABLE, 2.0)
    report = Report(stats, {"model": {"sha256": "abc"}}, ["fov_cut"], ["two muscles were cut"])
    d = json.loads(report.to_json())
    assert d["schema"].startswith("limbseg-rt.report/")
    assert len(d["muscles"]) == 37
    assert d["totals"]["voxels"] == 31 and d["totals"]["muscles_found"] == 3
    assert d["totals"]["volume_ml"] == pytest.approx(31 * 2.0 / 1000)
    assert d["flags"] == ["fov_cut"] and report["manifest"]["model"]["sha256"] == "abc"
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert tuple(rows[0].keys()) == CSV_COLUMNS and len(rows) == 37
    adb = next(r for r in rows if r["code"] == "ADB")
    assert int(adb["voxels"]) == 18 and float(adb["volume_ml"]) == pytest.approx(0.036)
    assert adb["touches_first_slice"] == "True"
    assert next(r for r in rows if r["code"] == "ADL")["z_first"] == ""
    path = write_text_atomic(tmp_path / "r.csv", report.to_csv())
    assert path.read_text() == report.to_csv()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no temp files left behind


def test_manifest_helpers(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"limbseg")
    import hashlib

    assert sha256_file(p) == hashlib.sha256(b"limbseg").hexdigest()
    assert peak_rss_mib() > 10  # a Python process with numpy holds more than 10 MiB
    v = runtime_versions()
    assert {"limbseg_rt", "onnxruntime", "numpy", "nibabel"} <= set(v)
    assert v["numpy"] == np.__version__


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        muscle_stats(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3)), TABLE, 1.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's per-process peak")
def test_peak_rss_is_the_process_own_not_inherited_from_a_large_parent():
    # Linux keeps the forking parent's ru_maxrss across fork + exec; a run launched by a big process
    # (a workstation application, a pytest session) must still report its own peak.
    import subprocess

    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB resident in this (parent) process
    code = "from limbseg_rt.runtime.report.run_report import peak_rss_mib; print(peak_rss_mib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) < 300, f"child reported {out.strip()} MiB with a {ballast.nbytes >> 20} MiB parent"
