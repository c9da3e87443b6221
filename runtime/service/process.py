"""The node's default processing: one ``Segmenter`` (model loaded once), DICOM series in, SEG out.

The DICOM reader and SEG writer are the runtime's own (``Segmenter.segment`` on a DICOM folder,
``SegmentationResult.save_seg``; docs/dicom.md); this module adapts them to the node's
``process(series_dir, out_dir) -> list[Path]`` contract and names what changes the output.
"""

from __future__ import annotations

import logging
from pathlib import Path

from limbseg_rt.runtime.errors import MissingDependencyError
from limbseg_rt.runtime.service.config import ModelConfig

log = logging.getLogger("limbseg_rt.serve")
SERVE_HINT = 'the DICOM node needs the serve extra: pip install "limbseg-rt[serve]"'


def require_serve_dependencies() -> None:
    """``MissingDependencyError`` (exit 12) naming the extra when pynetdicom, pydicom or highdicom is missing."""
    for name in ("pynetdicom", "pydicom", "highdicom"):
        try:
            __import__(name)
        except ImportError:
            raise MissingDependencyError(f"{SERVE_HINT} ({name} is not installed)") from None


class SegmentSeries:
    """``process(series_dir, out_dir)``: segment the spooled series and write ``out_dir/seg.dcm``.

    Returns ``[seg.dcm]``, or ``[]`` when no muscle was found (a SEG needs a segment; logged).
    With ``keep_report`` the NIfTI labels, JSON report and CSV are written beside it; they stay in
    the result folder (the node sends only the returned files).
    ``identity`` (model SHA-256 and the settings that change the output) goes into the node's
    dedup key. Errors are the runtime's (``InputError`` for a series that cannot be read, ...).
    """

    def __init__(self, model: ModelConfig):
        from limbseg_rt.runtime.api import Segmenter

        require_serve_dependencies()
        self.model = model
        self.segmenter = Segmenter(
            model.model, provider=model.provider, precision=model.precision, threads=model.threads
        )
        self.identity = {
            "model_sha256": self.segmenter.model_sha256,
            "settings": {"precision": self.segmenter.precision, "seg_type": model.seg_type},
        }

    def __call__(self, series_dir: Path, out_dir: Path) -> list[Path]:
        result = self.segmenter.segment(Path(series_dir))
        out = self.save(result, Path(out_dir) / "seg.dcm")
        if self.model.keep_report:  # kept in the result folder for local pick-up; not sent (not DICOM)
            result.save(
                Path(out_dir) / "labels.nii.gz",
                report_json=Path(out_dir) / "report.json",
                csv=Path(out_dir) / "volumes.csv",
            )
        if out is None:
            log.warning(
                "no muscle found: no SEG to send", extra={"event": "empty_result", "series": Path(series_dir).name}
            )
            return []
        return [out]

    def save(self, result, path: Path) -> Path | None:
        return result.save_seg(path, seg_type=self.model.seg_type)

    def close(self) -> None:
        self.segmenter.close()
