"""``limbseg-rt serve`` from the command line: --check, --status, one-line errors, the real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from serve_helpers import free_port, node_config, write_toml

from limbseg_rt.cli import main as cli_main

pytest.importorskip("pynetdicom", reason='needs the serve extra: pip install -e ".[serve]"')
pytestmark = [pytest.mark.timeout(120)]


def test_check_refuses_a_bad_config_in_one_line_exit_2(tmp_path, capsys):
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112))
    toml.write_text(toml.read_text().replace("stable_seconds", "stable_secs"))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "limbseg-rt: error: [spool] has unknown setting(s): stable_secs"


def test_serve_without_the_extra_says_how_to_install_it_exit_12(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynetdicom", None)  # as if the serve extra were not installed
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 12
    err = capsys.readouterr().err
    assert (
        err
        == 'limbseg-rt: error: the DICOM node needs the serve extra: pip install "limbseg-rt[serve]" (pynetdicom is not installed)\n'
    )


def test_check_accepts_a_good_config_and_loads_the_model(tmp_path, capsys):
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112, pacs_port=104))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "destination pacs: PACS@127.0.0.1:104" in out and "model unet" in out


def test_status_prints_the_running_nodes_status_file(tmp_path, capsys):
    from serve_helpers import IDENTITY, threshold_seg

    from limbseg_rt.runtime.service.node import Node

    config = node_config(tmp_path, free_port())
    toml = write_toml(tmp_path / "node.toml", config)
    assert cli_main(["serve", "--config", str(toml), "--status"]) == 2
    assert "the node has not run with this spool yet" in capsys.readouterr().err
    node = Node(config, threshold_seg, IDENTITY)
    node.start()
    node.stop()
    assert cli_main(["serve", "--config", str(toml), "--status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["ae_title"] == "LIMBSEG" and status["counters"]["received"] == 0


def test_the_serve_command_segments_a_phantom_series_and_pacs_gets_the_same_seg_as_run(tmp_path, capsys):
    """The real command: bundled UNet, a phantom MR series from storescu, the SEG at storescp; then SIGTERM."""
    import numpy as np
    import pydicom
    from serve_helpers import PATIENT_NAME, received, storescp, storescu, wait_for

    from limbseg_rt.runtime.io.dicom.write_series import write_mr_series
    from limbseg_rt.runtime.phantom.generate import make_phantom

    img = make_phantom(9, slices=8, shape=(64, 56), spacing=(1.75, 1.75, 5.0))[0]
    (tmp_path / "series").mkdir()
    files = write_mr_series(
        np.asarray(img.dataobj),
        img.affine,
        tmp_path / "series",
        patient={"PatientName": PATIENT_NAME, "PatientID": "PID-42"},
    )
    pacs_port, port = free_port(), free_port()
    config = node_config(tmp_path, port, pacs_port=pacs_port, stable_seconds=1.0)
    toml = write_toml(tmp_path / "node.toml", config)
    toml.write_text(toml.read_text() + '[model]\nmodel = "unet"\nprovider = "cpu"\nthreads = 1\nkeep_report = true\n')
    with storescp(tmp_path / "pacs", pacs_port):
        proc = subprocess.Popen(
            [sys.executable, "-m", "limbseg_rt", "serve", "--config", str(toml)], stderr=subprocess.PIPE, text=True
        )
        try:
            first = json.loads(proc.stderr.readline())
            assert first["event"] == "started" and first["port"] == port
            sent = storescu(port, files)
            assert sent.returncode == 0 and sent.stderr.count("Received Store Response (Success)") == len(files)
            [seg_file] = wait_for(lambda: received(tmp_path / "pacs"), 60, "the SEG at storescp")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            log = proc.stderr.read()
        finally:
            proc.kill()
            proc.wait(timeout=10)
    events = [json.loads(line)["event"] for line in log.splitlines()]
    assert "processed" in events and "delivered" in events and events[-1] == "stopped"
    assert PATIENT_NAME not in log and "PID-42" not in log
    # keep_report: labels, report and CSV stay in the result folder; the sent SEG is gone from it.
    [record] = [p for p in (config.spool / "results").glob("*/result.json") if not p.parent.name.startswith(".")]
    assert sorted(p.name for p in record.parent.iterdir()) == sorted(
        ["labels.ctbl", "labels.itksnap.txt", "labels.nii.gz", "report.json", "result.json", "volumes.csv"]
    )
    report_text = (record.parent / "report.json").read_text()
    assert PATIENT_NAME not in report_text and "PID-42" not in report_text
    check = subprocess.run(["dciodvfy", str(seg_file)], capture_output=True, text=True, timeout=60)
    assert "Error" not in check.stderr, check.stderr
    # `run` on the same files writes the same segmentation (segments and frames).
    assert cli_main(
        [
            "run",
            str(tmp_path / "series"),
            "--seg",
            str(tmp_path / "run_seg.dcm"),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run_labels.nii.gz"),
        ]
    ) in (0, 6)
    capsys.readouterr()
    ours, theirs = pydicom.dcmread(seg_file), pydicom.dcmread(tmp_path / "run_seg.dcm")
    assert ours.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    assert [s.SegmentLabel for s in ours.SegmentSequence] == [s.SegmentLabel for s in theirs.SegmentSequence]
    assert len(ours.SegmentSequence) >= 10
    assert np.array_equal(ours.pixel_array, theirs.pixel_array)
