"""Small cohorts for the batch tests and benchmarks: phantom scans written as NIfTI, and bad files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SMALL_SHAPE = (64, 56)
SMALL_SLICES = 12
SMALL_SPACING = (3.0, 3.0, 10.0)  # 192 x 168 mm field of view: both legs, coarse


def write_phantom(
    path: Path, seed: int, *, slices: int = SMALL_SLICES, shape=SMALL_SHAPE, spacing=SMALL_SPACING
) -> Path:
    """A phantom scan (int16, RAS, qform = sform code 1) at ``path``."""
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, _ = make_phantom(seed, slices=slices, shape=shape, spacing=spacing)
    nib.save(image, str(path))
    return path


def write_cohort(folder: Path, n: int, *, first_seed: int = 0, **kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_phantom(folder / f"s{i:02d}.nii.gz", first_seed + i, **kw) for i in range(n)]


def write_corrupt(path: Path) -> Path:
    """A file named like NIfTI that is not one (the reader refuses it: exit 3)."""
    path.write_bytes(b"this is not a NIfTI file\n" * 20)
    return path


def labels_of(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def hidden_entries(folder: Path) -> list[str]:
    """Names of staging/temporary entries left in a cohort folder (the lock file is expected)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name != ".batch.lock")
