"""Write a label volume as NIfTI on the input's grid, plus label tables for ITK-SNAP and 3D Slicer.

``write_labels(labels, path, props, table=...)`` copies the input header (qform, sform and their
codes unchanged, so the labels overlay the scan in any viewer), stores uint8 (uint16 if the table
has an index above 254) with scl_slope 1 / scl_inter 0, intent NIFTI_INTENT_LABEL named "labels"
and cal_min/cal_max = 0 / highest table index. The file is written to a hidden temporary file in
the same folder, read back and checked (shape, geometry fields, every label value), and only then
renamed into place with ``os.replace``, so a reader never sees a half-written or wrong file and an
existing file is replaced atomically. Any mismatch deletes the temporary file and raises
OutputError.

Beside it (same stem): ``<stem>.itksnap.txt``, an ITK-SNAP label description file (columns
IDX R G B A VIS MSH "LABEL", A an opacity in 0..1), and ``<stem>.ctbl``, a 3D Slicer colour table
(``# Color table file`` header, then ``index name r g b a``, names with spaces as underscores,
0..255 components).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.errors import OutputError
from limbseg_rt.runtime.model.labels import LabelTable

NIFTI_INTENT_LABEL = 1002
# Header fields that place the grid in the world; the label file must carry them bit for bit.
GEOMETRY_FIELDS = ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                   "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z")


@dataclass(frozen=True)
class LabelFiles:
    """Paths written by ``write_labels`` (descriptions are None when not requested)."""

    labels: Path
    itksnap: Path | None
    slicer: Path | None


def label_stem(path) -> Path:
    """``/a/b/case_labels.nii.gz`` -> ``/a/b/case_labels`` (the name the side files share)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return p.with_name(name[: -len(ext)])
    return p.with_name(name)


def write_labels(
    labels: np.ndarray,
    path,
    props,
    *,
    table: LabelTable,
    grid: str = "canonical",
    descriptions: bool = True,
) -> LabelFiles:
    """Write integer labels onto the input grid of ``props`` (an ``imageio.ImageProps``).

    ``labels``: integer array, ``[X, Y, Z]`` canonical (``grid="canonical"``, what the pipeline
    returns; mapped back with ``geometry.from_canonical``) or already on the input grid
    ``props.shape`` (``grid="input"``). Values must be table indices. ``path`` must end in
    ``.nii.gz`` or ``.nii``, lie in an existing folder and differ from the input scan.
    Raises OutputError for an unusable path or a failed read-back check.
    """
    out = Path(path)
    _check_output_path(out, props)
    data = _input_grid_labels(labels, props, table, grid)
    dtype = np.uint8 if len(table) - 1 <= 254 else np.uint16
    img = _label_image(np.asfortranarray(data.astype(dtype, copy=False)), props, table, dtype)
    tmp = _temp_path(out)
    try:
        img.to_filename(str(tmp))
        _verify(tmp, out, data, props, dtype)
        os.replace(tmp, out)
    except OSError as exc:
        raise OutputError(f"{out}: cannot be written ({exc.strerror or exc}); check the folder's free space and permissions") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    itk = slicer = None
    if descriptions:
        itk, slicer = write_label_descriptions(out, table)
    return LabelFiles(out, itk, slicer)


def write_label_descriptions(path, table: LabelTable) -> tuple[Path, Path]:
    """Write ``<stem>.itksnap.txt`` and ``<stem>.ctbl`` next to ``path``; returns both paths."""
    stem = label_stem(path)
    itk = stem.with_name(stem.name + ".itksnap.txt")
    slicer = stem.with_name(stem.name + ".ctbl")
    _write_text(itk, itksnap_text(table))
    _write_text(slicer, slicer_text(table, slicer.name))
    return itk, slicer


def itksnap_text(table: LabelTable) -> str:
    """ITK-SNAP label description file: ``IDX R G B A VIS MSH "LABEL"`` per label (A in 0..1)."""
    lines = [
        "# ITK-SNAP label description file written by limbseg-rt",
        "# Columns: IDX (label value), R G B (0..255), A (opacity 0..1), VIS (shown 0/1),",
        "#          MSH (included in mesh 0/1), LABEL (name in double quotes)",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    for lab in table.labels:
        shown = 0 if lab.index == 0 else 1
        r, g, b = lab.colour
        name = lab.name.replace('"', "'")
        lines.append(f"{lab.index:5d} {r:5d} {g:4d} {b:4d} {float(shown):8g} {shown:2d} {shown:2d}    \"{name}\"")
    return "\n".join(lines) + "\n"


def slicer_text(table: LabelTable, filename: str = "labels.ctbl") -> str:
    """3D Slicer colour table: ``index name r g b a`` per label (0..255; spaces in names -> ``_``)."""
    lines = [f"# Color table file {filename}", f"# {len(table)} values"]
    for lab in table.labels:
        r, g, b = lab.colour
        alpha = 0 if lab.index == 0 else 255
        name = "_".join(lab.name.split()) or f"label_{lab.index}"
        lines.append(f"{lab.index} {name} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"


# -- helpers --------------------------------------------------------------------------------------

def _check_output_path(out: Path, props) -> None:
    lower = out.name.lower()
    if not (lower.endswith(".nii.gz") or lower.endswith(".nii")):
        raise OutputError(f"{out}: a label file name must end in .nii.gz or .nii; choose another output name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{out}: the folder {folder} does not exist; create it or choose another output path")
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name ending in .nii.gz")
    source = Path(str(props.source))
    if out.exists() and source.exists() and os.path.samefile(source, out):
        raise OutputError(f"{out}: is the input scan; choose another output path (the scan is never overwritten)")


def _input_grid_labels(labels, props, table: LabelTable, grid: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"labels must be an integer array, got {arr.dtype}")
    if grid == "canonical":
        arr = geometry.from_canonical(arr, props)
    elif grid == "input":
        if tuple(arr.shape) != tuple(props.shape):
            raise ValueError(f"labels of shape {arr.shape} are not on the input grid {props.shape}")
    else:
        raise ValueError(f"grid must be 'canonical' or 'input', got {grid!r}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(table):
            raise ValueError(f"label values {lo}..{hi} are outside the table's 0..{len(table) - 1}")
    return arr


def _label_image(data: np.ndarray, props, table: LabelTable, dtype):
    import nibabel as nib

    klass = nib.Nifti2Image if props.nifti_version == 2 else nib.Nifti1Image
    header = klass.header_class.from_header(props.header)  # a copy; the input's header is untouched
    header.set_data_shape(data.shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("label", (), name="labels")
    header["cal_min"] = 0.0
    header["cal_max"] = float(len(table) - 1)
    header["descrip"] = b"limbseg-rt muscle labels"
    # affine=None: nibabel keeps the copied qform/sform (and codes) exactly as they are.
    return klass(data, None, header)


def _temp_path(out: Path) -> Path:
    suffix = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
    tmp = out.with_name(f".{label_stem(out).name}.{secrets.token_hex(6)}.tmp{suffix}")
    # Created with O_EXCL (never clobbers anything) and mode 0o666 minus the umask, like a normal file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    return tmp


def _verify(tmp: Path, out: Path, data: np.ndarray, props, dtype) -> None:
    """Read the written file back with the strict reader; raise OutputError on any difference."""
    from limbseg_rt.runtime.errors import InputError
    from limbseg_rt.runtime.io.nifti import read_raw

    problems = []
    try:
        header, _, back, _ = read_raw(tmp)
    except InputError as exc:
        raise OutputError(f"{out}: the written label file does not read back ({exc}); check the disk and try again") from None
    if tuple(back.shape) != tuple(props.shape):
        problems.append(f"shape {back.shape} != {props.shape}")
    elif back.dtype.kind != "u" or back.dtype.itemsize != np.dtype(dtype).itemsize or not np.array_equal(back, data):
        problems.append("label values differ")
    for name in GEOMETRY_FIELDS:
        if not np.array_equal(np.asarray(header[name]), np.asarray(props.header[name])):
            problems.append(f"{name} differs")
    if props.affine_source in ("sform", "qform"):
        back_affine = header.get_sform() if props.affine_source == "sform" else header.get_qform()
        if not np.array_equal(back_affine, props.affine):
            problems.append(f"{props.affine_source} affine differs")
    if int(header["intent_code"]) != NIFTI_INTENT_LABEL:
        problems.append("intent is not NIFTI_INTENT_LABEL")
    if problems:
        raise OutputError(f"{out}: the written label file failed its read-back check ({'; '.join(problems)}); nothing was written")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc}); check the folder's permissions") from None
    finally:
        if tmp.exists():
            tmp.unlink()
