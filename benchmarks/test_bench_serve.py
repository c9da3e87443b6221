"""The DICOM node: time from the last instance acknowledged to the SEG at PACS, against ``run``.

quick: a phantom series (128 x 112 x 24) written as DICOM; the real ``limbseg-rt serve`` command
(bundled UNet, CPU) receives it from dcmtk ``storescu`` and sends the SEG to dcmtk ``storescp``,
all on 127.0.0.1. Node latency = (SEG file at storescp) - (storescu returned) - stable_seconds.
Reference: the wall time of ``limbseg-rt run`` on the same folder (what a user without the node
pays: start-up, model load, read, segment, write). Gate: node latency <= 1.2x that run.
Both are measured one after the other on the same files; the node has loaded its model at start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _harness import gate_at_most

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_helpers import free_port, node_config, received, storescp, storescu, wait_for, write_toml  # noqa: E402

pytest.importorskip("pynetdicom", reason='needs the serve extra: pip install -e ".[serve]"')
if shutil.which("storescu") is None:  # pragma: no cover
    pytest.skip("dcmtk is not installed (bash .ci/setup-debian.sh)", allow_module_level=True)

LATENCY_MAX = 1.2
STABLE_S = 1.0
EXE = str(Path(sys.executable).with_name("limbseg-rt"))


@pytest.mark.timeout(300)
def test_node_latency_vs_run(results, tmp_path):
    from limbseg_rt.runtime.io.dicom.write_series import write_mr_series
    from limbseg_rt.runtime.phantom.generate import make_phantom

    img = make_phantom(5, slices=24, shape=(128, 112), spacing=(1.75, 1.75, 5.0))[0]
    (tmp_path / "series").mkdir()
    files = write_mr_series(np.asarray(img.dataobj), img.affine, tmp_path / "series")

    t0 = time.perf_counter()
    run = subprocess.run(
        [
            EXE,
            "run",
            str(tmp_path / "series"),
            "--provider",
            "cpu",
            "--out",
            str(tmp_path / "run_labels.nii.gz"),
            "--seg",
            str(tmp_path / "run_seg.dcm"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    run_s = time.perf_counter() - t0
    assert run.returncode in (0, 6), run.stderr

    pacs_port, port = free_port(), free_port()
    toml = write_toml(tmp_path / "node.toml", node_config(tmp_path, port, pacs_port=pacs_port, stable_seconds=STABLE_S))
    toml.write_text(toml.read_text() + '[model]\nmodel = "unet"\nprovider = "cpu"\n')
    with storescp(tmp_path / "pacs", pacs_port):
        proc = subprocess.Popen([EXE, "serve", "--config", str(toml)], stderr=subprocess.PIPE, text=True)
        try:
            assert json.loads(proc.stderr.readline())["event"] == "started"
            sent = storescu(port, files)
            t_acked = time.perf_counter()
            assert sent.returncode == 0, sent.stderr
            wait_for(lambda: received(tmp_path / "pacs"), 120, "the SEG at storescp", interval=0.01)
            t_seg = time.perf_counter()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    node_s = t_seg - t_acked - STABLE_S
    ratio = node_s / run_s
    what = "serve: last instance acknowledged -> SEG at PACS, minus stable_seconds, over run's wall time"
    results.runs.append(
        {
            "what": f"phantom 128x112x24 DICOM: {what}",
            "engine": "cpu (bundled UNet, auto precision)",
            "slices": 24,
            "wall_s": node_s,
            "model_s": None,
            "ratio": ratio,
            "stages": {"run_s": run_s, "node_latency_s": node_s, "stable_s": STABLE_S},
        }
    )
    results.gate(what, ratio, f"<= {LATENCY_MAX}", ratio <= LATENCY_MAX, f"node {node_s:.2f}s, run {run_s:.2f}s")
    gate_at_most(what, ratio, LATENCY_MAX, unit="x", detail=f"node {node_s:.2f}s vs run {run_s:.2f}s")
