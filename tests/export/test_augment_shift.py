"""Acquisition-shift augmentation: each change does what it models, and fine-tuning keeps BatchNorm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from limbseg_rt.export.augment import (  # noqa: E402
    NO_APPEARANCE,
    AppearanceSpec,
    AugmentSpec,
    augment_appearance,
    augment_batch,
)

OFF = dict(p_resolution=0.0, p_gamma=0.0, p_window=0.0, p_bias=0.0)


def _smooth_images(n=6, hw=(64, 48), seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, hw[0]), torch.linspace(-1, 1, hw[1]), indexing="ij")
    base = 0.2 + 0.6 * torch.exp(-(xx**2 + yy**2) / 0.3)
    return (base[None, None] * (0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=g))).float()


def test_no_appearance_is_the_identity_and_results_stay_in_range():
    x = _smooth_images()
    assert torch.equal(augment_appearance(x, NO_APPEARANCE), x)
    out = augment_appearance(
        x, AppearanceSpec(1.0, p_gamma=1.0, p_window=1.0, p_bias=1.0), torch.Generator().manual_seed(0)
    )
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    again = augment_appearance(
        x, AppearanceSpec(1.0, p_gamma=1.0, p_window=1.0, p_bias=1.0), torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, again)  # reproducible from the generator


def test_gamma_and_window_are_the_formulas_they_model():
    x = _smooth_images()
    gamma = augment_appearance(x, AppearanceSpec(**{**OFF, "p_gamma": 1.0}, gamma=(0.6, 0.6)))
    torch.testing.assert_close(gamma, x**0.6, atol=1e-6, rtol=1e-5)
    win = augment_appearance(
        x, AppearanceSpec(**{**OFF, "p_window": 1.0}, window_low=(0.1, 0.1), window_high=(0.8, 0.8))
    )
    torch.testing.assert_close(win, ((x - 0.1) / 0.7).clamp(0, 1), atol=1e-6, rtol=1e-5)


def test_gamma_on_normalised_slices_models_a_gamma_change_of_the_raw_scan():
    # The shift suite's gamma case: raw ** 0.6, then the runtime's percentile window. Augmenting the
    # normalised slice with x ** 0.6 should land near it (both windows are percentile-based).
    from limbseg_rt.runtime.inference.preprocess import intensity_window, normalise
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    raw = phantom_arrays(5, slices=6, shape=(96, 96), spacing=(4.6, 4.6, 5.0)).image.astype(np.float32)
    top = float(raw.max())
    shifted = top * (np.clip(raw, 0, None) / top) ** 0.6
    want = normalise(shifted, *intensity_window(shifted))
    base = torch.from_numpy(normalise(raw, *intensity_window(raw)))
    got = (base**0.6).numpy()
    body = want > 0.05
    assert np.median(np.abs(got - want)[body]) < 0.05
    assert np.median(np.abs(base.numpy() - want)[body]) > 2 * np.median(np.abs(got - want)[body])


def test_bias_field_is_smooth_multiplicative_and_low_order():
    x = torch.full((4, 1, 64, 48), 0.5)
    out = augment_appearance(x, AppearanceSpec(**{**OFF, "p_bias": 1.0}, bias=0.2), torch.Generator().manual_seed(3))
    log_ratio = torch.log(out / x)[:, 0].numpy()
    yy, xx = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 48), indexing="ij")
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy]).reshape(6, -1).T
    for lr in log_ratio:
        coef, *_ = np.linalg.lstsq(basis, lr.ravel(), rcond=None)
        assert np.abs(basis @ coef - lr.ravel()).max() < 1e-4  # exactly a quadratic in log space
        assert np.abs(lr).max() > 0.01  # and really applied
    assert np.abs(log_ratio).max() <= 6 * 0.2 + 1e-5


def test_resolution_loss_blurs_fine_detail_and_its_noise_is_correlated():
    g = torch.Generator().manual_seed(4)
    stripes = torch.zeros(2, 1, 64, 48)
    stripes[..., ::2, :] = 1.0
    blurred = augment_appearance(
        stripes, AppearanceSpec(**{**OFF, "p_resolution": 1.0}, resolution=(2.0, 2.0), noise_std=(0.0, 0.0)), g
    )
    assert float((blurred - 0.5).abs()[..., 4:-4, :].max()) < 0.05  # 1-pixel detail gone, local mean kept
    smooth = _smooth_images(2)
    kept = augment_appearance(
        smooth, AppearanceSpec(**{**OFF, "p_resolution": 1.0}, resolution=(2.0, 2.0), noise_std=(0.0, 0.0)), g
    )
    assert float((kept - smooth)[..., 4:-4, 4:-4].abs().max()) < 0.02  # coarse anatomy survives
    flat = torch.full((8, 1, 64, 48), 0.5)
    noisy = (
        augment_appearance(
            flat, AppearanceSpec(**{**OFF, "p_resolution": 1.0}, resolution=(2.5, 2.5), noise_std=(0.05, 0.05)), g
        )[..., 2:-2, 2:-2]
        - 0.5
    )
    assert 0.01 < float(noisy.std()) < 0.05
    corr = float((noisy[..., 1:] * noisy[..., :-1]).mean() / noisy.var())
    assert corr > 0.5  # noise of a coarser acquisition, interpolated: neighbours share it


def test_zoom_scales_the_anatomy_like_a_wider_field_of_view():
    h, w = 96, 80
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = ((yy**2 + xx**2) <= 20**2).long()[None].repeat(4, 1, 1)
    spec = AugmentSpec(0.0, 0.0, 0.0, zoom=(0.8, 0.8))
    img, lab = augment_batch(disc[:, None].float(), disc, spec, torch.Generator().manual_seed(0))
    ratio = lab.sum(dim=(1, 2)).float() / disc.sum(dim=(1, 2)).float()
    assert torch.allclose(ratio, torch.full_like(ratio, 0.64), atol=0.03)
    with pytest.raises(ValueError, match="zoom"):
        AugmentSpec(zoom=(1.2, 0.9))


def test_fine_tuning_with_shift_augmentation_keeps_batchnorm_statistics_and_records_it(tmp_path):
    from limbseg_rt.export.datasets import SliceDataset, phantom_subject
    from limbseg_rt.export.train import TrainConfig, train
    from limbseg_rt.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint

    hw, shape, spacing = (48, 48), (48, 48), (9.0, 9.0, 5.0)
    data = SliceDataset(
        [phantom_subject(1, slices=8, shape=shape, spacing=spacing, input_hw=hw, resampling="antialias")]
    )
    start = create_model("unet", features=(4, 8, 16, 32))
    for mod in start.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.fill_(0.25)
            mod.running_var.fill_(2.0)
    save_checkpoint(start, tmp_path / "start.pth.tar", extra={"arch": "unet", "features": [4, 8, 16, 32]})
    config = TrainConfig(
        features=(4, 8, 16, 32),
        epochs=2,
        batch_size=4,
        lr=1e-3,
        threads=1,
        appearance=AppearanceSpec(),
        augment=AugmentSpec(10.0, zoom=(0.8, 1.25)),
        freeze_batchnorm=True,
        resampling="antialias",
    )
    result = train(config, data, None, tmp_path / "ft.pth.tar", resume=tmp_path / "start.pth.tar")
    ckpt = read_checkpoint(result.checkpoint)
    means = [v for k, v in ckpt["state_dict"].items() if k.endswith("running_mean")]
    assert means and all(torch.all(m == 0.25) for m in means)
    assert ckpt["resampling"] == "antialias"
    assert ckpt["train_config"]["appearance"] == {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(AppearanceSpec()).items()
    }
    moved = create_model("unet", features=(4, 8, 16, 32))
    load_checkpoint(moved, result.checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(moved.state_dict().values(), start.state_dict().values()))
