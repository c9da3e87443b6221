"""The sliding-window tiler: coverage, exact reconstruction, Gaussian weights, batching."""

from __future__ import annotations

import numpy as np
import pytest

from limbseg_rt.runtime.inference.tiling import (
    SlidingWindowSplitter,
    TileCoord,
    WeightedMerger,
    gaussian_weights,
    sliding_window_logits,
)


@pytest.mark.parametrize("image_hw", [(100, 77), (64, 48), (65, 49), (30, 20), (200, 48)])
@pytest.mark.parametrize("overlap", [0.0, 0.5, 0.75])
def test_windows_cover_every_pixel_and_stay_inside(image_hw, overlap):
    splitter = SlidingWindowSplitter((64, 48), overlap)
    ph, pw = splitter.padded_shape(image_hw)
    assert (ph, pw) == (max(image_hw[0], 64), max(image_hw[1], 48))
    covered = np.zeros((ph, pw), dtype=int)
    locs = list(splitter(image_hw))
    assert len(locs) == len(set(locs))
    for top, left in locs:
        assert 0 <= top <= ph - 64 and 0 <= left <= pw - 48
        covered[top : top + 64, left : left + 48] += 1
    assert covered.min() >= 1


def test_overlap_gives_more_windows_than_no_overlap():
    n0 = len(list(SlidingWindowSplitter((64, 48), 0.0)((256, 192))))
    n5 = len(list(SlidingWindowSplitter((64, 48), 0.5)((256, 192))))
    assert n0 == 4 * 4
    assert n5 == 7 * 7


def test_gaussian_weights_peak_in_the_centre_and_are_positive():
    w = gaussian_weights((64, 48))
    assert w.shape == (64, 48) and w.dtype == np.float32
    assert w.min() > 0
    assert w[31:33, 23:25].min() == pytest.approx(w.max(), rel=1e-3)
    assert w[0, 0] < 0.01 * w.max()
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)  # symmetric


@pytest.mark.parametrize("image_hw", [(100, 77), (40, 30), (64, 48)])
def test_identity_predict_is_reproduced_exactly(image_hw):
    rng = np.random.default_rng(0)
    images = rng.random((3, 1) + image_hw).astype(np.float32)
    seen: list[TileCoord] = []

    def identity(batch, coords):
        seen.extend(coords)
        return batch.copy()

    out = sliding_window_logits(images, identity, window_hw=(64, 48), overlap=0.5, batch_size=5)
    assert out.shape == images.shape
    np.testing.assert_allclose(out, images, rtol=1e-5, atol=1e-6)
    assert {c.index for c in seen} == {0, 1, 2}


def test_tiles_are_sent_in_batches_of_at_most_batch_size_with_their_slice_index():
    rng = np.random.default_rng(1)
    images = rng.random((2, 1, 150, 100)).astype(np.float32)
    sizes = []

    def predict(batch, coords):
        sizes.append(batch.shape[0])
        assert batch.shape[1:] == (1, 64, 48)
        for tile, c in zip(batch, coords):
            np.testing.assert_array_equal(tile[0], images[c.index, 0, c.top : c.top + 64, c.left : c.left + 48])
        # Two channels: the tile and the slice index, to check the merger keeps slices apart.
        idx = np.array([c.index for c in coords], dtype=np.float32)[:, None, None, None]
        return np.concatenate([batch, np.broadcast_to(idx, batch.shape)], axis=1)

    out = sliding_window_logits(images, predict, window_hw=(64, 48), overlap=0.5, batch_size=4)
    assert max(sizes) <= 4
    assert out.shape == (2, 2, 150, 100)
    np.testing.assert_allclose(out[:, 0], images[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1, 1], 1.0, atol=1e-5)


def test_merger_blends_overlapping_windows_by_their_weights():
    weights = np.array([[1.0, 3.0]], dtype=np.float32)
    merger = WeightedMerger(1, (1, 3), weights)
    coords = [TileCoord(0, 0, 0, 1, 2), TileCoord(0, 0, 1, 1, 2)]
    logits = np.array([[[[10.0, 10.0]]], [[[20.0, 20.0]]]], dtype=np.float32)
    merger.aggregate(logits, coords)
    out = merger.finalize()
    # Middle pixel: weight 3 from window 0 and weight 1 from window 1 -> (30 + 20) / 4.
    np.testing.assert_allclose(out[0, 0, 0], [10.0, 12.5, 20.0])


def test_finalize_is_idempotent_and_returns_arrays_the_caller_owns():
    # MONAI's is_finalized rule: dividing twice used to halve the values and change the first result.
    merger = WeightedMerger(1, (2, 3), np.full((2, 2), 2.0, np.float32))
    coords = [TileCoord(0, 0, 0, 2, 2), TileCoord(0, 0, 1, 2, 2)]
    merger.aggregate(np.full((2, 1, 2, 2), 6.0, np.float32), coords)
    assert not merger.is_finalized
    first = merger.finalize()
    keep = first.copy()
    assert merger.is_finalized
    np.testing.assert_allclose(first, 6.0)
    second = merger.finalize()
    np.testing.assert_array_equal(second, keep)
    np.testing.assert_array_equal(first, keep)  # the second call did not change the first result
    second[:] = -1.0
    np.testing.assert_array_equal(merger.finalize((2, 2)), keep[:, :, :2, :2])  # nor does editing a result
    with pytest.raises(ValueError, match="finalized"):
        merger.aggregate(np.ones((1, 1, 2, 2), np.float32), coords[:1])


def test_uncovered_pixels_and_bad_arguments_are_refused():
    merger = WeightedMerger(1, (2, 2), np.ones((1, 1), np.float32))
    merger.aggregate(np.ones((1, 1, 1, 1), np.float32), [TileCoord(0, 0, 0, 1, 1)])
    with pytest.raises(ValueError, match="not covered"):
        merger.finalize()
    with pytest.raises(ValueError):
        SlidingWindowSplitter((64, 48), overlap=1.0)
    with pytest.raises(ValueError):
        sliding_window_logits(np.zeros((2, 64, 48), np.float32), lambda b, c: b, window_hw=(64, 48))
