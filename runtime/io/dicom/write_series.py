"""Write a volume as a classic DICOM MR series (one MR Image Storage file per slice).

For phantoms (``limbseg-rt phantom --dicom DIR``) and tests: it is the inverse of
``read_dicom``'s conventions (docs/dicom.md). The volume ``array[i, j, k]`` with its RAS affine
becomes slice ``k`` with ``pixel[row j, column i]``, ImageOrientationPatient from the affine's first
two columns and ImagePositionPatient of voxel ``(0, 0, k)``, both in LPS. The affine's voxel
axes must be perpendicular (DICOM cannot store a sheared grid, ``tilt_deg`` excepted: tests use it
to build a gantry-tilted stack on purpose).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import OutputError
from limbseg_rt.runtime.io.dicom.discover import require_pydicom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_mr_series(
    array: np.ndarray,
    affine: np.ndarray,
    folder,
    *,
    series_number: int = 1,
    description: str = "limbseg-rt phantom T1",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "NONE"),
    names: str = "ordered",
    seed: int = 0,
    rescale: tuple[float, float] | None = None,
    shear_mm_per_slice: tuple[float, float] = (0.0, 0.0),
    patient: dict | None = None,
) -> list[Path]:
    """Write ``array`` (int16-range integers ``[I, J, K]``, RAS ``affine`` 4x4 mm) into ``folder``.

    ``names``: ``"ordered"`` (``IM0001.dcm``...) or ``"random"`` (hex names without extension,
    written in shuffled order). ``rescale``: ``(slope, intercept)`` stored in every file; the stored
    integers are then ``(array - intercept) / slope`` rounded. ``shear_mm_per_slice``: in-plane
    shift (mm, along the row and column directions) added to each slice's position (a gantry tilt).
    ``patient``: PatientName/PatientID/PatientBirthDate/PatientSex overrides. Returns the paths.
    """
    pydicom = require_pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"array must be 3D [I, J, K], got shape {arr.shape}")
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder}: folder does not exist; create it first")
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    cols = lps[:3, :3]
    col_sp, row_sp, dz = (float(v) for v in np.linalg.norm(cols, axis=0))
    x, y, z = cols[:, 0] / col_sp, cols[:, 1] / row_sp, cols[:, 2] / dz
    if max(abs(float(x @ y)), abs(float(x @ z)), abs(float(y @ z))) > 1e-6:
        raise ValueError("the affine's voxel axes are not perpendicular; DICOM stores only rectangular grids")
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    people = {
        "PatientName": "PHANTOM^LIMB",
        "PatientID": "PHANTOM0001",
        "PatientBirthDate": "19600101",
        "PatientSex": "F",
    }
    people.update(patient or {})
    slope, inter = rescale if rescale else (1.0, 0.0)
    stored = np.rint((arr.astype(np.float64) - inter) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("values do not fit int16 after rescaling")
    stored = stored.astype(np.int16)
    rng = np.random.default_rng(seed)
    order = rng.permutation(arr.shape[2]) if names == "random" else np.arange(arr.shape[2])
    paths = []
    for n, k in enumerate(order):
        k = int(k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        for key, value in people.items():
            setattr(ds, key, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = "20240101", "120000", "20240101", "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = (
            "MR",
            "limbseg-rt phantom",
            series_number,
            k + 1,
        )
        ds.SeriesDescription = description
        ds.ImageType = list(image_type)
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "LEG"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10.0, 500.0, 1, 3.0
        ds.ImagePositionPatient = [f"{v:.6f}" for v in _position(lps, k, x, y, shear_mm_per_slice)]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*x, *y)]
        ds.PixelSpacing = [f"{row_sp:.6f}", f"{col_sp:.6f}"]
        ds.SliceThickness = f"{dz:.6f}"
        ds.SpacingBetweenSlices = f"{dz:.6f}"
        ds.SliceLocation = f"{float(_position(lps, k, x, y, shear_mm_per_slice) @ np.cross(x, y)):.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if rescale:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{inter:g}", "US"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        name = f"{rng.integers(1 << 48):012x}" if names == "random" else f"IM{n + 1:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _position(lps: np.ndarray, k: int, x, y, shear) -> np.ndarray:
    p = (lps @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
    return p + k * (shear[0] * x + shear[1] * y)


__all__ = ["write_mr_series"]
