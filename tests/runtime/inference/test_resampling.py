"""Resampling modes: the exact (paper) linear resize is unchanged; antialias filters when shrinking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from limbseg_rt.runtime.inference.pipeline import PipelineOptions, segment_canonical
from limbseg_rt.runtime.inference.preprocess import (
    antialias_axis,
    intensity_window,
    preprocess_slices,
    resize_bilinear,
    resize_linear,
)
from limbseg_rt.runtime.model.metadata import ModelMetadata, read_metadata


def test_exact_mode_is_the_paper_resize_bit_for_bit():
    x = np.random.default_rng(0).random((3, 512, 300), dtype=np.float32)
    assert np.array_equal(resize_linear(x, (272, 240), "exact"), resize_bilinear(x, (272, 240)))


@pytest.mark.parametrize("shape,out", [((512, 512), (272, 240)), ((320, 320), (272, 240)), ((700, 130), (97, 64))])
def test_antialias_matches_torch_antialiased_bilinear(shape, out):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((2, *shape), dtype=np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x)[:, None], size=out, mode="bilinear", antialias=True, align_corners=False
    )[:, 0].numpy()
    np.testing.assert_allclose(resize_linear(x, out, "antialias"), ref, atol=3e-5)


def test_antialias_upsampling_axis_is_the_exact_resize():
    x = np.random.default_rng(2).random((2, 200, 240), dtype=np.float32)
    assert np.array_equal(resize_linear(x, (272, 240), "antialias"), resize_bilinear(x, (272, 240)))


def test_antialias_removes_aliasing_of_fine_stripes():
    # 1-pixel stripes (what a 512 grid of fine texture looks like) halved: the true local mean is 0.5.
    x = np.tile(np.array([0.0, 1.0], np.float32), 256)[None, :].repeat(64, 0)
    exact = resize_linear(x, (64, 200), "exact")
    aa = resize_linear(x, (64, 200), "antialias")
    assert np.abs(exact - 0.5).max() > 0.3  # aliased: a beat pattern between 0 and 1
    assert np.abs(aa - 0.5).max() < 0.05


def test_antialias_weights_sum_to_one_and_constants_survive():
    idx, w = antialias_axis(513, 240)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert idx.min() >= 0 and idx.max() <= 512
    c = np.full((1, 513, 333), 0.7, np.float32)
    np.testing.assert_allclose(resize_linear(c, (272, 240), "antialias"), 0.7, atol=1e-6)


def test_unknown_resampling_is_refused():
    with pytest.raises(ValueError, match="resampling"):
        resize_linear(np.zeros((4, 4), np.float32), (2, 2), "cubic")


def test_metadata_records_resampling_and_old_files_mean_exact(tiny_unet_path):
    md = read_metadata(tiny_unet_path)
    d = md.to_dict()
    assert d["resampling"] == "exact"
    del d["resampling"]  # a file exported before the entry existed
    assert ModelMetadata.from_dict(d).resampling == "exact"
    d["resampling"] = "antialias"
    assert ModelMetadata.from_json(json.dumps(d)).resampling == "antialias"
    d["resampling"] = "lanczos"
    with pytest.raises(ValueError, match="unknown resampling"):
        ModelMetadata.from_dict(d)


def test_pipeline_feeds_the_model_with_its_recorded_resampling(tiny_unet_path):
    base = read_metadata(tiny_unet_path)
    vol = np.random.default_rng(3).random((160, 150, 3), dtype=np.float32) * 1000
    lo, hi = intensity_window(vol)
    seen = {}

    for mode in ("exact", "antialias"):
        md = ModelMetadata(**{**base.__dict__, "resampling": mode})
        h, w = md.input_hw

        def predict(image, position, _mode=mode, _c=md.classes, _h=h, _w=w):
            seen[_mode] = image.copy()
            return np.zeros((image.shape[0], _c, _h, _w), np.float32)

        segment_canonical(vol, md, predict, options=PipelineOptions(fit="resize", batch_size=3, prefetch=False))
        want = preprocess_slices(np.moveaxis(vol, 2, 0), lo, hi, md.input_hw, mode)
        np.testing.assert_array_equal(seen[mode], want)
    assert base.input_hw[0] < 160 and base.input_hw[1] < 150  # shrinking: the two modes really differ
    assert not np.array_equal(seen["exact"], seen["antialias"])


# --- --fit auto ---------------------------------------------------------------------------------


def _demo_like(md: ModelMetadata, spacing=(448 / 272, 448 / 240)) -> ModelMetadata:
    """The bundled models' geometry: 272 x 240 inputs trained on 448 mm phantoms."""
    return ModelMetadata(**{**md.__dict__, "input_hw": (272, 240), "pixel_spacing_mm": spacing})


@pytest.mark.parametrize(
    "shape,spacing,want",
    [
        ((256, 256), (1.75, 1.75), "resize"),  # the trained acquisition
        ((512, 512), (0.875, 0.875), "resize"),  # finer grid, same field of view: resize is right
        ((320, 320), (1.75, 1.75), "tile"),  # 560 mm field of view: the limb would shrink by 0.8
        ((256, 256), (1.2, 1.2), "tile"),  # 307 mm field of view (one leg)
        ((280, 280), (1.75, 1.75), "resize"),  # 490 mm: within the tolerance
    ],
)
def test_auto_fit_chooses_from_field_of_view_against_the_trained_spacing(tiny_unet_path, shape, spacing, want):
    from limbseg_rt.runtime.inference.pipeline import choose_fit

    fit, reason = choose_fit(shape, spacing, _demo_like(read_metadata(tiny_unet_path)))
    assert fit == want
    assert f"{shape[0] * spacing[0]:.0f} x {shape[1] * spacing[1]:.0f} mm" in reason


def test_auto_fit_without_a_trained_spacing_resizes_and_says_why(tiny_unet_path):
    from limbseg_rt.runtime.inference.pipeline import choose_fit

    md = ModelMetadata(**{**read_metadata(tiny_unet_path).__dict__, "pixel_spacing_mm": None})
    assert choose_fit((512, 512), (0.5, 0.5), md) == ("resize", "the model records no trained pixel spacing")


def test_auto_fit_runs_exactly_what_it_chose(tiny_unet_path):
    import onnxruntime as ort

    md = read_metadata(tiny_unet_path)
    sess = ort.InferenceSession(str(tiny_unet_path), providers=["CPUExecutionProvider"])

    def predict(image, position):
        return sess.run(["logits"], {"image": image})[0]

    vol = np.random.default_rng(5).random((90, 70, 3), dtype=np.float32) * 500
    fov_h = md.input_hw[0] * md.pixel_spacing_mm[0]
    for scale, want in ((1.0, "resize"), (1.6, "tile")):
        spacing = (fov_h * scale / 90, md.input_hw[1] * md.pixel_spacing_mm[1] * scale / 70)
        auto = segment_canonical(vol, md, predict, spacing_xy_mm=spacing, options=PipelineOptions(prefetch=False))
        explicit = segment_canonical(
            vol, md, predict, spacing_xy_mm=spacing, options=PipelineOptions(fit=want, prefetch=False)
        )
        assert auto.fit == want and explicit.fit == want and explicit.fit_reason == "asked for"
        assert np.array_equal(auto.labels, explicit.labels)
        assert want in auto.fit_reason or (want == "resize" and "within" in auto.fit_reason)
