"""DICOM MR series -> the canonical float32 volume and ``ImageProps`` of the NIfTI reader.

``read_dicom(path, series=None) -> (volume, props, source)``: ``volume`` and ``props`` are exactly
what ``nifti.read_image`` returns for the same grid (the NIfTI path builds them: an in-memory NIfTI
image with the series' affine is passed to ``nifti.from_nibabel``), so everything downstream is
shared. ``props`` is a ``DicomImageProps`` (an ``ImageProps`` whose ``dicom`` field is the
``SourceInfo`` a SEG writer needs).

Conventions (docs/dicom.md): the input grid is ``[column, row, slice]`` (array axis 0 runs along
ImageOrientationPatient's row direction, axis 1 along its column direction, axis 2 along the slice
normal ``row x column``, slices sorted by ImagePositionPatient projected on that normal, ascending).
DICOM positions are LPS; the affine is RAS like every affine in limbseg-rt: ``diag(-1, -1, 1) @``
the LPS affine. Voxel values are ``stored * RescaleSlope + RescaleIntercept`` per frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io.dicom import series as ser
from limbseg_rt.runtime.io.dicom.discover import INSTALL_HINT, Discovery, discover, require_pydicom
from limbseg_rt.runtime.io.geometry import SHEAR_TOLERANCE
from limbseg_rt.runtime.io.nifti import ImageProps, ReadOptions, from_nibabel

DUPLICATE_MM = 0.01  # two slices closer than this along the normal are the same position
SPACING_TOLERANCE = 0.01  # relative deviation of one step from the mean step (plus 0.02 mm)
SHIFT_MM = 0.01  # in-plane drift allowed per slice on top of SHEAR_TOLERANCE x distance
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SourceInfo:
    """The DICOM series a volume came from. ``frames[k]``: ``(dataset, frame index)`` of input-grid
    slice ``k`` (frame index 0 for single-frame instances); ``refs[k]``: its file (``zip!member``);
    ``positions[k]``: its ImagePositionPatient (mm, LPS, as stored); ``orientation``: the stack's
    ImageOrientationPatient; ``pixel_spacing``: (row, column) mm; ``slice_spacing``: mm.
    ``datasets`` hold patient data: never log them; ``to_dict`` gives UIDs only.
    """

    path: str
    study_uid: str
    series_uid: str
    series_number: int | None
    description: str
    modality: str
    sop_class: str
    transfer_syntax: str
    enhanced: bool
    frames: tuple[tuple[Any, int], ...] = field(repr=False)
    refs: tuple[str, ...] = field(repr=False)
    positions: tuple[tuple[float, float, float], ...] = field(default=(), repr=False)
    orientation: tuple[float, ...] = ()
    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    slice_spacing: float = 1.0
    skipped_files: int = 0
    notes: tuple[str, ...] = ()

    @property
    def datasets(self) -> list:
        """Distinct source instances in slice order (one for an Enhanced MR file)."""
        out, seen = [], set()
        for ds, _ in self.frames:
            if id(ds) not in seen:
                seen.add(id(ds))
                out.append(ds)
        return out

    def to_dict(self) -> dict:
        return {
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "series_number": self.series_number,
            "series_description": self.description,
            "modality": self.modality,
            "sop_class_uid": self.sop_class,
            "transfer_syntax_uid": self.transfer_syntax,
            "enhanced": self.enhanced,
            "slices": len(self.frames),
            "sop_instance_uids": [str(ds.SOPInstanceUID) for ds in self.datasets],
            "skipped_non_dicom_files": self.skipped_files,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, eq=False)
class DicomImageProps(ImageProps):
    """``ImageProps`` of a DICOM series; ``dicom`` is its ``SourceInfo``."""

    dicom: Any = field(default=None, repr=False)


def list_series(path) -> tuple[Discovery, list[ser.Series]]:
    """Every series under ``path`` with ``skip_reason`` set (None = ``run`` would consider it)."""
    found = discover(path)
    series = ser.group_series(found.instances)
    ser.classify(series)
    return found, series


def read_dicom(path, series: str | int | None = None, *, options: ReadOptions = ReadOptions()):
    """Read one MR series -> (canonical float32 ``[X, Y, Z]``, DicomImageProps, SourceInfo).

    ``path``: a folder (searched recursively), a ``.zip`` or one (Enhanced MR) file; ``series``:
    SeriesNumber or SeriesInstanceUID when the input holds several candidates. ``options``: the
    NIfTI reader's (``allow_2d`` accepts a single slice, ``max_bytes`` limits memory). Raises
    InputError (exit 3) with one line, MissingDependencyError (exit 12) without pydicom.
    """
    src = str(path)
    found, all_series = list_series(path)
    chosen = ser.choose(all_series, series, src, allow_2d=options.allow_2d)
    frames, notes = _main_stack(chosen, src)
    order, affine_lps, warnings = _geometry(frames, src, options.allow_2d)
    frames = [frames[i] for i in order]
    if chosen.notes:
        notes.extend(chosen.notes)
    rows, cols = frames[0].rows, frames[0].columns
    need = rows * cols * len(frames) * (4 + 4)  # pixels read (float32 at most) + the float32 volume
    if need > options.max_bytes:
        raise InputError(
            f"{src}: {chosen.label()} needs {need / 1024**3:.1f} GiB, above the memory limit; raise the limit if the scan is really that big"
        )
    affine = LPS_TO_RAS @ affine_lps
    img = _nifti_image(_pixels(frames, src, _canonical_ornt(affine)), affine)
    volume, props = from_nibabel(
        img, options=dataclasses.replace(options, prefer=None, assume_orientation=None), source=src
    )
    first = frames[0].instance.ds
    ts = str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", "") or "")
    info = SourceInfo(
        path=src,
        study_uid=str(first.get("StudyInstanceUID", "")),
        series_uid=chosen.uid,
        series_number=chosen.number,
        description=chosen.description,
        modality=chosen.modality,
        sop_class=chosen.sop_class,
        transfer_syntax=ts,
        enhanced=chosen.sop_class == ser.ENHANCED_MR_IMAGE_STORAGE,
        frames=tuple((f.instance.ds, f.index) for f in frames),
        refs=tuple(f.ref for f in frames),
        positions=tuple(f.ipp for f in frames),
        orientation=tuple(frames[0].iop),
        pixel_spacing=tuple(frames[0].pixel_spacing),
        slice_spacing=float(np.linalg.norm(affine_lps[:3, 2])),
        skipped_files=found.skipped_non_dicom,
        notes=tuple(notes),
    )
    values = {f.name: getattr(props, f.name) for f in dataclasses.fields(ImageProps)}
    values["warnings"] = tuple(props.warnings) + tuple(warnings) + tuple(notes)
    values["affine_source"] = "dicom"
    return volume, DicomImageProps(**values, dicom=info), info


def _nifti_image(data: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_qform(affine, code=1)  # scanner-anatomical: DICOM patient coordinates
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return nib.Nifti1Image(data, None, header)


def _main_stack(s: ser.Series, src: str) -> tuple[list[ser.Frame], list[str]]:
    main = s.main
    notes: list[str] = []
    for f in s.frames:
        for value, name in ((f.iop, "ImageOrientationPatient"), (f.ipp, "ImagePositionPatient")):
            if value is None:
                raise InputError(
                    f"{f.ref}: has no usable {name}, so the slice cannot be placed; export the series again with full geometry"
                )
    for other in s.stacks[1:]:
        f, h = other[0], main[0]
        if f.iop is not None and h.iop is not None and ser.angle_deg(f.iop, h.iop) > ser.ORTHOGONAL_DEG:
            continue  # already a note from classify: an orthogonal localizer stack
        if (f.rows, f.columns) != (h.rows, h.columns):
            raise InputError(
                f"{src}: {s.label()} mixes image sizes ({h.rows}x{h.columns} and {f.rows}x{f.columns} pixels, e.g. {f.ref}); "
                "export the series again or remove the odd images"
            )
        raise InputError(
            f"{src}: {s.label()} mixes slice orientations ({len(main)} and {len(other)} frames, e.g. {f.ref}); "
            "export one stack per series"
        )
    return list(main), notes


def _geometry(frames: list[ser.Frame], src: str, allow_2d: bool):
    """-> (sort order, 4x4 LPS affine of the sorted grid, warnings). Raises InputError."""
    for f in frames:
        for value, name in (
            (f.ipp, "ImagePositionPatient"),
            (f.iop, "ImageOrientationPatient"),
            (f.pixel_spacing, "PixelSpacing"),
        ):
            if value is None:
                raise InputError(
                    f"{f.ref}: has no usable {name}, so the slice cannot be placed; export the series again with full geometry"
                )
    iop = frames[0].iop
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    if abs(np.linalg.norm(r) - 1) > 1e-3 or abs(np.linalg.norm(c) - 1) > 1e-3 or abs(float(r @ c)) > 1e-3:
        raise InputError(
            f"{frames[0].ref}: ImageOrientationPatient {list(iop)} is not two perpendicular unit vectors; the header is damaged"
        )
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    n = np.cross(r, c)
    spacings = {f.pixel_spacing for f in frames}
    if len(spacings) > 1:
        raise InputError(
            f"{src}: the slices have different pixel spacings ({', '.join(str(list(s)) for s in sorted(spacings))}); export the series again"
        )
    pos = np.array([f.ipp for f in frames], dtype=np.float64)
    d = pos @ n
    order = np.argsort(d, kind="stable")
    d, pos = d[order], pos[order]
    warnings: list[str] = []
    if len(frames) == 1:
        if not allow_2d:
            raise InputError(f"{src}: is a single slice; give a 3D series, or use --allow-2d to segment one slice")
        ds = frames[0].instance.ds
        dz = ser.as_float(ds.get("SpacingBetweenSlices")) or frames[0].thickness or 1.0
    else:
        steps = np.diff(d)
        dup = np.flatnonzero(steps < DUPLICATE_MM)
        if dup.size:
            i = int(dup[0])
            a, b = frames[order[i]], frames[order[i + 1]]
            raise InputError(
                f"{src}: two slices at the same position {d[i]:.2f} mm ({a.ref} and {b.ref}; {dup.size} duplicate(s) in all, "
                "e.g. echoes, repeats or a copied file); remove the duplicates or export one volume per series"
            )
        dz = float((d[-1] - d[0]) / (len(d) - 1))
        typical = float(np.median(steps))
        gaps = np.flatnonzero(steps > 1.5 * typical)
        if gaps.size:
            i = int(gaps[0])
            missing = round(steps[i] / typical) - 1
            raise InputError(
                f"{src}: about {missing} slice(s) missing between positions {d[i]:.2f} and {d[i + 1]:.2f} mm "
                f"(after {frames[order[i]].ref}; spacing {typical:.3g} mm elsewhere); copy the complete series"
            )
        worst = float(np.max(np.abs(steps - typical)))
        if worst > SPACING_TOLERANCE * typical + 0.02:
            raise InputError(
                f"{src}: the slice spacing is not uniform ({steps.min():.3g} to {steps.max():.3g} mm); "
                "resample the series to uniform slices (or export it again) before segmenting"
            )
        dz = float((d[-1] - d[0]) / (len(d) - 1))
        rel = pos - pos[0]
        inplane = rel - np.outer(rel @ n, n)
        drift = np.linalg.norm(inplane, axis=1)
        if np.any(drift > SHEAR_TOLERANCE * np.abs(rel @ n) + SHIFT_MM * np.arange(len(d))):
            k = int(np.argmax(drift))
            angle = math.degrees(math.atan2(drift[k], abs(float(rel[k] @ n))))
            raise InputError(
                f"{src}: the slices shift in-plane along the stack ({angle:.2f} degrees: a gantry-tilted or sheared acquisition); "
                "resample it to a rectangular grid before segmenting"
            )
    row_sp, col_sp = frames[0].pixel_spacing
    if not (row_sp > 0 and col_sp > 0 and dz > 0):
        raise InputError(f"{frames[0].ref}: PixelSpacing {[row_sp, col_sp]} is not positive; the header is damaged")
    a = np.eye(4)
    a[:3, 0] = r * col_sp
    a[:3, 1] = c * row_sp
    a[:3, 2] = n * dz
    a[:3, 3] = pos[0]
    return [int(i) for i in order], a, warnings


def _canonical_ornt(affine: np.ndarray):
    """The orientation the NIfTI reader will find for ``affine`` (from the float32 sform it stores)."""
    from limbseg_rt.runtime.io import geometry

    try:
        return geometry.ornt_from_affine(np.asarray(affine, dtype=np.float32).astype(np.float64))
    except ValueError:
        return None


def _pixels(frames: list[ser.Frame], src: str, ornt=None) -> np.ndarray:
    """``[columns, rows, slices]``: the stored integers when no frame is rescaled (the NIfTI reader
    makes its one float32 copy from them), else float32 rescaled per frame.

    With ``ornt`` (the grid's orientation), the array is a view of a buffer laid out in the
    canonical RAS+ order, Fortran-contiguous: the NIfTI reader's canonical view of it is then
    contiguous, and its float32 copy a straight pass over memory. Values are the same either way.
    """
    rows, cols = frames[0].rows, frames[0].columns
    plain = all(f.slope == 1.0 and f.intercept == 0.0 for f in frames)
    out: np.ndarray | None = None
    cache: dict[int, np.ndarray] = {}
    for k, f in enumerate(frames):
        key = id(f.instance)
        arr = cache.get(key)
        if arr is None:
            arr = _decode(f.instance)
            if arr.ndim == 2:
                arr = arr[None]
            if _frames_of(f.instance.ds) > 1:
                cache = {key: arr}  # an Enhanced MR file: keep its frames while they are used
        if arr.shape[-2:] != (rows, cols) or f.index >= arr.shape[0]:
            raise InputError(
                f"{f.ref}: the pixel data holds {arr.shape} values, not the {rows}x{cols} image its header describes; copy it again"
            )
        if out is None:
            out = _empty((cols, rows, len(frames)), arr.dtype if plain else np.float32, ornt)
        plane = arr[f.index]
        if plain:
            if plane.dtype != out.dtype:
                raise InputError(
                    f"{f.ref}: stores {plane.dtype} pixels, unlike the other slices ({out.dtype}); export the series again"
                )
            out[:, :, k] = plane.T
        else:
            out[:, :, k] = plane.T.astype(np.float32) * np.float32(f.slope) + np.float32(f.intercept)
    assert out is not None  # frames is never empty (checked by the caller)
    return out


def _empty(shape: tuple[int, int, int], dtype, ornt) -> np.ndarray:
    """An uninitialised input-grid array whose canonical view (``ornt``) is Fortran-contiguous."""
    from limbseg_rt.runtime.io import geometry

    if ornt is None:
        return np.empty(shape, dtype=dtype, order="F")
    canon = np.empty(geometry.canonical_shape(shape, ornt), dtype=dtype, order="F")
    view = geometry.input_array(canon, ornt)
    return view if view.shape == shape else np.empty(shape, dtype=dtype, order="F")


def _frames_of(ds) -> int:
    return ser.frame_count(ds)


def _decode(instance) -> np.ndarray:
    ds = instance.ds
    ref = instance.ref
    if (
        instance.pixels is None
        and "PixelData" not in ds
        and "FloatPixelData" not in ds
        and "DoubleFloatPixelData" not in ds
    ):
        raise InputError(f"{ref}: has no pixel data; export the series again with its images")
    spp = ser.raw_us(ds, 0x00280002, 1)
    if spp != 1:
        raise InputError(f"{ref}: is a colour image ({spp} samples per pixel); give a greyscale MR series")
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    fast = _native_pixels(ds, ts, ref, instance.pixels)
    if fast is not None:
        return fast
    if instance.pixels is not None:  # parsed without its pixels, which pydicom must decode: parse it all
        ds = instance.ds = require_pydicom().dcmread(instance.ref)
        instance.pixels = None
    try:
        arr = ds.pixel_array
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = f"{ts.name} ({ts})" if ts is not None else "an unknown transfer syntax"
        low = text.lower()
        if "length" in low or "truncat" in low or "end of" in low or isinstance(exc, EOFError):
            raise InputError(f"{ref}: the pixel data is truncated or damaged ({text}); copy the file again") from None
        if isinstance(exc, (NotImplementedError, RuntimeError)) or "plugin" in low or "decod" in low:
            raise InputError(
                f"{ref}: pixel data in {name} cannot be decoded with the installed plugins ({text}); "
                f"{INSTALL_HINT}, or export the series uncompressed"
            ) from None
        raise InputError(
            f"{ref}: the pixel data cannot be read ({text}); copy the file again or export it uncompressed"
        ) from None
    if ser.raw_text(ds, 0x00280004).upper() == "MONOCHROME1":
        raise InputError(
            f"{ref}: is MONOCHROME1 (inverted greyscale), which MR series never are; export the series again"
        )
    return np.asarray(arr)


_NATIVE_LITTLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little endian


def _native_pixels(ds, ts, ref: str, pixels=None) -> np.ndarray | None:
    """Uncompressed little-endian integer pixels straight from the bytes (pydicom's plugin path
    costs a few ms per file), or from the file at ``pixels`` = (offset, length) when discovery
    parsed the header only; None for anything else (pydicom decodes it)."""
    if ts is None or str(ts) not in _NATIVE_LITTLE or (pixels is None and "PixelData" not in ds):
        return None
    bits, stored = ser.raw_us(ds, 0x00280100), ser.raw_us(ds, 0x00280101)
    signed = ser.raw_us(ds, 0x00280103) == 1
    if bits not in (8, 16, 32) or stored != bits:
        return None
    rows, cols, n = (
        ser.raw_us(ds, 0x00280010),
        ser.raw_us(ds, 0x00280011),
        ser.frame_count(ds) if 0x00280008 in ds else 1,
    )
    need = rows * cols * n * bits // 8
    if pixels is None:
        raw = ds.PixelData
    else:
        offset, length = pixels
        try:
            fd = os.open(ref, os.O_RDONLY)
            try:
                raw = os.pread(fd, min(length, need), offset)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InputError(
                f"{ref}: the pixel data cannot be read ({exc.strerror or exc}); copy the file again"
            ) from None
    if len(raw) < need:
        raise InputError(
            f"{ref}: the pixel data is truncated ({len(raw)} bytes, the header needs {need}); copy the file again"
        )
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return np.frombuffer(raw, dtype=dtype, count=rows * cols * n).reshape(n, rows, cols)


__all__ = ["DicomImageProps", "SourceInfo", "list_series", "read_dicom", "require_pydicom"]
