"""The slice pipeline: streaming batches, equivalence to slice-by-slice inference, positions, tiles."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError, ModelError
from limbseg_rt.runtime.inference.pipeline import (
    DEFAULT_MAX_BATCH,
    PipelineOptions,
    auto_batch_size,
    resized_argmax,
    segment_canonical,
)
from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices, resize_bilinear
from limbseg_rt.runtime.model.input_spec import NormalisationSpec
from limbseg_rt.runtime.model.metadata import ModelMetadata, PositionSpec, read_metadata


def _session_predict(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def predict(image, position):
        feed = {"image": image}
        if "position" in names:
            feed["position"] = position
        return sess.run(["logits"], feed)[0]

    return predict


class Recorder:
    """Wraps a predict callable and records every call's batch and positions."""

    def __init__(self, predict):
        self.predict = predict
        self.sizes: list[int] = []
        self.positions: list = []

    def __call__(self, image, position):
        self.sizes.append(image.shape[0])
        self.positions.append(None if position is None else np.array(position))
        return self.predict(image, position)


def _volume(shape=(96, 80, 11), seed=0):
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    vol = np.zeros(shape, dtype=np.float32)
    for z in range(shape[2]):
        blob = np.exp(-((x - 0.3 + 0.03 * z) ** 2 + (y + 0.2) ** 2) / 0.2)
        vol[:, :, z] = 800 * blob + 200 * (x > 0.1 * z - 0.5) + 30 * rng.random(shape[:2])
    return vol


@pytest.fixture(scope="module")
def unet(tiny_unet_path):
    return read_metadata(tiny_unet_path), _session_predict(tiny_unet_path)


def test_labels_equal_slice_by_slice_reference(unet):
    md, predict = unet
    vol = _volume()
    run = segment_canonical(vol, md, predict, options=PipelineOptions(fit="resize", batch_size=4))
    assert run.labels.shape == vol.shape and run.labels.dtype == np.uint8
    lo, hi = intensity_window(vol, md.normalisation)
    for z in range(vol.shape[2]):
        x = preprocess_slices(vol[None, :, :, z], lo, hi, md.input_hw)
        ref = np.argmax(resize_bilinear(predict(x, None), vol.shape[:2]), axis=1)[0]
        np.testing.assert_array_equal(run.labels[:, :, z], ref)
    assert len(np.unique(run.labels)) > 3  # the tiny model finds structure, not one class
    assert not run.empty


@pytest.mark.parametrize("batch_size", [1, 3, 11, 16])
def test_never_more_than_batch_size_slices_per_call_and_result_independent_of_it(unet, batch_size):
    md, predict = unet
    vol = _volume()
    reference = segment_canonical(
        vol, md, predict, options=PipelineOptions(fit="resize", batch_size=1, prefetch=False)
    ).labels
    rec = Recorder(predict)
    run = segment_canonical(vol, md, rec, options=PipelineOptions(fit="resize", batch_size=batch_size))
    assert max(rec.sizes) <= batch_size
    assert sum(rec.sizes) == vol.shape[2]
    assert run.batch_size == batch_size
    np.testing.assert_array_equal(run.labels, reference)


def test_progress_reports_every_batch_up_to_the_slice_count(unet):
    md, predict = unet
    seen = []
    segment_canonical(
        _volume(),
        md,
        predict,
        options=PipelineOptions(fit="resize", batch_size=4),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(4, 11), (8, 11), (11, 11)]


def test_auto_batch_size_follows_the_memory_budget():
    assert auto_batch_size(38, (272, 240), (512, 512), memory_budget_mb=512, max_batch=16) == 16
    per_slice = 38 * 272 * 240 * 4 + 2 * 272 * 240 * 4 + 512 * 512 * 4
    assert (
        auto_batch_size(38, (272, 240), (512, 512), memory_budget_mb=64, max_batch=16)
        == (64 * 1024 * 1024) // per_slice
    )
    assert 1 <= auto_batch_size(38, (272, 240), (512, 512), memory_budget_mb=64, max_batch=16) < 16
    # The default cap bounds the engine's own working memory (not counted in the budget).
    assert auto_batch_size(38, (272, 240), (512, 512), memory_budget_mb=4096) == DEFAULT_MAX_BATCH
    assert auto_batch_size(38, (272, 240), (4096, 4096), memory_budget_mb=16) == 1
    tile = auto_batch_size(
        38, (272, 240), (512, 512), fit="tile", resampled_hw=(600, 600), memory_budget_mb=256, max_batch=16
    )
    assert tile < auto_batch_size(38, (272, 240), (512, 512), memory_budget_mb=256, max_batch=16)


@pytest.mark.parametrize(
    "shapes", [((64, 48), (96, 80)), ((64, 48), (64, 80)), ((64, 48), (33, 48)), ((64, 48), (64, 48))]
)
def test_resized_argmax_equals_argmax_of_resize_bilinear(shapes):
    (h, w), out_hw = shapes
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((3, 38, h, w)).astype(np.float32)
    logits[0, 7] = logits[0, 3]  # exact ties: the lower class must win, as with np.argmax
    expected = np.argmax(resize_bilinear(logits, out_hw), axis=1).astype(np.uint8)
    got = resized_argmax(logits, out_hw)
    assert got.dtype == np.uint8 and got.shape == (3,) + out_hw
    np.testing.assert_array_equal(got, expected)


def test_auto_batch_size_is_used_when_asked(unet):
    md, predict = unet
    rec = Recorder(predict)
    run = segment_canonical(
        _volume(), md, rec, options=PipelineOptions(fit="resize", batch_size="auto", memory_budget_mb=8)
    )
    expected = auto_batch_size(md.classes, md.input_hw, (96, 80), memory_budget_mb=8)
    assert run.batch_size == expected and max(rec.sizes) <= expected


@pytest.mark.parametrize("value", [0.0, 1234.5, np.nan])
def test_constant_or_empty_image_is_all_background_without_calling_the_model(unet, value):
    md, _ = unet

    def never(image, position):
        raise AssertionError("the model must not run on an image without contrast")

    vol = np.full((40, 30, 5), value, dtype=np.float32)
    run = segment_canonical(vol, md, never)
    assert run.empty and not run.labels.any() and run.labels.shape == vol.shape
    assert run.notes


def test_sc_unet_positions_run_hip_to_ankle_from_the_top_slice(tiny_scunet_path):
    md = read_metadata(tiny_scunet_path)
    rec = Recorder(_session_predict(tiny_scunet_path))
    vol = _volume()
    run = segment_canonical(vol, md, rec, options=PipelineOptions(fit="resize", batch_size=4))
    got = np.concatenate(rec.positions)
    nz = vol.shape[2]
    # Canonical z = 0 is the most inferior (distal) slice: p = 1 there; the top slice gets 1/N.
    np.testing.assert_allclose(got, (np.arange(nz, 0, -1) / nz).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(run.positions, got)
    # A thigh-only scan (limb range 0:0.5) maps onto the upper half of the limb.
    rec2 = Recorder(rec.predict)
    run2 = segment_canonical(vol, md, rec2, options=PipelineOptions(fit="resize", limb_range=(0.0, 0.5)))
    np.testing.assert_allclose(np.concatenate(rec2.positions), 0.5 * got, rtol=1e-6)
    assert not np.array_equal(run.labels, run2.labels)  # the position input matters to this model


def test_distal_to_proximal_models_get_mirrored_positions(tiny_scunet_path):
    md = read_metadata(tiny_scunet_path)
    md = ModelMetadata(**{**md.__dict__, "position": PositionSpec(direction="distal_to_proximal")})
    rec = Recorder(_session_predict(tiny_scunet_path))
    segment_canonical(_volume(), md, rec, options=PipelineOptions(fit="resize", limb_range=(0.0, 0.5)))
    nz = 11
    # Counted from the ankle: z = 0 (distal end of a thigh scan) sits at 0.5 + 0.5/N of the way up.
    expected = (0.5 + 0.5 * np.arange(1, nz + 1) / nz).astype(np.float32)
    np.testing.assert_allclose(np.concatenate(rec.positions), expected, rtol=1e-6)


def test_bad_limb_range_is_refused():
    with pytest.raises(InputError, match="limb range"):
        PipelineOptions(limb_range=(0.6, 0.2))


def test_tile_mode_matches_resize_when_the_slice_is_one_window_at_the_trained_spacing(unet):
    md, predict = unet
    vol = _volume(shape=md.input_hw + (5,))
    spacing = md.pixel_spacing_mm
    resized = segment_canonical(vol, md, predict, spacing_xy_mm=spacing, options=PipelineOptions(fit="resize"))
    tiled = segment_canonical(vol, md, predict, spacing_xy_mm=spacing, options=PipelineOptions(fit="tile"))
    assert tiled.resampled_hw == md.input_hw
    np.testing.assert_array_equal(tiled.labels, resized.labels)


def test_tile_mode_resamples_to_the_trained_spacing_and_batches_tiles(unet):
    md, predict = unet
    vol = _volume(shape=(150, 120, 4))
    rec = Recorder(predict)
    run = segment_canonical(vol, md, rec, spacing_xy_mm=(1.0, 1.0), options=PipelineOptions(fit="tile", batch_size=3))
    # 1 mm pixels, model trained at 2 mm: the slice becomes 75 x 60 pixels before tiling.
    assert run.resampled_hw == (75, 60)
    assert max(rec.sizes) <= 3 and all(s >= 1 for s in rec.sizes)
    assert run.labels.shape == vol.shape and len(np.unique(run.labels)) > 3


def test_tile_mode_needs_a_model_with_known_pixel_spacing(tiny_unet_no_spacing_path):
    md = read_metadata(tiny_unet_no_spacing_path)
    with pytest.raises(ModelError, match="pixel spacing"):
        segment_canonical(
            _volume(), md, _session_predict(tiny_unet_no_spacing_path), options=PipelineOptions(fit="tile")
        )


def test_wrong_logits_shape_is_a_model_error(unet):
    md, _ = unet

    def wrong(image, position):
        return np.zeros((image.shape[0], 5) + image.shape[2:], np.float32)

    with pytest.raises(ModelError, match="logits"):
        segment_canonical(_volume(), md, wrong)


def test_a_failing_model_stops_the_prefetch_thread(unet):
    md, _ = unet
    before = {t.name for t in threading.enumerate()}

    def broken(image, position):
        raise RuntimeError("engine failed")

    with pytest.raises(RuntimeError, match="engine failed"):
        segment_canonical(_volume(), md, broken, options=PipelineOptions(fit="resize", batch_size=2))
    assert "limbseg-prefetch" not in {t.name for t in threading.enumerate()} - before


def test_slice_scope_normalisation_uses_each_slices_own_window(unet):
    md, predict = unet
    base = _volume(shape=(96, 80, 1))[:, :, 0]
    vol = np.stack([base * (k + 1) for k in range(4)], axis=2).astype(np.float32)
    per_slice = ModelMetadata(**{**md.__dict__, "normalisation": NormalisationSpec(scope="slice")})
    labels = segment_canonical(vol, per_slice, predict, options=PipelineOptions(fit="resize")).labels
    for k in range(1, 4):
        np.testing.assert_array_equal(labels[:, :, k], labels[:, :, 0])
    whole = segment_canonical(vol, md, predict, options=PipelineOptions(fit="resize")).labels
    assert not np.array_equal(whole[:, :, 0], whole[:, :, 3])  # one window for the volume: slices differ


@pytest.mark.parametrize("out_hw", [(512, 512), (256, 256), (200, 300), (272, 100)])
def test_resized_argmax_is_exact_on_smooth_logits_with_near_ties(out_hw):
    # Realistic logits: smooth class regions (most output pixels take the fast path), large values,
    # plus pixels where two classes differ by less than float32 rounding of the interpolation.
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:272, 0:240].astype(np.float32)
    centres = rng.uniform(0, 1, (38, 2)) * [272, 240]
    logits = np.stack([-((yy - cy) ** 2 + (xx - cx) ** 2) / 400.0 + 800.0 for cy, cx in centres])[None]
    logits = np.concatenate([logits, logits[:, ::-1]]).astype(np.float32)
    near = rng.integers(0, 272 * 240, 500)
    flat = logits[0].reshape(38, -1)
    flat[5, near] = flat[:, near].max(axis=0) + np.float32(1e-4)  # a near-tie with the current top class
    flat[2, near[:100]] = flat[5, near[:100]]  # exact ties: class 2 (lower index) must win
    expected = np.argmax(resize_bilinear(logits, out_hw), axis=1).astype(np.uint8)
    np.testing.assert_array_equal(resized_argmax(logits, out_hw), expected)
