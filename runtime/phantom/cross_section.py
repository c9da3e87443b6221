"""2D cross-section renderer of the phantom: one axial slice, one leg at a time (numpy only).

Builds a tissue map (codes below) and muscle labels for one level ``s`` of the limb from the tables
in ``phantom_anatomy.py``; see ``phantom.py`` for the anatomy model and its limits.
"""

from __future__ import annotations

import numpy as np

from limbseg_rt.runtime.phantom import anatomy as A

TISSUE_NAMES = (
    "air",
    "skin",
    "fat",
    "muscle",
    "other muscle",
    "cortical bone",
    "yellow marrow",
    "red marrow",
    "fluid",
    "vessel",
    "nerve",
    "tendon",
    "bowel",
    "cartilage",
)
AIR, SKIN, FAT, MUSCLE, OTHER_MUSCLE, CORTEX, YELLOW, RED, FLUID, VESSEL, NERVE, TENDON, BOWEL, CARTILAGE = range(14)
_MIN_SEMI_AXIS_MM = 5.0
MIN_AREA_MM2 = 40.0
_CORE = 0.6  # normalised radius of the protected core of each muscle
_SIZE_GAIN = 1.7  # table sizes are core sizes; the partition trims the overlaps
_NOMINAL_LENGTH_MM = 880.0  # lower iliac wing to ankle, reference subject
# Muscles that infiltrate with fat first in older subjects (weights for the infiltration field).


class _SliceGeometry:
    """Per-leg 2D geometry of one level (all lengths in mm of this subject)."""

    def __init__(self, s: float, subj: dict, scale: float):
        self.s = s
        shrink = 1.0 - subj["atrophy"] * A.interp_clamped(s, A.MUSCLE_BULK)[0]
        ru, rv = A.interp_clamped(s, A.COMPARTMENT) * scale * shrink
        self.ru, self.rv = float(ru), float(rv)
        self.rm = float(np.sqrt(ru * rv))
        self.fat = float(subj["fat_mm"] * A.interp_clamped(s, A.FAT_PROFILE)[0] * scale)
        self.lobes = subj["lobes"]
        self.half_sep = float(A.interp_clamped(s, A.HALF_SEPARATION)[0] * scale * subj["separation"])

    def radius(self, cos_t, sin_t):
        """Compartment radius (mm) in direction (cos_t, sin_t)."""
        base = self.ru * self.rv / np.sqrt((self.rv * cos_t) ** 2 + (self.ru * sin_t) ** 2)
        c2 = cos_t * cos_t - sin_t * sin_t
        s2 = 2 * sin_t * cos_t
        c3 = cos_t * (4 * cos_t * cos_t - 3)
        s3 = sin_t * (3 - 4 * sin_t * sin_t)
        l = self.lobes
        return base * (1 + l[0] * c2 + l[1] * s2 + l[2] * c3 + l[3] * s3)

    def fat_thickness(self, cos_t, sin_t):
        # Thicker posteriorly/medially (buttock, inner thigh, calf back), thin over the shin.
        ang = np.deg2rad(250.0)
        return self.fat * (1.0 + 0.35 * (cos_t * np.cos(ang) + sin_t * np.sin(ang)))

    def polar_point(self, ang_deg: float, rho: float) -> tuple[float, float]:
        a = np.deg2rad(ang_deg)
        c, s_ = np.cos(a), np.sin(a)
        r = rho * float(self.radius(np.float64(c), np.float64(s_)))
        return r * c, r * s_


def _bone_masks(items, U, V, scale):
    """(inside, cortex, red, joint) boolean masks of the bones of one leg on a crop (joint = hip cartilage)."""
    inside = np.zeros(U.shape, bool)
    inner = np.zeros(U.shape, bool)
    red = np.zeros(U.shape, bool)
    joint = np.zeros(U.shape, bool)
    head = None
    for it in items:
        kind = it[0]
        if kind == "head":
            head = it
            continue
        if kind == "ellipse":
            _, cu, cv, a, b, cort, marrow = it
            a, b, cu, cv, cort = a * scale, b * scale, cu * scale, cv * scale, cort * scale
            d = np.sqrt(((U - cu) / a) ** 2 + ((V - cv) / b) ** 2)
            ins = d < 1.0
            cor = ins & (d > 1.0 - cort / min(a, b))
        elif kind == "capsule":
            _, u0, v0, u1, v1, rad, cort, marrow = it
            u0, v0, u1, v1, rad, cort = (t * scale for t in (u0, v0, u1, v1, rad, cort))
            du, dv = u1 - u0, v1 - v0
            t = np.clip(((U - u0) * du + (V - v0) * dv) / max(du * du + dv * dv, 1e-6), 0, 1)
            dist = np.hypot(U - u0 - t * du, V - v0 - t * dv)
            ins = dist < rad
            cor = ins & (dist > rad - cort)
        else:  # "cup": medial half-annulus around the femoral head
            _, cu, cv, r0, r1, cort, marrow = it
            cu, cv, r0, r1, cort = (t * scale for t in (cu, cv, r0, r1, cort))
            rr = np.hypot(U - cu, V - cv)
            ins = (rr > r0) & (rr < r1) & ((U - cu) < 0.25 * rr)
            cor = ins & ((rr < r0 + cort) | (rr > r1 - cort))
        inside |= ins
        inner |= ins & ~cor
        if marrow == "red":
            red |= ins
        else:
            red &= ~ins
    if head is not None:
        # Femoral head: its own bone inside a ~2.5 mm cartilage/joint space cut out of the acetabulum.
        _, cu, cv, r, cort, marrow = head
        rr = np.hypot(U - cu * scale, V - cv * scale)
        cut = rr < (r + 2.5) * scale
        joint = inside & cut & (rr >= r * scale)
        inside &= ~cut
        inner &= ~cut
        red &= ~cut
        h_in = rr < r * scale
        inside |= h_in
        inner |= h_in & (rr < (r - cort) * scale)
    # Cortex of the union: overlapping primitives of one bone show no internal cortical lines.
    return inside, inside & ~inner, red, joint


def _render_leg(tissue, labels, xs, ys, side, geom: _SliceGeometry, subj, codes_to_index, y_table, central, min_px):
    """Paint one leg (and its half of the central pelvic region) into 2D ``tissue``/``labels`` [X, Y]."""
    scale = subj["scale"] * (subj["left_scale"] if side < 0 else 1.0)
    # Legs may lie a little apart or together; the hips stay fixed to the pelvis.
    shift = subj["leg_shift"][0 if side > 0 else 1] * float(np.clip((geom.s - 0.15) / 0.2, 0, 1))
    cx = side * geom.half_sep + shift
    fat_post = float(geom.fat_thickness(np.float64(0.0), np.float64(-1.0)))
    cy = y_table + geom.rv + fat_post
    # Crop: this leg's half of the slice, bounded by its outline (and the central region if present).
    reach = max(geom.ru, geom.rv) * 1.15 + 2 * geom.fat + 8
    half = (xs >= 0.0) if side > 0 else (xs < 0.0)
    near = (np.abs(xs - cx) <= reach) | (central is not None)
    ix = np.nonzero(half & near & (np.abs(xs) <= abs(cx) + reach))[0]
    top = cy + reach
    if central is not None:
        top = max(top, y_table + 2 * central["ry"] + 2 * geom.fat + 8)
    iy = np.nonzero((ys >= y_table - 4) & (ys <= top))[0]
    if ix.size == 0 or iy.size == 0:
        return
    xw = xs[ix][:, None].astype(np.float32)
    yw = ys[iy][None, :].astype(np.float32)
    U = side * (xw - cx) + 0 * yw
    V = (yw - cy) + 0 * xw
    # External rotation of this leg (whole leg + torsion below the knee): turn the leg-local frame.
    leg = 0 if side > 0 else 1
    rot = np.deg2rad(subj["rotation"][leg] + subj["torsion"][leg] * float(np.clip((geom.s - 0.52) / 0.1, 0, 1)))
    cr, sr = np.float32(np.cos(rot)), np.float32(np.sin(rot))
    U, V = U * cr + V * sr, V * cr - U * sr
    r = np.hypot(U, V)
    rs = np.maximum(r, 1e-3)
    ct, st = U / rs, V / rs
    g_comp = r - geom.radius(ct, st)
    g_skin = g_comp - geom.fat_thickness(ct, st)
    comp = g_comp < 0
    g_body = g_skin
    cavity = np.zeros_like(comp)
    t = np.full(U.shape, AIR, np.uint8)
    lab = np.zeros(U.shape, np.uint8)
    if central is not None:
        rx, ry = central["rx"], central["ry"]
        yc = y_table + geom.fat + ry
        dc = np.sqrt((xw / max(rx, 1.0)) ** 2 + ((yw - yc) / max(ry, 1.0)) ** 2)
        g_cc = (dc - 1.0) * min(rx, ry)
        g_body = np.minimum(g_skin, g_cc - geom.fat)
        ccomp = g_cc < 0
        t[ccomp] = FAT
        if central["cav_rx"] > 0:
            ycav = yc + 0.1 * ry
            dcav = np.sqrt((xw / central["cav_rx"]) ** 2 + ((yw - ycav) / central["cav_ry"]) ** 2)
            cavity = dcav < 1.0
            # pelvic floor / wall: unlabelled muscle sling around the lower cavity
            if central["floor"]:
                t[(dcav >= 1.0) & (dcav < 1.18) & (yw < ycav + 0.3 * central["cav_ry"])] = OTHER_MUSCLE
            if central["bladder"] > 0:
                db = np.sqrt(
                    (xw / (0.55 * central["cav_rx"])) ** 2
                    + ((yw - ycav - 0.35 * central["cav_ry"]) / (0.5 * central["cav_ry"])) ** 2
                )
                t[cavity & (db < central["bladder"])] = FLUID
            dr = np.hypot(xw, yw - (ycav - 0.55 * central["cav_ry"]))
            t[cavity & (dr < 14 * scale)] = BOWEL
            t[cavity & (dr < 5 * scale)] = FAT
        if central["abdominal"]:
            front = yc + ry
            da = np.sqrt(((np.abs(xw) - 0.22 * rx) / (0.2 * rx)) ** 2 + ((yw - front + 10) / 8.0) ** 2)
            t[(da < 1.0) & ccomp] = OTHER_MUSCLE
        if central["sacrum"] > 0:
            dsac = np.sqrt((xw / central["sacrum"]) ** 2 + ((yw - y_table - geom.fat - 28) / 14.0) ** 2)
            t[dsac < 1.0] = RED
            t[(dsac < 1.0) & (dsac > 0.85)] = CORTEX
    body = g_body < 0
    t[body & (t == AIR)] = FAT
    t[body & (g_body > -1.6)] = SKIN
    # --- muscles: normalised elliptical distance partition ---
    muscle_region = comp & ~cavity
    entries = []
    for code, kf in A.MUSCLES:
        row = A.interp_rows(geom.s, kf)
        if row is None:
            continue
        ang, rho, ta, rb = row
        li = codes_to_index[code] - 1
        ang += subj["m_ang"][li] + (subj["m_ang_left"][li] if side < 0 else 0.0)
        rho = max(0.05, rho + subj["m_rho"][li] + (subj["m_rho_left"][li] if side < 0 else 0.0))
        size = subj["m_size"][li] * geom.rm * _SIZE_GAIN
        entries.append(
            (codes_to_index[code], ang, rho, max(ta * size, _MIN_SEMI_AXIS_MM), max(rb * size, _MIN_SEMI_AXIS_MM))
        )
    if entries:
        n = len(entries)
        lab_of = np.array([e[0] for e in entries], np.uint8)
        ang = np.deg2rad(np.array([e[1] for e in entries], np.float32))
        ca, sa = np.cos(ang), np.sin(ang)
        rad_at = geom.radius(ca.astype(np.float64), sa.astype(np.float64)).astype(np.float32)
        rho = np.array([e[2] for e in entries], np.float32)
        cu, cv = rho * rad_at * ca, rho * rad_at * sa
        ta = np.array([e[3] for e in entries], np.float32)
        rb = np.array([e[4] for e in entries], np.float32)
        # Smooth domain warp (a few mm, slowly changing along the limb): muscle borders bend like
        # soft tissue instead of staying perfect ellipse arcs.
        Uw, Vw = U.copy(), V.copy()
        for kx, ky, phase, omega, amp, comp in subj["warp"]:
            wave = np.float32(amp) * np.sin(
                np.float32(kx) * U + np.float32(ky) * V + np.float32(phase + omega * geom.s + 1.1 * (side < 0))
            )
            if comp:
                Vw += wave
            else:
                Uw += wave
        d1 = np.full(U.shape, np.inf, np.float32)
        d2 = np.full(U.shape, np.inf, np.float32)
        r1 = np.ones(U.shape, np.float32)
        r2 = np.ones(U.shape, np.float32)
        i1 = np.zeros(U.shape, np.uint8)
        rk = np.sqrt(ta * rb)
        cores = []
        for k in range(n):
            du = Uw - cu[k]
            dv = Vw - cv[k]
            a = (du * ca[k] + dv * sa[k]) * (1.0 / rb[k])
            b = (dv * ca[k] - du * sa[k]) * (1.0 / ta[k])
            d = np.sqrt(a * a + b * b)
            better = d < d1
            second = ~better & (d < d2)
            d2 = np.where(better, d1, np.where(second, d, d2))
            r2 = np.where(better, r1, np.where(second, rk[k], r2))
            d1 = np.where(better, d, d1)
            r1 = np.where(better, rk[k], r1)
            i1[better] = k
            cores.append((rk[k], k, d < _CORE))
        sep = (d2 - d1) / (1.0 / r1 + 1.0 / r2) < subj["septum_mm"]
        # muscle surface meets the fascia with a thin fat layer too
        m = muscle_region & (d1 < subj["fill"]) & ~sep & (g_comp < -0.5 * subj["septum_mm"])
        t[muscle_region & ~m & (t != OTHER_MUSCLE)] = FAT
        t[m] = MUSCLE
        lab[m] = lab_of[i1[m]]
        # Protected cores, largest first: a small muscle squeezed between big ones keeps its core.
        protected = np.zeros(U.shape, bool)
        for _, k, core in sorted(cores, key=lambda c: -c[0]):
            core &= muscle_region
            t[core] = MUSCLE
            lab[core] = lab_of[k]
            protected |= core
    else:
        t[muscle_region] = FAT
        protected = np.zeros(U.shape, bool)
    # --- tubes: vessels, nerves, tendons ---
    for kind, kf in A.TUBES:
        row = A.interp_rows(geom.s, kf)
        if row is None:
            continue
        ang, rho, rad = row
        pu, pv = geom.polar_point(ang, rho)
        if rho > 1.0:  # beyond the fascia: place by fat thickness instead
            a = np.deg2rad(ang)
            rr = float(geom.radius(np.float64(np.cos(a)), np.float64(np.sin(a))))
            extra = (rho - 1.0) * 10 + 0.35 * float(geom.fat_thickness(np.float64(np.cos(a)), np.float64(np.sin(a))))
            pu, pv = (rr + extra) * np.cos(a), (rr + extra) * np.sin(a)
        rad *= scale
        dd = np.hypot(U - pu, V - pv)
        if kind != "tendon":
            halo = (dd < rad + 2.0) & (t == MUSCLE) & ~protected
            t[halo] = FAT
            lab[halo] = 0
        core = dd < rad
        t[core] = {"vessel": VESSEL, "nerve": NERVE, "tendon": TENDON}[kind]
        lab[core] = 0
    # --- bones ---
    items = A.bones(geom.s, _NOMINAL_LENGTH_MM * scale, geom.half_sep / scale)
    bone_inside = np.zeros(U.shape, bool)
    if items:
        inside, cortex, red, joint = _bone_masks(items, U, V, scale)
        bone_inside = inside | joint
        t[inside] = YELLOW
        t[inside & red] = RED
        t[cortex] = CORTEX
        t[joint] = CARTILAGE
        lab[bone_inside] = 0
    t[~body & (t != AIR)] = AIR
    if central is None:
        # Thighs that touch at the midline: skin against skin, not one merged fat pad.
        mid = int(np.argmin(np.abs(xs[ix])))
        lo, hi = (mid, mid + 2) if side > 0 else (mid - 1, mid + 1)
        edge = t[max(lo, 0) : hi]
        edge[edge != AIR] = SKIN
    lab[t != MUSCLE] = 0
    if entries:
        _guarantee_area(t, lab, Uw, Vw, body & ~bone_inside, lab_of, cu, cv, ca, sa, ta, rb, min_px)
    sub_t = tissue[np.ix_(ix, iy)]
    sub_l = labels[np.ix_(ix, iy)]
    write = t != AIR
    sub_t[write] = t[write]
    sub_l[write] = lab[write]
    tissue[np.ix_(ix, iy)] = sub_t
    labels[np.ix_(ix, iy)] = sub_l


def _guarantee_area(t, lab, U, V, allowed, lab_of, cu, cv, ca, sa, ta, rb, min_px) -> None:
    """Grow any muscle squeezed below ``min_px`` voxels (by bone, vessels or neighbours) in place.

    Takes the ``min_px`` allowed voxels nearest its ellipse centre in normalised distance, so the
    muscle stays where the table puts it but never vanishes or shrinks to a speck.
    """
    counts = np.bincount(lab.ravel(), minlength=256)
    small = np.nonzero(counts[lab_of] < min_px)[0]
    # Voxels of muscles that are themselves small are never taken (two squeezed muscles side by side).
    allowed = allowed & ~np.isin(lab, lab_of[counts[lab_of] < 2 * min_px])
    for k in small:
        du, dv = U - cu[k], V - cv[k]
        a = (du * ca[k] + dv * sa[k]) / rb[k]
        b = (dv * ca[k] - du * sa[k]) / ta[k]
        d = np.where(allowed | (lab == lab_of[k]), np.sqrt(a * a + b * b), np.inf).ravel()
        n = min(min_px + 2, int(np.isfinite(d).sum()))
        if n == 0:
            continue
        pick = np.argpartition(d, n - 1)[:n]
        t.ravel()[pick] = MUSCLE
        lab.ravel()[pick] = lab_of[k]
        allowed.ravel()[pick] = False


def _central(s: float, subj: dict, half_sep: float) -> dict | None:
    row = A.interp_rows(s, A.CENTRAL)
    if row is None or row[1] <= 1.0:
        return None
    scale = subj["scale"]
    # True-pelvis cavity narrows from the inlet to the level of the obturator internus / symphysis.
    cav = A.interp_clamped(
        s, ((0.0, 58, 52), (0.06, 50, 46), (0.09, 38, 40), (0.11, 30, 34), (0.125, 18, 16), (0.13, 0, 0))
    )
    return {
        "rx": float(row[0] * half_sep),
        "ry": float(row[1] * scale),
        "cav_rx": float(cav[0] * scale),
        "cav_ry": float(cav[1] * scale),
        "floor": 0.085 <= s <= 0.13,
        "bladder": float(np.clip((s - 0.03) / 0.03, 0, 1) * np.clip((0.115 - s) / 0.02, 0, 1)),
        "abdominal": s <= 0.07,
        "sacrum": float(max(0.0, 45 - 500 * s) * scale) if s < 0.075 else 0.0,
    }


def render_slice(
    tissue: np.ndarray,
    labels: np.ndarray,
    s: float,
    subj: dict,
    xs: np.ndarray,
    ys: np.ndarray,
    y_table: float,
    codes_to_index: dict,
    min_px: int,
) -> None:
    """Paint level ``s`` of both legs into ``tissue`` / ``labels`` (uint8 ``[X, Y]``, zero on entry).

    ``xs``, ``ys``: world x (toward the subject's right) and y (anterior) of the voxel centres, mm;
    ``y_table``: y of the table the posterior skin rests on; ``min_px``: fewest voxels a present
    muscle may have per leg.
    """
    for side in (1, -1):  # +1 right leg (positive x), -1 left leg (mirror image)
        sc = subj["scale"] * (subj["left_scale"] if side < 0 else 1.0)
        sub = dict(subj, scale=sc)
        geom = _SliceGeometry(s, sub, sc)
        central = _central(s, sub, geom.half_sep)
        _render_leg(tissue, labels, xs, ys, side, geom, sub, codes_to_index, y_table, central, min_px)
