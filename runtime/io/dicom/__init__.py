"""DICOM input (MR series -> the NIfTI reader's volume and ``ImageProps``) and DICOM SEG output.

Needs the ``dicom`` extra (pydicom, highdicom, pixel-data plugins); without it every entry point
raises ``MissingDependencyError`` (exit 12) with the install line. Conventions: docs/dicom.md.

- ``read_dicom(path, series=None, options=...) -> (volume, DicomImageProps, SourceInfo)``
- ``list_series(path) -> (Discovery, [Series])``: every series with why ``run`` would skip it
- ``write_seg(labels, props, out_path, table=..., ...)``: a DICOM Segmentation on the source grid
- ``looks_like_dicom(path)``: cheap test whether a path should go to this reader
"""

from limbseg_rt.runtime.io.dicom.discover import looks_like_dicom, require_pydicom
from limbseg_rt.runtime.io.dicom.reader import DicomImageProps, SourceInfo, list_series, read_dicom

__all__ = ["DicomImageProps", "SourceInfo", "list_series", "looks_like_dicom", "read_dicom", "require_pydicom"]
