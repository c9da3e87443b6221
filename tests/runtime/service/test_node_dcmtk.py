"""The node against real dcmtk peers: storescu plays the scanner, storescp plays PACS (loopback only)."""

from __future__ import annotations

import json
import logging
import subprocess
import time

import pytest
from serve_helpers import (
    IDENTITY,
    PATIENT_NAME,
    SEG,
    committed,
    free_port,
    make_series,
    node_config,
    received,
    storescp,
    storescu,
    threshold_seg,
    wait_for,
)

pytest.importorskip("pynetdicom", reason='needs the serve extra: pip install -e ".[serve]"')
pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def log_lines():
    """JSON lines the node logs during the test."""
    import io

    from limbseg_rt.runtime.service.logs import configure

    stream = io.StringIO()
    handler = configure(stream, logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for name in ("limbseg_rt.serve", "pynetdicom"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture
def make_node(tmp_path):
    from limbseg_rt.runtime.service.node import Node

    nodes = []

    def make(config, process=threshold_seg, identity=IDENTITY):
        node = Node(config, process, identity, tick_seconds=0.05)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def test_one_series_end_to_end_seg_reaches_pacs_and_passes_dciodvfy(tmp_path, make_node, log_lines):
    from pydicom import dcmread

    pacs_port, port = free_port(), free_port()
    series_uid, files = make_series(tmp_path / "scan", slices=3)
    with storescp(tmp_path / "pacs", pacs_port):
        node = make_node(node_config(tmp_path, port, pacs_port=pacs_port))
        sent = storescu(port, files)
        assert sent.returncode == 0, sent.stderr
        segs = wait_for(lambda: received(tmp_path / "pacs"), 30, "the SEG at storescp")
        wait_for(lambda: node.status()["counters"]["delivered"] == 1, 10, "the delivery recorded")
    seg = dcmread(segs[0])
    assert seg.SOPClassUID == SEG
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert seg.NumberOfFrames == 3  # one frame per source slice with bright pixels
    check = subprocess.run(["dciodvfy", str(segs[0])], capture_output=True, text=True, timeout=60)
    assert "Error" not in check.stderr, check.stderr
    st = node.status()
    assert st["counters"]["received"] == 3 and st["counters"]["processed"] == 1 and st["counters"]["delivered"] == 1
    assert st["outbox"] == 0
    # The spool keeps only the dedup record: instances and the delivered SEG are gone.
    assert not any((node.spool.incoming).iterdir())
    [record] = committed(node.spool.root, "result.json")
    assert sorted(p.name for p in node.spool.results.iterdir()) == [record.parent.name]
    assert sorted(p.name for p in record.parent.iterdir()) == ["result.json"]
    lines = log_lines()
    assert any(line.get("event") == "delivered" and line.get("series") == series_uid for line in lines)
    text = json.dumps(lines)
    assert PATIENT_NAME not in text and "Doe" not in text and "PID-42" not in text


def test_an_ae_title_not_on_the_list_is_rejected_and_nothing_is_spooled(tmp_path, make_node):
    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=2)
    node = make_node(node_config(tmp_path, port))
    sent = storescu(port, files, calling="INTRUDER")
    out = sent.stdout + sent.stderr
    assert sent.returncode != 0
    assert "Calling AE Title Not Recognized" in out or "calling AE title not recognized" in out.lower(), out
    assert not any(node.spool.incoming.iterdir())
    assert node.status()["counters"]["rejected_associations"] == 1
    assert node.status()["counters"]["received"] == 0
    # Wrong called AE title: rejected too (reason 7), again nothing spooled.
    sent = storescu(port, files, called="SOMEONE")
    assert sent.returncode != 0 and "Called AE Title Not Recognized" in sent.stdout + sent.stderr
    assert not any(node.spool.incoming.iterdir())


def test_a_source_address_not_on_the_list_is_rejected(tmp_path, make_node):
    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=1)
    node = make_node(node_config(tmp_path, port, allowed_addresses=("10.0.0.0/8",)))
    sent = storescu(port, files)
    assert sent.returncode != 0 and "Association Rejected" in sent.stdout + sent.stderr
    assert not any(node.spool.incoming.iterdir())
    node2 = make_node(node_config(tmp_path / "b", free_port(), allowed_addresses=("127.0.0.0/8",)))
    assert storescu(node2.port, files).returncode == 0


def test_a_series_sent_twice_is_processed_once_and_delivered_once(tmp_path, make_node):
    pacs_port, port = free_port(), free_port()
    _, files = make_series(tmp_path / "scan", slices=2)
    with storescp(tmp_path / "pacs", pacs_port):
        node = make_node(node_config(tmp_path, port, pacs_port=pacs_port))
        assert storescu(port, files).returncode == 0
        wait_for(lambda: node.status()["counters"]["delivered"] == 1, 30, "first delivery")
        assert storescu(port, files).returncode == 0
        wait_for(lambda: node.status()["counters"]["duplicates"] == 1, 30, "the resend recognised")
        time.sleep(1.0)
        assert len(received(tmp_path / "pacs")) == 1
    c = node.status()["counters"]
    assert (c["received"], c["processed"], c["delivered"]) == (4, 1, 1)
    assert not any(node.spool.incoming.iterdir())


def test_resending_an_instance_restarts_the_stability_clock(tmp_path, make_node):
    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=3)
    node = make_node(node_config(tmp_path, port, stable_seconds=2.0))
    assert storescu(port, files[:2]).returncode == 0
    time.sleep(1.3)
    assert storescu(port, files[1:]).returncode == 0  # a resent instance and a new one
    time.sleep(1.3)  # 2.6 s after the first send, only 1.3 s after the last instance
    assert node.status()["counters"]["processed"] == 0
    wait_for(lambda: node.status()["counters"]["processed"] == 1, 20, "processing after the clock")
    rec = json.loads(committed(node.spool.root, "result.json")[0].read_text())
    assert rec["instances"] == 3


def test_quota_answers_out_of_resources_and_the_node_keeps_serving(tmp_path, make_node):
    port = free_port()
    _, small = make_series(tmp_path / "a", slices=1, size=16)
    _, big = make_series(tmp_path / "b", slices=4, size=128, seed=1)  # ~33 kB per instance
    node = make_node(node_config(tmp_path, port, quota_mb=0.06))
    sent = storescu(port, big, extra=("-d",))  # debug output prints the status code itself
    out = sent.stdout + sent.stderr
    assert "0xa700: Refused: Out of resources" in out, out
    c = node.status()["counters"]
    assert c["refused_quota"] >= 1 and c["received"] >= 1
    assert node.spool.used_bytes <= node.spool.quota_bytes
    # The node still answers: once the stored part is processed its space is freed and a new instance fits.
    wait_for(lambda: node.status()["counters"]["processed"] == 1, 20, "the partial series processed")
    assert storescu(port, small).returncode == 0


def test_a_malformed_dataset_is_refused_with_a_status_and_the_node_keeps_serving(tmp_path, make_node):
    from pydicom import dcmread

    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=2)
    ds = dcmread(files[0])
    del ds.SeriesInstanceUID
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    node = make_node(node_config(tmp_path, port))
    sent = storescu(port, [bad])
    assert "Received Store Response (Error: CannotUnderstand)" in sent.stderr, sent.stderr  # 0xC211
    assert node.status()["counters"]["refused_malformed"] == 1
    assert not any(node.spool.incoming.iterdir())
    assert storescu(port, files[1:]).returncode == 0
    assert node.status()["counters"]["received"] == 1


def test_four_senders_at_once(tmp_path, make_node):
    pacs_port, port = free_port(), free_port()
    series = [make_series(tmp_path / f"scan{i}", slices=2, seed=i) for i in range(4)]
    with storescp(tmp_path / "pacs", pacs_port):
        node = make_node(node_config(tmp_path, port, pacs_port=pacs_port))
        procs = [
            subprocess.Popen(["storescu", "-aet", "SCANNER", "-aec", "LIMBSEG", "127.0.0.1", str(port), *map(str, f)])
            for _, f in series
        ]
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
        wait_for(lambda: len(received(tmp_path / "pacs")) == 4, 60, "four SEGs at storescp")
        wait_for(lambda: node.status()["counters"]["delivered"] == 4, 10, "the deliveries recorded")
    from pydicom import dcmread

    refs = {dcmread(p).ReferencedSeriesSequence[0].SeriesInstanceUID for p in received(tmp_path / "pacs")}
    assert refs == {uid for uid, _ in series}
    assert node.status()["counters"]["processed"] == 4


def test_pacs_down_results_wait_in_the_outbox_and_are_delivered_when_it_is_back(tmp_path, make_node):
    pacs_port, port = free_port(), free_port()
    _, files = make_series(tmp_path / "scan", slices=2)
    node = make_node(node_config(tmp_path, port, pacs_port=pacs_port))
    assert storescu(port, files).returncode == 0
    wait_for(lambda: node.status()["counters"]["delivery_failures"] >= 2, 30, "failed delivery attempts")
    assert node.status()["outbox"] == 1
    rec = json.loads(committed(node.spool.root, "result.json")[0].read_text())
    assert rec["destinations"]["pacs"]["attempts"] >= 2 and not rec["destinations"]["pacs"]["delivered"]
    assert len(committed(node.spool.root)) == 1
    with storescp(tmp_path / "pacs", pacs_port):
        wait_for(lambda: received(tmp_path / "pacs"), 30, "delivery once PACS is back")
        wait_for(lambda: node.status()["counters"]["delivered"] == 1, 10, "the delivery recorded")
    assert node.status()["outbox"] == 0 and node.status()["counters"]["delivered"] == 1


def test_a_failing_model_parks_the_series_and_the_node_goes_on(tmp_path, make_node):
    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=2)

    def broken(series_dir, out_dir):
        raise ValueError("the stand-in model cannot read this")

    node = make_node(node_config(tmp_path, port), process=broken)
    assert storescu(port, files).returncode == 0
    wait_for(lambda: node.status()["counters"]["failed"] == 1, 20, "the failure recorded")
    [parked] = list(node.spool.failed.iterdir())
    assert json.loads((parked / "error.json").read_text())["error"] == "the stand-in model cannot read this"
    assert len(list(parked.glob("*.dcm"))) == 2  # acknowledged instances kept for review
    assert node.status()["healthy"]


def test_http_health_and_metrics_on_localhost(tmp_path, make_node):
    import urllib.request

    http_port = free_port()
    node = make_node(node_config(tmp_path, free_port(), http_port=http_port))
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=5).read())
    assert health["healthy"] and health["ae_title"] == "LIMBSEG"
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    assert "limbseg_serve_received_total 0" in metrics and "limbseg_serve_up 1" in metrics
    wait_for(lambda: (node.spool.root / "status.json").is_file(), 5, "status.json")


def test_an_instance_arriving_during_processing_is_not_lost(tmp_path, make_node):
    import threading

    port = free_port()
    _, files = make_series(tmp_path / "scan", slices=3)
    started, release = threading.Event(), threading.Event()

    def slow(series_dir, out_dir):
        started.set()
        release.wait(20)
        return threshold_seg(series_dir, out_dir)

    node = make_node(node_config(tmp_path, port, stable_seconds=0.5), process=slow)
    assert storescu(port, files[:2]).returncode == 0
    assert started.wait(20)
    assert storescu(port, files[2:]).returncode == 0  # acknowledged while the first two are being processed
    release.set()
    wait_for(lambda: node.status()["counters"]["processed"] == 1, 30, "the series processed with all instances")
    [record] = committed(node.spool.root, "result.json")
    assert json.loads(record.read_text())["instances"] == 3
    assert not any(node.spool.incoming.iterdir())
