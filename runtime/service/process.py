"""The node's default processing: one ``Segmenter`` (model loaded once), DICOM series in, SEG out.

The DICOM reader and SEG writer are the runtime's (``limbseg_rt.runtime.io.dicom``, issue 18); this
module only adapts them to the node's ``process(series_dir, out_dir) -> list[Path]`` contract.
"""

from __future__ import annotations

from pathlib import Path

from limbseg_rt.runtime.errors import LimbsegError
from limbseg_rt.runtime.service.config import ModelConfig


class ProcessingUnavailable(LimbsegError):
    """This installation lacks what the default processing needs (the DICOM reader / SEG writer)."""

    exit_code = 2


def dicom_io():
    """``(read_dicom, write_seg)`` from the runtime's DICOM package; ``ProcessingUnavailable`` if absent."""
    try:
        from limbseg_rt.runtime.io.dicom import read_dicom, write_seg
    except ImportError:
        raise ProcessingUnavailable(
            'this installation has no DICOM reader/SEG writer (limbseg_rt.runtime.io.dicom); install "limbseg-rt[serve]" '
            "from a release that includes DICOM support"
        ) from None
    return read_dicom, write_seg


class SegmentSeries:
    """``process(series_dir, out_dir)``: segment the spooled series, write ``out_dir/seg.dcm``; returns ``[path]``.

    ``identity`` (model SHA-256 and the settings that change the output) is the node's dedup key part.
    """

    def __init__(self, model: ModelConfig):
        from limbseg_rt.runtime.api import Segmenter

        self._read, self._write = dicom_io()
        self.model = model
        self.segmenter = Segmenter(model.model, provider=model.provider, precision=model.precision, threads=model.threads)
        self.identity = {
            "model_sha256": self.segmenter.model_sha256,
            "settings": {"precision": self.segmenter.precision, "seg_type": model.seg_type},
        }

    def __call__(self, series_dir: Path, out_dir: Path) -> list[Path]:
        image = self._read(series_dir)
        result = self.segmenter.segment(image)
        out = Path(out_dir) / "seg.dcm"
        self._write(result, series_dir, out, seg_type=self.model.seg_type)
        return [out]

    def close(self) -> None:
        self.segmenter.close()
