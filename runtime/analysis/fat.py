"""Fat inside each muscle: a T1w-only intramuscular-fat (IMAT) estimate, and Dixon fat fraction.

T1w estimate (a two-class partial-volume model; docs/analysis.md): on T1w images fat is bright and
muscle dark. Per slice and side, two reference intensities come from the subject's own image:

- muscle ``M``: the mode of the intensities of all labelled muscle voxels of that slice and side
  (histogram mode: the infiltrated tail does not move it, as it would move a mean or a median);
- fat ``F``: the median of the bright non-muscle body voxels (subcutaneous and intermuscular fat,
  above ``M + 0.6 (p99 - M)``).

Both are median-filtered along z over ``REF_SMOOTH_SLICES`` slices (the bias field is smooth; a
slice with little fat cannot swing them). Each muscle voxel's fat share is
``f = clip((I - M) / (F - M), 0, 1)``; a muscle's IMAT is ``mean(f)`` (%) and ``sum(f) x voxel
volume`` (mL), over the voxels left after ``erode`` in-plane erosions (boundary voxels mix with the
fat around the muscle). It is an *estimate from T1w contrast*, not a fat fraction: T1 weighting,
bias field, coil profile and noise all enter it.

Dixon: voxel FF = F / (F + W) with negative F, W counted as 0 (0 where F + W = 0), or an FF map given directly (0..1, or percent
when its 99th percentile inside the muscles exceeds 1.5). Per muscle and side: mean and median of
the voxel FF and the signal-weighted sum(F) / sum(F + W) (with an FF map: the mean).
"""

from __future__ import annotations

import numpy as np

REF_SMOOTH_SLICES = 7
FAT_QUANTILE_START = 0.6


def erode_xy(mask: np.ndarray, n: int) -> np.ndarray:
    """``n`` in-plane 4-neighbour erosions of a boolean ``[X, Y, Z]`` mask (edges count as outside)."""
    m = np.asarray(mask, bool)
    for _ in range(int(n)):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[0] = e[-1] = False
        e[:, 0] = e[:, -1] = False
        m = e
    return m


def eroded_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels with every class eroded in-plane ``n`` times on its own (neighbouring muscles count as
    outside each other); a class that would vanish in a slice keeps that slice's voxels."""
    lab = np.asarray(labels)
    if n <= 0:
        return lab
    out = np.zeros_like(lab)
    for z in range(lab.shape[2]):
        lz = lab[:, :, z]
        if not lz.any():
            continue
        for c in np.unique(lz[lz > 0]):
            m = lz == c
            e = erode_xy(m[:, :, None], n)[:, :, 0]
            out[:, :, z][e if e.any() else m] = c
    return out


def _mode(values: np.ndarray) -> float:
    lo, hi = np.percentile(values, [1, 99])
    if hi <= lo:
        return float(np.median(values))
    hist, edges = np.histogram(values, bins=48, range=(lo, hi))
    hist = np.convolve(hist, np.ones(3) / 3, mode="same")
    k = int(np.argmax(hist))
    return float((edges[k] + edges[k + 1]) / 2)


def _smooth(values: np.ndarray) -> np.ndarray:
    out = np.full(values.size, np.nan)
    half = REF_SMOOTH_SLICES // 2
    for i in range(values.size):
        w = values[max(0, i - half) : i + half + 1]
        w = w[np.isfinite(w)]
        if w.size:
            out[i] = float(np.median(w))
    ok = np.isfinite(out)
    if ok.any() and not ok.all():
        idx = np.arange(out.size)
        out = np.interp(idx, idx[ok], out[ok])
    return out


def t1w_references(image: np.ndarray, labels: np.ndarray, sides: np.ndarray, body_threshold: float) -> dict:
    """Per side (1 R, 2 L) the muscle and fat references ``(M[Z], F[Z])`` (float64, NaN where unknown)."""
    img = np.asarray(image)
    nz = img.shape[2]
    refs = {}
    # Non-muscle voxels belong to the side of the nearest labelled column: split the slice at the
    # x midpoint between the two sides' muscle extents.
    for side in (1, 2):
        m_ref = np.full(nz, np.nan)
        f_ref = np.full(nz, np.nan)
        for z in range(nz):
            lz = labels[:, :, z]
            sz = sides[:, :, z]
            mus = (lz > 0) & (sz == side)
            if mus.sum() < 20:
                continue
            iz = img[:, :, z]
            xs = np.flatnonzero(mus.any(axis=1))
            other = (lz > 0) & (sz != side) & (sz > 0)
            band = np.zeros(lz.shape[0], bool)
            if other.any():
                ox = np.flatnonzero(other.any(axis=1))
                if ox.mean() < xs.mean():
                    band[(ox.max() + xs.min()) // 2 :] = True
                else:
                    band[: (ox.min() + xs.max()) // 2 + 1] = True
            else:
                band[:] = True
            vals = iz[mus].astype(np.float64)
            mref = _mode(vals)
            body = (iz > body_threshold) & (lz == 0) & band[:, None]
            bvals = iz[body].astype(np.float64)
            if bvals.size < 20:
                continue
            p99 = float(np.percentile(bvals, 99))
            bright = bvals[bvals > mref + FAT_QUANTILE_START * (p99 - mref)]
            m_ref[z] = mref
            if bright.size >= 10:
                f_ref[z] = float(np.median(bright))
        refs[side] = (_smooth(m_ref), _smooth(f_ref))
    return refs


def imat_fraction_map(image: np.ndarray, labels: np.ndarray, sides: np.ndarray, refs: dict) -> np.ndarray:
    """float32 ``[X, Y, Z]`` fat share f in 0..1 for labelled voxels with references (NaN elsewhere)."""
    img = np.asarray(image)
    out = np.full(img.shape, np.nan, np.float32)
    for side, (m_ref, f_ref) in refs.items():
        for z in range(img.shape[2]):
            if not (np.isfinite(m_ref[z]) and np.isfinite(f_ref[z])) or f_ref[z] <= m_ref[z]:
                continue
            sel = (labels[:, :, z] > 0) & (sides[:, :, z] == side)
            if sel.any():
                f = (img[:, :, z][sel].astype(np.float64) - m_ref[z]) / (f_ref[z] - m_ref[z])
                out[:, :, z][sel] = np.clip(f, 0.0, 1.0)
    return out


def dixon_ff_map(fat: np.ndarray | None, water: np.ndarray | None, ff: np.ndarray | None, labels: np.ndarray):
    """(voxel FF float32 in 0..1, F + W float32 or None) from Dixon fat/water images or an FF map."""
    if ff is not None:
        ffa = np.asarray(ff, np.float32)
        inside = ffa[np.asarray(labels) > 0]
        inside = inside[np.isfinite(inside)]
        if inside.size and float(np.percentile(inside, 99)) > 1.5:
            ffa = ffa / np.float32(100.0)
        return np.clip(np.nan_to_num(ffa, nan=0.0), 0.0, 1.0), None
    # Negative values (noise around zero on complex-reconstructed images) count as 0, so the voxel FF
    # and sum(F) / sum(F + W) stay within 0..1.
    f = np.clip(np.nan_to_num(np.asarray(fat, np.float32), nan=0.0), 0, None)
    w = np.clip(np.nan_to_num(np.asarray(water, np.float32), nan=0.0), 0, None)
    total = f + w
    with np.errstate(divide="ignore", invalid="ignore"):
        ffv = np.where(total > 0, f / np.where(total > 0, total, 1), 0).astype(np.float32)
    return np.clip(ffv, 0.0, 1.0), total


def region_stats(values: np.ndarray, weights: np.ndarray | None, sel: np.ndarray) -> dict:
    """mean, median (and weighted mean when ``weights``) of ``values[sel]``, ignoring NaN."""
    v = values[sel]
    ok = np.isfinite(v)
    v = v[ok]
    if v.size == 0:
        return {"mean": None, "median": None, "weighted": None, "voxels": 0}
    out: dict = {"mean": float(v.mean()), "median": float(np.median(v)), "voxels": int(v.size)}
    if weights is not None:
        w = weights[sel][ok].astype(np.float64)
        out["weighted"] = float((v * w).sum() / w.sum()) if w.sum() > 0 else None
    else:
        out["weighted"] = out["mean"]
    return out
