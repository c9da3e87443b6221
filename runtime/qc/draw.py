"""PNG overlays of ``views.View`` with Pillow (the ``qc`` extra): labels, outlines, legend, letters, scale.

Layout of one PNG: a caption band (what the view is, the display convention), the image area
(square display pixels, ``MM_TARGET`` px on its longer side), a legend column (colour and code of
every label in the view). The image area's box, the caption and the orientation letters are also
stored as PNG text chunks (``limbseg-rt:image_box`` = ``x0 y0 x1 y1``, exclusive end), so a program
can check the picture against the labels.

Colours: each label's colour from the model's label table, blended over the grey image at
``ALPHA`` inside the label and drawn fully opaque on its outline (pixels with a 4-neighbour of
another label).
"""

from __future__ import annotations

import io

import numpy as np

from limbseg_rt.runtime.errors import MissingDependencyError

INSTALL_HINT = 'QC pictures need Pillow: pip install "limbseg-rt[qc]"'
ALPHA = 0.4
MM_TARGET = 480
CAPTION_H = 44
LEGEND_ROW = 16
LEGEND_COL_W = 64
SCALE_STEPS_MM = (10, 20, 50, 100, 200, 500)


class QCDependencyError(MissingDependencyError):
    """Pillow is not installed (exit 12, like every missing extra)."""


def require_pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
    except ImportError:
        raise QCDependencyError(INSTALL_HINT) from None
    return Image, ImageDraw, ImageFont, PngImagePlugin


def _font(size: int):
    _, _, ImageFont, _ = require_pillow()
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _resample_nearest(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    rows = np.minimum((np.arange(out_hw[0]) + 0.5) * a.shape[0] / out_hw[0], a.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(out_hw[1]) + 0.5) * a.shape[1] / out_hw[1], a.shape[1] - 1).astype(np.int64)
    return a[rows][:, cols]


def outline_mask(labels: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: labelled pixels with a 4-neighbour of a different label (image edge counts)."""
    lab = labels
    edge = np.zeros(lab.shape, dtype=bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] |= True
    edge[:, -1] |= True
    return edge & (lab > 0)


def colour_lut(table, n: int) -> np.ndarray:
    """uint8 ``[n, 3]``: RGB per label index (indices beyond the table are white)."""
    lut = np.full((max(n, len(table)), 3), 255, dtype=np.uint8)
    for lab in table.labels:
        lut[lab.index] = lab.colour
    lut[0] = 0
    return lut


def blend(grey: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: grey (uint8 ``[H, W]``) with label colours at ``ALPHA`` and opaque outlines."""
    rgb = np.repeat(grey[:, :, None].astype(np.float32), 3, axis=2)
    inside = labels > 0
    col = lut[labels].astype(np.float32)
    rgb[inside] = (1 - ALPHA) * rgb[inside] + ALPHA * col[inside]
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    edge = outline_mask(labels)
    out[edge] = lut[labels[edge]]
    return out


def _scale_bar_mm(width_mm: float) -> int:
    fitting = [s for s in SCALE_STEPS_MM if s <= 0.3 * width_mm]
    return fitting[-1] if fitting else SCALE_STEPS_MM[0]


def render_view(view, table, window: tuple[float, float]) -> bytes:
    """PNG bytes of one view (see module doc). ``window``: display (low, high) intensities."""
    Image, ImageDraw, _, PngImagePlugin = require_pillow()
    rows_mm = view.image.shape[0] * view.pixel_mm[0]
    cols_mm = view.image.shape[1] * view.pixel_mm[1]
    px_per_mm = MM_TARGET / max(rows_mm, cols_mm)
    h = max(1, int(round(rows_mm * px_per_mm)))
    w = max(1, int(round(cols_mm * px_per_mm)))

    lo, hi = window
    img = np.nan_to_num(view.image.astype(np.float32), nan=lo, posinf=hi, neginf=lo)
    grey_small = np.clip((img - lo) / (hi - lo) * 255.0, 0, 255).astype(np.float32)
    grey = np.asarray(Image.fromarray(grey_small, mode="F").resize((w, h), Image.BILINEAR))
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    labels = _resample_nearest(np.asarray(view.labels), (h, w))
    lut = colour_lut(table, int(labels.max()) + 1)
    rgb = blend(grey, labels, lut)

    present = [int(i) for i in np.unique(view.labels) if i > 0]
    per_col = max(1, h // LEGEND_ROW)
    legend_cols = max(1, -(-len(present) // per_col))
    legend_w = 12 + legend_cols * LEGEND_COL_W
    pad = 8
    total_w = pad + w + legend_w
    total_h = CAPTION_H + h + pad
    canvas = Image.new("RGB", (max(total_w, 420), total_h), (16, 16, 16))
    x0, y0 = pad, CAPTION_H
    canvas.paste(Image.fromarray(rgb, mode="RGB"), (x0, y0))
    d = ImageDraw.Draw(canvas)
    d.text((pad, 4), view.caption, fill=(240, 240, 240), font=_font(14))
    d.text((pad, 23), view.convention, fill=(255, 214, 102), font=_font(13))

    # Orientation letters, inside the image area near each edge.
    big = _font(18)
    L = view.letters
    stroke = {"stroke_width": 2, "stroke_fill": (0, 0, 0)}
    d.text((x0 + 6, y0 + h // 2), L["left"], fill=(255, 255, 255), font=big, anchor="lm", **stroke)
    d.text((x0 + w - 6, y0 + h // 2), L["right"], fill=(255, 255, 255), font=big, anchor="rm", **stroke)
    d.text((x0 + w // 2, y0 + 4), L["top"], fill=(255, 255, 255), font=big, anchor="mt", **stroke)
    d.text((x0 + w // 2, y0 + h - 4), L["bottom"], fill=(255, 255, 255), font=big, anchor="mb", **stroke)

    # Scale bar, bottom left of the image area.
    bar_mm = _scale_bar_mm(cols_mm)
    bar_px = int(round(bar_mm * px_per_mm))
    bx, by = x0 + 10, y0 + h - 14
    d.rectangle((bx - 1, by - 1, bx + bar_px + 1, by + 5), fill=(0, 0, 0))
    d.rectangle((bx, by, bx + bar_px, by + 4), fill=(255, 255, 255))
    d.text(
        (bx, by - 3),
        f"{bar_mm} mm",
        fill=(255, 255, 255),
        font=_font(12),
        anchor="lb",
        **{"stroke_width": 1, "stroke_fill": (0, 0, 0)},
    )

    # Legend.
    small = _font(12)
    lx0 = x0 + w + 12
    for k, idx in enumerate(present):
        cx = lx0 + (k // per_col) * LEGEND_COL_W
        cy = y0 + (k % per_col) * LEGEND_ROW
        colour = tuple(int(c) for c in lut[idx])
        d.rectangle((cx, cy + 2, cx + 11, cy + 13), fill=colour)
        code = table[idx].code if idx < len(table) else str(idx)
        d.text((cx + 15, cy + 1), code, fill=(230, 230, 230), font=small)

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", view.caption)
    info.add_text("Description", f"{view.caption}; {view.convention}")
    info.add_text("limbseg-rt:image_box", f"{x0} {y0} {x0 + w} {y0 + h}")
    info.add_text("limbseg-rt:letters", " ".join(f"{k}={v}" for k, v in L.items()))
    info.add_text("limbseg-rt:mm_per_pixel", f"{1.0 / px_per_mm:.6f}")
    info.add_text("limbseg-rt:labels", " ".join(str(i) for i in present))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", pnginfo=info, optimize=False, compress_level=1)  # 1: ~6x faster than 6, ~30 % larger
    return buf.getvalue()
