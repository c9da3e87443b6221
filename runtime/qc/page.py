"""``<stem>_report.html``: one self-contained page per scan, built from the run report dict.

Self-contained: the PNG overlays are ``data:`` URIs, plots are inline SVG, the CSS is inline, there
is no JavaScript, and a Content-Security-Policy ``<meta>`` (``CSP``) forbids the browser every
request that is not inline or ``data:``, so the page can be mailed, archived or opened offline and
never calls out.

The per-muscle table is generic: its columns are the numeric keys the report's muscle records carry
(the union, in first-seen order; nested dicts flattened as ``outer.inner``; ``KNOWN`` gives known
keys a header and a unit, other keys get a unit from their suffix: ``_ml``, ``_mm2``, ``_mm``,
``_percent``...). A record with a ``side`` key is one row per muscle and side. Plots appear when the
data for them do: volumes always; left vs right when records carry sides (``side`` L/R, or
``*_left``/``*_right`` keys); a profile plot for every key whose value is a list of numbers (the
ACSA profile along the limb); a fat plot for keys naming fat (``imat``, ``ff_``, ``fat``).
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any, TypeGuard

from limbseg_rt.runtime.qc import svg

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "base-uri 'none'; form-action 'none'; frame-src 'none'; connect-src 'none'"
)

KNOWN: dict[str, tuple[str, str]] = {
    "volume_ml": ("Volume", "mL"),
    "voxels": ("Voxels", ""),
    "mean_intensity": ("Mean intensity", "input units"),
    "z_first": ("First slice z", ""),
    "z_last": ("Last slice z", ""),
    "input_first": ("First slice (file)", ""),
    "input_last": ("Last slice (file)", ""),
    "volume_ml_left": ("Volume L", "mL"),
    "volume_ml_right": ("Volume R", "mL"),
    "asymmetry_percent": ("Asymmetry (R-L)/mean", "%"),
    "max_acsa_mm2": ("Max ACSA", "mm²"),
    "max_acsa_position_mm": ("Max ACSA position", "mm"),
    "max_acsa_position_fraction": ("Max ACSA position", "fraction"),
    "length_mm": ("Length", "mm"),
    "acsa_profile_mm2": ("ACSA profile", "mm²"),
    "acsa_mm2": ("ACSA", "mm²"),
    "imat_percent": ("IMAT (T1w estimate)", "%"),
    "imat_ml": ("IMAT (T1w estimate)", "mL"),
    "ff_mean": ("FF mean", ""),
    "ff_median": ("FF median", ""),
    "ff_weighted": ("FF weighted", ""),
}
HIDDEN = {"index", "input_axis"}
SUFFIX_UNITS = (
    ("_ml", "mL"),
    ("_mm2", "mm²"),
    ("_cm2", "cm²"),
    ("_mm", "mm"),
    ("_percent", "%"),
    ("_pct", "%"),
    ("_s", "s"),
)
FAT_WORDS = ("imat", "ff_", "fat")

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;padding:0 24px 40px;color:#1b1b1b;background:#fafafa}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc;padding-bottom:4px}
.sub{color:#555;margin:0 0 12px}
.warnings{border:2px solid #b3261e;background:#fdecea;padding:8px 14px;border-radius:6px}
.warnings h2{border:0;margin:4px 0;color:#b3261e}.warnings li{margin:3px 0}
.ok{border:1px solid #5a8f5a;background:#eef6ee;padding:6px 14px;border-radius:6px}
.demo{border:2px solid #8a6d00;background:#fff6d6;padding:6px 14px;border-radius:6px;margin:8px 0}
figure{display:inline-block;margin:0 12px 12px 0;vertical-align:top;max-width:590px}figure img{width:100%;border:1px solid #333}
figcaption{font-size:13px;color:#333;max-width:640px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#eee}#muscles th{background:#e8eef7}td.t,th.t{text-align:left}tr.absent td{color:#999}
.cut{color:#b3261e;font-weight:600;white-space:nowrap}td.t:first-child{white-space:nowrap}.swatch{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:middle;border:1px solid #0003}
svg.plot{background:#fff;border:1px solid #ddd;margin:0 12px 12px 0}svg .grid{stroke:#e3e3e3}
svg text{font-size:11px;fill:#333}svg .ptitle{font-size:13px;font-weight:600}svg .dot{fill:#3b7dd8;opacity:.75}svg .outlier{fill:#b3261e}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px}dl.kv dt{font-weight:600}dl.kv dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
details pre{font-size:11px;background:#f0f0f0;padding:8px;overflow:auto;max-height:480px}
"""


def html_head(title: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="referrer" content="no-referrer">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
    )


def unit_and_header(key: str) -> tuple[str, str]:
    """(header, unit) of a record key: ``KNOWN`` first, else from its suffix."""
    base = key.split(".")[-1]
    if base in KNOWN:
        header, unit = KNOWN[base]
        prefix = key[: -len(base)].replace(".", " ")
        return (prefix + header).strip(), unit
    for suffix, unit in SUFFIX_UNITS:
        if base.endswith(suffix):
            return key[: -len(suffix)].replace("_", " ").replace(".", " ").strip().capitalize(), unit
    return key.replace("_", " ").replace(".", " ").capitalize(), ""


def _flatten(record: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_profile(v: Any) -> TypeGuard[list]:
    return isinstance(v, list) and len(v) > 0 and all(_is_number(x) or x is None for x in v)


def table_columns(records: list[dict]) -> tuple[list[str], list[str]]:
    """(numeric columns, profile keys) over all records, first-seen order (see module doc)."""
    numeric: list[str] = []
    profiles: list[str] = []
    for rec in records:
        for k, v in _flatten(rec).items():
            if k in HIDDEN:
                continue
            if _is_number(v) or (v is None and k not in profiles):
                if k not in numeric and (v is not None or any(_is_number(_flatten(r).get(k)) for r in records)):
                    numeric.append(k)
            elif _is_profile(v) and k not in profiles:
                profiles.append(k)
    return [c for c in numeric if c not in profiles], profiles


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        return f"{v:.2f}" if abs(v) < 1e5 else f"{v:.4g}"
    return escape(str(v))


def _hex(colour) -> str:
    r, g, b = (int(c) for c in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def _colours(report: dict) -> dict[str, str]:
    labels = ((report.get("manifest") or {}).get("model") or {}).get("metadata", {}).get("labels")
    out = {}
    if isinstance(labels, list):
        for lab in labels:
            out[str(lab.get("code"))] = _hex(lab.get("colour", (128, 128, 128)))
    return out


def muscle_records(report: dict) -> list[dict]:
    """The rows to show: one per muscle x side when the analysis ran (``report["analysis"]["muscles"]``),
    else one per muscle (``report["muscles"]``)."""
    analysis = report.get("analysis") or {}
    return list(analysis.get("muscles") or report.get("muscles") or [])


def muscle_table(report: dict, colours: dict[str, str] | None = None) -> str:
    """The per-muscle ``<table>`` (one ``<tr data-code=...>`` per record)."""
    records = muscle_records(report)
    colours = colours or {}
    numeric, _ = table_columns(records)
    has_side = any("side" in r for r in records)
    head = ['<th class="t">Code</th>', '<th class="t">Muscle</th>']
    if has_side:
        head.append('<th class="t">Side</th>')
    for c in numeric:
        header, unit = unit_and_header(c)
        head.append(f'<th data-key="{escape(c)}">{escape(header)}{f" ({escape(unit)})" if unit else ""}</th>')
    head.append('<th class="t">Field of view</th>')
    rows = []
    for rec in records:
        flat = _flatten(rec)
        code = str(rec.get("code", ""))
        absent = rec.get("voxels") == 0 or rec.get("volume_ml") == 0
        sw = f'<span class="swatch" style="background:{colours[code]}"></span>' if code in colours else ""
        cells = [f'<td class="t">{sw}{escape(code)}</td>', f'<td class="t">{escape(str(rec.get("name", "")))}</td>']
        if has_side:
            cells.append(f'<td class="t">{escape(str(rec.get("side", "")))}</td>')
        cells.extend(f"<td>{_fmt(flat.get(c))}</td>" for c in numeric)
        cut = []
        if rec.get("touches_first_slice"):
            cut.append("touches first slice")
        if rec.get("touches_last_slice"):
            cut.append("touches last slice")
        cells.append(f'<td class="t cut">{"cut: " + ", ".join(cut) if cut else ""}</td>')
        side = f' data-side="{escape(str(rec["side"]))}"' if has_side else ""
        cls = ' class="absent"' if absent else ""
        rows.append(f'<tr data-code="{escape(code)}"{side}{cls}>{"".join(cells)}</tr>')
    return f'<table id="muscles"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def side_pairs(records: list[dict], key: str = "volume_ml") -> list[tuple[str, float | None, float | None]]:
    """``[(code, left, right)]`` from side records (``side`` L/R) or ``key_left``/``key_right`` keys."""
    pairs: dict[str, list[float | None]] = {}
    for rec in records:
        code = str(rec.get("code", ""))
        side = str(rec.get("side", "")).upper()[:1]
        if side in ("L", "R") and _is_number(rec.get(key)):
            pairs.setdefault(code, [None, None])[0 if side == "L" else 1] = float(rec[key])
        elif _is_number(rec.get(f"{key}_left")) or _is_number(rec.get(f"{key}_right")):
            left, right = rec.get(f"{key}_left"), rec.get(f"{key}_right")
            pairs[code] = [float(left) if _is_number(left) else None, float(right) if _is_number(right) else None]
    return [(c, a, b) for c, (a, b) in pairs.items() if (a or 0) > 0 or (b or 0) > 0]


def plots(report: dict, colours: dict[str, str]) -> list[str]:
    """The SVG plots the report's data support (see module doc)."""
    records = muscle_records(report)
    out = []
    pairs = side_pairs(records)
    if pairs:
        out.append(svg.paired_bar_chart(pairs, title="Volume per muscle, left vs right", unit="mL"))
    else:
        vols = [
            (str(r.get("code")), float(r["volume_ml"]))
            for r in records
            if _is_number(r.get("volume_ml")) and r["volume_ml"] > 0
        ]
        out.append(
            svg.bar_chart(
                vols, title="Volume per muscle", unit="mL", colours=[colours.get(c, svg.BAR_COLOUR) for c, _ in vols]
            )
        )
    numeric, profiles = table_columns(records)
    for key in profiles:
        header, unit = unit_and_header(key)
        series = []
        for r in records:
            ys = _flatten(r).get(key)
            if not _is_profile(ys):
                continue
            start = int(r["z_first"]) if _is_number(r.get("z_first")) else 0
            pts = [(start + i, float(y)) for i, y in enumerate(ys) if y is not None]
            name = f"{r.get('code')}{' ' + str(r['side']) if 'side' in r else ''}"
            series.append((name, [p[0] for p in pts], [p[1] for p in pts], colours.get(str(r.get("code")), "#555")))
        out.append(
            svg.line_chart(
                series,
                title=f"{header} along the limb",
                xlabel="slice z (RAS+, 0 = most inferior)",
                ylabel=unit or header,
            )
        )
    for key in [c for c in numeric if any(w in c.split(".")[-1].lower() for w in FAT_WORDS)][:3]:
        header, unit = unit_and_header(key)
        items = []
        for r in records:
            v = _flatten(r).get(key)
            if _is_number(v):
                items.append((f"{r.get('code')}{' ' + str(r['side']) if 'side' in r else ''}", float(v)))
        out.append(svg.bar_chart(items, title=f"{header} per muscle", unit=unit or header))
    return [p for p in out if p]


def is_demo_model(manifest: dict) -> bool:
    """True when the model file is one of the bundled demo models (trained on phantoms only)."""
    from limbseg_rt.runtime.model.bundled import MODELS_DIR

    path = ((manifest or {}).get("model") or {}).get("path")
    if not path:
        return False
    try:
        return Path(path).resolve().parent == MODELS_DIR.resolve()
    except OSError:
        return False


def warning_items(report: dict) -> list[str]:
    """Every warning of the report, plus one per flag that has no sentence of its own."""
    items = [str(w) for w in report.get("warnings") or []]
    flags = set(report.get("flags") or [])
    text = " ".join(items).lower()
    if "empty_image" in flags and "empty" not in text:
        items.append("the image is empty or constant: the labels are all background")
    if "fov_cut" in flags and "field of view" not in text:
        items.append("some muscles reach the first or last slice: the field of view cut them")
    if "provider_fallback" in flags and "fallback" not in text and "fell back" not in text:
        items.append("the execution provider fell back to another one")
    return items


def _kv(pairs: list[tuple[str, object]]) -> str:
    return (
        '<dl class="kv">'
        + "".join(
            f"<dt>{escape(k)}</dt><dd>{_fmt(v) if not isinstance(v, str) else escape(v)}</dd>"
            for k, v in pairs
            if v is not None
        )
        + "</dl>"
    )


def manifest_section(manifest: dict) -> str:
    model = manifest.get("model") or {}
    md = model.get("metadata") or {}
    engine = manifest.get("engine") or {}
    inp = manifest.get("input") or {}
    geo = inp.get("geometry") or {}
    parts = [
        "<h2>Run manifest</h2>",
        "<h3>Model and engine</h3>",
        _kv(
            [
                ("model file", model.get("file")),
                ("model SHA-256", model.get("sha256")),
                ("architecture", md.get("architecture")),
                ("model precision", md.get("precision")),
                ("provider that ran", engine.get("provider")),
                ("precision that ran", engine.get("precision")),
                (
                    "requested",
                    f"provider {engine.get('requested_provider')}, precision {engine.get('requested_precision')}",
                ),
                ("fallback", engine.get("fallback") or "none"),
                ("batch size", (manifest.get("pipeline") or {}).get("batch_size")),
                ("peak RSS (MiB)", manifest.get("peak_rss_mib")),
            ]
        ),
    ]
    timings = {k: v for k, v in (manifest.get("timings_s") or {}).items() if _is_number(v)}
    if timings:
        parts.append(
            '<h3>Timings</h3><table id="timings"><thead><tr><th class="t">stage</th><th>seconds</th></tr></thead><tbody>'
            + "".join(f'<tr><td class="t">{escape(k)}</td><td>{v:.3f}</td></tr>' for k, v in timings.items())
            + "</tbody></table>"
        )
        if (manifest.get("timings_s") or {}).get("note"):
            parts.append(f'<p class="sub">{escape(manifest["timings_s"]["note"])}</p>')
    versions = manifest.get("versions") or {}
    if versions:
        parts.append("<h3>Versions</h3>" + _kv([(k, str(v)) for k, v in versions.items()]))
    parts.append(
        "<h3>Input</h3>"
        + _kv(
            [
                ("file", inp.get("name")),
                ("SHA-256", inp.get("sha256")),
                ("shape", " x ".join(str(s) for s in geo.get("shape", [])) or None),
                ("spacing (mm)", " x ".join(f"{s:g}" for s in geo.get("spacing_mm", [])) or None),
                ("orientation", geo.get("orientation")),
                ("tilt (degrees)", geo.get("tilt_deg")),
                ("affine from", geo.get("affine_source")),
            ]
        )
    )
    return "".join(parts)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def build_report_html(report: dict, images: list[tuple[str, bytes]], *, table=None, title: str | None = None) -> str:
    """The whole page as text. ``report``: ``Report.to_dict()`` (or the JSON read back);
    ``images``: ``[(caption, PNG bytes)]`` in display order; ``table``: the ``LabelTable`` (swatch
    colours; without it, colours from the report's model metadata when it lists the labels)."""
    manifest = report.get("manifest") or {}
    name = (manifest.get("input") or {}).get("name") or "scan"
    title = title or f"limbseg-rt QC: {name}"
    colours = {lab.code: _hex(lab.colour) for lab in table.muscles} if table is not None else _colours(report)
    totals = report.get("totals") or {}
    engine = manifest.get("engine") or {}
    model = manifest.get("model") or {}
    out = [
        html_head(title),
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{totals.get("muscles_found", "?")} of {len({str(m.get("code")) for m in report.get("muscles") or []})} muscles found, '
        f"{float(totals.get('volume_ml') or 0.0):.1f} mL in all; model {escape(str(model.get('file')))}, "
        f"provider {escape(str(engine.get('provider')))}, precision {escape(str(engine.get('precision')))}</p>",
    ]
    if is_demo_model(manifest):
        out.append(
            '<div class="demo" id="demo-model"><b>Demo model.</b> This model was trained only on the synthetic '
            "phantom. It is not for real scans; its labels on a real scan mean nothing.</div>"
        )
    warns = warning_items(report)
    if warns:
        out.append(
            '<div class="warnings" id="warnings"><h2>Warnings</h2><ul>'
            + "".join(f"<li>{escape(w)}</li>" for w in warns)
            + "</ul></div>"
        )
    else:
        out.append('<div class="ok" id="warnings">No warnings.</div>')
    if images:
        out.append(
            '<h2>Overlays</h2><p class="sub">Label colours at partial opacity with outlines; letters give the '
            "patient's directions (R/L, A/P, S/I). Axial and coronal views are in radiological convention: "
            "the patient's right is on the image's left.</p><div id=\"overlays\">"
        )
        for caption, png in images:
            out.append(
                f'<figure><img alt="{escape(caption)}" src="{_data_uri(png)}"><figcaption>{escape(caption)}</figcaption></figure>'
            )
        out.append("</div>")
    out.append("<h2>Muscles</h2>")
    out.append(muscle_table(report, colours))
    figs = plots(report, colours)
    if figs:
        out.append('<h2>Plots</h2><div id="plots">' + "".join(figs) + "</div>")
    out.append(manifest_section(manifest))
    out.append(
        "<details><summary>The whole report (JSON)</summary><pre>"
        + escape(json.dumps(report, indent=1, default=str))
        + "</pre></details>"
    )
    out.append("</body></html>\n")
    return "".join(out)
