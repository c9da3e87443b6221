"""``DIR/cohort.html`` for a ``limbseg-rt batch`` output folder, and the per-scan pages it links to.

Reads only files: ``DIR/cohort.csv`` (long form, one row per scan x muscle [x side]; docs/cohorts.md)
and each scan folder ``DIR/<id>/`` with its completion record ``completed.json`` (which names the
scan's outputs and its source scan). A scan folder without ``<id>_report.html`` gets one first (its
source scan is read again for the intensities; a source that is gone is listed, not fatal).

Outliers, per muscle (and side) and measure, among the scans where the muscle was found (volume
> 0), when at least ``MIN_SCANS_FOR_OUTLIERS`` scans have it: a value below Q1 - 1.5 IQR or above
Q3 + 1.5 IQR (Tukey's fences; quartiles by linear interpolation, numpy's default). The page states
this rule.
"""

from __future__ import annotations

import csv
import json
import math
from html import escape
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.qc import page, svg

RECORD_NAME = "completed.json"  # the cohort layer's completion record (runtime/cohort/store.py)
MIN_SCANS_FOR_OUTLIERS = 4
OUTLIER_RULE = (
    "Outlier: below Q1 - 1.5 x IQR or above Q3 + 1.5 x IQR of that muscle's values across the scans "
    f"where it was found (Tukey's fences), computed when at least {MIN_SCANS_FOR_OUTLIERS} scans have it."
)


def tukey_fences(values: list[float]) -> tuple[float, float] | None:
    """(low, high) fences, or None with fewer than ``MIN_SCANS_FOR_OUTLIERS`` values."""
    if len(values) < MIN_SCANS_FOR_OUTLIERS:
        return None
    q1, q3 = (float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), [25, 75]))
    iqr = q3 - q1
    return q1 - 1.5 * iqr, q3 + 1.5 * iqr


def _float(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _measures(columns: list[str]) -> list[str]:
    """The measures the cohort page plots: volume, then any fat column the table carries."""
    out = ["volume_ml"] if "volume_ml" in columns else []
    out += [c for c in columns if c != "volume_ml" and any(w in c.lower() for w in page.FAT_WORDS)]
    return out


def _scan_pages(root: Path, build_missing: bool) -> tuple[dict[str, Path], list[str]]:
    """{scan id: its HTML page} for every complete scan folder; notes for pages that could not be made."""
    from limbseg_rt.runtime.qc.write import write_qc_for_folder

    pages: dict[str, Path] = {}
    notes: list[str] = []
    for rec_path in sorted(root.glob(f"*/{RECORD_NAME}")):
        folder = rec_path.parent
        scan_id = folder.name
        html = folder / f"{scan_id}_report.html"
        if not html.is_file() and build_missing:
            try:
                record = json.loads(rec_path.read_text(encoding="utf-8"))
                write_qc_for_folder(folder, record)
            except (OSError, ValueError, KeyError) as exc:
                notes.append(f"{scan_id}: no QC page ({exc})")
            except Exception as exc:  # the input may be gone or unreadable; the other scans go on
                notes.append(f"{scan_id}: no QC page ({type(exc).__name__}: {exc})")
        if html.is_file():
            pages[scan_id] = html
    return pages, notes


def build_cohort_html(rows: list[dict], columns: list[str], pages: dict[str, str], notes: list[str]) -> str:
    """The cohort page. ``rows``: ``cohort.csv`` rows (dicts); ``pages``: {scan id: relative link}."""
    has_side = "side" in columns
    scans: dict[str, dict] = {}
    for r in rows:
        s = scans.setdefault(
            r["scan_id"], {"status": r.get("status", ""), "message": r.get("message", ""), "total": 0.0, "outliers": 0}
        )
        v = _float(r.get("volume_ml"))
        if v:
            s["total"] += v
    measures = _measures(columns)
    sections = []
    outlier_rows: list[tuple[str, str, str, str, float, tuple[float, float]]] = []
    for measure in measures:
        header, unit = page.unit_and_header(measure)
        groups: dict[str, list[tuple[float, str]]] = {}
        for r in rows:
            v = _float(r.get(measure))
            vol = _float(r.get("volume_ml"))
            if v is None or not vol:
                continue
            key = r.get("code", "") + (f" {r.get('side')}" if has_side and r.get("side") else "")
            groups.setdefault(key, []).append((v, r["scan_id"]))
        plotted = []
        for key, pts in groups.items():
            fences = tukey_fences([v for v, _ in pts])
            marked = []
            for v, sid in pts:
                if fences is None:
                    marked.append((v, False, sid))
                    continue
                is_out = v < fences[0] or v > fences[1]
                marked.append((v, is_out, sid))
                if is_out:
                    outlier_rows.append((sid, key, header, unit, v, fences))
                    if measure == "volume_ml":
                        scans[sid]["outliers"] += 1
            plotted.append((key, marked))
        if plotted:
            sections.append(svg.strip_chart(plotted, title=f"{header} per muscle across scans", unit=unit or header))

    out = [
        page.html_head("limbseg-rt cohort QC"),
        "<h1>limbseg-rt cohort QC</h1>",
        f'<p class="sub">{len(scans)} scans; {sum(1 for s in scans.values() if s["status"] == "failed")} failed. '
        f"Each dot is one scan; red dots are outliers.</p>",
        f'<p id="outlier-rule"><b>Outlier rule.</b> {escape(OUTLIER_RULE)}</p>',
    ]
    if notes:
        out.append(
            '<div class="warnings"><h2>Notes</h2><ul>' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></div>"
        )
    out.append(
        '<h2>Scans</h2><table id="scans"><thead><tr><th class="t">scan</th><th class="t">status</th>'
        '<th>total volume (mL)</th><th>volume outliers</th><th class="t">message</th></tr></thead><tbody>'
    )
    for sid, s in scans.items():
        link = f'<a href="{escape(pages[sid])}">{escape(sid)}</a>' if sid in pages else escape(sid)
        out.append(
            f'<tr data-scan="{escape(sid)}"><td class="t">{link}</td><td class="t">{escape(s["status"])}</td>'
            f'<td>{s["total"]:.1f}</td><td>{s["outliers"]}</td><td class="t">{escape(s["message"])}</td></tr>'
        )
    out.append("</tbody></table>")
    if outlier_rows:
        out.append(
            '<h2>Outliers</h2><table id="outliers"><thead><tr><th class="t">scan</th><th class="t">muscle</th>'
            '<th class="t">measure</th><th>value</th><th>fences</th></tr></thead><tbody>'
        )
        for sid, key, header, unit, v, (lo, hi) in outlier_rows:
            link = f'<a href="{escape(pages[sid])}">{escape(sid)}</a>' if sid in pages else escape(sid)
            out.append(
                f'<tr class="outlier" data-scan="{escape(sid)}" data-muscle="{escape(key)}"><td class="t">{link}</td>'
                f'<td class="t">{escape(key)}</td><td class="t">{escape(header)} ({escape(unit)})</td>'
                f"<td>{v:.2f}</td><td>{lo:.2f} .. {hi:.2f}</td></tr>"
            )
        out.append("</tbody></table>")
    else:
        out.append('<p id="outliers">No outliers by the rule above.</p>')
    out.append('<h2>Distributions</h2><div id="plots">' + "".join(sections) + "</div>")
    out.append("</body></html>\n")
    return "".join(out)


def write_cohort_page(out_dir, *, build_scan_pages: bool = True) -> dict[str, Path]:
    """Write ``DIR/cohort.html`` (and the missing per-scan pages); the paths written or found.

    Keys: ``cohort_html`` and ``scan_<id>`` per scan page. Raises ``FileNotFoundError`` when
    ``DIR/cohort.csv`` is missing (not a batch output folder).
    """
    from limbseg_rt.runtime.qc.write import write_bytes_atomic

    root = Path(out_dir)
    csv_path = root / "cohort.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found: give a folder written by 'limbseg-rt batch'")
    with open(csv_path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    pages, notes = _scan_pages(root, build_scan_pages)
    links = {sid: str(p.relative_to(root)) for sid, p in pages.items()}
    html = build_cohort_html(rows, columns, links, notes)
    written = {"cohort_html": write_bytes_atomic(root / "cohort.html", html.encode("utf-8"))}
    written.update({f"scan_{sid}": p for sid, p in pages.items()})
    return written
