"""``limbseg-rt serve`` from the command line: --check, --status, one-line errors, the real process."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys

import pytest
from serve_helpers import free_port, node_config, write_toml

from limbseg_rt.cli import main as cli_main

pytest.importorskip("pynetdicom", reason='needs the serve extra: pip install -e ".[serve]"')
pytestmark = [pytest.mark.timeout(120)]
HAS_DICOM_IO = importlib.util.find_spec("limbseg_rt.runtime.io.dicom") is not None


def test_check_refuses_a_bad_config_in_one_line_exit_2(tmp_path, capsys):
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112))
    toml.write_text(toml.read_text().replace("stable_seconds", "stable_secs"))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "limbseg-rt: error: [spool] has unknown setting(s): stable_secs"


def test_check_without_the_dicom_reader_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "limbseg_rt.runtime.io.dicom", None)  # as if this build had none
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("limbseg-rt: error: this installation has no DICOM reader/SEG writer") and err.count("\n") == 1


@pytest.mark.skipif(not HAS_DICOM_IO, reason="the DICOM reader/SEG writer (issue 18) is not in this branch yet")
def test_check_accepts_a_good_config_and_loads_the_model(tmp_path, capsys):
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, 11112, pacs_port=104))
    assert cli_main(["serve", "--config", str(toml), "--check"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "destination pacs: PACS@127.0.0.1:104" in out


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


@pytest.mark.skipif(not HAS_DICOM_IO, reason="the DICOM reader/SEG writer (issue 18) is not in this branch yet")
def test_the_serve_process_logs_json_and_stops_on_sigterm(tmp_path):
    config = node_config(tmp_path, free_port())
    toml = write_toml(tmp_path / "node.toml", config)
    proc = subprocess.Popen([sys.executable, "-m", "limbseg_rt", "serve", "--config", str(toml)],
                            stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stderr.readline())
        assert first["event"] == "started" and first["port"] == config.port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert [json.loads(line)["event"] for line in proc.stderr.read().splitlines()][-1] == "stopped"
    finally:
        proc.kill()
        proc.wait(timeout=10)
