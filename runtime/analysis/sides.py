"""Left/right assignment of muscle voxels from the patient's anatomy (not the image's halves).

Canonical RAS+ arrays ``[X, Y, Z]``: x grows toward the patient's Right. Per axial slice:

1. the body is the voxels above ``BODY_FRACTION`` x the 99th percentile of the volume;
2. the midsagittal line of the slice passes through the body's centroid, perpendicular to its long
   (left-right) principal axis, so a patient lying off-centre or rolled a few degrees keeps it;
   the per-slice centroid and angle are median-filtered along z (``SMOOTH_SLICES``) so one odd
   slice (a narrow pelvis level, a slice with little body) cannot swing it;
3. below the pelvis the legs are separate: when the body's projection on the line's normal has an
   empty gap near the line, the split moves to the gap's middle, so each leg is one side whole.

A voxel is Right when its signed distance from the line is positive. One-leg scans: when no slice
with muscle has muscle on both sides of a gap the whole scan is one leg; its side is read from
lateral/medial muscle pairs (vastus lateralis lies lateral of vastus medialis, etc.): lateral
toward +x means a right leg. The same pairs check every two-leg result (``anatomy_check``).
Left/right itself comes from the file's geometry (its qform/sform): a mirrored image is a
mirrored body, which no anatomy check can tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE_NONE, SIDE_RIGHT, SIDE_LEFT = 0, 1, 2
SIDE_CODES = {SIDE_RIGHT: "R", SIDE_LEFT: "L"}
BODY_FRACTION = 0.12
SMOOTH_SLICES = 9
# (lateral, medial) muscle codes of the same leg level: their centroids' order along x tells the side.
LATERAL_MEDIAL_PAIRS = (("VL", "VM"), ("BFL", "SM"), ("GL", "GM"), ("PL", "TP"), ("TFL", "SAR"), ("GMED", "ILI"))


@dataclass(frozen=True)
class SideAssignment:
    """Result of :func:`assign_sides`.

    ``sides``: uint8 ``[X, Y, Z]`` (0 = not muscle, 1 = R, 2 = L) for the labelled voxels;
    ``legs``: ``"both"``, ``"right"``, ``"left"`` or ``"none"`` (no muscle); ``midline_x_mm``:
    per canonical slice, the split's x (mm, canonical voxel frame from voxel 0) at the slice's
    centroid row; ``angle_deg``: per slice, the line's rotation about z; ``separate_slices``: how
    many slices had the legs apart (gap split); ``anatomy_check``: per side, how many lateral/medial
    pairs agree / disagree with the side; ``notes``: one-line remarks for the report.
    """

    sides: np.ndarray
    legs: str
    midline_x_mm: tuple[float | None, ...]
    angle_deg: tuple[float | None, ...]
    separate_slices: int
    anatomy_check: dict
    notes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "legs": self.legs,
            "method": "per-slice midsagittal line through the body centroid, perpendicular to its long "
            "principal axis, median-filtered along z; moved to the gap between the legs where they are apart",
            "separate_slices": self.separate_slices,
            "anatomy_check": self.anatomy_check,
            "notes": list(self.notes),
        }


def _median_filter_1d(values: np.ndarray, width: int) -> np.ndarray:
    """Median over a centred window, NaNs (slices without body) ignored; all-NaN windows stay NaN."""
    n = values.size
    out = np.full(n, np.nan)
    half = width // 2
    for i in range(n):
        win = values[max(0, i - half) : i + half + 1]
        win = win[np.isfinite(win)]
        if win.size:
            out[i] = float(np.median(win))
    return out


def _fill_nan(values: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values)
    if not ok.any():
        return values
    idx = np.arange(values.size)
    return np.interp(idx, idx[ok], values[ok])


def assign_sides(
    labels: np.ndarray,
    image: np.ndarray,
    spacing: tuple[float, float, float],
    table,
) -> SideAssignment:
    """Side of every labelled voxel. ``labels``: integer ``[X, Y, Z]`` canonical RAS+ (0 = background);
    ``image``: the scan on the same grid (any real dtype); ``spacing``: canonical (sx, sy, sz) mm;
    ``table``: the ``LabelTable`` (for the lateral/medial pairs)."""
    lab = np.asarray(labels)
    nx, ny, nz = lab.shape
    sx, sy = float(spacing[0]), float(spacing[1])
    finite = np.asarray(image, dtype=np.float32)
    hi = float(np.nanpercentile(finite[::2, ::2, ::2], 99)) if finite.size else 0.0
    thr = BODY_FRACTION * hi
    xg = (np.arange(nx, dtype=np.float64) * sx)[:, None]
    yg = (np.arange(ny, dtype=np.float64) * sy)[None, :]
    cx = np.full(nz, np.nan)
    cy = np.full(nz, np.nan)
    ang = np.full(nz, np.nan)
    for z in range(nz):
        body = finite[:, :, z] > thr
        n = int(body.sum())
        if n < 50:
            continue
        xs, ys = np.nonzero(body)
        px, py = xs * sx, ys * sy
        mx, my = px.mean(), py.mean()
        cov = np.cov(np.stack([px - mx, py - my]))
        w, v = np.linalg.eigh(cov)
        major = v[:, 1] if v[0, 1] >= 0 else -v[:, 1]  # long axis, pointing toward +x
        cx[z], cy[z] = mx, my
        ang[z] = float(np.degrees(np.arctan2(major[1], major[0])))
    cx_s = _fill_nan(_median_filter_1d(cx, SMOOTH_SLICES))
    cy_s = _fill_nan(_median_filter_1d(cy, SMOOTH_SLICES))
    ang_s = _fill_nan(_median_filter_1d(ang, SMOOTH_SLICES))

    sides = np.zeros(lab.shape, np.uint8)
    two_sided = 0
    separate = 0
    muscle_slices = 0
    split_x: list[float | None] = []
    for z in range(nz):
        if not np.isfinite(cx_s[z]):
            split_x.append(None)
            continue
        a = np.radians(ang_s[z])
        nxv, nyv = np.cos(a), np.sin(a)  # normal of the midline = the long axis (toward +x)
        d = (xg - cx_s[z]) * nxv + (yg - cy_s[z]) * nyv  # signed distance (mm), + toward Right
        body = finite[:, :, z] > thr
        gap = _gap_offset(d[body], sx)
        apart = gap is not None
        offset = gap if gap is not None else 0.0
        if apart:
            separate += 1
            d = d - offset
        split_x.append(float(cx_s[z] + offset * nxv))
        m = lab[:, :, z] > 0
        if m.any():
            muscle_slices += 1
            right = m & (d > 0)
            left = m & ~(d > 0)
            sides[:, :, z][right] = SIDE_RIGHT
            sides[:, :, z][left] = SIDE_LEFT
            if apart and right.any() and left.any():
                two_sided += 1
    notes: list[str] = []
    legs = "both"
    if muscle_slices == 0:
        legs = "none"
    elif two_sided == 0:
        # No slice shows the legs apart with muscle in both. Touching legs still have lateral
        # muscles toward +x on the right half and toward -x on the left; one leg has not.
        halves = [
            _lateral_votes(lab, sides == SIDE_RIGHT, table, 1),
            _lateral_votes(lab, sides == SIDE_LEFT, table, -1),
        ]
        if all(h["agree"] > h["disagree"] for h in halves):
            notes.append("the legs touch in every slice; the split follows the midsagittal line")
        else:
            votes = _lateral_votes(lab, lab > 0, table, 1)
            if votes["agree"] + votes["disagree"] == 0:
                notes.append(
                    "the legs never appear apart and no lateral/medial muscle pair decides; "
                    "sides come from the midsagittal line only"
                )
            else:
                legs = "right" if votes["agree"] >= votes["disagree"] else "left"
                sides[lab > 0] = SIDE_RIGHT if legs == "right" else SIDE_LEFT
                notes.append(
                    f"one leg in the scan: the {legs} leg (from {votes['agree'] + votes['disagree']} "
                    "lateral/medial muscle pair(s)); only that side is reported"
                )
    check = {}
    if legs == "both":
        for code, name in ((SIDE_RIGHT, "R"), (SIDE_LEFT, "L")):
            check[name] = _lateral_votes(lab, sides == code, table, 1 if code == SIDE_RIGHT else -1)
        bad = [k for k, v in check.items() if v["disagree"] > v["agree"]]
        if bad:
            notes.append(
                f"anatomy check failed on side(s) {', '.join(bad)}: lateral muscles lie medial of "
                "their partners there, so the split between the legs looks wrong; check the side labels"
            )
    return SideAssignment(
        sides=sides,
        legs=legs,
        midline_x_mm=tuple(split_x),
        angle_deg=tuple(None if not np.isfinite(v) else float(v) for v in ang_s),
        separate_slices=separate,
        anatomy_check=check,
        notes=tuple(notes),
    )


def _gap_offset(d: np.ndarray, step_mm: float) -> float | None:
    """Middle (mm) of the widest empty gap in the body's projection ``d`` within the central third,
    or None when the body is continuous there (pelvis, touching thighs)."""
    if d.size == 0:
        return None
    lo, hi = float(d.min()), float(d.max())
    reach = (hi - lo) / 6.0
    bins = np.arange(-reach, reach + step_mm, step_mm)
    if bins.size < 3:
        return None
    hist, edges = np.histogram(d, bins=bins)
    empty = hist == 0
    if not empty.any():
        return None
    best: float = 0.0
    start: int | None = None
    run = 0
    for i, e in enumerate(np.append(empty, False)):
        if e:
            start = i if start is None else start
        elif start is not None:
            length = i - start
            if length > run:
                run, best = length, float((edges[start] + edges[i]) / 2)
            start = None
    if run < 2:  # a gap of one histogram bin is noise, not air between the legs
        return None
    return best


def _lateral_votes(lab: np.ndarray, mask: np.ndarray, table, lateral_sign: int) -> dict:
    """How many lateral/medial pairs lie with the lateral muscle toward ``lateral_sign`` x (agree)."""
    index = {lb.code: lb.index for lb in table.muscles}
    agree = disagree = 0
    xs_all = np.arange(lab.shape[0], dtype=np.float64)
    for lat, med in LATERAL_MEDIAL_PAIRS:
        if lat not in index or med not in index:
            continue
        cents: list[float] = []
        for code in (lat, med):
            sel = (lab == index[code]) & mask.astype(bool)
            counts = sel.sum(axis=(1, 2))
            total = counts.sum()
            if total:
                cents.append(float((counts * xs_all).sum() / total))
        if len(cents) < 2 or cents[0] == cents[1]:
            continue
        if np.sign(cents[0] - cents[1]) == lateral_sign:
            agree += 1
        else:
            disagree += 1
    return {"agree": agree, "disagree": disagree}
