"""``<stem>_report.html`` opened in headless Chromium: not blank, shows the muscle table, holds every
muscle row, shows the warnings, and makes no request outside the file (its CSP blocks a remote image
that a page without it does load)."""

from __future__ import annotations

import copy
import http.server
import re
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from qc_browser import dump_dom, screenshot

from limbseg_rt.runtime.api import segment_file
from limbseg_rt.runtime.model.bundled import MODELS_DIR
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom.generate import make_phantom
from limbseg_rt.runtime.qc import page

pytest.importorskip("PIL", reason='QC pictures need Pillow (pip install "limbseg-rt[qc]")')

TABLE = default_label_table()
HEADER_RGB = (0xE8, 0xEE, 0xF7)  # the muscle table's header background (page.STYLE)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tiny_unet_path):
    d = tmp_path_factory.mktemp("qc-page")
    image, _ = make_phantom(3, slices=20, shape=(96, 80), spacing=(1.5, 1.5, 5.0))
    scan = d / "case.nii.gz"
    nib.save(image, str(scan))
    result, written = segment_file(scan, model=str(tiny_unet_path), provider="cpu", qc=True)
    return result, written


def side_report(base: dict) -> dict:
    """The real report reshaped the way per-side analytics will carry it: one record per muscle and
    side with measures this module has never seen, plus NaN voxels, a fallback and the demo model."""
    rep = copy.deepcopy(base)
    records = []
    for m in base["muscles"]:
        for side, share in (("L", 0.45), ("R", 0.55)):
            r = dict(
                m,
                side=side,
                volume_ml=m["volume_ml"] * share,
                max_acsa_mm2=100.0 + m["index"],
                length_mm=10.0 * m["index"],
                imat_percent=5.0 + m["index"] / 10,
                centroid_z_mm=3.5,
                acsa_profile_mm2=[float(k + m["index"]) for k in range(6)],
            )
            records.append(r)
    rep["muscles"] = records
    rep["warnings"] = list(rep["warnings"]) + [
        "1234 NaN/infinite voxels (0.10%) were set to the background value 0",
        "provider cuda is unavailable; fell back to cpu",
    ]
    rep["flags"] = list(rep["flags"]) + ["provider_fallback"]
    rep["manifest"]["model"]["path"] = str(MODELS_DIR / "unet-int8.onnx")
    return rep


def test_run_with_qc_writes_pngs_and_one_self_contained_page(real_run):
    result, written = real_run
    html = written["html"]
    assert html.name == "case_report.html" and html.parent == written["labels"].parent
    pngs = [p for k, p in written.items() if k.startswith("qc_")]
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    text = html.read_text(encoding="utf-8")
    assert '<meta http-equiv="Content-Security-Policy"' in text and "default-src 'none'" in text
    assert "<script" not in text.lower()
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert text.count("data:image/png;base64,") == len(pngs)


def test_the_browser_shows_the_table_and_every_muscle_row(real_run, tmp_path):
    result, written = real_run
    html = written["html"]
    dom = dump_dom(html)
    codes = re.findall(r'<tr data-code="([^"]+)"', dom)
    assert codes == [m.code for m in result.report.muscles]  # every muscle, in report order
    assert 'id="warnings"' in dom and "field of view" in dom  # fov_cut is shown
    shot = screenshot(html, tmp_path / "shot.png")
    assert shot.std() > 20, "blank screenshot"
    header_rows = np.flatnonzero(np.all(shot == HEADER_RGB, axis=2).sum(axis=1) > 200)
    assert header_rows.size, "the muscle table's header is not in the screenshot"
    below = shot[header_rows.max() + 1 : header_rows.max() + 1 + 30 * len(result.report.muscles), :120]
    for m in result.report.found[:10]:
        colour = TABLE[m.index].colour
        assert np.all(below == colour, axis=2).sum() >= 20, f"no swatch for {m.code} in the table"


def test_new_per_side_measures_appear_without_code_changes(real_run, tmp_path):
    result, _ = real_run
    rep = side_report(result.report.to_dict())
    html = page.build_report_html(rep, [], table=TABLE)
    path = tmp_path / "sides_report.html"
    path.write_text(html, encoding="utf-8")
    dom = dump_dom(path)
    rows = re.findall(r'<tr data-code="([^"]+)" data-side="([LR])"', dom)
    assert len(rows) == 2 * len(result.report.muscles)
    for header in ("Max ACSA (mm²)", "Length (mm)", "IMAT (T1w estimate) (%)", "Centroid z (mm)"):
        assert header in dom, header
    assert "Volume per muscle, left vs right" in dom
    assert "ACSA profile along the limb" in dom
    assert "IMAT (T1w estimate) per muscle" in dom
    assert 'id="demo-model"' in dom
    warnings = dom[dom.index('id="warnings"') :]
    warnings = warnings[: warnings.index("</div>")]
    assert "NaN/infinite voxels" in warnings and "fell back to cpu" in warnings and "field of view" in warnings


class _Probe(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def probe_server():
    _Probe.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Probe.hits
    finally:
        server.shutdown()
        server.server_close()


def test_the_pages_policy_blocks_every_request_outside_the_file(probe_server, tmp_path):
    url, hits = probe_server
    remote = (
        f'<img src="{url}/img.png"><link rel="stylesheet" href="{url}/style.css">'
        f'<iframe src="{url}/frame"></iframe><script src="{url}/script.js"></script></body></html>'
    )
    guarded = tmp_path / "guarded.html"
    guarded.write_text(page.html_head("probe") + "<h1>probe</h1>" + remote, encoding="utf-8")
    dump_dom(guarded)
    assert hits == [], f"the CSP let requests out: {hits}"
    # The same page without the policy does reach the server: the probe can see a request.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><head><title>c</title></head><body>" + remote, encoding="utf-8")
    dump_dom(control)
    assert any(h.startswith("/img.png") for h in hits), hits


def test_the_demo_model_is_recognised_by_its_path(tmp_path):
    assert page.is_demo_model({"model": {"path": str(MODELS_DIR / "unet-fp32.onnx")}})
    assert not page.is_demo_model({"model": {"path": str(tmp_path / "unet-fp32.onnx")}})


def test_unknown_keys_get_a_header_and_a_unit_from_their_suffix():
    assert page.unit_and_header("volume_ml") == ("Volume", "mL")
    assert page.unit_and_header("left.max_acsa_mm2") == ("left Max ACSA", "mm²")
    assert page.unit_and_header("centroid_z_mm") == ("Centroid z", "mm")
    assert page.unit_and_header("new_measure") == ("New measure", "")


def test_wide_form_left_right_keys_also_make_the_paired_plot():
    recs = [{"code": "VL", "name": "vastus lateralis", "volume_ml": 3.0, "volume_ml_left": 1.0, "volume_ml_right": 2.0}]
    assert page.side_pairs(recs) == [("VL", 1.0, 2.0)]
    assert "left vs right" in "".join(page.plots({"muscles": recs}, {}))


def test_the_page_does_not_depend_on_where_it_is_opened(real_run, tmp_path):
    _, written = real_run
    moved = tmp_path / "elsewhere" / "copy.html"
    moved.parent.mkdir()
    moved.write_bytes(Path(written["html"]).read_bytes())
    assert dump_dom(moved).count("<img ") == sum(1 for k in written if k.startswith("qc_"))
