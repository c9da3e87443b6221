"""The in-network position one-hot equals runtime/model/position.py's rule exactly."""

from __future__ import annotations

import numpy as np
import torch

from limbseg_rt.models.sc_unet import position_onehot_torch
from limbseg_rt.runtime.model.position import POSITION_BINS, position_index


def position_onehot(p) -> np.ndarray:
    """The rule as numpy: float32 [N, 100], one hot at ``position_index(p)`` (a test reference only:
    the exported graph computes the one-hot itself)."""
    idx = np.atleast_1d(position_index(p))
    out = np.zeros((idx.shape[0], POSITION_BINS), dtype=np.float32)
    out[np.arange(idx.shape[0]), idx] = 1.0
    return out


def _grid() -> np.ndarray:
    k = np.arange(0, 101, dtype=np.float64) / 100.0
    near = np.concatenate(
        [k, np.nextafter(k.astype(np.float32), np.float32(-1)), np.nextafter(k.astype(np.float32), np.float32(2))]
    )
    special = [0.0, 0.004, 0.01, 0.5, 0.999, 1.0, -0.3, 1.7, 0.0099999, 0.0100001, 0.995]
    dense = np.linspace(0.0, 1.0, 20001)
    return np.concatenate([near, special, dense]).astype(np.float32)


def test_onehot_equals_runtime_rule_on_dense_grid():
    p = _grid()
    ours = position_onehot_torch(torch.from_numpy(p)).numpy()
    assert ours.dtype == np.float32 and ours.shape == (p.size, 100)
    np.testing.assert_array_equal(ours, position_onehot(p))
    np.testing.assert_array_equal(ours.argmax(1), position_index(p))


def test_documented_edge_cases():
    p = torch.tensor([0.0, 0.004, 0.01, 0.5, 0.999, 1.0, 1.5, -2.0])
    assert position_onehot_torch(p).argmax(1).tolist() == [99, 99, 0, 49, 98, 99, 99, 99]
    assert (position_onehot_torch(p).sum(1) == 1).all()
