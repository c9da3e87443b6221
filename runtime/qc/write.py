"""Entry points: the QC files of one scan (PNGs + ``<stem>_report.html``) and of a batch folder.

File names, beside the label file ``<stem>_labels.nii.gz`` (or whatever ``--out`` named it; the
stem drops ``.nii(.gz)`` and a trailing ``_labels``):

- ``<stem>_qc_axial_<level>.png`` (``hip``, ``mid-thigh``, ``knee``, ``mid-calf``),
  ``<stem>_qc_coronal.png``, ``<stem>_qc_sagittal_right.png`` / ``_left.png``;
- ``<stem>_report.html``.

Each file is written to a temporary name and renamed into place; if any write fails, the QC files
this call already wrote are removed (the labels and reports written before are kept: they are
complete and correct on their own).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.qc import draw, page, views
from limbseg_rt.runtime.qc.draw import QCDependencyError  # noqa: F401 - re-exported for callers


def check_available() -> None:
    """Raise ``draw.QCDependencyError`` (one line with the install command) when Pillow is missing."""
    draw.require_pillow()


def qc_stem(labels_path: str | os.PathLike) -> tuple[Path, str]:
    """(folder, stem) of the QC files that go beside ``labels_path``."""
    p = Path(labels_path)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_qc(volume: np.ndarray, labels: np.ndarray, spacing_mm, table, report: dict, labels_path) -> dict[str, Path]:
    """Write the PNGs and the HTML page for one scan beside ``labels_path``; the paths written.

    ``volume``: canonical float ``[X, Y, Z]`` (the input's intensities); ``labels``: canonical
    integer ``[X, Y, Z]``; ``spacing_mm``: canonical voxel size (mm); ``report``: ``Report.to_dict()``.
    Keys of the result: ``qc_<slug>`` per PNG and ``html``.
    """
    folder, stem = qc_stem(labels_path)
    overlays = render_overlays(volume, labels, spacing_mm, table)
    written: dict[str, Path] = {}
    try:
        for slug, _, png in overlays:
            written[f"qc_{slug}"] = write_bytes_atomic(folder / f"{stem}_qc_{slug}.png", png)
        html = page.build_report_html(report, [(caption, png) for _, caption, png in overlays], table=table)
        written["html"] = write_bytes_atomic(folder / f"{stem}_report.html", html.encode("utf-8"))
    except BaseException:
        for p in written.values():
            Path(p).unlink(missing_ok=True)
        raise
    return written


def write_qc_for_result(result, scan_path, labels_path, *, read_options=None) -> dict[str, Path]:
    """QC files for a ``SegmentationResult`` of ``scan_path`` (the scan is read again for its intensities)."""
    from limbseg_rt.runtime.io.nifti import ReadOptions, read_image

    canon, props = read_image(Path(scan_path), options=read_options if read_options is not None else ReadOptions())
    return write_qc(canon, result.labels_canonical, props.canonical_spacing, result.table, result.report.to_dict(), labels_path)


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
