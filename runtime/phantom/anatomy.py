"""Anatomy tables of the lower-limb phantom (data, plus tiny interpolation helpers).

Level ``s`` runs along the limb from the top of the scan (``s = 0``, lower iliac wing / ASIS) to
the ankle (``s = 1``). Landmarks of the reference subject: femoral head centre ``s = 0.09``,
crotch ``s ~ 0.14``, knee joint line ``s = 0.55``, ankle joint just below ``s = 1``.

Leg-local frame of each leg, in mm of the reference subject: origin at the centre of the leg's
muscle compartment, ``u`` toward the *lateral* side of that leg, ``v`` toward anterior. The left leg
is the mirror image of the right (``u`` flips), so one table serves both legs and both legs share
label indices.

Muscles are keyframed in polar form relative to the compartment (fascia) outline: at level ``s`` a
muscle is an ellipse centred at angle ``ang`` (degrees; 0 lateral, 90 anterior, 180 medial, 270
posterior) and fraction ``rho`` of the compartment radius in that direction, with tangential and
radial semi-axes ``ta`` and ``rb`` as fractions of the mean compartment radius. Between keyframes
everything is linear in ``s``; outside the first/last keyframe the muscle is absent.
"""

from __future__ import annotations

import numpy as np

# (code, keyframes ((s, ang, rho, ta, rb), ...)). Codes match runtime/model/labels.py.
MUSCLES: tuple[tuple[str, tuple[tuple[float, float, float, float, float], ...]], ...] = (
    # --- hip / pelvis --------------------------------------------------------------------
    (
        "GMAX",
        (
            (0.00, 250, 0.80, 0.40, 0.22),
            (0.05, 255, 0.82, 0.50, 0.26),
            (0.10, 262, 0.82, 0.50, 0.25),
            (0.15, 280, 0.85, 0.38, 0.18),
            (0.20, 300, 0.90, 0.16, 0.08),
        ),
    ),
    (
        "GMED",
        (
            (0.00, 320, 0.50, 0.40, 0.20),
            (0.05, 335, 0.60, 0.34, 0.17),
            (0.085, 355, 0.72, 0.20, 0.10),
            (0.10, 5, 0.80, 0.10, 0.07),
        ),
    ),
    (
        "GMIN",
        (
            (0.00, 315, 0.28, 0.28, 0.10),
            (0.05, 345, 0.40, 0.24, 0.09),
            (0.075, 5, 0.52, 0.15, 0.07),
            (0.09, 10, 0.60, 0.08, 0.06),
        ),
    ),
    (
        "ILI",
        (
            (0.00, 160, 0.40, 0.30, 0.14),
            (0.05, 130, 0.48, 0.20, 0.14),
            (0.10, 115, 0.50, 0.14, 0.11),
            (0.125, 160, 0.35, 0.10, 0.08),
            (0.14, 195, 0.28, 0.07, 0.06),
        ),
    ),
    (
        "PSO",
        (
            (0.00, 155, 0.52, 0.16, 0.15),
            (0.05, 140, 0.58, 0.15, 0.14),
            (0.10, 120, 0.60, 0.12, 0.11),
            (0.125, 165, 0.42, 0.10, 0.09),
            (0.145, 200, 0.32, 0.07, 0.06),
        ),
    ),
    ("PIR", ((0.01, 215, 0.62, 0.16, 0.08), (0.045, 240, 0.55, 0.18, 0.09), (0.075, 300, 0.52, 0.13, 0.07))),
    ("GEM", ((0.077, 265, 0.45, 0.12, 0.06), (0.105, 285, 0.45, 0.12, 0.06))),
    ("OI", ((0.035, 190, 0.62, 0.08, 0.16), (0.085, 192, 0.64, 0.08, 0.17), (0.10, 198, 0.64, 0.08, 0.12))),
    ("OE", ((0.095, 195, 0.52, 0.12, 0.08), (0.135, 220, 0.42, 0.14, 0.08))),
    ("QF", ((0.105, 250, 0.48, 0.14, 0.07), (0.145, 245, 0.42, 0.15, 0.07))),
    ("PEC", ((0.09, 140, 0.70, 0.12, 0.07), (0.16, 162, 0.55, 0.12, 0.08))),
    ("TFL", ((0.00, 45, 0.82, 0.10, 0.08), (0.08, 40, 0.86, 0.14, 0.10), (0.16, 25, 0.90, 0.09, 0.05))),
    # --- thigh -------------------------------------------------------------------------------
    (
        "SAR",
        (
            (0.02, 70, 0.90, 0.08, 0.05),
            (0.12, 105, 0.90, 0.10, 0.06),
            (0.30, 150, 0.86, 0.10, 0.07),
            (0.45, 190, 0.82, 0.12, 0.08),
            (0.58, 205, 0.78, 0.08, 0.06),
        ),
    ),
    (
        "RF",
        (
            (0.07, 80, 0.76, 0.10, 0.08),
            (0.15, 90, 0.75, 0.17, 0.12),
            (0.35, 90, 0.72, 0.20, 0.14),
            (0.45, 90, 0.76, 0.15, 0.08),
            (0.48, 92, 0.82, 0.09, 0.05),
        ),
    ),
    (
        "VL",
        (
            (0.11, 5, 0.70, 0.12, 0.10),
            (0.20, 10, 0.62, 0.36, 0.18),
            (0.35, 15, 0.62, 0.38, 0.20),
            (0.45, 35, 0.62, 0.22, 0.12),
            (0.49, 50, 0.72, 0.10, 0.06),
        ),
    ),
    (
        "VI",
        (
            (0.14, 45, 0.40, 0.20, 0.12),
            (0.30, 60, 0.38, 0.30, 0.14),
            (0.43, 80, 0.45, 0.25, 0.10),
            (0.46, 90, 0.52, 0.10, 0.06),
        ),
    ),
    (
        "VM",
        (
            (0.20, 120, 0.62, 0.10, 0.08),
            (0.35, 125, 0.56, 0.22, 0.16),
            (0.46, 135, 0.58, 0.28, 0.18),
            (0.50, 130, 0.70, 0.12, 0.06),
        ),
    ),
    (
        "ADL",
        (
            (0.10, 145, 0.68, 0.10, 0.07),
            (0.18, 165, 0.58, 0.18, 0.13),
            (0.28, 175, 0.46, 0.10, 0.07),
            (0.30, 180, 0.42, 0.06, 0.05),
        ),
    ),
    ("ADB", ((0.11, 185, 0.58, 0.08, 0.07), (0.17, 188, 0.45, 0.12, 0.10), (0.22, 195, 0.40, 0.07, 0.06))),
    (
        "ADM",
        (
            (0.12, 230, 0.62, 0.12, 0.10),
            (0.20, 215, 0.52, 0.28, 0.20),
            (0.35, 205, 0.46, 0.22, 0.17),
            (0.45, 200, 0.52, 0.08, 0.06),
        ),
    ),
    (
        "GRA",
        (
            (0.11, 185, 0.86, 0.08, 0.05),
            (0.30, 195, 0.86, 0.08, 0.06),
            (0.50, 210, 0.85, 0.08, 0.06),
            (0.57, 212, 0.80, 0.05, 0.04),
        ),
    ),
    (
        "ST",
        (
            (0.12, 262, 0.62, 0.07, 0.05),
            (0.20, 250, 0.76, 0.14, 0.10),
            (0.40, 240, 0.80, 0.12, 0.10),
            (0.50, 225, 0.80, 0.07, 0.05),
            (0.55, 215, 0.80, 0.05, 0.04),
        ),
    ),
    (
        "SM",
        (
            (0.14, 255, 0.50, 0.06, 0.04),
            (0.30, 245, 0.56, 0.14, 0.10),
            (0.45, 235, 0.60, 0.20, 0.15),
            (0.53, 222, 0.60, 0.08, 0.06),
        ),
    ),
    (
        "BFL",
        (
            (0.12, 272, 0.56, 0.08, 0.06),
            (0.30, 285, 0.70, 0.15, 0.10),
            (0.45, 300, 0.70, 0.15, 0.12),
            (0.52, 320, 0.70, 0.07, 0.06),
        ),
    ),
    (
        "BFS",
        (
            (0.30, 308, 0.36, 0.06, 0.05),
            (0.42, 305, 0.42, 0.12, 0.10),
            (0.50, 315, 0.52, 0.10, 0.08),
            (0.53, 330, 0.65, 0.06, 0.05),
        ),
    ),
    # --- knee / calf -------------------------------------------------------------------------
    (
        "GM",
        (
            (0.50, 235, 0.75, 0.08, 0.06),
            (0.56, 235, 0.66, 0.18, 0.12),
            (0.65, 242, 0.72, 0.28, 0.20),
            (0.72, 250, 0.76, 0.22, 0.15),
            (0.80, 258, 0.80, 0.08, 0.05),
        ),
    ),
    (
        "GL",
        (
            (0.50, 305, 0.75, 0.07, 0.06),
            (0.56, 305, 0.66, 0.15, 0.10),
            (0.65, 295, 0.72, 0.20, 0.16),
            (0.72, 290, 0.76, 0.14, 0.10),
            (0.77, 285, 0.80, 0.06, 0.05),
        ),
    ),
    ("POP", ((0.55, 290, 0.36, 0.10, 0.06), (0.585, 262, 0.36, 0.20, 0.08), (0.625, 232, 0.36, 0.10, 0.06))),
    (
        "SOL",
        (
            (0.57, 300, 0.32, 0.06, 0.05),
            (0.63, 270, 0.40, 0.30, 0.10),
            (0.72, 270, 0.42, 0.42, 0.14),
            (0.82, 270, 0.48, 0.40, 0.18),
            (0.88, 270, 0.50, 0.30, 0.15),
            (0.93, 270, 0.55, 0.12, 0.08),
        ),
    ),
    (
        "TA",
        (
            (0.57, 65, 0.80, 0.08, 0.07),
            (0.65, 60, 0.62, 0.14, 0.13),
            (0.80, 70, 0.62, 0.12, 0.10),
            (0.93, 80, 0.80, 0.07, 0.05),
        ),
    ),
    (
        "EDL",
        (
            (0.585, 30, 0.75, 0.06, 0.05),
            (0.70, 40, 0.62, 0.09, 0.09),
            (0.85, 50, 0.62, 0.08, 0.07),
            (0.95, 40, 0.80, 0.05, 0.04),
        ),
    ),
    ("EHL", ((0.68, 50, 0.46, 0.05, 0.04), (0.80, 55, 0.50, 0.07, 0.06), (0.96, 60, 0.80, 0.05, 0.04))),
    (
        "PL",
        (
            (0.565, 5, 0.85, 0.06, 0.05),
            (0.65, 5, 0.74, 0.12, 0.10),
            (0.80, 350, 0.78, 0.08, 0.07),
            (0.85, 345, 0.80, 0.05, 0.04),
        ),
    ),
    ("PB", ((0.70, 345, 0.66, 0.05, 0.04), (0.82, 345, 0.66, 0.10, 0.08), (0.95, 330, 0.70, 0.06, 0.05))),
    (
        "TP",
        (
            (0.60, 285, 0.36, 0.05, 0.04),
            (0.68, 280, 0.22, 0.12, 0.08),
            (0.82, 235, 0.32, 0.10, 0.07),
            (0.90, 215, 0.55, 0.05, 0.04),
        ),
    ),
    ("FDL", ((0.64, 220, 0.40, 0.05, 0.04), (0.78, 235, 0.45, 0.10, 0.08), (0.95, 252, 0.62, 0.05, 0.04))),
    ("FHL", ((0.68, 310, 0.36, 0.06, 0.05), (0.82, 300, 0.36, 0.13, 0.10), (0.96, 272, 0.36, 0.07, 0.05))),
)

# Muscle compartment (deep fascia) semi-axes (s, Ru, Rv) in mm of the reference subject.
COMPARTMENT = (
    (0.00, 90, 95),
    (0.09, 86, 86),
    (0.15, 78, 72),
    (0.30, 68, 62),
    (0.45, 55, 54),
    (0.50, 50, 55),
    (0.55, 50, 54),
    (0.62, 52, 52),
    (0.70, 51, 50),
    (0.85, 38, 35),
    (0.95, 29, 27),
    (1.00, 28, 28),
)
# How much of the compartment is muscle (atrophy shrinks the compartment in proportion).
MUSCLE_BULK = (
    (0.0, 0.3),
    (0.10, 0.4),
    (0.16, 1.0),
    (0.42, 1.0),
    (0.52, 0.3),
    (0.58, 0.5),
    (0.65, 1.0),
    (0.85, 0.8),
    (1.0, 0.3),
)
# Half-distance between the two legs' centres (mm).
HALF_SEPARATION = ((0.00, 92), (0.10, 92), (0.30, 88), (0.50, 80), (0.75, 80), (1.00, 86))
# Subcutaneous fat thickness relative to the subject's base thickness.
FAT_PROFILE = ((0.00, 1.35), (0.15, 1.15), (0.40, 1.00), (0.52, 0.65), (0.60, 0.70), (0.85, 0.55), (1.00, 0.35))
# Central (pelvic) part of the body outline: (s, Rx as a fraction of the separation, Ry mm).
CENTRAL = ((0.00, 1.00, 105), (0.08, 1.00, 100), (0.12, 0.75, 70), (0.145, 0.35, 25), (0.15, 0.0, 0.0))

# Neurovascular bundles and tendons: (kind, keyframes (s, ang, rho, radius_mm)).
# kind: "vessel" (flow void, dark), "nerve" (intermediate), "tendon" (dark, low signal).
TUBES = (
    (
        "vessel",
        (
            (0.05, 150, 0.70, 4.5),
            (0.10, 130, 0.65, 4.5),
            (0.20, 150, 0.55, 4.0),
            (0.38, 175, 0.42, 3.5),
            (0.46, 240, 0.28, 3.5),
            (0.56, 262, 0.30, 3.5),
            (0.62, 250, 0.32, 3.0),
            (0.95, 268, 0.50, 2.5),
        ),
    ),
    (
        "vessel",
        (
            (0.05, 160, 0.62, 5.0),
            (0.10, 142, 0.60, 5.0),
            (0.20, 160, 0.50, 4.5),
            (0.38, 185, 0.38, 4.0),
            (0.46, 248, 0.24, 4.0),
            (0.56, 270, 0.26, 4.0),
            (0.62, 258, 0.28, 3.5),
            (0.95, 275, 0.46, 3.0),
        ),
    ),
    (
        "nerve",
        (
            (0.06, 250, 0.42, 5.0),
            (0.15, 262, 0.38, 5.0),
            (0.45, 270, 0.36, 4.5),
            (0.52, 275, 0.45, 4.0),
            (0.60, 268, 0.30, 3.0),
            (0.95, 280, 0.55, 2.5),
        ),
    ),
    ("vessel", ((0.14, 160, 1.06, 2.5), (0.50, 200, 1.08, 2.5), (0.97, 135, 1.10, 2.0))),  # great saphenous
    ("tendon", ((0.86, 270, 0.90, 3.0), (0.92, 270, 0.92, 4.5), (1.00, 270, 0.90, 5.5))),  # Achilles
    # distal tendons, continuing the muscle bellies to the ankle
    ("tendon", ((0.93, 80, 0.80, 2.5), (1.00, 90, 0.82, 3.0))),  # tibialis anterior
    ("tendon", ((0.96, 60, 0.80, 2.0), (1.00, 65, 0.82, 2.0))),  # extensor hallucis longus
    ("tendon", ((0.95, 40, 0.80, 2.0), (1.00, 42, 0.82, 2.0))),  # extensor digitorum longus
    ("tendon", ((0.94, 330, 0.70, 2.5), (1.00, 320, 0.78, 2.5))),  # peronei
    ("tendon", ((0.90, 215, 0.55, 2.5), (1.00, 205, 0.70, 2.5))),  # tibialis posterior
    ("tendon", ((0.95, 252, 0.62, 2.0), (1.00, 240, 0.68, 2.0))),  # flexor digitorum longus
    ("tendon", ((0.515, 90, 1.0, 5.5), (0.575, 85, 0.98, 5.0))),  # patellar tendon (rho > 1: under skin)
)


def interp_rows(s: float, rows) -> np.ndarray | None:
    """Linear interpolation of keyframe rows ``(s, *values)`` at ``s``; ``None`` outside their range."""
    arr = np.asarray(rows, dtype=np.float64)
    if s < arr[0, 0] or s > arr[-1, 0]:
        return None
    return np.array([np.interp(s, arr[:, 0], arr[:, j]) for j in range(1, arr.shape[1])])


def interp_clamped(s: float, rows) -> np.ndarray:
    """Like :func:`interp_rows` but holds the end values outside the keyframed range."""
    arr = np.asarray(rows, dtype=np.float64)
    return np.array([np.interp(s, arr[:, 0], arr[:, j]) for j in range(1, arr.shape[1])])


def _ramp(s: float, s0: float, s1: float) -> float:
    return float(np.clip((s - s0) / (s1 - s0), 0.0, 1.0))


def bones(s: float, length_mm: float, half_sep: float) -> list[tuple]:
    """Bone primitives of one leg at level ``s`` in leg-local mm (reference subject).

    Each item: ``("ellipse", cu, cv, a, b, cortex_mm, marrow)`` or
    ``("capsule", u0, v0, u1, v1, radius, cortex_mm, marrow)`` or
    ``("cup", cu, cv, r_in, r_out, cortex_mm, marrow)`` (acetabulum: medial half-annulus) or
    ``("head", cu, cv, radius, cortex_mm, marrow)`` (femoral head: separated from the rest by cartilage).
    ``marrow`` is "red" (haematopoietic, intermediate T1) or "yellow" (fatty, bright).
    ``length_mm`` converts level differences to mm for the spherical femoral head.
    """
    out: list[tuple] = []
    hip_u, hip_v = -8.0, 2.0
    # Femoral head: a sphere of radius 24 mm centred at s = 0.09.
    dz = (s - 0.09) * length_mm
    if abs(dz) < 23.0:
        out.append(("head", hip_u, hip_v, np.sqrt(24.0**2 - dz**2), 1.2, "yellow"))
    if 0.09 <= s <= 0.118:
        out.append(("capsule", hip_u, hip_v, 38.0, -8.0, 14.0, 2.0, "yellow"))
    if 0.075 <= s <= 0.128:
        k = np.sin(np.pi * _ramp(s, 0.075, 0.128))
        out.append(("ellipse", 42.0, -8.0, 8 + 12 * k, 9 + 12 * k, 1.5, "yellow"))
    if 0.118 <= s < 0.44:
        c = interp_clamped(
            s, ((0.118, 36, -6, 16, 2.5), (0.20, 26, -2, 14, 5.5), (0.40, 12, 0, 13, 6.0), (0.47, 8, 0, 18, 2.0))
        )
        out.append(("ellipse", c[0], c[1], c[2], c[2] * 0.95, c[3], "yellow"))
        if s <= 0.142:  # lesser trochanter, posteromedial
            out.append(("capsule", c[0], c[1], c[0] - 20, c[1] - 12, 7.0, 1.5, "red"))
    if 0.44 <= s <= 0.55:  # distal femur metaphysis -> condyles
        if s < 0.49:
            k = _ramp(s, 0.44, 0.49)
            out.append(("ellipse", 9 - 9 * k, 6 * k, 16 + 24 * k, 15 + 10 * k, 3.5 - 2 * k, "yellow"))
        else:
            k = np.sqrt(max(0.0, 1 - _ramp(s, 0.535, 0.552)))
            out.append(("ellipse", -19.0, 6.0, 19 * k + 2, 23 * k + 2, 1.3, "yellow"))
            out.append(("ellipse", 19.0, 6.0, 18 * k + 2, 22 * k + 2, 1.3, "yellow"))
            if s < 0.515:
                out.append(("ellipse", 0.0, 20.0, 32.0, 13.0, 1.3, "yellow"))
    if 0.475 <= s <= 0.515:  # patella
        k = np.sin(np.pi * _ramp(s, 0.475, 0.515))
        out.append(("ellipse", 0.0, 46.0, 6 + 16 * k, 4 + 7 * k, 1.5, "yellow"))
    if 0.553 <= s <= 1.0:  # tibia
        c = interp_clamped(
            s,
            (
                (0.553, 0, 8, 30, 20, 1.2),
                (0.57, 0, 8, 38, 24, 1.2),
                (0.60, -6, 8, 26, 20, 2.0),
                (0.66, -12, 10, 16, 14, 4.0),
                (0.85, -14, 10, 13, 12, 4.5),
                (0.93, -13, 5, 17, 15, 2.0),
                (1.0, -10, 2, 22, 19, 1.5),
            ),
        )
        out.append(("ellipse", c[0], c[1], c[2], c[3], c[4], "yellow"))
        if s >= 0.975:
            out.append(("ellipse", c[0] - c[2] - 3, c[1], 7.0, 10.0, 1.5, "yellow"))  # medial malleolus
    if 0.56 <= s <= 1.0:  # fibula
        c = interp_clamped(
            s,
            (
                (0.56, 26, -8, 9, 1.2),
                (0.575, 26, -8, 12, 1.5),
                (0.60, 24, -8, 8, 2.0),
                (0.70, 21, -8, 7, 2.5),
                (0.90, 19, -6, 6, 2.0),
                (0.97, 21, -6, 9, 1.5),
                (1.0, 21, -6, 10, 1.5),
            ),
        )
        out.append(("ellipse", c[0], c[1], c[2], c[2] * 0.9, c[3], "yellow"))
    # --- pelvis (each side) ---
    if s <= 0.078:  # ilium: a plate from anterolateral (ASIS/AIIS) to posteromedial (sacroiliac)
        c = interp_clamped(s, ((0.0, 25, 38, -62, -58, 6), (0.04, 12, 28, -48, -44, 10), (0.078, -12, 8, -34, -26, 20)))
        out.append(("capsule", c[0], c[1], c[2], c[3], c[4], 1.5, "red"))
    if 0.07 <= s <= 0.112:
        out.append(("cup", hip_u, hip_v, 26.0, 38.0, 1.5, "red"))
    if 0.085 <= s <= 0.118:  # superior pubic ramus toward the symphysis
        out.append(("capsule", hip_u - 24, hip_v + 12, -half_sep + 6, 26.0, 9.0, 1.5, "red"))
    if 0.09 <= s <= 0.15:  # ischium -> ischial tuberosity
        c = interp_clamped(
            s, ((0.09, -34, -24, -42, -40, 12), (0.12, -42, -40, -46, -46, 15), (0.15, -46, -46, -46, -48, 10))
        )
        out.append(("capsule", c[0], c[1], c[2], c[3], c[4], 1.5, "red"))
    if 0.118 <= s <= 0.14:  # inferior pubic ramus
        out.append(("capsule", -44.0, -38.0, -half_sep + 10, 26.0, 8.0, 1.5, "red"))
    return out
