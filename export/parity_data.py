"""Real slices for parity checks and int8 calibration: phantom volumes or a folder of NIfTI scans.

Every slice goes through runtime/inference/preprocess.py exactly as at inference (intensity window over the
whole volume, then ``preprocess_slices``), and carries its SC-UNet position (runtime/model/position.py,
RAS-canonical volumes: slice 0 is the most distal). Calibration and held-out slices come from
different volumes whenever there are at least two, so int8 parity is judged on data the calibration
never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.inference.preprocess import intensity_window, is_constant, preprocess_slices
from limbseg_rt.runtime.model.input_spec import NormalisationSpec
from limbseg_rt.runtime.model.position import slice_positions

# The positions whose one-hot bins are the rule's edge cases (runtime/model/position.py).
EDGE_POSITIONS: tuple[float, ...] = (0.0, 0.004, 0.01, 0.5, 0.999, 1.0)
CALIBRATION_SEEDS: tuple[int, ...] = (9101, 9102)
HELDOUT_SEEDS: tuple[int, ...] = (9201,)


@dataclass(frozen=True)
class SliceSet:
    """Preprocessed slices: ``images`` float32 ``[N, C, H, W]`` in [0, 1], ``positions`` float32 ``[N]``."""

    images: np.ndarray
    positions: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def with_edge_positions(self) -> SliceSet:
        """Append the first slices again, paired with ``EDGE_POSITIONS`` (SC-UNet parity)."""
        k = len(EDGE_POSITIONS)
        idx = np.arange(k) % len(self)
        return SliceSet(
            np.concatenate([self.images, self.images[idx]]),
            np.concatenate([self.positions, np.asarray(EDGE_POSITIONS, dtype=np.float32)]),
            self.source + " + edge positions",
        )


def concat(sets: list[SliceSet]) -> SliceSet:
    return SliceSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.positions for s in sets]).astype(np.float32),
        ", ".join(s.source for s in sets),
    )


def volume_slices(
    volume: np.ndarray,
    *,
    hw: tuple[int, int],
    max_slices: int,
    name: str,
    spec: NormalisationSpec = NormalisationSpec(),
) -> SliceSet:
    """``max_slices`` evenly spaced axial slices of a RAS-canonical volume ``[X, Y, Z]``."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise InputError(f"{name}: expected a 3D volume, got shape {vol.shape}")
    lo, hi = intensity_window(vol, spec)
    if is_constant(lo, hi):
        raise InputError(f"{name}: the image is constant; it cannot be used for calibration")
    nz = vol.shape[2]
    keep = np.unique(np.round(np.linspace(0, nz - 1, min(max_slices, nz))).astype(np.int64))
    positions = slice_positions(nz, proximal_first=False)[keep]
    images = preprocess_slices(np.moveaxis(vol[:, :, keep], 2, 0), lo, hi, hw)
    return SliceSet(images, positions.astype(np.float32), name)


def phantom_sets(
    *, hw: tuple[int, int], slices_per_volume: int, phantom_slices: int = 40, phantom_shape=(256, 256)
) -> tuple[SliceSet, SliceSet]:
    """(calibration, held-out) slices from phantom volumes with fixed, disjoint seeds."""
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    def one(seed: int) -> SliceSet:
        ph = phantom_arrays(seed, slices=phantom_slices, shape=tuple(phantom_shape))
        return volume_slices(ph.image, hw=hw, max_slices=slices_per_volume, name=f"phantom-{seed}")

    return concat([one(s) for s in CALIBRATION_SEEDS]), concat([one(s) for s in HELDOUT_SEEDS])


def _nifti_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")) and p.is_file())
    if not files:
        raise InputError(f"{folder} holds no NIfTI files (.nii / .nii.gz) to calibrate with")
    return files


def nifti_sets(folder, *, hw: tuple[int, int], slices_per_volume: int) -> tuple[SliceSet, SliceSet]:
    """(calibration, held-out) slices from the NIfTI scans in ``folder`` (images only, no labels).

    With two or more scans the last third (at least one) is held out. A single scan is split by
    slice (every 4th held out): weaker, since neighbouring slices look alike, and said so in
    ``source``.
    """
    from limbseg_rt.runtime.io.nifti import read_image

    sets = []
    for path in _nifti_files(Path(folder)):
        data, _ = read_image(path)  # the runtime's strict reader: what the model will be served
        sets.append(volume_slices(data, hw=hw, max_slices=slices_per_volume * 2, name=path.name))
    if len(sets) == 1:
        only = sets[0]
        held = np.arange(len(only)) % 4 == 3
        return (
            SliceSet(only.images[~held], only.positions[~held], only.source + " (slices not held out)"),
            SliceSet(only.images[held], only.positions[held], only.source + " (every 4th slice; same scan)"),
        )
    n_held = max(1, len(sets) // 3)
    return concat(sets[:-n_held]), concat(sets[-n_held:])


def parity_sets(calibration, *, hw: tuple[int, int], slices_per_volume: int = 8) -> tuple[SliceSet, SliceSet]:
    """``calibration`` is ``"phantom"`` (or None), a folder of NIfTI scans, or a ready
    ``(calibration, held_out)`` pair of ``SliceSet`` (already at ``hw``; lets scripts and tests
    reuse slices across exports)."""
    if isinstance(calibration, tuple) and len(calibration) == 2 and all(isinstance(s, SliceSet) for s in calibration):
        for s in calibration:
            if tuple(s.images.shape[2:]) != tuple(hw):
                raise InputError(f"prepared slices are {tuple(s.images.shape[2:])}, parity runs at {tuple(hw)}")
        return calibration
    if calibration is None or str(calibration) == "phantom":
        return phantom_sets(hw=hw, slices_per_volume=slices_per_volume)
    return nifti_sets(calibration, hw=hw, slices_per_volume=slices_per_volume)
