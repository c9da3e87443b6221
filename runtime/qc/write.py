"""Entry points: the QC files of one scan (PNGs + ``<stem>_report.html``) and of a batch folder.

File names, beside the label file ``<stem>_labels.nii.gz`` (or whatever ``--out`` named it; the
stem drops ``.nii(.gz)`` and a trailing ``_labels``):

- ``<stem>_qc_axial_<level>.png`` (``hip``, ``mid-thigh``, ``knee``, ``mid-calf``),
  ``<stem>_qc_coronal.png``, ``<stem>_qc_sagittal_right.png`` / ``_left.png``;
- ``<stem>_report.html``.

The files go through ``runtime/io/outputs.OutputSet`` (docs/outputs.md): with ``run --qc`` they are
part of the run's output set (published with the labels, CSV and report, the report last); on their
own (``write_qc``, a batch folder) they are one set: all appear or none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.qc import draw, page, views
from limbseg_rt.runtime.qc.draw import QCDependencyError  # noqa: F401 - re-exported for callers


def check_available() -> None:
    """Raise ``draw.QCDependencyError`` (one line with the install command) when Pillow is missing."""
    draw.require_pillow()


def qc_stem(labels_path: str | os.PathLike) -> tuple[Path, str]:
    """(folder, stem) of the QC files that go beside ``labels_path``."""
    from limbseg_rt.runtime.io.outputs import nifti_stem

    p = Path(labels_path)
    name = nifti_stem(p.name, (".nii.gz", ".nii"))
    if name.endswith("_labels") and len(name) > len("_labels"):
        name = name[: -len("_labels")]
    return p.parent, name


def _slug(view) -> str:
    if view.kind == "axial":
        level = view.name.replace(" level", "")
        return "axial_" + re.sub(r"[^a-z0-9-]+", "-", level.lower()).strip("-")
    if view.kind == "sagittal":
        return "sagittal_" + ("right" if "right" in view.name else "left" if "left" in view.name else "middle")
    return view.kind


def render_overlays(volume: np.ndarray, labels: np.ndarray, spacing_mm, table) -> list[tuple[str, str, bytes]]:
    """``[(file slug, caption, PNG bytes)]`` for every view of the scan (canonical RAS+ arrays)."""
    window = views.intensity_window(volume)
    out = []
    for v in views.make_views(volume, labels, spacing_mm, table):
        out.append((_slug(v), f"{v.caption}; {v.convention}", draw.render_view(v, table, window)))
    return out


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """One file through ``outputs.OutputSet`` (a temporary beside it, then a rename; umask mode)."""
    from limbseg_rt.runtime.io.outputs import OutputSet

    with OutputSet() as out:
        out.add("file", path, what="QC file")
        out.write_bytes("file", data)
        return out.commit()["file"]


def stage_qc(out, volume: np.ndarray, labels: np.ndarray, spacing_mm, table, report: dict, labels_path) -> list[str]:
    """Declare and write the QC PNGs and HTML page of one scan into the ``OutputSet`` ``out``
    (published with the rest of the set by ``out.commit()``); the keys added (``qc_<slug>``, ``html``)."""
    folder, stem = qc_stem(labels_path)
    overlays = render_overlays(volume, labels, spacing_mm, table)
    keys = []
    for slug, _, png in overlays:
        key = f"qc_{slug}"
        out.add(key, folder / f"{stem}_qc_{slug}.png", what="QC image")
        out.write_bytes(key, png)
        keys.append(key)
    html = page.build_report_html(report, [(caption, png) for _, caption, png in overlays], table=table)
    out.add("html", folder / f"{stem}_report.html", what="QC page")
    out.write_bytes("html", html.encode("utf-8"))
    return [*keys, "html"]


def write_qc(volume: np.ndarray, labels: np.ndarray, spacing_mm, table, report: dict, labels_path) -> dict[str, Path]:
    """Write the PNGs and the HTML page for one scan beside ``labels_path``; the paths written.

    ``volume``: canonical float ``[X, Y, Z]`` (the input's intensities); ``labels``: canonical
    integer ``[X, Y, Z]``; ``spacing_mm``: canonical voxel size (mm); ``report``: ``Report.to_dict()``.
    Keys of the result: ``qc_<slug>`` per PNG and ``html``. One ``OutputSet``: all or none appear.
    """
    from limbseg_rt.runtime.io.outputs import OutputSet

    with OutputSet() as out:
        stage_qc(out, volume, labels, spacing_mm, table, report, labels_path)
        return out.commit()


def _intensities(result, scan_path, read_options):
    """The canonical volume of ``result``: kept in memory (``segment(..., keep_image=True)``, which a
    DICOM source needs), else read again from the NIfTI file ``scan_path``."""
    if result.image_canonical is not None:
        return result.image_canonical
    from limbseg_rt.runtime.io.nifti import ReadOptions, read_image

    return read_image(Path(scan_path), options=read_options if read_options is not None else ReadOptions())[0]


def _result_args(result, scan_path, read_options) -> tuple[np.ndarray, np.ndarray, tuple, object, dict]:
    """The positional arguments ``stage_qc`` / ``write_qc`` take (after ``out``) for ``result``."""
    canon = _intensities(result, scan_path, read_options)
    return canon, result.labels_canonical, result.props.canonical_spacing, result.table, result.report.to_dict()


def stage_qc_for_result(out, result, scan_path, labels_path, *, read_options=None) -> list[str]:
    """``stage_qc`` for a ``SegmentationResult`` of ``scan_path`` (intensities as ``_intensities``)."""
    return stage_qc(out, *_result_args(result, scan_path, read_options), labels_path)


def write_qc_for_result(result, scan_path, labels_path, *, read_options=None) -> dict[str, Path]:
    """QC files for a ``SegmentationResult`` of ``scan_path`` (intensities as ``_intensities``)."""
    return write_qc(*_result_args(result, scan_path, read_options), labels_path)


def _table_for(report: dict):
    """The label table of the model named in the report (its file, if still there), else the default table."""
    from limbseg_rt.runtime.model.labels import default_label_table
    from limbseg_rt.runtime.model.metadata import read_metadata

    path = ((report.get("manifest") or {}).get("model") or {}).get("path")
    if path and Path(path).is_file():
        try:
            return read_metadata(Path(path)).labels
        except Exception:  # an unreadable model file only costs the colours: fall back to the default table
            pass
    return default_label_table()


def write_qc_for_folder(folder, record: dict) -> dict[str, Path]:
    """QC files for a published batch scan folder from its completion record (``outputs``, ``input.source``).

    The labels and report are read from the folder, the intensities from the source scan, read with
    the options the record's ``settings.read_options`` gives (``--volume``, ``--prefer-sform``, ...).
    """
    import json

    from limbseg_rt.runtime.io.nifti import ReadOptions, read_image

    folder = Path(folder)
    outputs = record["outputs"]
    report = json.loads((folder / outputs["report"]).read_text(encoding="utf-8"))
    labels_path = folder / outputs["labels"]
    lab, _ = read_image(labels_path)
    recorded = (record.get("settings") or {}).get("read_options") or {}
    options = ReadOptions(**{k: v for k, v in recorded.items() if v is not None})
    canon, props = read_image(Path(record["input"]["source"]), options=options)
    labels = np.rint(lab).astype(np.uint16 if lab.max() > 255 else np.uint8)
    return write_qc(canon, labels, props.canonical_spacing, _table_for(report), report, labels_path)
