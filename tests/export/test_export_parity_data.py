"""Parity / calibration slices: preprocessing as at inference, held-out scans kept apart."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.export.parity_data import EDGE_POSITIONS, nifti_sets, parity_sets, volume_slices
from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices
from limbseg_rt.runtime.model.position import slice_positions


def _volume(seed: int, z: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((40, 36, z)) * 1000).astype(np.float32)


def test_volume_slices_match_runtime_preprocessing():
    vol = _volume(0)
    s = volume_slices(vol, hw=(32, 16), max_slices=4, name="v")
    keep = [0, 4, 7, 11]  # evenly spaced over 12 slices
    lo, hi = intensity_window(vol)
    np.testing.assert_array_equal(s.images, preprocess_slices(np.moveaxis(vol[:, :, keep], 2, 0), lo, hi, (32, 16)))
    np.testing.assert_array_equal(s.positions, slice_positions(12, proximal_first=False)[keep])
    assert s.images.dtype == np.float32 and s.images.shape == (4, 1, 32, 16)


def test_edge_positions_are_appended():
    s = volume_slices(_volume(1), hw=(16, 16), max_slices=3, name="v").with_edge_positions()
    assert len(s) == 3 + len(EDGE_POSITIONS)
    np.testing.assert_array_equal(s.positions[3:], np.float32(EDGE_POSITIONS))


def test_nifti_folder_holds_out_whole_scans(tmp_path):
    for i in range(3):
        nib.save(nib.Nifti1Image(_volume(i), np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / f"scan{i}.nii.gz")
    (tmp_path / "notes.txt").write_text("ignored")
    calib, held = nifti_sets(tmp_path, hw=(16, 16), slices_per_volume=3)
    assert held.source == "scan2.nii.gz" and "scan2" not in calib.source
    assert len(calib) == 12 and len(held) == 6


def test_single_scan_is_split_by_slice(tmp_path):
    nib.save(nib.Nifti1Image(_volume(3, z=16), np.eye(4)), tmp_path / "only.nii")
    calib, held = parity_sets(tmp_path, hw=(16, 16), slices_per_volume=8)
    assert len(calib) + len(held) == 16 and len(held) == 4
    assert not set(held.positions.tolist()) & set(calib.positions.tolist())


def test_unusable_calibration_data(tmp_path):
    with pytest.raises(InputError, match="not found"):
        parity_sets(tmp_path / "missing", hw=(16, 16))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(InputError, match="constant"):
        parity_sets(tmp_path, hw=(16, 16))
    (tmp_path / "flat.nii").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a NIfTI image"):
        parity_sets(tmp_path, hw=(16, 16))
