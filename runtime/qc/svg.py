"""Small inline SVG plots for the HTML pages (no dependency): bars, paired bars, lines, distributions.

Every function returns an ``<svg>`` element as text, sized in CSS pixels, with a ``<title>`` and
text labels, so it reads without JavaScript and prints.
"""

from __future__ import annotations

import math
from html import escape

LEFT_COLOUR = "#3b7dd8"
RIGHT_COLOUR = "#d8643b"
BAR_COLOUR = "#5a8f5a"


def _fmt(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return "0"
    mag = abs(v)
    return f"{v:.0f}" if mag >= 100 else f"{v:.1f}" if mag >= 10 else f"{v:.2f}" if mag >= 0.1 else f"{v:.2g}"


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _ticks(vmax: float, n: int = 4) -> list[float]:
    return [vmax * i / n for i in range(n + 1)]


def _value_axis(vmax: float, unit: str, *, left: int, plot_w: int, top: int, height: int) -> list[str]:
    """Vertical grid lines with tick labels along the value (x) axis, and the unit below them."""
    out = []
    for t in _ticks(vmax):
        x = left + plot_w * t / vmax
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 26}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 12}" class="tick" text-anchor="middle">{_fmt(t)}</text>')
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 1}" class="tick" text-anchor="middle">{escape(unit)}</text>'
    )
    return out


def bar_chart(items: list[tuple[str, float]], *, title: str, unit: str, colours: list[str] | None = None) -> str:
    """Horizontal bars, one row per ``(label, value)``; ``unit`` labels the axis."""
    if not items:
        return ""
    row, left, right, top = 16, 64, 70, 28
    width = 560
    plot_w = width - left - right
    height = top + row * len(items) + 30
    vmax = _nice_max(max(v for _, v in items))
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
        f'<text x="{left}" y="16" class="ptitle">{escape(title)}</text>',
    ]
    parts.extend(_value_axis(vmax, unit, left=left, plot_w=plot_w, top=top, height=height))
    for i, (label, v) in enumerate(items):
        y = top + i * row
        w = plot_w * max(v, 0.0) / vmax
        colour = colours[i] if colours else BAR_COLOUR
        parts.append(f'<text x="{left - 4}" y="{y + 11}" class="lab" text-anchor="end">{escape(label)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 4}" fill="{colour}"><title>{escape(label)}: {_fmt(v)} {escape(unit)}</title></rect>'
        )
        parts.append(f'<text x="{left + w + 3:.1f}" y="{y + 11}" class="val">{_fmt(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def paired_bar_chart(items: list[tuple[str, float | None, float | None]], *, title: str, unit: str) -> str:
    """Left and right bars per label (``(label, left, right)``), the patient's sides."""
    if not items:
        return ""
    row, left, right, top = 22, 64, 70, 44
    width = 560
    plot_w = width - left - right
    height = top + row * len(items) + 30
    vals = [v for _, a, b in items for v in (a, b) if v is not None]
    vmax = _nice_max(max(vals) if vals else 1.0)
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
        f'<text x="{left}" y="16" class="ptitle">{escape(title)}</text>',
        f'<rect x="{left}" y="24" width="10" height="10" fill="{LEFT_COLOUR}"/><text x="{left + 14}" y="33" class="lab">left (L)</text>',
        f'<rect x="{left + 80}" y="24" width="10" height="10" fill="{RIGHT_COLOUR}"/><text x="{left + 94}" y="33" class="lab">right (R)</text>',
    ]
    parts.extend(_value_axis(vmax, unit, left=left, plot_w=plot_w, top=top, height=height))
    for i, (label, a, b) in enumerate(items):
        y = top + i * row
        parts.append(f'<text x="{left - 4}" y="{y + 14}" class="lab" text-anchor="end">{escape(label)}</text>')
        for k, (v, colour, side) in enumerate(((a, LEFT_COLOUR, "L"), (b, RIGHT_COLOUR, "R"))):
            if v is None:
                continue
            w = plot_w * max(v, 0.0) / vmax
            yy = y + 2 + k * 9
            parts.append(
                f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="8" fill="{colour}"><title>{escape(label)} {side}: {_fmt(v)} {escape(unit)}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: list[tuple[str, list[float], list[float], str]], *, title: str, xlabel: str, ylabel: str) -> str:
    """One line per ``(name, xs, ys, colour)``; names are listed beside the plot."""
    series = [s for s in series if s[1]]
    if not series:
        return ""
    width, height, left, right, top, bottom = 560, 300, 56, 90, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    xs_all = [x for _, xs, _, _ in series for x in xs]
    ys_all = [y for _, _, ys, _ in series for y in ys]
    x0, x1 = min(xs_all), max(xs_all)
    if x1 == x0:
        x1 = x0 + 1
    ymax = _nice_max(max(ys_all) if ys_all else 1.0)
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
        f'<text x="{left}" y="16" class="ptitle">{escape(title)}</text>',
    ]
    for t in _ticks(ymax):
        y = top + plot_h - plot_h * t / ymax
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x1 - x0):
        x = left + plot_w * t / (x1 - x0)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" class="tick" text-anchor="middle">{_fmt(x0 + t)}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" class="tick" text-anchor="middle">{escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2:.1f}" class="tick" text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(ylabel)}</text>'
    )
    for k, (name, xs, ys, colour) in enumerate(series):
        pts = " ".join(
            f"{left + plot_w * (x - x0) / (x1 - x0):.1f},{top + plot_h - plot_h * y / ymax:.1f}" for x, y in zip(xs, ys)
        )
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{escape(name)}</title></polyline>'
        )
        if k < 16:
            ly = top + 10 + k * 14
            parts.append(
                f'<line x1="{left + plot_w + 8}" y1="{ly - 4}" x2="{left + plot_w + 22}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
                f'<text x="{left + plot_w + 26}" y="{ly}" class="lab">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def strip_chart(groups: list[tuple[str, list[tuple[float, bool, str]]]], *, title: str, unit: str) -> str:
    """One row per group (a muscle): a dot per scan ``(value, is_outlier, scan id)``; outliers red.

    Each row has its own scale, 0 to its largest value (printed at the row's end), so small and
    large muscles both show their spread."""
    if not groups:
        return ""
    row, left, right, top = 18, 64, 110, 28
    width = 680
    plot_w = width - left - right
    height = top + row * len(groups) + 30
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
        f'<text x="{left}" y="16" class="ptitle">{escape(title)}</text>',
    ]
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * t
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 26}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 12}" class="tick" text-anchor="middle">{t:.0%}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 1}" class="tick" text-anchor="middle">'
        f"share of the row's largest value ({escape(unit)} at the right)</text>"
    )
    for i, (label, pts) in enumerate(groups):
        y = top + i * row + row / 2
        vmax = max([v for v, _, _ in pts] + [0.0]) or 1.0
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="lab" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" class="val">{_fmt(vmax)} {escape(unit)}</text>')
        for v, out, scan in pts:
            x = left + plot_w * max(v, 0.0) / vmax
            cls = "outlier" if out else "dot"
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{4 if out else 3}" class="{cls}"><title>{escape(scan)}: {_fmt(v)} {escape(unit)}{" (outlier)" if out else ""}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)
