"""Dixon inputs: read fat/water images or an FF map and put them on the scan's canonical grid.

They must share the scan's grid (same spatial shape and the same affine within 1e-3 mm and 1e-4 of
direction): a Dixon series resampled elsewhere, or another scan, is refused with a line saying so,
never resampled silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.io.nifti import ReadOptions, read_image


def read_on_grid(path: str | os.PathLike, props, what: str) -> np.ndarray:
    """float32 canonical ``[X, Y, Z]`` array of ``path``; ``InputError`` unless it is on ``props``' grid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} image not found: {path}")
    canon, p2 = read_image(path, options=ReadOptions())
    if tuple(p2.shape) != tuple(props.shape) or not np.allclose(p2.affine, props.affine, atol=1e-3, rtol=1e-4):
        raise InputError(
            f"{what} image {path.name} is not on the scan's grid (shape {tuple(p2.shape)} vs {tuple(props.shape)}, "
            "or another position/orientation); give the Dixon images of the same acquisition, resampled onto the scan"
        )
    return np.asarray(canon, np.float32)
