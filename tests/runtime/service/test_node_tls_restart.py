"""TLS associations (self-signed certificates made here) and crash/restart durability (SIGKILL, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from serve_helpers import (
    IDENTITY,
    committed,
    free_port,
    make_series,
    node_config,
    received,
    start_node_process,
    storescp,
    storescu,
    threshold_seg,
    wait_for,
    write_toml,
)

pytest.importorskip("pynetdicom", reason='needs the serve extra: pip install -e ".[serve]"')
pytestmark = [pytest.mark.timeout(120)]


def _self_signed(folder, name):
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, crt


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    return {"server": _self_signed(folder, "node"), "client": _self_signed(folder, "scanner")}


def test_tls_association_with_client_certificates(tmp_path, certs):
    from limbseg_rt.runtime.service.config import TLSConfig
    from limbseg_rt.runtime.service.node import Node

    (skey, scrt), (ckey, ccrt) = certs["server"], certs["client"]
    port = free_port()
    config = node_config(tmp_path, port, tls=TLSConfig(cert=scrt, key=skey, ca=ccrt))
    node = Node(config, threshold_seg, IDENTITY, tick_seconds=0.05)
    node.start()
    try:
        _, files = make_series(tmp_path / "scan", slices=2)
        tls = ("+tls", str(ckey), str(ccrt), "-pw", "+cf", str(scrt))
        sent = storescu(port, files, extra=tls)
        assert sent.returncode == 0, sent.stderr
        assert "Received Store Response (Success)" in sent.stderr
        assert node.status()["counters"]["received"] == 2
        # Plain TCP to the TLS port: no association, nothing spooled.
        plain = storescu(port, files, timeout=30, extra=("-to", "5", "-ta", "5"))
        assert plain.returncode != 0
        # TLS without a client certificate the CA signed: refused in the handshake.
        anon = storescu(port, files, extra=("+tla", "+cf", str(scrt)))
        assert anon.returncode != 0
        assert node.status()["counters"]["received"] == 2
        wait_for(lambda: node.status()["counters"]["processed"] == 1, 20, "the TLS series processed")
    finally:
        node.stop()


def test_results_go_to_a_tls_destination_with_the_nodes_certificate(tmp_path, certs):
    from limbseg_rt.runtime.service.config import Destination, TLSConfig
    from limbseg_rt.runtime.service.node import Node

    (nkey, ncrt), (pkey, pcrt) = certs["server"], certs["client"]  # the node's pair; the PACS's pair
    pacs_port, port = free_port(), free_port()
    dest = Destination("pacs", "127.0.0.1", pacs_port, "PACS", tls=True, ca=pcrt)
    config = node_config(tmp_path, port, tls=TLSConfig(cert=ncrt, key=nkey, ca=None), destinations=(dest,))
    _, files = make_series(tmp_path / "scan", slices=2)
    # storescp requires and verifies the node's certificate (+cf: the certificate it trusts).
    with storescp(tmp_path / "pacs", pacs_port, extra=("+tls", str(pkey), str(pcrt), "-pw", "+cf", str(ncrt), "-rc")):
        node = Node(config, threshold_seg, IDENTITY, tick_seconds=0.05)
        node.start()
        try:
            sent = storescu(port, files, extra=("+tla", "+cf", str(ncrt)))  # anonymous TLS caller: no CA set
            assert sent.returncode == 0, sent.stderr
            wait_for(lambda: received(tmp_path / "pacs"), 30, "the SEG over TLS")
            wait_for(lambda: node.status()["counters"]["delivered"] == 1, 10, "the delivery recorded")
        finally:
            node.stop()


def test_c_echo_answers(tmp_path):
    from limbseg_rt.runtime.service.node import Node

    port = free_port()
    node = Node(node_config(tmp_path, port), threshold_seg, IDENTITY)
    node.start()
    try:
        echo = subprocess.run(
            ["echoscu", "-v", "-aet", "SCANNER", "-aec", "LIMBSEG", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert echo.returncode == 0 and "Received Echo Response (Success)" in echo.stderr, echo.stderr
    finally:
        node.stop()


def test_sigkill_after_the_ack_then_restart_processes_and_delivers_once(tmp_path):
    pacs_port, port = free_port(), free_port()
    config = node_config(tmp_path, port, pacs_port=pacs_port, stable_seconds=2.0)
    toml = write_toml(tmp_path / "node.toml", config)
    series_uid, files = make_series(tmp_path / "scan", slices=3)
    log = tmp_path / "node.log"
    proc = start_node_process(toml, log)
    try:
        sent = storescu(port, files)
        assert sent.returncode == 0 and sent.stderr.count("Received Store Response (Success)") == 3
        os.kill(proc.pid, signal.SIGKILL)  # acknowledged, not yet stable: only the spool has it
        proc.wait(timeout=10)
        spooled = list((config.spool / "incoming" / series_uid).glob("*.dcm"))
        assert len(spooled) == 3
        with storescp(tmp_path / "pacs", pacs_port):
            proc = start_node_process(toml, log)
            segs = wait_for(lambda: received(tmp_path / "pacs"), 40, "the SEG after the restart")
            wait_for(lambda: not committed(config.spool), 10, "the outbox emptied")
            # Restart once more: nothing is left to process or send, so nothing arrives twice.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            proc = start_node_process(toml, log)
            time.sleep(config.stable_seconds + 1.5)
            assert len(received(tmp_path / "pacs")) == 1
        from pydicom import dcmread

        assert dcmread(segs[0]).ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert [e["event"] for e in events if e.get("event") == "processed"] == ["processed"]
        started = [e for e in events if e.get("event") == "started"]
        assert started[1]["resumed_series"] == 1 and started[2]["resumed_series"] == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_sigkill_with_an_undelivered_result_sends_it_after_the_restart(tmp_path):
    pacs_port, port = free_port(), free_port()
    config = node_config(tmp_path, port, pacs_port=pacs_port, stable_seconds=0.5)
    toml = write_toml(tmp_path / "node.toml", config)
    _, files = make_series(tmp_path / "scan", slices=2)
    log = tmp_path / "node.log"
    proc = start_node_process(toml, log)
    try:
        assert storescu(port, files).returncode == 0
        wait_for(
            lambda: committed(config.spool) and not any((config.spool / "incoming").iterdir()),
            30,
            "the result in the outbox (PACS down) and the series' instances cleaned up",
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        with storescp(tmp_path / "pacs", pacs_port):
            proc = start_node_process(toml, log)
            wait_for(lambda: received(tmp_path / "pacs"), 30, "the outbox delivered after the restart")
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        names = [e.get("event") for e in events]
        second = [i for i, n in enumerate(names) if n == "started"][1]
        assert "processing" not in names[second:]  # the restarted node only sent; it did not segment again
        assert events[second]["undelivered_results"] == 1 and events[second]["resumed_series"] == 0
        assert len(committed(config.spool, "result.json")) == 1
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_sigterm_while_processing_finishes_the_series_and_exits_0(tmp_path):
    config = node_config(tmp_path, free_port(), stable_seconds=0.5)
    toml = write_toml(tmp_path / "node.toml", config)
    _, files = make_series(tmp_path / "scan", slices=2)
    log = tmp_path / "node.log"
    proc = start_node_process(toml, log, delay=2.0)
    try:
        assert storescu(config.port, files).returncode == 0
        wait_for(lambda: '"event": "processing"' in log.read_text(), 20, "processing to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        names = [e.get("event") for e in events]
        assert names.index("processing") < names.index("stopping") < names.index("processed") < names.index("stopped")
        status = json.loads((config.spool / "status.json").read_text())
        assert status["counters"]["processed"] == 1 and status["processing"] is None
    finally:
        proc.kill()
        proc.wait(timeout=10)
