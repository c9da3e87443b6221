"""Write muscle labels as a DICOM Segmentation (highdicom) that references the source series.

One segment per muscle present, numbered 1..M in label-table order; label, colour (the table's
RGB as CIELab) and codes (``runtime/data/seg_codes.json``, docs/dicom.md). Frames line up with the
source: for a classic series, SEG frame ``k`` is derived from ``source.frames[k]`` (the source
instances are passed to highdicom in that order); for an Enhanced MR file, SEG frame ``f`` from
source frame ``f``. highdicom omits frames with no muscle. The file is written to a hidden
temporary name in the same folder, read back (pydicom: SOP class, segments, frame references)
and only then renamed into place.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import MissingDependencyError, OutputError
from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.io.dicom.discover import INSTALL_HINT

CODES_FILE = Path(__file__).resolve().parents[2] / "data" / "seg_codes.json"
SEG_TYPES = ("binary", "labelmap")


@dataclass(frozen=True)
class AlgorithmInfo:
    """What made the labels: ``name`` (e.g. ``limbseg-rt unet``), ``version`` (software version),
    ``model_sha256``, ``demo`` (a bundled demo model: said in SeriesDescription and the algorithm).
    """

    name: str
    version: str
    model_sha256: str
    demo: bool = False


def seg_codes() -> dict:
    """The code table of ``runtime/data/seg_codes.json``."""
    return json.loads(CODES_FILE.read_text(encoding="utf-8"))


def write_seg(
    labels: np.ndarray,
    props,
    out_path,
    *,
    table,
    algorithm: AlgorithmInfo,
    seg_type: str = "binary",
    grid: str = "canonical",
    series_number: int = 9901,
    manufacturer: str = "limbseg-rt",
) -> Path | None:
    """Write a SEG for ``labels`` over the DICOM series of ``props`` (a ``DicomImageProps``).

    ``labels``: integer table indices, canonical ``[X, Y, Z]`` (``grid="canonical"``) or on the
    input grid ``props.shape`` (``grid="input"``). Returns the path, or None when no muscle was
    found (a SEG needs at least one segment). Raises OutputError when the file cannot be written
    or does not read back, MissingDependencyError without highdicom.
    """
    try:
        import highdicom as hd
        from pydicom.sr.coding import Code
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    if seg_type not in SEG_TYPES:
        raise ValueError(f"seg_type must be one of {SEG_TYPES}, got {seg_type!r}")
    source = getattr(props, "dicom", None)
    if source is None:
        raise OutputError(f"{out_path}: a DICOM SEG needs a DICOM input; this scan is {props.source}")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise OutputError(f"{out}: the folder {out.parent} does not exist; create it or choose another path")
    arr = np.asarray(labels)
    grid_labels = geometry.from_canonical(arr, props) if grid == "canonical" else arr
    if tuple(grid_labels.shape) != tuple(props.shape):
        raise ValueError(f"labels of shape {grid_labels.shape} are not on the input grid {props.shape}")
    present = [int(v) for v in np.unique(grid_labels) if v != 0]
    if not present:
        return None
    lut = np.zeros(max(len(table), max(present) + 1), dtype=np.uint16 if len(present) > 255 else np.uint8)
    for number, value in enumerate(present, start=1):
        lut[value] = number
    segs = lut[grid_labels]  # [columns, rows, slices] of segment numbers
    pixel, positions = _source_order(segs, source)
    codes = seg_codes()
    category = Code(codes["category"]["value"], codes["category"]["scheme"], codes["category"]["meaning"])
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64],
        family=Code("123110", "DCM", "Artificial Intelligence"),
        version=algorithm.version[:64],
        source="limbseg-rt DEMO model (synthetic phantoms only)" if algorithm.demo else "limbseg-rt",
        parameters={"model_sha256": algorithm.model_sha256, "demo_model": "yes" if algorithm.demo else "no"},
    )
    descriptions = []
    for number, value in enumerate(present, start=1):
        lab = table[value]
        entry = codes["by_label_code"].get(lab.code, codes["default"])
        t, region = entry["type"], entry.get("anatomic_region") or codes["default"].get("anatomic_region")
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=f"{lab.name} ({lab.code})"[:64],
                segmented_property_category=category,
                segmented_property_type=Code(t["value"], t["scheme"], t["meaning"]),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
                anatomic_regions=[Code(region["value"], region["scheme"], region["meaning"])] if region else None,
                display_color=hd.color.CIELabColor.from_rgb(*lab.colour) if hasattr(hd.color, "CIELabColor") else None,
            )
        )
    from pydicom.uid import generate_uid

    description = f"{algorithm.name} muscles" + (" DEMO model - not for clinical use" if algorithm.demo else "")
    try:
        seg = hd.seg.Segmentation(
            source_images=_sources_for_highdicom(source),
            pixel_array=pixel,
            segmentation_type=hd.seg.SegmentationTypeValues[seg_type.upper()],
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=algorithm.name[:64],
            software_versions=algorithm.version[:64],
            device_serial_number="0",
            series_description=description[:64],
            content_label="MUSCLES",
            content_description=("DEMO model output, not for clinical use" if algorithm.demo else "lower-limb muscles")[
                :64
            ],
            # Geometry given explicitly (from the frames read): Enhanced MR files may keep it per frame.
            pixel_measures=hd.PixelMeasuresSequence(
                pixel_spacing=list(source.pixel_spacing),
                slice_thickness=source.slice_spacing,
                spacing_between_slices=source.slice_spacing,
            ),
            plane_orientation=hd.PlaneOrientationSequence(
                coordinate_system="PATIENT", image_orientation=list(source.orientation)
            ),
            plane_positions=[
                hd.PlanePositionSequence(coordinate_system="PATIENT", image_position=list(p)) for p in positions
            ],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise OutputError(
            f"{out}: highdicom refused to build the segmentation ({exc}); the source series lacks required attributes"
        ) from None
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    try:
        seg.save_as(tmp)
        _verify(tmp, out, seg, len(present) + (seg_type == "labelmap"))  # a LABELMAP lists background too
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(
            f"{out}: cannot be written ({exc.strerror or exc}); check the folder's free space and permissions"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _source_order(segs: np.ndarray, source):
    """``[columns, rows, slices]`` -> (``[frames, rows, columns]`` in the order highdicom pairs with
    sources, each frame's ImagePositionPatient)."""
    cols, rows, n = segs.shape
    if not source.enhanced:
        return np.ascontiguousarray(np.transpose(segs, (2, 1, 0))), list(source.positions)
    ds = source.frames[0][0]
    total = int(ds.get("NumberOfFrames", n))
    if total != n:
        raise OutputError(
            f"{source.path}: {total - n} frame(s) of the Enhanced MR file are not in the segmented stack; a SEG cannot be written for it"
        )
    pixel = np.zeros((total, rows, cols), dtype=segs.dtype)
    positions = [None] * total
    for k, (_, frame) in enumerate(source.frames):
        pixel[frame] = segs[:, :, k].T
        positions[frame] = source.positions[k]
    return pixel, positions


def _sources_for_highdicom(source) -> list:
    """The source datasets; an Enhanced MR file whose pixel measures or orientation are per frame
    gets a copy with them also in the shared groups (highdicom reads them there). The originals
    are not changed."""
    import copy

    datasets = source.datasets
    if not source.enhanced:
        return datasets
    ds = datasets[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    wanted = ("PixelMeasuresSequence", "PlaneOrientationSequence")
    if shared and all(k in shared[0] for k in wanted):
        return datasets
    import pydicom

    per_frame = ds.PerFrameFunctionalGroupsSequence[0]
    clone = pydicom.Dataset(ds)  # a new element mapping: replacing an element leaves ds as it was
    if getattr(ds, "file_meta", None) is not None:
        clone.file_meta = ds.file_meta
    groups = copy.deepcopy(shared) if shared else pydicom.Sequence([pydicom.Dataset()])
    for key in wanted:  # read_dicom checked that every frame has the same values
        if key not in groups[0] and key in per_frame:
            setattr(groups[0], key, copy.deepcopy(per_frame[key].value))
    clone.SharedFunctionalGroupsSequence = groups
    return [clone]


def _verify(tmp: Path, out: Path, seg, segments: int) -> None:
    import pydicom

    try:
        back = pydicom.dcmread(tmp)
    except Exception as exc:
        raise OutputError(f"{out}: the written SEG does not read back ({exc}); check the disk and try again") from None
    problems = []
    if str(back.SOPClassUID) != str(seg.SOPClassUID):
        problems.append("SOP class differs")
    if len(back.SegmentSequence) != segments:
        problems.append(f"{len(back.SegmentSequence)} segments, not {segments}")
    if int(back.NumberOfFrames) != len(back.PerFrameFunctionalGroupsSequence):
        problems.append("frame count differs from its per-frame descriptions")
    if problems:
        raise OutputError(
            f"{out}: the written SEG failed its read-back check ({'; '.join(problems)}); nothing was written"
        )


__all__ = ["AlgorithmInfo", "SEG_TYPES", "seg_codes", "write_seg"]
