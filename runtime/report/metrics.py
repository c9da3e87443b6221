"""Segmentation metrics per label in physical units: DSC, RVE %, HD, HD95, ASSD (mm), volumes (mL).

The one owner of overlap metrics: ``confusion_matrix`` / ``label_counts`` count every label of a
pair of label maps in one bincount pass, and ``LabelCounts`` turns the counts into per-label Dice,
volumes and RVE. Training (confusion matrices of torch tensors, as numpy), export parity, the demo
and the benchmarks all call these; numpy only.

Surface distances reproduce medpy.metric.binary (0.5.x) with ``connectivity=1`` and
``voxelspacing``: surfaces are ``mask XOR erode(mask)`` with the face-connected element; distances
are exact Euclidean distances from each surface voxel of one mask to the nearest surface voxel of
the other (see ``distance.py``; they need scipy, the ``eval`` extra).

- HD   = max of both directed surface-distance sets.
- HD95 = ``numpy.percentile`` (linear) of both sets pooled, 95th percentile.
- ASSD = mean of both sets pooled (medpy >= 0.5 pools them; it is not the mean of two means).
- DSC  = 2|A & B| / (|A| + |B|).  RVE % = 100 (V_pred - V_ref) / V_ref.

A label absent from one or both masks never raises: the undefined values are NaN and the row's
``flag`` says why (see ``FLAGS``). A label missing from the prediction keeps DSC 0 and RVE -100 %
(both defined, and a missed muscle must count against the mean); one missing from the reference
keeps DSC 0 and has RVE NaN (division by zero); one absent from both has DSC and RVE NaN (medpy's
``dc`` returns 1.0 there). The mean row averages the labels present in at least one map
(``n_labels``), ignoring NaN, and reports the number of finite values per metric (``counts``).
docs/metrics.md lists these values and the measured speed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.model.labels import LabelTable
from limbseg_rt.runtime.report.distance import label_surfaces, nearest_distances, surface

FLAG_OK = "ok"
FLAG_MISSING_IN_PREDICTION = "missing_in_prediction"
FLAG_MISSING_IN_REFERENCE = "missing_in_reference"
FLAG_ABSENT_IN_BOTH = "absent_in_both"
FLAGS = (FLAG_OK, FLAG_MISSING_IN_PREDICTION, FLAG_MISSING_IN_REFERENCE, FLAG_ABSENT_IN_BOTH)

METRIC_FIELDS = ("dsc", "rve_percent", "hd_mm", "hd95_mm", "assd_mm", "vol_pred_ml", "vol_ref_ml")

# Label ids are counted with histograms; larger values mean the file is an image, not labels.
MAX_LABEL = 65535

# Grids whose affines differ by less than this (mm, per entry) are treated as the same grid:
# float32 storage of the header and qform/sform round-trips differ at about 1e-5 mm.
AFFINE_TOLERANCE_MM = 1e-3


# ----------------------------------------------------------------------------- overlap (one pass)
# Voxels per bincount call: bounds the int64 index temporary to 16 MiB whatever the volume size.
_CHUNK = 1 << 21


def _same_order(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Both maps as C-contiguous arrays without copying when possible; True if transposed.

    Fortran-ordered pairs (what nibabel returns) become their transposes, which are C-contiguous
    views: voxel i of one flattened map is voxel i of the other, and no volume-sized copy is made.
    """
    if pred.ndim > 1 and pred.flags.f_contiguous and ref.flags.f_contiguous and not pred.flags.c_contiguous:
        return pred.T, ref.T, True
    return np.ascontiguousarray(pred), np.ascontiguousarray(ref), False


def confusion_matrix(pred, ref, n_labels: int | None = None) -> np.ndarray:
    """Voxel counts of every (reference, prediction) label pair, in one bincount pass.

    ``pred``, ``ref``: integer (or bool) label arrays of one shape, any ndim, values in
    ``[0, n_labels)``; numpy arrays or anything ``np.asarray`` takes (a CPU torch tensor).
    ``n_labels``: default ``max + 1`` of both. Returns int64 ``[n_labels, n_labels]``, rows =
    reference label, columns = predicted label. Memory beyond the inputs: 16 MiB.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction and reference differ in shape: {pred.shape} vs {ref.shape}")
    hi = int(max(pred.max(initial=0), ref.max(initial=0)))
    lo = int(min(pred.min(initial=0), ref.min(initial=0)))
    n = hi + 1 if n_labels is None else int(n_labels)
    if lo < 0 or hi >= n:
        raise ValueError(f"label values must lie in [0, {n}), found {lo}..{hi}")
    p, r, _ = _same_order(pred, ref)
    p, r = p.reshape(-1), r.reshape(-1)
    counts = np.zeros(n * n, dtype=np.int64)
    for start in range(0, p.size, _CHUNK):
        idx = r[start : start + _CHUNK].astype(np.intp)
        idx *= n
        idx += p[start : start + _CHUNK]
        counts += np.bincount(idx, minlength=n * n)
    return counts.reshape(n, n)


@dataclass(frozen=True, eq=False)
class LabelCounts:
    """Voxel counts per label id ``0..n-1`` of one prediction/reference pair (int64 ``[n]`` each).

    ``pred``: voxels with that label in the prediction; ``ref``: in the reference; ``both``: in
    both (true positives). Counts of several pairs (slices, batches, subjects) add with ``+``.
    """

    pred: np.ndarray
    ref: np.ndarray
    both: np.ndarray

    @classmethod
    def from_confusion(cls, conf: np.ndarray) -> LabelCounts:
        """From ``confusion_matrix`` output (rows = reference, columns = prediction)."""
        conf = np.asarray(conf, dtype=np.int64)
        return cls(pred=conf.sum(axis=0), ref=conf.sum(axis=1), both=np.diagonal(conf).copy())

    def __add__(self, other: LabelCounts) -> LabelCounts:
        return LabelCounts(self.pred + other.pred, self.ref + other.ref, self.both + other.both)

    def __len__(self) -> int:
        return int(self.pred.size)

    def dice(self) -> np.ndarray:
        """Dice per label, float64 ``[n]``; NaN where the label is absent from both maps."""
        total = (self.pred + self.ref).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 2.0 * self.both / total, np.nan)

    def rve_percent(self) -> np.ndarray:
        """``100 (pred - ref) / ref`` per label, float64 ``[n]``; NaN where ``ref`` is 0."""
        ref = self.ref.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ref > 0, 100.0 * (self.pred - self.ref) / ref, np.nan)

    def mean_dice(self, ids: Iterable[int] | None = None) -> tuple[float, int]:
        """``(mean Dice, number of labels averaged)`` over ``ids`` (default ``1..n-1``, i.e. no
        background) present in either map; ``(nan, 0)`` when none is."""
        d = self.dice()
        sel = d[list(ids)] if ids is not None else d[1:]
        ok = np.isfinite(sel)
        return (float(sel[ok].mean()) if ok.any() else math.nan), int(ok.sum())


def label_counts(pred, ref, n_labels: int | None = None) -> LabelCounts:
    """``LabelCounts`` of a label-map pair from one ``confusion_matrix`` pass (same arguments)."""
    return LabelCounts.from_confusion(confusion_matrix(pred, ref, n_labels))


def dice_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Dice per label from a confusion matrix, float64 ``[n]``; NaN where absent from both."""
    return LabelCounts.from_confusion(conf).dice()


# ----------------------------------------------------------------------------- binary metrics
def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.atleast_1d(np.asarray(a)).astype(bool, copy=False)
    b = np.atleast_1d(np.asarray(b)).astype(bool, copy=False)
    if a.shape != b.shape:
        raise InputError(f"masks differ in shape: {a.shape} vs {b.shape}")
    return a, b


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(sp) == 1 and ndim > 1:
        sp = sp * ndim
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"voxel spacing must be {ndim} positive sizes in mm, got {tuple(spacing)}")
    return sp


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) between two masks of the same shape.

    Returns ``(a_to_b, b_to_a)``: float64 arrays, one distance per surface voxel of ``a``
    (resp. ``b``) to the nearest surface voxel of the other mask. Both empty arrays when either
    mask is empty. The work is cropped to the bounding box of ``a | b``: every surface voxel lies
    inside it and erosion treats the outside as background either way, so the crop is exact.
    """
    a, b = _pair(a, b)
    if a.ndim > 3:
        raise InputError(f"surface distances support 1D to 3D masks, got {a.ndim}D")
    sp = _spacing(spacing, a.ndim)
    if not a.any() or not b.any():
        return np.empty(0), np.empty(0)
    box = _bbox(a | b)
    pa = np.argwhere(surface(a[box]))
    pb = np.argwhere(surface(b[box]))
    return nearest_distances(pb, pa, sp), nearest_distances(pa, pb, sp)


def _distance_summary(a_to_b: np.ndarray, b_to_a: np.ndarray) -> tuple[float, float, float]:
    if a_to_b.size == 0 or b_to_a.size == 0:
        return math.nan, math.nan, math.nan
    pooled = np.concatenate([a_to_b, b_to_a])
    return float(pooled.max()), float(np.percentile(pooled, 95)), float(pooled.mean())


def surface_distance_metrics(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[float, float, float]:
    """``(hd, hd95, assd)`` in mm from one pair of distance transforms; NaNs if a mask is empty."""
    return _distance_summary(*surface_distances(a, b, spacing))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient of two masks (any shape, same for both), in [0, 1].

    NaN when both masks are empty (undefined; medpy returns 1.0 there).
    """
    a, b = _pair(a, b)
    return float(label_counts(a, b, 2).dice()[1])


def hausdorff(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Symmetric Hausdorff distance (mm) between the surfaces of two masks; NaN if one is empty."""
    return surface_distance_metrics(a, b, spacing)[0]


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile (mm) of both directed surface-distance sets pooled; NaN if one is empty."""
    return surface_distance_metrics(a, b, spacing)[1]


def assd(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance (mm), both directions pooled; NaN if one is empty."""
    return surface_distance_metrics(a, b, spacing)[2]


# ----------------------------------------------------------------------------- label volumes
@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label. Distances in mm, volumes in mL, RVE in percent; NaN = undefined."""

    index: int
    name: str
    code: str
    dsc: float
    rve_percent: float
    hd_mm: float
    hd95_mm: float
    assd_mm: float
    vol_pred_ml: float
    vol_ref_ml: float
    flag: str


@dataclass(frozen=True)
class MeanMetrics:
    """Mean over the ``n_labels`` labels present in either map, ignoring NaN.

    ``counts[m]`` = how many of those labels have a finite value of metric m (NaN if none).
    """

    dsc: float
    rve_percent: float
    hd_mm: float
    hd95_mm: float
    assd_mm: float
    vol_pred_ml: float
    vol_ref_ml: float
    n_labels: int
    counts: dict[str, int] = field(default_factory=dict)


CSV_COLUMNS = ("index", "name", "code") + METRIC_FIELDS + ("flag",)


def _json_number(x: float) -> float | None:
    return None if (isinstance(x, float) and not math.isfinite(x)) else x


@dataclass(frozen=True)
class EvaluationResult:
    """Per-label rows (label order) and their mean row; ``spacing`` in mm, ``shape`` of the grid."""

    rows: tuple[LabelMetrics, ...]
    mean: MeanMetrics
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    voxel_volume_ml: float

    def table_rows(self) -> list[dict]:
        """One dict per label (keys ``CSV_COLUMNS``) then the mean row (index None, name 'mean')."""
        out = [asdict(r) for r in self.rows]
        m = self.mean
        counts = " ".join(f"{k}={v}" for k, v in m.counts.items())
        mean_row = {"index": None, "name": "mean", "code": ""}
        mean_row.update({k: getattr(m, k) for k in METRIC_FIELDS})
        mean_row["flag"] = f"nanmean over the {m.n_labels} labels present in either map; finite values: {counts}"
        out.append(mean_row)
        return out

    def to_dict(self) -> dict:
        """JSON-ready dict; NaN becomes None (JSON has no NaN)."""
        rows = [{k: _json_number(v) for k, v in asdict(r).items()} for r in self.rows]
        mean: dict[str, object] = {k: _json_number(getattr(self.mean, k)) for k in METRIC_FIELDS}
        mean["n_labels"] = self.mean.n_labels
        mean["counts"] = dict(self.mean.counts)
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing),
            "voxel_volume_ml": self.voxel_volume_ml,
            "metrics": {
                "dsc": "Dice similarity coefficient",
                "rve_percent": "100 (V_pred - V_ref) / V_ref",
                "hd_mm": "symmetric Hausdorff distance between surfaces (connectivity 1)",
                "hd95_mm": "95th percentile of both directed surface distances pooled",
                "assd_mm": "mean of both directed surface distances pooled",
                "mean": "nanmean over labels; counts = finite values per metric",
            },
            "labels": rows,
            "mean": mean,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """CSV text: header ``CSV_COLUMNS``, one row per label, then the mean row; NaN left empty."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for row in self.table_rows():
            writer.writerow(
                {k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in row.items()}
            )
        return buf.getvalue()


def _as_labels(vol: np.ndarray, what: str) -> np.ndarray:
    """Integer label map (non-negative), refusing fractional or negative values."""
    vol = np.asarray(vol)
    if vol.dtype == bool:
        return vol.astype(np.uint8)
    if not np.issubdtype(vol.dtype, np.integer):
        if not np.issubdtype(vol.dtype, np.floating) or not np.all(np.isfinite(vol)) or np.any(vol != np.round(vol)):
            raise InputError(f"the {what} is not a label map: it holds non-integer values")
        vol = vol.astype(np.int64)
    if vol.size and vol.min() < 0:
        raise InputError(f"the {what} is not a label map: it holds negative values")
    if vol.size and vol.max() > MAX_LABEL:
        raise InputError(
            f"the {what} is not a label map: it holds values up to {vol.max()} (labels must be <= {MAX_LABEL})"
        )
    if vol.dtype == np.uint64:  # bincount refuses uint64 even for small values
        vol = vol.astype(np.int64)
    return vol


def evaluate_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing: Sequence[float],
    labels: LabelTable | None = None,
    label_ids: Iterable[int] | None = None,
    voxel_volume_mm3: float | None = None,
) -> EvaluationResult:
    """Compare a predicted and a reference label map label by label.

    ``pred``, ``ref``: integer label maps of the same shape (2D or 3D; 0 = background).
    ``spacing``: voxel size per axis in mm. ``voxel_volume_mm3``: defaults to the product of the
    spacing (pass ``|det(affine[:3, :3])|`` for sheared grids). Labels evaluated: ``label_ids``
    if given, else every non-background label of ``labels`` plus any other label found in either
    map, else the non-zero labels found in either map. Names come from ``labels`` ("label N" for
    ids it lacks).
    """
    pred = _as_labels(pred, "prediction")
    ref = _as_labels(ref, "reference")
    if pred.shape != ref.shape:
        raise InputError(f"prediction and reference differ in shape: {pred.shape} vs {ref.shape}")
    if not 1 <= pred.ndim <= 3:
        raise InputError(f"label maps must be 1D to 3D, got {pred.ndim}D")
    sp = _spacing(spacing, pred.ndim)
    vox_mm3 = float(np.prod(sp)) if voxel_volume_mm3 is None else float(voxel_volume_mm3)
    vox_ml = vox_mm3 / 1000.0

    n_ids = int(max(pred.max(initial=0), ref.max(initial=0))) + 1
    counts = label_counts(pred, ref, n_ids)
    count_pred, count_ref = counts.pred, counts.ref
    dice_all, rve_all = counts.dice(), counts.rve_percent()

    if label_ids is not None:
        ids = [int(i) for i in label_ids]
    else:
        found = [i for i in range(1, n_ids) if count_pred[i] or count_ref[i]]
        table_ids = [lab.index for lab in labels.muscles] if labels is not None else []
        ids = sorted(set(table_ids) | set(found))
    if any(i < 0 for i in ids):
        raise InputError(f"label ids must be non-negative, got {ids}")

    # Surface voxels of every label in one pass per map (on C-ordered views: a Fortran-ordered
    # map, as nibabel gives, is walked transposed, with the spacing reversed to match); the
    # distances then cost per surface voxel, never per voxel of a label's bounding box.
    need = [i for i in ids if i < n_ids and count_pred[i] and count_ref[i]]
    surf_pred: dict[int, np.ndarray] = {}
    surf_ref: dict[int, np.ndarray] = {}
    sp_view = sp
    if need:
        p_view, r_view, flipped = _same_order(pred, ref)
        sp_view = sp[::-1] if flipped else sp
        surf_pred = label_surfaces(p_view, keep=need)
        surf_ref = label_surfaces(r_view, keep=need)
    rows = []
    for i in ids:
        npred = int(count_pred[i]) if i < n_ids else 0
        nref = int(count_ref[i]) if i < n_ids else 0
        if labels is not None and i < len(labels):
            name, code = labels[i].name, labels[i].code
        else:
            name, code = f"label {i}", f"L{i}"
        hd = h95 = asd_ = math.nan
        if npred and nref:
            flag = FLAG_OK
            sp_i, sr_i = surf_pred[i], surf_ref[i]
            hd, h95, asd_ = _distance_summary(
                nearest_distances(sr_i, sp_i, sp_view), nearest_distances(sp_i, sr_i, sp_view)
            )
        elif nref:
            flag = FLAG_MISSING_IN_PREDICTION
        elif npred:
            flag = FLAG_MISSING_IN_REFERENCE
        else:
            flag = FLAG_ABSENT_IN_BOTH
        dsc = float(dice_all[i]) if i < n_ids else math.nan
        rve = float(rve_all[i]) if i < n_ids else math.nan
        rows.append(LabelMetrics(i, name, code, dsc, rve, hd, h95, asd_, npred * vox_ml, nref * vox_ml, flag))

    # The mean row covers labels present in at least one map: a label absent from both says
    # nothing about the segmentation and would only dilute the mean volumes.
    present = [r for r in rows if r.flag != FLAG_ABSENT_IN_BOTH]

    def _nanmean(name: str) -> tuple[float, int]:
        vals = np.array([getattr(r, name) for r in present], dtype=float)
        ok = np.isfinite(vals)
        return (float(vals[ok].mean()) if ok.any() else math.nan), int(ok.sum())

    stats = {name: _nanmean(name) for name in METRIC_FIELDS}
    mean = MeanMetrics(
        **{name: stats[name][0] for name in METRIC_FIELDS},
        n_labels=len(present),
        counts={name: stats[name][1] for name in METRIC_FIELDS},
    )
    return EvaluationResult(tuple(rows), mean, sp, tuple(pred.shape), vox_ml)


# ----------------------------------------------------------------------------- files
def _load_labels(path: str | Path, what: str):
    """(labels on the file's grid, affine) through the runtime's strict reader (same checks as ``run``)."""
    from limbseg_rt.runtime.io.nifti import read_labels

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    data, props = read_labels(path, what=f"{what} label map")
    return data, np.asarray(props.affine, dtype=float)


def _grid_difference(shape_p, aff_p, shape_r, aff_r) -> str | None:
    """What differs between two grids, in words; None when they match within tolerance."""
    if tuple(shape_p) != tuple(shape_r):
        return f"shapes differ: {tuple(shape_p)} vs {tuple(shape_r)} voxels"
    m_p, m_r = aff_p[:3, :3], aff_r[:3, :3]
    zoom_p, zoom_r = np.linalg.norm(m_p, axis=0), np.linalg.norm(m_r, axis=0)
    if np.max(np.abs(zoom_p - zoom_r)) > AFFINE_TOLERANCE_MM:
        fmt = lambda z: "x".join(f"{v:.4g}" for v in z)  # noqa: E731
        return f"voxel sizes differ: {fmt(zoom_p)} mm vs {fmt(zoom_r)} mm"
    if np.max(np.abs(m_p - m_r)) > AFFINE_TOLERANCE_MM:
        return "orientations differ: the voxel axes point in different directions"
    shift = float(np.linalg.norm(aff_p[:3, 3] - aff_r[:3, 3]))
    if np.max(np.abs(aff_p[:3, 3] - aff_r[:3, 3])) > AFFINE_TOLERANCE_MM:
        return f"origins differ by {shift:.3g} mm"
    return None


def evaluate_files(
    pred_path: str | Path,
    ref_path: str | Path,
    *,
    labels: LabelTable | None = None,
    label_ids: Iterable[int] | None = None,
) -> EvaluationResult:
    """Evaluate a predicted label NIfTI against a reference label NIfTI on the same grid.

    Spacing = lengths of the affine's voxel axes (mm); voxel volume = ``|det(affine[:3, :3])|``.
    Raises InputError when a file is missing/unreadable, is not a label map, or when the two
    grids differ (shape, voxel size, orientation or origin beyond ``AFFINE_TOLERANCE_MM``).
    """
    pred, aff_p = _load_labels(pred_path, "prediction")
    ref, aff_r = _load_labels(ref_path, "reference")
    diff = _grid_difference(pred.shape, aff_p, ref.shape, aff_r)
    if diff is not None:
        raise InputError(
            f"prediction and reference are on different grids ({diff}); resample the prediction onto the reference grid first"
        )
    ndim = pred.ndim
    spacing = tuple(float(v) for v in np.linalg.norm(aff_r[:3, :3], axis=0)[:ndim])
    vox = abs(float(np.linalg.det(aff_r[:3, :3])))
    return evaluate_labels(pred, ref, spacing=spacing, labels=labels, label_ids=label_ids, voxel_volume_mm3=vox)
