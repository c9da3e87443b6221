"""Helpers for the DICOM tests: phantom series on disk, third-party files, dcm2niix and dciodvfy."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason='needs the dicom extra: pip install -e ".[dicom]"')

SITE = Path(pydicom.__file__).resolve().parent.parent
PYDICOM_FILES = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
NIBABEL_DICOM = Path(nib.__file__).resolve().parent / "nicom" / "tests" / "data"


def reoriented(img: nib.Nifti1Image, codes) -> nib.Nifti1Image:
    """The same voxels in world space, stored with array axes ``codes`` (e.g. 'LPS')."""
    start = nib.io_orientation(img.affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    transform = nib.orientations.ornt_transform(start, target)
    data = nib.orientations.apply_orientation(np.asarray(img.dataobj), transform)
    affine = img.affine @ nib.orientations.inv_ornt_aff(transform, img.shape)
    return nib.Nifti1Image(data.astype(np.int16), affine)


def tilted(img: nib.Nifti1Image, degrees: float) -> nib.Nifti1Image:
    """Same array, the whole grid rotated ``degrees`` about the x axis (an oblique acquisition)."""
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return nib.Nifti1Image(np.asarray(img.dataobj), rot @ img.affine)


def write_series(img: nib.Nifti1Image, folder: Path, **kwargs) -> list[Path]:
    from limbseg_rt.runtime.io.dicom.write_series import write_mr_series

    folder.mkdir(parents=True, exist_ok=True)
    return write_mr_series(np.asarray(img.dataobj), img.affine, folder, **kwargs)


def folder_digest(folder: Path) -> str:
    """SHA-256 over every file's relative name and bytes (proves the input was not touched)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def gunzip(src: Path, dst: Path) -> Path:
    with gzip.open(src) as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def dcm2niix(folder: Path, out: Path) -> list[Path]:
    """Convert ``folder`` with dcm2niix (uncompressed NIfTI); skip the test when it is absent."""
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (bash .ci/setup-debian.sh)")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [exe, "-z", "n", "-b", "n", "-f", "%s_%p", "-o", str(out), str(folder)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return sorted(out.glob("*.nii"))


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path``; skip the test when it is absent."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed (bash .ci/setup-debian.sh)")
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """(float data, affine) of ``img`` reordered to RAS+ by nibabel (flips/permutations only)."""
    c = nib.as_closest_canonical(img)
    return np.asarray(c.get_fdata(dtype=np.float32)), c.affine
