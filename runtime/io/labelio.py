"""Write a label volume as NIfTI on the input's grid, plus label tables for ITK-SNAP and 3D Slicer.

``write_labels(labels, path, props, table=...)`` copies the input header (qform, sform and their
codes unchanged, so the labels overlay the scan in any viewer), stores uint8 (uint16 if the table
has an index above 254) with scl_slope 1 / scl_inter 0, intent NIFTI_INTENT_LABEL named "labels"
and cal_min/cal_max = 0 / highest table index. The files are one ``outputs.OutputSet``:
the label file is written to a temporary beside the target, read back and checked (shape, geometry
fields, every label value), and only then published with its side files, so a reader never sees a
half-written or wrong file and a failed rerun leaves the previous files as they were. Any mismatch
deletes the temporaries and raises OutputError.

Beside it (same stem): ``<stem>.itksnap.txt``, an ITK-SNAP label description file (columns
IDX R G B A VIS MSH "LABEL", A an opacity in 0..1), and ``<stem>.ctbl``, a 3D Slicer colour table
(``# Color table file`` header, then ``index name r g b a``, names with spaces as underscores,
0..255 components).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import OutputError
from limbseg_rt.runtime.io import geometry
from limbseg_rt.runtime.io.outputs import OutputSet, nifti_stem, quote
from limbseg_rt.runtime.model.labels import LabelTable

NIFTI_INTENT_LABEL = 1002
# Header fields that place the grid in the world; the label file must carry them bit for bit.
GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)


@dataclass(frozen=True)
class LabelFiles:
    """Paths written by ``write_labels`` (descriptions are None when not requested)."""

    labels: Path
    itksnap: Path | None
    slicer: Path | None


def label_stem(path) -> Path:
    """``/a/b/case_labels.nii.gz`` -> ``/a/b/case_labels`` (the name the side files share)."""
    p = Path(path)
    return p.with_name(nifti_stem(p.name, (".nii.gz", ".nii")))


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
    The label file and its side files are one ``OutputSet`` (published together).
    Raises OutputError for an unusable path or a failed read-back check.
    """
    with OutputSet(inputs=[props.source] if props.source else ()) as out:
        declare_label_outputs(out, path, descriptions=descriptions)
        out.check()
        stage_labels(out, labels, props, table=table, grid=grid)
        written = out.commit()
    return LabelFiles(written["labels"], written.get("itksnap"), written.get("slicer"))


def declare_label_outputs(out: OutputSet, path, *, descriptions: bool = True) -> None:
    """Declare ``labels`` (and ``itksnap``, ``slicer`` beside it) in ``out``; checks the name."""
    p = Path(path)
    if not p.name.lower().endswith((".nii.gz", ".nii")):
        raise OutputError(f"{quote(p)}: a label file name must end in .nii.gz or .nii; choose another output name")
    out.add("labels", p, what="label file")
    if descriptions:
        itk, slicer = description_paths(p)
        out.add("itksnap", itk, what="ITK-SNAP label file")
        out.add("slicer", slicer, what="Slicer colour table")


def description_paths(path) -> tuple[Path, Path]:
    """``<stem>.itksnap.txt`` and ``<stem>.ctbl`` beside the label file ``path``."""
    stem = label_stem(path)
    return stem.with_name(stem.name + ".itksnap.txt"), stem.with_name(stem.name + ".ctbl")


def stage_labels(out: OutputSet, labels: np.ndarray, props, *, table: LabelTable, grid: str = "canonical") -> None:
    """Write the label file (and the side files declared) to ``out``'s temporaries and verify it.

    Nothing is published: ``out.commit()`` does that. See ``write_labels`` for ``labels``/``grid``.
    """
    data = _input_grid_labels(labels, props, table, grid)
    dtype = label_dtype(table)
    img = label_image(np.asfortranarray(data.astype(dtype, copy=False)), props, table)
    tmp = out.temp("labels")
    target = out.paths["labels"]
    with out.writing("labels"):
        img.to_filename(str(tmp))
    _verify(tmp, target, data, props, dtype)
    if "itksnap" in out:
        out.write_text("itksnap", itksnap_text(table))
    if "slicer" in out:
        out.write_text("slicer", slicer_text(table, out.paths["slicer"].name))


def write_label_descriptions(path, table: LabelTable) -> tuple[Path, Path]:
    """Write ``<stem>.itksnap.txt`` and ``<stem>.ctbl`` next to ``path`` (one output set); both paths."""
    itk, slicer = description_paths(path)
    with OutputSet() as out:
        out.add("itksnap", itk, what="ITK-SNAP label file")
        out.add("slicer", slicer, what="Slicer colour table")
        out.check()
        out.write_text("itksnap", itksnap_text(table))
        out.write_text("slicer", slicer_text(table, out.paths["slicer"].name))
        out.commit()
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
        lines.append(f'{lab.index:5d} {r:5d} {g:4d} {b:4d} {float(shown):8g} {shown:2d} {shown:2d}    "{name}"')
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


def label_dtype(table: LabelTable):
    """uint8, or uint16 when the table has an index above 254."""
    return np.uint8 if len(table) - 1 <= 254 else np.uint16


def label_image(data: np.ndarray, props, table: LabelTable, dtype=None, *, affine=None):
    """Nibabel image of ``data`` (labels on the input grid) with the input's header, slope 1 / intercept 0.

    ``affine=None`` (what is written): nibabel keeps the copied qform/sform and codes exactly.
    Giving ``props.affine`` makes ``img.affine`` the input's affine in memory (``api.labels_image``).
    """
    import nibabel as nib

    dtype = dtype if dtype is not None else label_dtype(table)
    klass = nib.Nifti2Image if props.nifti_version == 2 else nib.Nifti1Image
    if props.header is None:  # a source without a NIfTI header gets a fresh one
        header = klass.header_class()
    else:
        source = props.header.copy()  # unchecked copy: never the input's header object itself
        minimum = 352 if props.nifti_version != 2 else 544  # header + extension flag of a single-file NIfTI
        if float(source["vox_offset"]) < minimum:  # accepted on read (old writers); written correctly
            source["vox_offset"] = minimum
        header = klass.header_class.from_header(source)
    if affine is not None and getattr(props, "units_scale", 1.0) != 1.0:
        header.set_xyzt_units("mm", header.get_xyzt_units()[1])  # an in-memory affine in mm
    header.set_data_shape(data.shape)
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("label", (), name="labels")
    header["cal_min"] = 0.0
    header["cal_max"] = float(len(table) - 1)
    header["descrip"] = b"limbseg-rt muscle labels"
    return klass(data, affine, header)


def _verify(tmp: Path, out: Path, data: np.ndarray, props, dtype) -> None:
    """Read the written file back with the strict reader; raise OutputError on any difference."""
    from limbseg_rt.runtime.errors import InputError
    from limbseg_rt.runtime.io.nifti import read_raw

    problems = []
    try:
        header, _, back, _ = read_raw(tmp)
    except InputError as exc:
        raise OutputError(
            f"{out}: the written label file does not read back ({exc}); check the disk and try again"
        ) from None
    if tuple(back.shape) != tuple(props.shape):
        problems.append(f"shape {back.shape} != {props.shape}")
    elif back.dtype.kind != "u" or back.dtype.itemsize != np.dtype(dtype).itemsize or not np.array_equal(back, data):
        problems.append("label values differ")
    for name in GEOMETRY_FIELDS:
        if not np.array_equal(np.asarray(header[name]), np.asarray(props.header[name])):
            problems.append(f"{name} differs")
    if props.affine_source in ("sform", "qform"):
        back_affine = header.get_sform() if props.affine_source == "sform" else header.get_qform()
        scale = getattr(props, "units_scale", 1.0)
        if scale != 1.0:  # the file keeps its own units (e.g. m); props.affine is in mm
            back_affine = back_affine.copy()
            back_affine[:3, :] *= scale
        if not np.array_equal(back_affine, props.affine):
            problems.append(f"{props.affine_source} affine differs")
    if int(header["intent_code"]) != NIFTI_INTENT_LABEL:
        problems.append("intent is not NIFTI_INTENT_LABEL")
    if problems:
        raise OutputError(
            f"{out}: the written label file failed its read-back check ({'; '.join(problems)}); nothing was written"
        )
