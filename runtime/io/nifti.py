"""Read a NIfTI scan into a canonical float32 volume and the ``ImageProps`` needed to write back.

One contract (nnU-Net style): ``read_image(path) -> (volume, props)``; labels go back with
``labelio.write_labels(labels, path, props, table=...)``. ``from_nibabel(img)`` is the same for an
in-memory nibabel image (embedding API).

The volume is CANONICAL: the file's grid reordered by flips and axis permutations only (no
resampling) to RAS+ array axes ``[X, Y, Z]``, so axial slice ``k`` is ``volume[:, :, k]`` and
``k = 0`` is the most inferior. It is float32, native byte order, Fortran-ordered (each axial slice
is contiguous). ``geometry.from_canonical(labels, props)`` maps results back to the file's grid
exactly.

Reading is strict because a wrong image silently gives wrong muscle volumes: the whole file is read
and checked before anything is returned (gzip CRC32 and length, header magic, dimensions against
the file size, a memory limit checked before allocating, datatype, geometry). Every problem is an
``InputError`` with one line naming the file and what to do. The input file is only ever opened
for reading.

Decisions (tested in tests/runtime/test_imageio.py):
- Scaling: ``scl_slope`` 0 or NaN means "no scaling" (NIfTI says 0; nibabel writes NaN for unset);
  silent unless a non-zero ``scl_inter`` is thereby ignored (warning). An infinite slope is ignored
  with a warning. A negative slope is applied with a warning (it inverts the contrast). A valid
  slope with a non-finite intercept is an InputError.
- NaN/Inf voxels: up to ``max_nonfinite_fraction`` (default 50 %) are set to the minimum finite
  value (background) and counted in a warning; more is an InputError.
- Geometry: sform and qform both set with different axis directions is an InputError (left/right
  ambiguity) unless ``prefer`` picks one; with the same directions the sform is used (as nibabel
  does), warning if they place the grid more than 1 mm apart. Neither set is an InputError unless
  ``assume_orientation`` is given.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io import geometry

GIB = 1024**3
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 16 * 1024 * 1024
_N1_MAGIC, _N1_PAIR = b"n+1\x00", b"ni1\x00"
_N2_MAGIC, _N2_PAIR = b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n"
# NIfTI datatype codes we read; everything else (binary, complex, RGB, float128) is refused.
_SUPPORTED_CODES = {
    2: "uint8",
    4: "int16",
    8: "int32",
    16: "float32",
    64: "float64",
    256: "int8",
    512: "uint16",
    768: "uint32",
    1024: "int64",
    1280: "uint64",
}
_REFUSED_CODES = {
    0: "unknown",
    1: "1-bit binary",
    32: "complex64",
    128: "RGB colour",
    1536: "float128",
    1792: "complex128",
    2048: "complex256",
    2304: "RGBA colour",
}
_FIX_EXPORT = "export the scan again from the scanner or PACS"
OBLIQUE_WARNING_DEG = 30.0  # beyond this the "axial" slices are closer to another plane


@dataclass(frozen=True)
class ReadOptions:
    """How strictly to read. All defaults refuse anything ambiguous.

    ``volume_index``: which volume of a 4D file to use (0-based); ``allow_2d``: accept a single
    slice; ``prefer``: ``"sform"`` or ``"qform"`` when both are set but disagree;
    ``assume_orientation``: e.g. ``"RAS"`` or ``"LPS"`` for a file with no geometry (affine built
    from the voxel sizes); ``max_bytes``: refuse images needing more memory than this (raw data or
    its float32 copy, whichever is larger); ``max_nonfinite_fraction``: above this share of NaN/Inf
    voxels the image is refused.
    """

    volume_index: int | None = None
    allow_2d: bool = False
    prefer: str | None = None
    assume_orientation: str | None = None
    max_bytes: int = 4 * GIB
    max_nonfinite_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.prefer not in (None, "sform", "qform"):
            raise ValueError(f"prefer must be None, 'sform' or 'qform', got {self.prefer!r}")
        if self.assume_orientation is not None:
            geometry.ornt_from_axcodes(self.assume_orientation)  # raises ValueError if malformed
        if self.volume_index is not None and (
            not isinstance(self.volume_index, (int, np.integer)) or self.volume_index < 0
        ):
            raise ValueError(f"volume_index must be a non-negative integer, got {self.volume_index!r}")
        if not 0.0 <= self.max_nonfinite_fraction < 1.0:
            raise ValueError("max_nonfinite_fraction must be in [0, 1)")
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")


@dataclass(frozen=True, eq=False)
class ImageProps:
    """What was read and how to write results back onto the same grid.

    ``shape``: the input's spatial grid (labels are written on it); ``file_shape``: the shape
    stored in the file (4D included); ``affine``: 4x4 float64 voxel -> world (mm, RAS+) of the
    input grid, from ``affine_source`` (``"sform"``, ``"qform"`` or ``"assumed"``); ``spacing``:
    voxel size (mm) along the input axes; ``orientation``: where each input axis points, e.g.
    ``('L', 'A', 'S')``; ``ornt``: per input axis ``(world_axis, sign)``, the transform to canonical;
    ``slice_axis``: the input axis that becomes canonical z; ``tilt_deg``: angle between that axis
    and the nearest world axis (0 = not oblique); ``voxel_volume_mm3`` = |det(affine[:3, :3])|;
    ``data_min``/``data_max``: finite intensity range after scaling; ``header``: the input's
    nibabel header (copy it before changing it); ``warnings``: one-line notes for the report.
    """

    source: str
    shape: tuple[int, int, int]
    file_shape: tuple[int, ...]
    affine: np.ndarray
    affine_source: str
    spacing: tuple[float, float, float]
    orientation: tuple[str, str, str]
    ornt: geometry.Ornt
    slice_axis: int
    tilt_deg: float
    voxel_volume_mm3: float
    data_min: float
    data_max: float
    nifti_version: int
    volume_index: int | None
    header: Any = field(repr=False)
    warnings: tuple[str, ...] = ()
    units_scale: float = 1.0  # mm per unit of the file's xyzt_units (affine and spacing here are in mm)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return geometry.canonical_shape(self.shape, self.ornt)

    @property
    def canonical_affine(self) -> np.ndarray:
        """4x4 float64 affine of the canonical volume (same world points as the input grid)."""
        return geometry.canonical_affine(self.affine, self.shape, self.ornt)

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along canonical x, y, z."""
        out = [0.0, 0.0, 0.0]
        for axis, (w, _) in enumerate(self.ornt):
            out[w] = self.spacing[axis]
        return out[0], out[1], out[2]

    @property
    def is_constant(self) -> bool:
        """True when every finite voxel has the same value (empty or constant image)."""
        return self.data_min == self.data_max


def read_image(path, *, options: ReadOptions = ReadOptions()) -> tuple[np.ndarray, ImageProps]:
    """Read ``.nii`` / ``.nii.gz`` (NIfTI-1 or -2) -> (canonical float32 ``[X, Y, Z]``, props).

    Raises InputError (one line: the file, the problem, the fix) for anything unusable.
    """
    src = str(path)
    header, version, data, warnings = read_raw(path, options=options)
    slope, inter, more = _scaling(float(header["scl_slope"]), float(header["scl_inter"]), src)
    return _assemble(data, header, version, src, options, warnings + more, slope, inter)


def read_labels(
    path, *, options: ReadOptions = ReadOptions(allow_2d=True), grid: str = "file", what: str = "label map"
) -> tuple[np.ndarray, ImageProps]:
    """Read a label NIfTI with the same checks as ``read_image`` -> (integer labels, props).

    ``grid="file"``: labels on the file's own grid, with the file's spatial dimensions (a 2D map
    stays 2D; trailing axes of length 1 dropped); ``grid="canonical"``: RAS+ ``[X, Y, Z]`` like
    ``read_image``. dtype uint8 when every value fits, else uint16 (values 0..65535 after scaling).
    Raises InputError when a value is negative, not a whole number or above 65535.
    """
    volume, props = read_image(path, options=options)
    if volume.size and (volume.min() < 0 or volume.max() > 65535 or not np.array_equal(volume, np.rint(volume))):
        raise InputError(f"{path}: is not a {what} (values must be whole numbers 0..65535); give a label file")
    dtype = np.uint8 if not volume.size or volume.max() <= 255 else np.uint16
    labels = volume.astype(dtype, order="F")
    del volume
    if grid == "canonical":
        return labels, props
    if grid != "file":
        raise ValueError(f"grid must be 'file' or 'canonical', got {grid!r}")
    on_file = np.asarray(geometry.from_canonical(labels, props))
    ndim = 2 if len(props.file_shape) == 2 else 3
    return np.ascontiguousarray(on_file.reshape(on_file.shape[:ndim])), props


def from_nibabel(
    img, *, options: ReadOptions = ReadOptions(), source: str | None = None
) -> tuple[np.ndarray, ImageProps]:
    """Like ``read_image`` for an in-memory nibabel image (NIfTI, or anything nibabel can convert).

    For an image backed by a file, nibabel reads it and applies the file's scaling (use
    ``read_image`` on the path for the strict file checks); for an in-memory array the values are
    taken as they are (nibabel's own convention). The image is not modified.
    """
    import nibabel as nib

    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass
        try:
            img = nib.Nifti1Image.from_image(img)
        except Exception as exc:
            raise InputError(
                f"{source or 'image'}: cannot be converted to NIfTI ({exc}); pass a nibabel NIfTI image"
            ) from None
    src = source or img.get_filename() or "in-memory image"
    # A fresh image object syncs the header's sform/qform with img.affine without touching img.
    work = type(img)(img.dataobj, img.affine, img.header)
    header = work.header
    version = 2 if isinstance(img, nib.Nifti2Image) else 1
    warnings: list[str] = []
    if nib.is_proxy(img.dataobj):
        _check_datatype(int(header["datatype"]), src)
        slope = float(img.dataobj.slope)
        if slope < 0:
            warnings.append(f"scl_slope is negative ({slope:g}): intensities are inverted")
    else:
        dtype = np.asarray(img.dataobj).dtype  # an in-memory array: no copy
        if dtype.kind not in "biuf" or dtype.itemsize > 8:
            raise InputError(f"{src}: voxel type {dtype} is not a greyscale intensity; pass a real-valued image")
    file_shape = tuple(int(s) for s in img.shape)
    plan = _plan_shape(file_shape, options, src)
    _check_memory(math.prod(plan[0]), 4, options, src)
    volume = np.asarray(img.dataobj[plan[2]]).reshape(plan[0])
    return _assemble(volume, header, version, src, options, warnings, None, None, file_shape=file_shape, plan=plan)


# -- file level --------------------------------------------------------------------------------


def read_raw(path, *, options: ReadOptions = ReadOptions()):
    """The verified file as stored: (nibabel header, NIfTI version 1 or 2, data, warnings).

    ``data`` has the file's dtype (byte order included) and full shape (4D kept), no scaling, no
    reorientation; it is a view into one buffer holding the whole decompressed file. Every
    file-level check of ``read_image`` is done (name, magic, gzip CRC/length, sizes, datatype).
    """
    src = str(path)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{src}: file not found; check the path")
    if path.is_dir():
        raise InputError(
            f"{src}: is a folder, not a file; give a .nii or .nii.gz file (convert DICOM series first, e.g. with dcm2niix)"
        )
    lower = path.name.lower()
    ext = ".nii.gz" if lower.endswith(".nii.gz") else ".nii" if lower.endswith(".nii") else None
    try:
        with open(path, "rb") as raw:
            first = raw.read(544)
            compressed = first[:2] == _GZIP_MAGIC
            content = first
            if compressed:
                raw.seek(0)
                content = _gunzip_head(raw, src)
            kind = _nifti_kind(content)
            _check_name(ext, compressed, kind, content, src)
            size = os.fstat(raw.fileno()).st_size
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            return _read_nifti(stream, kind, content, compressed, size, src, options)
    except PermissionError:
        raise InputError(f"{src}: permission denied; ask for read access or copy the file somewhere readable") from None
    except IsADirectoryError:
        raise InputError(f"{src}: is a folder, not a file; give a .nii or .nii.gz file") from None


def _gunzip_head(raw, src: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            return gz.read(544)
    except EOFError:
        raise InputError(
            f"{src}: the compressed file is truncated (it ends early); copy it again or {_FIX_EXPORT}"
        ) from None
    except (OSError, zlib.error) as exc:
        raise InputError(
            f"{src}: the compressed file is damaged ({_why(exc)}); copy it again or {_FIX_EXPORT}"
        ) from None


def _nifti_kind(content: bytes) -> tuple[int, str] | str | None:
    """(version, byte order) for a single-file NIfTI header; a str naming a near miss; None otherwise."""
    if len(content) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(content[:4], dtype=order + "i4")[0])
        if size == 348:
            magic = content[344:348]
            if magic == _N1_MAGIC:
                return (1, order)
            if magic == _N1_PAIR:
                return "pair"
            return "magic1"
        if size == 540 and len(content) >= 540:
            magic = content[4:12]
            if magic == _N2_MAGIC:
                return (2, order)
            if magic[:4] == _N2_PAIR[:4]:
                return "pair"
            return "magic2"
    return None


def _sniff(content: bytes) -> str | None:
    """Human name of a common non-NIfTI file type, from its first bytes."""
    signatures = [
        (b"\x89PNG", "a PNG picture"),
        (b"\xff\xd8\xff", "a JPEG picture"),
        (b"GIF8", "a GIF picture"),
        (b"II*\x00", "a TIFF picture"),
        (b"MM\x00*", "a TIFF picture"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"NRRD", "an NRRD image"),
        (b"ObjectType", "a MetaImage (.mha) file"),
        (b"BZh", "a bzip2 archive"),
    ]
    for sig, name in signatures:
        if content.startswith(sig):
            return name
    if content[128:132] == b"DICM":
        return "a DICOM file"
    return None


def _check_name(ext, compressed: bool, kind, content: bytes, src: str) -> None:
    if kind == "pair":
        raise InputError(
            f"{src}: is the header of a .hdr/.img pair; convert it to a single .nii.gz file (e.g. nibabel or fslchfiletype)"
        )
    if kind in ("magic1", "magic2"):
        at = slice(344, 348) if kind == "magic1" else slice(4, 12)
        want = "n+1" if kind == "magic1" else "n+2"
        raise InputError(
            f"{src}: the NIfTI header magic is {bytes(content[at])!r}, not {want!r} (a damaged header or an old "
            f"Analyze 7.5 file); convert it to NIfTI or {_FIX_EXPORT}"
        )
    if kind is None:
        what = _sniff(content)
        inside = " inside the gzip compression" if compressed else ""
        what = f"is {what}" if what else f"has no NIfTI header{inside}"
        raise InputError(
            f"{src}: {what}, not a NIfTI image; give a .nii or .nii.gz file (convert DICOM with e.g. dcm2niix)"
        )
    if ext == ".nii.gz" and not compressed:
        raise InputError(f"{src}: is named .nii.gz but is not gzip-compressed; rename it to end in .nii")
    if ext == ".nii" and compressed:
        raise InputError(f"{src}: is gzip-compressed but named .nii; rename it to end in .nii.gz")
    if ext is None:
        want = ".nii.gz" if compressed else ".nii"
        raise InputError(
            f"{src}: holds a NIfTI image but its name does not end in .nii or .nii.gz; rename it to end in {want}"
        )


def _read_nifti(stream, kind, content: bytes, compressed: bool, size: int, src: str, options: ReadOptions):
    import nibabel as nib

    version, order = kind
    klass = nib.Nifti1Header if version == 1 else nib.Nifti2Header
    hsize = 348 if version == 1 else 540
    base = klass(bytes(content[:hsize]), endianness=order, check=False)
    shape = _file_shape(base, src)
    code = int(base["datatype"])
    _check_datatype(code, src)
    itemsize = base.get_data_dtype().itemsize
    nvox = math.prod(shape)
    _check_memory(nvox, itemsize, options, src)
    offset, warnings = _vox_offset(base, hsize + 4, src)
    if offset > options.max_bytes:
        raise InputError(
            f"{src}: the header puts the image data {offset} bytes into the file; the header is damaged; {_FIX_EXPORT}"
        )
    total = offset + nvox * itemsize
    if not compressed and size < total:
        raise InputError(
            f"{src}: the file is truncated: {size} bytes but its header needs {total} "
            f"({'x'.join(map(str, shape))} voxels of {base.get_data_dtype()}); copy it again or {_FIX_EXPORT}"
        )
    buf = np.empty(total, dtype=np.uint8)  # not zero-filled: every byte is read from the file below
    view = buf.data  # a writable memoryview of the buffer
    got = 0
    try:
        while got < total:
            n = stream.readinto(view[got : min(total, got + _CHUNK)])
            if not n:
                break
            got += n
        if got < total:
            raise InputError(
                f"{src}: the image data is truncated: {got} bytes but the header needs {total}; copy it again or {_FIX_EXPORT}"
            )
        extra = _drain(stream, options.max_bytes, src)  # reaching EOF makes gzip check CRC32 and length
    except EOFError:
        raise InputError(
            f"{src}: the compressed file is truncated (it ends early); copy it again or {_FIX_EXPORT}"
        ) from None
    except (OSError, zlib.error) as exc:
        if not compressed:
            raise InputError(f"{src}: cannot be read ({_why(exc)}); check the disk or copy the file again") from None
        raise InputError(
            f"{src}: the compressed file is damaged ({_why(exc)}); copy it again or {_FIX_EXPORT}"
        ) from None
    finally:
        view.release()
    if extra:
        warnings.append(f"{extra} bytes after the image data were ignored")
    header = _full_header(klass, buf, hsize, offset, order, warnings)
    data = buf[offset:].view(base.get_data_dtype()).reshape(shape, order="F")
    return header, version, data, warnings


def _drain(stream, limit: int, src: str) -> int:
    extra = 0
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return extra
        extra += len(chunk)
        if extra > limit:
            raise InputError(
                f"{src}: holds far more data than its header describes; the header is damaged; {_FIX_EXPORT}"
            )


def _full_header(klass, buf: np.ndarray, hsize: int, offset: int, order: str, warnings: list[str]):
    """Header with its extensions (kept for the label file); damaged extensions are dropped."""
    try:
        return klass.from_fileobj(io.BytesIO(buf[:offset].tobytes()), endianness=order, check=False)
    except Exception:
        warnings.append("the header extensions are damaged and were ignored")
        return klass(buf[:hsize].tobytes(), endianness=order, check=False)


def _file_shape(hdr, src: str) -> tuple[int, ...]:
    dim = [int(d) for d in hdr["dim"]]
    if not 1 <= dim[0] <= 7:
        raise InputError(
            f"{src}: the header says the image has {dim[0]} dimensions (must be 1-7); the header is damaged; {_FIX_EXPORT}"
        )
    shape = tuple(dim[1 : dim[0] + 1])
    if any(s <= 0 for s in shape):
        raise InputError(
            f"{src}: the header gives impossible dimensions {shape} (zero or negative); the header is damaged; {_FIX_EXPORT}"
        )
    return shape


def _vox_offset(hdr, minimum: int, src: str) -> tuple[int, list[str]]:
    value = float(hdr["vox_offset"])
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise InputError(
            f"{src}: the header's data offset (vox_offset {value:g}) is invalid; the header is damaged; {_FIX_EXPORT}"
        )
    if value < minimum:
        # Some old writers leave 0 here; the data of a single-file NIfTI starts right after the header.
        return minimum, [f"vox_offset {value:g} is below {minimum}; the data was read from byte {minimum}"]
    return int(value), []


def _check_datatype(code: int, src: str) -> None:
    if code in _SUPPORTED_CODES:
        return
    name = _REFUSED_CODES.get(code, f"code {code}")
    raise InputError(
        f"{src}: voxel type {name} is not a greyscale intensity image; export a greyscale (magnitude) series"
    )


def _check_memory(nvox: int, itemsize: int, options: ReadOptions, src: str) -> None:
    need = nvox * max(itemsize, 4)
    if need > options.max_bytes:
        raise InputError(
            f"{src}: the header describes {nvox} voxels ({need / GIB:.1f} GiB), above the memory limit of "
            f"{options.max_bytes / GIB:.1f} GiB; the header is probably damaged (or raise the limit if the scan is really that big)"
        )


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _scaling(slope: float, inter: float, src: str):
    """(slope, inter) to apply or (None, None), and warnings; see the module docstring."""
    if slope == 0 or math.isnan(slope):
        if math.isfinite(inter) and inter != 0:
            return None, None, [f"scl_inter {inter:g} ignored because scl_slope is {slope:g} (NIfTI: no scaling)"]
        return None, None, []
    if math.isinf(slope):
        return None, None, [f"scl_slope is {slope:g}; ignored (no scaling applied)"]
    if not math.isfinite(inter):
        raise InputError(
            f"{src}: the header's intensity offset scl_inter is {inter:g}; the header is damaged; {_FIX_EXPORT}"
        )
    warnings = [f"scl_slope is negative ({slope:g}): intensities are inverted"] if slope < 0 else []
    if slope == 1 and inter == 0:
        return None, None, warnings
    return slope, inter, warnings


# -- shared by file and in-memory images --------------------------------------------------------


def _plan_shape(file_shape: tuple[int, ...], options: ReadOptions, src: str):
    """-> (spatial shape (3,), volume index or None, index tuple selecting that volume)."""
    dims = "x".join(map(str, file_shape))
    if len(file_shape) < 2:
        raise InputError(f"{src}: is a 1D image ({dims}); give a 3D scan")
    spatial = tuple(file_shape[:3]) + (1,) * (3 - min(3, len(file_shape)))
    extras = file_shape[3:]
    if any(e != 1 for e in extras[1:]):
        raise InputError(f"{src}: has vector or 5D+ data ({dims}); give a 3D greyscale scan")
    nvol = extras[0] if extras else 1
    vi = options.volume_index
    if nvol > 1:
        if vi is None:
            raise InputError(f"{src}: is 4D with {nvol} volumes ({dims}); choose one with --volume N (0..{nvol - 1})")
        if vi >= nvol:
            raise InputError(f"{src}: has {nvol} volumes; --volume {vi} does not exist (use 0..{nvol - 1})")
    elif vi not in (None, 0):
        raise InputError(f"{src}: has a single volume; --volume {vi} does not exist (use 0 or leave it out)")
    big = sum(s > 1 for s in spatial)
    if big < 2:
        raise InputError(f"{src}: has only {max(spatial)} voxel(s) along one line ({dims}); give a 3D scan")
    if big == 2 and not options.allow_2d:
        raise InputError(
            f"{src}: is a single 2D slice ({dims}); give a 3D scan, or use --allow-2d to segment one slice"
        )
    index: tuple = (slice(None),) * min(3, len(file_shape))
    if len(file_shape) > 3:
        index += (vi or 0,) + (0,) * (len(file_shape) - 4)
    return spatial, (vi if nvol > 1 else None), index


def _choose_affine(header, shape, options: ReadOptions, src: str, warnings: list[str]):
    """-> (4x4 float64 affine of the input grid, "sform" | "qform" | "assumed")."""
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    for name, code in (("qform_code", qcode), ("sform_code", scode)):
        if not 0 <= code <= 5:
            raise InputError(
                f"{src}: the header's {name} is {code}, not a NIfTI code (0..5); the header is damaged; {_FIX_EXPORT}"
            )
    if qcode <= 0 and scode <= 0:
        if options.assume_orientation is None:
            raise InputError(
                f"{src}: has no orientation (qform and sform codes are 0), so left and right cannot be told apart; "
                "rerun with --assume-orientation (e.g. RAS) only if you know the scanner's orientation"
            )
        pix = [float(p) for p in header["pixdim"][1:4]]
        if not all(math.isfinite(p) and p > 0 for p in pix):
            raise InputError(f"{src}: the voxel size (pixdim {pix}) is invalid; the header is damaged; {_FIX_EXPORT}")
        codes = options.assume_orientation.upper()
        warnings.append(f"the file has no orientation; {codes} was assumed as requested")
        return geometry.affine_from_axcodes(pix, codes, shape), "assumed"
    forms = {}
    for name, code in (("sform", scode), ("qform", qcode)):
        if code > 0:
            forms[name] = _form_matrix(header, name, src)
    chosen = options.prefer if options.prefer in forms else None
    if options.prefer and chosen is None:
        other = next(iter(forms))
        warnings.append(f"the file has no {options.prefer}; its {other} was used")
        chosen = other
    if chosen is None and len(forms) == 2:
        q = _checked(forms["qform"], "qform", "--prefer-sform", src)
        s = _checked(forms["sform"], "sform", "--prefer-qform", src)
        oq = "".join(geometry.axcodes(geometry.ornt_from_affine(q)))
        os_ = "".join(geometry.axcodes(geometry.ornt_from_affine(s)))
        if oq != os_:
            raise InputError(
                f"{src}: qform ({oq}) and sform ({os_}) disagree on the axis directions, so left/right is ambiguous; "
                "check the orientation on the scanner and rerun with --prefer-qform or --prefer-sform"
            )
        gap = _corner_gap_mm(q, s, shape)
        if gap > 1.0:
            warnings.append(f"qform and sform place the grid up to {gap:.1f} mm apart; the sform was used")
        return s, "sform"
    chosen = chosen or next(iter(forms))
    return _checked(forms[chosen], chosen, None, src), chosen


def _form_matrix(header, name: str, src: str) -> np.ndarray:
    try:
        return np.asarray(header.get_sform() if name == "sform" else header.get_qform(), dtype=np.float64)
    except Exception as exc:
        raise InputError(
            f"{src}: the {name} cannot be computed ({_why(exc)}); the header is damaged; {_FIX_EXPORT}"
        ) from None


def _checked(affine, name: str, alternative: str | None, src: str) -> np.ndarray:
    try:
        return geometry.check_affine(affine, source=src, form=name)
    except InputError as exc:
        if alternative is None:
            raise
        raise InputError(f"{exc} (or rerun with {alternative})") from None


def _corner_gap_mm(a: np.ndarray, b: np.ndarray, shape) -> float:
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    ).T
    return float(np.max(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0)))


def _assemble(data, header, version, src, options, warnings, slope, inter, *, file_shape=None, plan=None):
    """Volume selection, geometry, canonical float32 copy, scaling, NaN handling -> (volume, props)."""
    warnings = list(warnings)
    if plan is None:
        file_shape = tuple(int(s) for s in data.shape)
        plan = _plan_shape(file_shape, options, src)
        data = data[plan[2]].reshape(plan[0])
    shape, vol_index, _ = plan
    affine, how = _choose_affine(header, shape, options, src, warnings)
    scale = _units_scale(header, src, warnings)
    if scale != 1.0:
        affine[:3, :] *= scale
    ornt = geometry.ornt_from_affine(affine)
    axis = geometry.slice_axis(ornt)
    tilt = geometry.axis_tilt_degrees(affine, axis)
    if tilt > OBLIQUE_WARNING_DEG:
        warnings.append(f"the slices are tilted {tilt:.0f} degrees from axial; results may be poor")
    if sum(s > 1 for s in shape) == 2 and geometry.canonical_shape(shape, ornt)[2] != 1:
        warnings.append("the single slice is not axial; the models were trained on axial slices")

    with np.errstate(over="ignore", invalid="ignore"):
        volume = np.asarray(geometry.canonical_array(data, ornt)).astype(np.float32, order="F")
        if slope is not None:
            volume *= np.float32(slope)
            volume += np.float32(inter)
    # Integers (no scaling) are finite in float32 and round monotonically to it, so the finite check
    # is skipped and min/max come from the (smaller) integer data: the same values, one pass less.
    exact = slope is None and np.asarray(data).dtype.kind in "biu"
    bad = None if exact else ~np.isfinite(volume)
    nbad = 0 if bad is None else int(np.count_nonzero(bad))
    if nbad:
        _check_float32_range(data, nbad, slope, src)
        share = nbad / volume.size
        if share > options.max_nonfinite_fraction:
            raise InputError(
                f"{src}: {share:.0%} of the voxels are NaN or infinite; the image is unusable; {_FIX_EXPORT}"
            )
        volume[bad] = np.nan
        background = np.float32(np.nanmin(volume))
        volume[bad] = background
        warnings.append(
            f"{nbad} NaN/infinite voxels ({share:.2%}) were set to the background value {float(background):g}"
        )
    del bad
    spacing = geometry.voxel_spacing(affine)
    affine.setflags(write=False)
    props = ImageProps(
        source=src,
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        file_shape=tuple(int(s) for s in file_shape),
        affine=affine,
        affine_source=how,
        spacing=spacing,
        orientation=geometry.axcodes(ornt),
        ornt=ornt,
        slice_axis=axis,
        tilt_deg=tilt,
        voxel_volume_mm3=float(abs(np.linalg.det(affine[:3, :3]))),
        data_min=float(np.float32(data.min()) if exact else volume.min()),
        data_max=float(np.float32(data.max()) if exact else volume.max()),
        nifti_version=version,
        volume_index=vol_index,
        header=header,
        warnings=tuple(warnings),
        units_scale=scale,
    )
    return volume, props


# NIfTI xyzt_units, spatial part (bits 0-2): millimetres per unit.
_SPATIAL_UNITS = {0: ("unknown", 1.0), 1: ("m", 1000.0), 2: ("mm", 1.0), 3: ("um", 0.001)}


def _units_scale(header, src: str, warnings: list[str]) -> float:
    """mm per spatial unit of the file; InputError for a code NIfTI does not define."""
    code = int(header["xyzt_units"]) & 0x07
    if code not in _SPATIAL_UNITS:
        raise InputError(
            f"{src}: the header's spatial unit code ({code}) is not a NIfTI unit (m, mm, um); "
            f"the header is damaged; {_FIX_EXPORT}"
        )
    name, scale = _SPATIAL_UNITS[code]
    if scale != 1.0:
        warnings.append(f"the file stores positions in {name}; converted to mm (volumes in mL)")
    return scale


def _check_float32_range(data, nbad: int, slope, src: str) -> None:
    """InputError saying the truth when finite values overflowed float32 (huge values or scl_slope)."""
    raw = np.asarray(data)
    finite_in_file = raw.size - int(np.count_nonzero(~np.isfinite(raw))) if raw.dtype.kind == "f" else raw.size
    if raw.size - finite_in_file < nbad:
        why = f"with scl_slope {slope:g} " if slope is not None and slope != 1.0 else ""
        raise InputError(
            f"{src}: voxel values {why}exceed the float32 range (about 3.4e38); the image cannot be "
            f"used as it is; rescale it or {_FIX_EXPORT}"
        )
