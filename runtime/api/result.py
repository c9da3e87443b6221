"""What one segmentation gives back (``SegmentationResult``: labels, report, writers) and the flags
its report can carry."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.report.run_report import (
    Report,
    peak_rss_mib,
)

FLAG_EMPTY = "empty_image"
FLAG_FOV_CUT = "fov_cut"
FLAG_FALLBACK = "provider_fallback"
FLAG_SINGLE_SLICE = "single_slice"


@dataclass
class SegmentationResult:
    """One segmentation. ``labels``: uint8 ``Nifti1Image`` on the input grid; ``labels_canonical``:
    uint8 ``[X, Y, Z]`` RAS+ array; ``props``: the input's ``ImageProps``; ``report``: ``Report``;
    ``image_canonical``: the scan's float32 canonical volume, kept only when ``segment`` was asked to
    (``keep_image=True``: the QC pictures need the intensities), else None.
    """

    labels: object
    labels_canonical: np.ndarray
    props: object
    report: Report
    table: object = field(repr=False, default=None)
    image_canonical: np.ndarray | None = field(repr=False, default=None)

    @property
    def empty(self) -> bool:
        return FLAG_EMPTY in self.report.flags

    def save(
        self,
        out_path: str | os.PathLike,
        report_json: str | os.PathLike | None = None,
        csv: str | os.PathLike | None = None,
        *,
        input_path: str | os.PathLike | None = None,
        measures_csv: str | os.PathLike | None = None,
        split_sides: bool = False,
    ) -> dict[str, Path]:
        """Write the labels (atomic, verified, with ITK-SNAP/Slicer label files) and the reports.

        One ``outputs.OutputSet``: refuses (``OutputError``) to write over the input file, or any
        output onto another; all files are written to temporaries and published together (report
        last), so a failure leaves any earlier files at these paths untouched. Returns the paths written
        (keys ``labels``, ``itksnap``, ``slicer``, and ``report`` / ``csv`` when asked for).
        With an analysis (``segment(..., analysis=...)``): ``measures_csv`` writes the per muscle x
        side table; ``split_sides`` writes the label map with a right and a left label per muscle
        (``runtime/analysis/split.py``).
        """
        from limbseg_rt.runtime.io.outputs import OutputSet

        src = input_path or self.report.manifest.get("input", {}).get("path")
        if (measures_csv is not None or split_sides) and self.report.analysis is None:
            raise ValueError("measures_csv and split_sides need segment(..., analysis=AnalysisOptions())")
        with OutputSet(inputs=[src] if src else ()) as out:
            declare_outputs(out, out_path, report_json, csv, measures_csv=measures_csv)
            out.check()
            return self.write_outputs(out, split_sides=split_sides)

    def write_outputs(
        self, out, *, before_commit: Callable | None = None, split_sides: bool = False
    ) -> dict[str, Path]:
        """Write this result into a declared, checked ``OutputSet`` and publish it (report last).

        ``out`` must hold ``labels`` (and ``itksnap``/``slicer``, ``csv``, ``measures_csv``, ``report``
        as wanted), e.g. from ``declare_outputs``. ``before_commit(out)`` may add more staged files
        (QC). ``split_sides``: the label map gets a right and a left label per muscle (needs the
        analysis). Returns the paths published.
        """
        from limbseg_rt.runtime.io.labelio import stage_labels

        t0 = time.perf_counter()
        labels, table = self.labels_canonical, self.table
        if split_sides:  # issue 19: a right and a left label per muscle
            from limbseg_rt.runtime.analysis.split import split_labels, split_table

            labels = split_labels(labels, self.report.analysis.sides, len(table.muscles))  # type: ignore[attr-defined]
            table = split_table(table)
        stage_labels(out, labels, self.props, table=table)
        outputs = {k: str(v) for k, v in out.paths.items()}
        self.report = dataclasses.replace(
            self.report, manifest=self.report.manifest.saved(outputs, time.perf_counter() - t0, peak_rss_mib())
        )
        if "measures_csv" in out:
            out.write_text("measures_csv", self.report.to_measures_csv() or "")
        if "csv" in out:
            out.write_text("csv", self.report.to_csv())
        if "report" in out:
            out.write_text("report", self.report.to_json())
        if before_commit is not None:
            before_commit(out)
        return out.commit()

    def save_seg(self, path: str | os.PathLike, *, seg_type: str = "binary", record_as=None) -> Path | None:
        """Write a DICOM SEG over the source series (DICOM inputs only; see docs/dicom.md).

        Returns the path, or None when no muscle was found (a SEG needs a segment). The model's
        name, SHA-256 and whether it is a bundled demo model go into the SEG's algorithm
        identification and SeriesDescription. The report's ``manifest.dicom_seg`` records it
        (``record_as``: the path to record there when ``path`` is a temporary).
        """
        from limbseg_rt.runtime.io.dicom.seg import AlgorithmInfo, write_seg
        from limbseg_rt.runtime.model.bundled import MODELS_DIR

        model = self.report.manifest["model"]
        model_path = Path(model["path"]).resolve()
        demo = model_path.parent == MODELS_DIR.resolve()
        version = self.report.manifest.get("versions", {}).get("limbseg_rt", "unknown")
        algo = AlgorithmInfo(f"limbseg-rt {model['metadata']['architecture']}", str(version), model["sha256"], demo)
        out = write_seg(self.labels_canonical, self.props, path, table=self.table, algorithm=algo, seg_type=seg_type)
        recorded = (record_as or out) if out else None
        self.report = dataclasses.replace(
            self.report,
            manifest=self.report.manifest.with_extra(
                "dicom_seg", {"path": str(recorded) if recorded else None, "type": seg_type, "demo_model": demo}
            ),
        )
        return out


def declare_outputs(out, labels, report_json=None, csv=None, *, measures_csv=None) -> None:
    """Declare one run's outputs in an ``OutputSet``: labels + side files, CSV, the per muscle x side
    CSV, then the report (published last)."""
    from limbseg_rt.runtime.io.labelio import declare_label_outputs

    declare_label_outputs(out, labels)
    if csv is not None:
        out.add("csv", csv, what="volume CSV")
    if measures_csv is not None:
        out.add("measures_csv", measures_csv, what="per muscle x side CSV")
    if report_json is not None:
        out.add("report", report_json, what="report", last=True)
