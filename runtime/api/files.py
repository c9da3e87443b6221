"""File in, files out: ``segment_file`` (one scan to its labels, report and CSVs, published together)
and the default output names beside the scan."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from limbseg_rt.runtime.api.result import SegmentationResult, declare_outputs
from limbseg_rt.runtime.api.segmenter import Segmenter
from limbseg_rt.runtime.errors import InputError, OutputError


def default_output_paths(scan: str | os.PathLike) -> dict[str, Path]:
    """``<stem>_labels.nii.gz``, ``<stem>_report.json``, ``<stem>_volumes.csv`` next to the scan."""
    from limbseg_rt.runtime.io.outputs import nifti_stem

    scan = Path(scan)
    name = nifti_stem(scan.name, suffixes=(".nii.gz", ".nii", ".gz", ".dcm", ".zip"))
    return {
        "labels": scan.with_name(f"{name}_labels.nii.gz"),
        "report": scan.with_name(f"{name}_report.json"),
        "csv": scan.with_name(f"{name}_volumes.csv"),
        "seg": scan.with_name(f"{name}_seg.dcm"),
    }


def segment_file(
    scan: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    report_json: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    limb_range: tuple[float, float] | None = None,
    read_options=None,
    progress: Callable[[int, int], None] | None = None,
    segmenter: Segmenter | None = None,
    qc: bool = False,
    series: str | int | None = None,
    seg: str | os.PathLike | None = None,
    seg_type: str = "binary",
    analysis=None,
    measures_csv: str | os.PathLike | None = None,
    split_sides: bool = False,
    **segmenter_kwargs,
) -> tuple[SegmentationResult, dict[str, Path]]:
    """Segment a NIfTI file and write labels, JSON report and CSV (defaults: next to the scan).

    Output paths are checked before any work (never the input, folders must exist); files are
    written only after the segmentation succeeded. Uses ``segmenter`` if given, else builds one
    from ``segmenter_kwargs`` (see ``Segmenter``) and closes it afterwards.
    A DICOM input (folder, ``.zip``, file) also gets a DICOM SEG (``seg``, default
    ``<name>_seg.dcm`` beside the input; ``seg_type`` ``"binary"`` or ``"labelmap"``); ``series``
    picks its series. Returns the result and the paths written. ``qc``: also write the QC PNGs and
    ``<stem>_report.html`` beside the labels (``runtime/qc``; needs the ``qc`` extra, checked first).
    ``analysis`` (an ``AnalysisOptions``) adds the
    per muscle x side measures and writes them to ``measures_csv`` (default ``<stem>_muscles.csv``);
    ``split_sides`` writes the side-split label map.
    """
    from limbseg_rt.runtime.io.dicom import looks_like_dicom

    if qc:
        from limbseg_rt.runtime.qc.write import check_available

        check_available()
    if analysis is not None and analysis.clean:  # issue 19: fail before segmenting, not after
        from limbseg_rt.runtime.analysis.cleanup import check_available as check_cleanup_available

        check_cleanup_available()
    scan = Path(scan)
    is_dicom = looks_like_dicom(scan)
    if not (scan.is_file() or (scan.is_dir() and is_dicom)):
        raise InputError(f"input scan not found: {scan}")
    from limbseg_rt.runtime.io.outputs import OutputSet

    defaults = default_output_paths(scan)
    if seg is not None and not is_dicom:
        raise OutputError(f"{seg}: a DICOM SEG needs a DICOM input; {scan} is not DICOM")
    if analysis is not None and measures_csv is None:
        measures_csv = defaults["csv"].with_name(defaults["csv"].name.replace("_volumes.csv", "_muscles.csv"))
    out_set = OutputSet(inputs=[scan])
    declare_outputs(
        out_set,
        Path(out) if out is not None else defaults["labels"],
        Path(report_json) if report_json is not None else defaults["report"],
        Path(csv) if csv is not None else defaults["csv"],
        measures_csv=measures_csv if analysis is not None else None,
    )
    if is_dicom:
        out_set.add("seg", Path(seg) if seg is not None else defaults["seg"], what="DICOM SEG")
    if not out_set.paths["labels"].name.lower().endswith((".nii.gz", ".nii")):
        raise OutputError(
            f"{out_set.paths['labels']}: a label file name must end in .nii.gz or .nii; choose another output name"
        )
    out_set.check()  # every output location is usable before the segmentation starts
    own = segmenter is None
    engine = segmenter if segmenter is not None else Segmenter(**segmenter_kwargs)
    try:
        result = engine.segment(
            scan,
            limb_range=limb_range,
            read_options=read_options,
            progress=progress,
            series=series,
            analysis=analysis,
            keep_image=qc,
        )
    finally:
        if own:
            engine.close()
    stage_qc = None
    if qc:  # the QC PNGs and HTML page join the run's output set (published together, report last)
        from limbseg_rt.runtime.qc.write import stage_qc_for_result

        def stage_qc(o):
            # the intensities were kept in memory (keep_image above): nothing is read again
            stage_qc_for_result(o, result, scan, o.paths["labels"], read_options=read_options)

    with out_set:
        if "seg" in out_set:  # staged before the report is written, so the report names it
            if result.labels_canonical.any():
                result.save_seg(out_set.temp("seg"), seg_type=seg_type, record_as=out_set.paths["seg"])
            else:
                out_set.drop("seg")
                result.report = result.report.with_warning(
                    "no muscle was found, so no DICOM SEG was written (a SEG needs a segment)"
                )
        written = result.write_outputs(out_set, before_commit=stage_qc, split_sides=split_sides)
    return result, written
