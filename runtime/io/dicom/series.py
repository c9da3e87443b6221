"""Group DICOM instances into series and stacks, describe them, and choose the one to segment.

A *frame* is one 2D image: a classic single-frame instance or one frame of an Enhanced MR
multi-frame instance (its per-frame functional groups give position, orientation, spacing and
rescale; the shared groups fill in what a frame lacks). A *stack* is the frames of one series that
share an orientation and a matrix size. Selection rules (docs/dicom.md):

- only MR Image Storage and Enhanced MR Image Storage are candidates;
- ImageType LOCALIZER, DERIVED or SECONDARY, and single-slice series are skipped;
- inside a series, stacks orthogonal (> 45 degrees) to the largest one are skipped as localizers;
  two stacks that are neither parallel nor orthogonal are refused (mixed orientations);
- a small series orthogonal to the largest candidate is skipped as a localizer series;
- if more than one candidate remains, nothing is guessed: the error lists them and ``series=``
  (SeriesNumber or SeriesInstanceUID) picks one. A chosen series skips the kind rules (a
  DERIVED series can be run on purpose) but never the geometry checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from limbseg_rt.runtime.errors import InputError

if TYPE_CHECKING:
    from limbseg_rt.runtime.io.dicom.discover import Instance

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MR_CLASSES = {MR_IMAGE_STORAGE: "MR", ENHANCED_MR_IMAGE_STORAGE: "Enhanced MR"}
ORIENTATION_TOLERANCE = 1e-4  # |difference| of direction cosines still counted as the same orientation
ORTHOGONAL_DEG = 45.0  # a stack tilted more than this from the main one is another plane


@dataclass
class Frame:
    """One 2D image. ``index``: frame number inside its instance (0 for single-frame instances).

    ``ipp``: ImagePositionPatient (mm, LPS) or None; ``iop``: the 6 direction cosines or None;
    ``pixel_spacing``: (row spacing, column spacing) mm; ``slope``/``intercept``: rescale.
    """

    instance: Instance = field(repr=False)
    index: int
    rows: int
    columns: int
    ipp: tuple[float, ...] | None  # 3 numbers (checked by the parser)
    iop: tuple[float, ...] | None  # 6 numbers
    pixel_spacing: tuple[float, ...] | None  # 2 numbers
    thickness: float | None
    slope: float
    intercept: float

    @property
    def ref(self) -> str:
        return (
            self.instance.ref
            if self.index == 0 and frame_count(self.instance.ds) == 1
            else f"{self.instance.ref} frame {self.index + 1}"
        )


@dataclass
class Series:
    """One SeriesInstanceUID (all its stacks) and whether ``run`` would pick it."""

    uid: str
    number: int | None
    description: str
    modality: str
    sop_class: str
    image_type: tuple[str, ...]
    frames: list[Frame] = field(repr=False)
    stacks: list[list[Frame]] = field(default_factory=list, repr=False)
    skip_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> list[Frame]:
        return self.stacks[0] if self.stacks else []

    @property
    def orientation(self) -> str:
        f = self.main[0] if self.main else None
        if f is None or f.iop is None:
            return "unknown"
        return plane_name(f.iop)

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """(column, row, slice) spacing in mm of the main stack, when it can be measured."""
        st = self.main
        if not st or st[0].pixel_spacing is None or st[0].iop is None or any(f.ipp is None for f in st):
            return None
        dz = 0.0
        if len(st) > 1:
            d = sorted(float(np.dot(f.ipp, normal(f.iop))) for f in st if f.ipp is not None and f.iop is not None)
            dz = float(np.median(np.diff(d)))
        elif st[0].thickness:
            dz = float(st[0].thickness)
        return (st[0].pixel_spacing[1], st[0].pixel_spacing[0], dz)

    def label(self) -> str:
        return f"series {self.number if self.number is not None else '?'} ({self.description or 'no description'}, {self.uid})"


def frame_count(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _floats(value, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def as_float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _decimal(ds, tag: int, n: int) -> tuple[float, ...] | None:
    """A DS/IS element's ``n`` numbers, parsed from the stored text when pydicom has not converted
    it yet (its conversion costs about as much as parsing the whole file); None if absent/invalid."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        try:
            parts = value.decode("ascii").strip(" \x00").split("\\")
            out = tuple(float(v) for v in parts)
        except (UnicodeDecodeError, ValueError):
            return None
        return out if len(out) == n and all(math.isfinite(v) for v in out) else None
    if value is None or value == "":
        return None
    return _floats(value if n > 1 or isinstance(value, (list, tuple)) else [value], n)


def raw_text(ds, tag: int) -> str:
    """A text element (UI, CS, LO...) as stored, without pydicom's conversion ('' if absent)."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value)


def raw_us(ds, tag: int, default: int = 0) -> int:
    """An unsigned short (Rows, Columns, BitsAllocated...) without pydicom's conversion."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return default
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        if len(value) < 2:
            return default
        little = getattr(ds, "is_little_endian", None)
        little = True if little is None else little
        return int.from_bytes(bytes(value[:2]), "little" if little else "big")
    return int(value)


def _group(groups, name):
    seq = groups.get(name) if groups is not None else None
    return seq[0] if seq else None


def frames_of(instance) -> list[Frame]:
    """The frames of one instance with their geometry and rescale (per-frame groups first)."""
    ds = instance.ds
    rows, cols = raw_us(ds, 0x00280010), raw_us(ds, 0x00280011)
    n = frame_count(ds) if 0x00280008 in ds else 1
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    if per_frame is None or n == 1 and "ImagePositionPatient" in ds:
        thick = _decimal(ds, 0x00180050, 1)
        slope_v = _decimal(ds, 0x00281053, 1)
        inter_v = _decimal(ds, 0x00281052, 1)
        return [
            Frame(
                instance,
                0,
                rows,
                cols,
                _decimal(ds, 0x00200032, 3),
                _decimal(ds, 0x00200037, 6),
                _decimal(ds, 0x00280030, 2),
                thick[0] if thick else None,
                1.0 if slope_v is None else slope_v[0],
                0.0 if inter_v is None else inter_v[0],
            )
        ]
    if len(per_frame) != n:
        raise InputError(
            f"{instance.ref}: has {n} frames but {len(per_frame)} per-frame descriptions; the file is damaged; export it again"
        )
    out = []
    for i, item in enumerate(per_frame):

        def pick(name, _item=item):
            return _group(_item, name) or _group(shared, name)

        pos, ori, meas, pvt = (
            pick(k)
            for k in (
                "PlanePositionSequence",
                "PlaneOrientationSequence",
                "PixelMeasuresSequence",
                "PixelValueTransformationSequence",
            )
        )
        slope = as_float(pvt.get("RescaleSlope")) if pvt is not None else as_float(ds.get("RescaleSlope"))
        inter = as_float(pvt.get("RescaleIntercept")) if pvt is not None else as_float(ds.get("RescaleIntercept"))
        out.append(
            Frame(
                instance,
                i,
                rows,
                cols,
                _floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None,
                _floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None,
                _floats(meas.get("PixelSpacing"), 2) if meas is not None else None,
                as_float(meas.get("SliceThickness")) if meas is not None else None,
                1.0 if slope is None else slope,
                0.0 if inter is None else inter,
            )
        )
    return out


def normal(iop) -> np.ndarray:
    """Unit slice normal ``row x column`` of ImageOrientationPatient (LPS)."""
    r, c = np.asarray(iop[:3], dtype=np.float64), np.asarray(iop[3:], dtype=np.float64)
    n = np.cross(r, c)
    return n / (np.linalg.norm(n) or 1.0)


def plane_name(iop) -> str:
    """``axial``, ``coronal``, ``sagittal`` (nearest plane), plus ``oblique`` when > 1 degree off."""
    n = np.abs(normal(iop))
    axis = int(np.argmax(n))
    name = ("sagittal", "coronal", "axial")[axis]
    tilt = math.degrees(math.acos(min(1.0, float(n[axis]))))
    return f"{name} oblique {tilt:.0f} deg" if tilt > 1.0 else name


def angle_deg(a, b) -> float:
    return math.degrees(math.acos(min(1.0, abs(float(np.dot(normal(a), normal(b)))))))


def group_series(instances) -> list[Series]:
    """Series (ordered by SeriesNumber, then UID), each split into stacks (largest first)."""
    by_uid: dict[str, Series] = {}
    for inst in instances:
        ds = inst.ds
        uid = raw_text(ds, 0x0020000E) or "no-series-uid"
        s = by_uid.get(uid)
        if s is None:
            try:
                number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
            except (TypeError, ValueError):
                number = None
            s = by_uid[uid] = Series(
                uid,
                number,
                str(ds.get("SeriesDescription", "") or ""),
                str(ds.get("Modality", "") or ""),
                str(ds.get("SOPClassUID", "")),
                tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
                [],
            )
        s.frames.extend(frames_of(inst))
    out = sorted(by_uid.values(), key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    for s in out:
        _split_stacks(s)
    return out


def _split_stacks(s: Series) -> None:
    groups: list[list[Frame]] = []
    for f in s.frames:
        for g in groups:
            h = g[0]
            same_iop = (f.iop is None and h.iop is None) or (
                f.iop is not None
                and h.iop is not None
                and max(abs(a - b) for a, b in zip(f.iop, h.iop)) <= ORIENTATION_TOLERANCE
            )
            if same_iop and (f.rows, f.columns) == (h.rows, h.columns):
                g.append(f)
                break
        else:
            groups.append([f])
    groups.sort(key=len, reverse=True)
    s.stacks = groups


def classify(series: list[Series]) -> None:
    """Set ``skip_reason`` (None = candidate) and notes on each series, following the module rules."""
    for s in series:
        s.skip_reason = _kind_reason(s)
        if s.skip_reason is None and len(s.stacks) > 1:
            main = s.stacks[0]
            for other in s.stacks[1:]:
                if (
                    main[0].iop is not None
                    and other[0].iop is not None
                    and angle_deg(main[0].iop, other[0].iop) > ORTHOGONAL_DEG
                ):
                    s.notes.append(f"{len(other)} frame(s) orthogonal to the main stack skipped as localizers")
        if s.skip_reason is None and len(s.main) < 2:
            s.skip_reason = "single slice"
    cands = [s for s in series if s.skip_reason is None]
    if len(cands) > 1:
        big = max(cands, key=lambda s: len(s.main))
        for s in cands:
            if s is big or big.main[0].iop is None or s.main[0].iop is None:
                continue
            if len(s.main) * 2 <= len(big.main) and angle_deg(big.main[0].iop, s.main[0].iop) > ORTHOGONAL_DEG:
                s.skip_reason = f"localizer (orthogonal to series {big.number})"


def _kind_reason(s: Series) -> str | None:
    if s.sop_class not in MR_CLASSES:
        return f"not an MR image ({s.modality or 'unknown modality'})"
    if "LOCALIZER" in s.image_type:
        return "localizer"
    if "MOSAIC" in s.image_type:
        return "Siemens mosaic (convert it with dcm2niix)"
    if s.image_type[:1] == ("DERIVED",) or s.image_type[1:2] == ("SECONDARY",):
        return "derived/secondary image"
    return None


def choose(series: list[Series], wanted: str | int | None, src: str, *, allow_2d: bool = False) -> Series:
    """The series to segment: ``wanted`` (SeriesNumber or UID) or the single candidate."""
    if wanted is not None:
        key = str(wanted).strip()
        hits = [s for s in series if s.uid == key or (s.number is not None and str(s.number) == key)]
        if not hits:
            raise InputError(f"{src}: has no series {key}; it has {_listing(series)}")
        if len(hits) > 1:
            raise InputError(
                f"{src}: series number {key} is used by {len(hits)} series; pick one by UID: "
                + ", ".join(s.uid for s in hits)
            )
        s = hits[0]
        if s.sop_class not in MR_CLASSES:
            raise InputError(f"{src}: {s.label()} is {_kind_reason(s)}; only MR image series can be segmented")
        if "MOSAIC" in s.image_type:
            raise InputError(f"{src}: {s.label()} is a Siemens mosaic; convert it with dcm2niix and run the NIfTI")
        if len(s.main) < 2 and not allow_2d:
            raise InputError(
                f"{src}: {s.label()} is a single slice; give a 3D series, or use --allow-2d to segment one slice"
            )
        return s
    cands = [s for s in series if s.skip_reason is None]
    if allow_2d and not cands:
        cands = [s for s in series if s.skip_reason == "single slice"]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise InputError(
            f"{src}: no series can be segmented ({_listing(series)}); give an MR series, or pick one with --series"
        )
    raise InputError(
        f"{src}: holds {len(cands)} MR series that could be segmented ({_listing(cands)}); pick one with --series NUMBER"
    )


def _listing(series: list[Series]) -> str:
    parts = []
    for s in series:
        why = f": {s.skip_reason}" if s.skip_reason else ""
        parts.append(f"{s.number if s.number is not None else '?'} '{s.description}' {len(s.main)} slice(s){why}")
    return "; ".join(parts) if parts else "no series"
