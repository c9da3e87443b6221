"""Small phantoms with ground truth for the analysis tests (made once per session)."""

from __future__ import annotations

import numpy as np
import pytest

# 3.5 mm in-plane over 160 x 128 voxels: a 560 mm wide field, so the patient can be moved by
# +-60 mm without leaving it; 48 slices of 8 mm still span hip to ankle.
SHAPE = (160, 128)
SPACING = (3.5, 3.5, 8.0)
SLICES = 48


@pytest.fixture(scope="session")
def phantom7():
    """Phantom seed 7 (an older subject, infiltration 0.21) with its true FF map and Dixon images."""
    from limbseg_rt.runtime.phantom.dixon import dixon_images
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    ph = phantom_arrays(7, slices=SLICES, shape=SHAPE, spacing=SPACING, truth=True)
    water, fat, ff, pv = dixon_images(ph, 7)
    nx = ph.labels.shape[0]
    right = (np.arange(nx) >= (nx - 1) / 2)[:, None, None]
    sides = np.where(ph.labels > 0, np.where(right, 1, 2), 0).astype(np.uint8)
    return {"ph": ph, "water": water, "fat": fat, "ff": ff, "pv": pv, "sides": sides}
