"""The embedding API: build a ``Segmenter`` once, segment many scans, save when you choose.

    from limbseg_rt.runtime.api import Segmenter

    with Segmenter("unet", provider="cpu") as seg:
        result = seg.segment("thigh.nii.gz")          # nothing written yet
        print(result.report.total_volume_ml)
        result.save("thigh_labels.nii.gz", report_json="thigh_report.json", csv="thigh_volumes.csv")

``segment`` accepts a path or an in-memory nibabel image and never touches the disk (beyond
reading the input). Labels come back on the input's own grid (same shape, affine, qform/sform).

Parts: ``result.py`` (``SegmentationResult`` and its writers), ``segmenter.py`` (``Segmenter``),
``files.py`` (``segment_file``: one scan from file to published files).
"""

from limbseg_rt.runtime.api.files import default_output_paths, segment_file
from limbseg_rt.runtime.api.result import (
    FLAG_EMPTY,
    FLAG_FALLBACK,
    FLAG_FOV_CUT,
    FLAG_SINGLE_SLICE,
    SegmentationResult,
    declare_outputs,
)
from limbseg_rt.runtime.api.segmenter import Segmenter, labels_image

__all__ = [
    "FLAG_EMPTY",
    "FLAG_FALLBACK",
    "FLAG_FOV_CUT",
    "FLAG_SINGLE_SLICE",
    "SegmentationResult",
    "Segmenter",
    "declare_outputs",
    "default_output_paths",
    "labels_image",
    "segment_file",
]
