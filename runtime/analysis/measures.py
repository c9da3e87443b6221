"""The analysis stage: sides -> (optional) 3D clean-up -> per muscle x side geometry and fat.

``analyse(labels, image, spacing, canonical_affine, voxel_volume_mm3, table, options)`` takes the
canonical RAS+ arrays the pipeline made and returns an ``Analysis``: the (cleaned) labels, the side
map, one ``MuscleSide`` record per muscle x side found, and the left/right asymmetry per muscle.
Methods: docs/analysis.md.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

import numpy as np

from limbseg_rt.runtime.analysis import fat as fatmod
from limbseg_rt.runtime.analysis.cleanup import MIN_FRACTION, MIN_ML, NEAR_MM, clean_labels, rule_text
from limbseg_rt.runtime.analysis.geometry import asymmetry_percent, muscle_geometry, per_slice_counts
from limbseg_rt.runtime.analysis.sides import BODY_FRACTION, SIDE_CODES, SIDE_LEFT, SIDE_RIGHT, assign_sides

ASYMMETRY_FORMULA = "(R - L) / ((R + L) / 2) x 100 %, signed: positive when the right side is larger"
IMAT_NOTE = (
    "T1w estimate of intramuscular fat from the subject's own muscle and fat reference intensities "
    "(two-class partial-volume model, docs/analysis.md); not a fat fraction"
)
CSV_COLUMNS = (
    "index",
    "code",
    "name",
    "side",
    "voxels",
    "volume_ml",
    "max_acsa_mm2",
    "max_acsa_position_mm",
    "max_acsa_position_fraction",
    "length_mm",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "volume_lower_bound",
    "length_lower_bound",
    "max_acsa_unreliable",
    "imat_percent",
    "imat_ml",
    "cleanup_removed_voxels",
    "ff_mean",
    "ff_median",
    "ff_weighted",
)


@dataclass(frozen=True)
class AnalysisOptions:
    """``clean``: run the 3D clean-up; ``min_fraction``, ``min_ml``, ``near_mm``: its keep rule
    (see cleanup.py);
    ``imat``: compute the T1w IMAT estimate; ``imat_erode``: in-plane erosions before it;
    ``fat``/``water``/``fat_fraction``: Dixon arrays on the canonical grid (float, any scale; FF 0..1
    or percent); ``ff_erode``: in-plane erosions of each muscle before the Dixon statistics."""

    clean: bool = True
    min_fraction: float = MIN_FRACTION
    min_ml: float = MIN_ML
    near_mm: float = NEAR_MM
    imat: bool = True
    imat_erode: int = 1
    fat: np.ndarray | None = field(default=None, repr=False)
    water: np.ndarray | None = field(default=None, repr=False)
    fat_fraction: np.ndarray | None = field(default=None, repr=False)
    ff_erode: int = 0
    csv_form: str = "long"  # the per muscle x side CSV: "long" (a row per muscle x side) or "wide"

    @property
    def dixon(self) -> bool:
        return self.fat_fraction is not None or (self.fat is not None and self.water is not None)


@dataclass(frozen=True)
class MuscleSide:
    """One muscle on one side (``side`` ``"R"`` or ``"L"``). Units in the names (mm, mm^2, mL, %);
    ``acsa_profile_mm2`` runs from the muscle's most proximal slice to its most distal; fat fields are
    None when not computed (no Dixon images, or no references)."""

    index: int
    code: str
    name: str
    side: str
    voxels: int
    volume_ml: float
    z_first: int
    z_last: int
    acsa_profile_mm2: tuple[float, ...]
    max_acsa_mm2: float
    max_acsa_z: int
    max_acsa_position_mm: float
    max_acsa_position_fraction: float
    length_mm: float
    centroid_mm: tuple[float, float, float]
    volume_lower_bound: bool
    length_lower_bound: bool
    max_acsa_unreliable: bool
    cleanup_removed_voxels: int
    imat_percent: float | None = None
    imat_ml: float | None = None
    ff_mean: float | None = None
    ff_median: float | None = None
    ff_weighted: float | None = None


@dataclass(frozen=True)
class Asymmetry:
    """Left/right asymmetry of one muscle (``ASYMMETRY_FORMULA``); None when a side is missing."""

    index: int
    code: str
    name: str
    volume_percent: float | None
    max_acsa_percent: float | None


@dataclass(frozen=True, eq=False)
class Analysis:
    """What ``analyse`` found. ``labels``: uint8 ``[X, Y, Z]`` canonical (cleaned when asked);
    ``sides``: uint8 same shape (0 none, 1 R, 2 L); ``records``: per muscle x side found, in label
    order, R before L; ``asymmetry``: per muscle found on both sides."""

    labels: np.ndarray = field(repr=False)
    sides: np.ndarray = field(repr=False)
    records: tuple[MuscleSide, ...]
    asymmetry: tuple[Asymmetry, ...]
    side_info: dict
    cleanup: dict
    fat_info: dict
    geometry_info: dict
    csv_form: str = "long"

    def to_dict(self) -> dict:
        return {
            "sides": self.side_info,
            "cleanup": self.cleanup,
            "geometry": self.geometry_info,
            "fat": self.fat_info,
            "asymmetry_formula": ASYMMETRY_FORMULA,
            "muscles": [_record_dict(r) for r in self.records],
            "asymmetry": [asdict(a) for a in self.asymmetry],
        }

    def to_csv(self) -> str:
        """The per muscle x side CSV in ``csv_form`` (``to_long_csv`` or ``to_wide_csv``)."""
        return self.to_wide_csv() if self.csv_form == "wide" else self.to_long_csv()

    def to_wide_csv(self) -> str:
        """Wide form: one row per muscle found; each measure of ``CSV_COLUMNS`` twice, ``<name>_R`` and
        ``<name>_L`` (empty when that side has no voxel), then the two asymmetries (%)."""
        measures = [c for c in CSV_COLUMNS if c not in ("index", "code", "name", "side")]
        by_muscle: dict[int, dict[str, dict]] = {}
        names: dict[int, tuple[str, str]] = {}
        for r in self.records:
            d = asdict(r)
            d["centroid_x_mm"], d["centroid_y_mm"], d["centroid_z_mm"] = r.centroid_mm
            by_muscle.setdefault(r.index, {})[r.side] = d
            names[r.index] = (r.code, r.name)
        asym = {a.index: a for a in self.asymmetry}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "index",
                "code",
                "name",
                *[f"{c}_{s}" for c in measures for s in ("R", "L")],
                "volume_asymmetry_percent",
                "max_acsa_asymmetry_percent",
            ]
        )
        for index in sorted(by_muscle):
            sides = by_muscle[index]
            a = asym.get(index)
            w.writerow(
                [
                    index,
                    *names[index],
                    *[_cell(sides[s][c]) if s in sides else "" for c in measures for s in ("R", "L")],
                    _cell(a.volume_percent if a else None),
                    _cell(a.max_acsa_percent if a else None),
                ]
            )
        return buf.getvalue()

    def to_long_csv(self) -> str:
        """Long form: one row per muscle x side (``CSV_COLUMNS``); empty cells for values not computed."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for r in self.records:
            d = asdict(r)
            d["centroid_x_mm"], d["centroid_y_mm"], d["centroid_z_mm"] = r.centroid_mm
            w.writerow([_cell(d[c]) for c in CSV_COLUMNS])
        return buf.getvalue()


def _record_dict(r: MuscleSide) -> dict:
    d = asdict(r)
    d["acsa_profile_mm2"] = list(r.acsa_profile_mm2)
    d["centroid_mm"] = list(r.centroid_mm)
    return d


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def analyse(
    labels: np.ndarray,
    image: np.ndarray,
    spacing: tuple[float, float, float],
    canonical_affine: np.ndarray,
    voxel_volume_mm3: float,
    table,
    options: AnalysisOptions = AnalysisOptions(),
    *,
    tilt_deg: float = 0.0,
) -> Analysis:
    """Run the analysis on canonical RAS+ arrays. ``labels``: integer ``[X, Y, Z]`` (0 background);
    ``image``: the scan on that grid (float); ``spacing``: canonical (sx, sy, sz) mm;
    ``canonical_affine``: 4x4 voxel -> world mm; ``voxel_volume_mm3``: |det| of the affine;
    ``table``: the model's ``LabelTable``; ``tilt_deg``: the slice axis' tilt (oblique note)."""
    lab = np.asarray(labels)
    img = np.asarray(image, np.float32)
    sa = assign_sides(lab, img, spacing, table)
    sides = sa.sides
    cleanup: dict = {"enabled": bool(options.clean)}
    removed: dict = {}
    if options.clean:
        res = clean_labels(
            lab,
            sides,
            min_fraction=options.min_fraction,
            min_ml=options.min_ml,
            near_mm=options.near_mm,
            spacing=spacing,
            voxel_volume_mm3=voxel_volume_mm3,
        )
        lab = res.labels
        sides = np.where(lab > 0, sides, 0).astype(np.uint8)
        removed = res.removed
        cleanup.update(
            {
                "rule": rule_text(options.min_fraction, options.min_ml, options.near_mm),
                "min_fraction": float(options.min_fraction),
                "min_ml": float(options.min_ml),
                "near_mm": float(options.near_mm),
                "connectivity": 26,
                "library": "connected-components-3d",
                "voxels_removed": int(sum(removed.values())),
                "components_removed": int(sum((res.removed_components or {}).values())),
            }
        )
    n_classes = len(table)
    counts, sums = per_slice_counts(lab, sides, n_classes)
    caff = np.asarray(canonical_affine, np.float64)

    imat_map = None
    fat_info: dict = {"imat": None, "dixon": None}
    if options.imat:
        hi = float(np.nanpercentile(img[::2, ::2, ::2], 99)) if img.size else 0.0
        lab_e = fatmod.eroded_labels(lab, options.imat_erode)
        refs = fatmod.t1w_references(img, lab, sides, BODY_FRACTION * hi)
        imat_map = fatmod.imat_fraction_map(img, lab_e, sides, refs)
        fat_info["imat"] = {
            "note": IMAT_NOTE,
            "erode_voxels": int(options.imat_erode),
            "muscle_reference": "per slice and side: mode of the muscle voxels' intensities, median-filtered along z",
            "fat_reference": "per slice and side: median of the bright non-muscle body voxels, median-filtered along z",
        }
    ff_map = ff_weight = None
    if options.dixon:
        ff_map, ff_weight = fatmod.dixon_ff_map(options.fat, options.water, options.fat_fraction, lab)
        lab_ff = fatmod.eroded_labels(lab, options.ff_erode)
        fat_info["dixon"] = {
            "source": "fat-fraction map" if options.fat_fraction is not None else "fat and water images",
            "voxel_ff": "F / (F + W)" if options.fat_fraction is None else "as given (percent maps divided by 100)",
            "weighted": "sum(F) / sum(F + W)" if options.fat_fraction is None else "equals the mean for an FF map",
            "erode_voxels": int(options.ff_erode),
            "units": "fraction 0..1",
        }

    records: list[MuscleSide] = []
    for lb in table.muscles:
        for side in (SIDE_RIGHT, SIDE_LEFT):
            per_z = counts[:, lb.index, side]
            if not per_z.any():
                continue
            s = sums[lb.index, side]
            g = muscle_geometry(per_z, s[0], s[1], s[2], spacing, caff, voxel_volume_mm3)
            fat_vals: dict = {}
            if imat_map is not None or ff_map is not None:
                z0, z1 = g.z_first, g.z_last + 1
                sel = (lab[:, :, z0:z1] == lb.index) & (sides[:, :, z0:z1] == side)
                if imat_map is not None:
                    sel_i = sel & (lab_e[:, :, z0:z1] == lb.index)
                    st = fatmod.region_stats(imat_map[:, :, z0:z1], None, sel_i)
                    if st["mean"] is not None:
                        fat_vals["imat_percent"] = st["mean"] * 100.0
                        fat_vals["imat_ml"] = st["mean"] * g.voxels * voxel_volume_mm3 / 1000.0
                if ff_map is not None:
                    sel_f = sel & (lab_ff[:, :, z0:z1] == lb.index)
                    wts = ff_weight[:, :, z0:z1] if ff_weight is not None else None
                    st = fatmod.region_stats(ff_map[:, :, z0:z1], wts, sel_f)
                    fat_vals.update(ff_mean=st["mean"], ff_median=st["median"], ff_weighted=st["weighted"])
            records.append(
                MuscleSide(
                    index=lb.index,
                    code=lb.code,
                    name=lb.name,
                    side=SIDE_CODES[side],
                    voxels=g.voxels,
                    volume_ml=g.volume_ml,
                    z_first=g.z_first,
                    z_last=g.z_last,
                    acsa_profile_mm2=g.acsa_profile_mm2,
                    max_acsa_mm2=g.max_acsa_mm2,
                    max_acsa_z=g.max_acsa_z,
                    max_acsa_position_mm=g.max_acsa_position_mm,
                    max_acsa_position_fraction=g.max_acsa_position_fraction,
                    length_mm=g.length_mm,
                    centroid_mm=g.centroid_mm,
                    volume_lower_bound=g.volume_lower_bound,
                    length_lower_bound=g.length_lower_bound,
                    max_acsa_unreliable=g.max_acsa_unreliable,
                    cleanup_removed_voxels=int(removed.get((lb.index, side), 0)),
                    **fat_vals,
                )
            )
    by_key = {(r.index, r.side): r for r in records}
    asym = []
    for lb in table.muscles:
        r, left = by_key.get((lb.index, "R")), by_key.get((lb.index, "L"))
        if r is None and left is None:
            continue
        asym.append(
            Asymmetry(
                index=lb.index,
                code=lb.code,
                name=lb.name,
                volume_percent=asymmetry_percent(r and r.volume_ml, left and left.volume_ml),
                max_acsa_percent=asymmetry_percent(r and r.max_acsa_mm2, left and left.max_acsa_mm2),
            )
        )
    geometry_info = {
        "acsa_plane": "areas are in the slice plane"
        + (
            f", tilted {tilt_deg:.1f} degrees from the scanner's axial plane (oblique acquisition)"
            if tilt_deg > 0.5
            else ""
        ),
        "tilt_deg": float(tilt_deg),
        "slice_spacing_mm": float(spacing[2]),
        "length": "(z_last - z_first + 1) x slice spacing, along the slice normal",
        "position": "max_acsa_position_mm from the muscle's most proximal slice; fraction of (length - one slice)",
        "centroid": "world (scanner RAS+) mm",
    }
    return Analysis(
        lab,
        sides,
        tuple(records),
        tuple(asym),
        sa.to_dict(),
        cleanup,
        fat_info,
        geometry_info,
        csv_form=options.csv_form,
    )


def analyse_scan(labels: np.ndarray, canon: np.ndarray, props, table, options: AnalysisOptions) -> Analysis:
    """``analyse`` for a scan read by ``runtime.io``: geometry from ``props`` (``ImageProps``);
    Dixon ``fat``/``water``/``fat_fraction`` given as paths are read and checked against the scan's
    grid (``inputs.read_on_grid``); arrays are taken as canonical already."""
    import dataclasses
    import os

    from limbseg_rt.runtime.analysis.inputs import read_on_grid

    resolved = {}
    for name, what in (("fat", "Dixon fat"), ("water", "Dixon water"), ("fat_fraction", "fat-fraction")):
        v = getattr(options, name)
        if isinstance(v, (str, os.PathLike)):
            resolved[name] = read_on_grid(v, props, what)
    if resolved:
        options = dataclasses.replace(options, **resolved)
    return analyse(
        labels,
        canon,
        props.canonical_spacing,
        props.canonical_affine,
        props.voxel_volume_mm3,
        table,
        options,
        tilt_deg=float(props.tilt_deg),
    )


def options_summary(options: AnalysisOptions, dixon_paths: dict | None = None) -> dict:
    """The analysis settings for the run manifest (Dixon inputs by path when given as paths)."""
    import os

    def src(v):
        return str(v) if isinstance(v, (str, os.PathLike)) else ("array" if v is not None else None)

    return {
        "clean": options.clean,
        "min_fraction": options.min_fraction,
        "min_ml": options.min_ml,
        "near_mm": options.near_mm,
        "imat": options.imat,
        "imat_erode": options.imat_erode,
        "ff_erode": options.ff_erode,
        "dixon_fat": src(options.fat),
        "dixon_water": src(options.water),
        "fat_fraction": src(options.fat_fraction),
    }
