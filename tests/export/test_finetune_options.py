"""Fine-tuning options of ``limbseg-rt train``: --shift-prob, --warmup-steps, --distill-weight."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from limbseg_rt.export import train as train_mod  # noqa: E402
from limbseg_rt.export.augment import (  # noqa: E402
    AppearanceSpec,
    AugmentSpec,
    augment_appearance,
    augment_batch,
    random_affines,
)
from limbseg_rt.export.train import TrainConfig, TrainSettingError, _lr_at, distill_loss, train  # noqa: E402

ALL_ON = AppearanceSpec(1.0, p_gamma=1.0, p_window=1.0, p_bias=1.0)
TINY = (4, 8, 16, 32)


def _images(n=8, hw=(32, 24), seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.8 * torch.rand(n, 1, *hw, generator=g)


def test_appearance_changes_only_the_chosen_samples():
    x = _images()
    chosen = torch.tensor([True, False] * 4)
    out = augment_appearance(x, ALL_ON, torch.Generator().manual_seed(0), chosen)
    assert torch.equal(out[~chosen], x[~chosen])  # bit for bit
    assert all(not torch.allclose(out[i], x[i], atol=1e-3) for i in range(8) if chosen[i])
    with pytest.raises(ValueError, match="chosen"):
        augment_appearance(x, ALL_ON, None, torch.ones(3, dtype=torch.bool))


def test_zoom_reaches_only_the_chosen_samples():
    chosen = torch.tensor([True, False, True, False])
    spec = AugmentSpec(0.0, 0.0, 0.0, zoom=(0.5, 0.5))
    theta = random_affines(4, (32, 32), spec, torch.Generator().manual_seed(0), chosen=chosen)
    det = torch.linalg.det(theta[:, :, :2])
    # A zoom z scales the sampling grid by 1/z on both axes: determinant 1/z^2 = 4; unchosen stay at 1.
    assert torch.allclose(det, torch.tensor([4.0, 1.0, 4.0, 1.0]), atol=1e-5)
    disc = torch.zeros(4, 32, 32, dtype=torch.long)
    disc[:, 12:20, 12:20] = 1
    _, lab = augment_batch(disc[:, None].float(), disc, spec, torch.Generator().manual_seed(0), chosen=chosen)
    area = lab.sum(dim=(1, 2)).tolist()
    assert area[1] == area[3] == 64 and area[0] == area[2] == 16


def test_warmup_ramps_the_learning_rate_linearly_into_the_cosine():
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    plain = TrainConfig(lr=1e-3)
    ramp = [_lr_at(config, 0.0, s) / _lr_at(plain, 0.0, s) for s in range(6)]
    assert ramp == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    # Past the warm-up it is the cosine itself (here half-way through the run).
    assert _lr_at(config, 0.5, 10) == pytest.approx(_lr_at(plain, 0.5, 10))
    assert _lr_at(plain, 0.0, 0) == pytest.approx(1e-3)


def test_distill_loss_is_the_kl_divergence_towards_the_teacher():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 4, 3, generator=g)
    assert float(distill_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 5, 4, 3, generator=g, requires_grad=True)
    loss = distill_loss(student, teacher)
    p, q = teacher.softmax(1), student.detach().softmax(1)
    assert float(loss.detach()) == pytest.approx(float((p * (p.log() - q.log())).sum(1).mean()), rel=1e-5)
    loss.backward()
    # The gradient of KL w.r.t. the student's logits is (q - p) / pixels: it pulls towards the teacher.
    assert torch.allclose(student.grad, (q - p) / (2 * 4 * 3), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shift_prob": 1.5, "appearance": AppearanceSpec()}, "--shift-prob must lie in [0, 1]"),
        ({"shift_prob": 0.5}, "--shift-prob needs --shift-augment"),
        ({"warmup_steps": -1}, "--warmup-steps must be 0 or more"),
        ({"distill_weight": -0.5}, "--distill-weight must be 0 or more"),
    ],
)
def test_bad_fine_tuning_settings_name_the_option(kwargs, message):
    with pytest.raises(TrainSettingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**kwargs)


def _tiny_data():
    from limbseg_rt.export.datasets import SliceDataset, phantom_subject

    hw, shape, spacing = (48, 48), (48, 48), (9.0, 9.0, 5.0)
    return SliceDataset([phantom_subject(s, slices=12, shape=shape, spacing=spacing, input_hw=hw) for s in (1, 2)])


def test_shift_prob_gives_that_share_of_samples_the_shift_augmentation(tmp_path, monkeypatch):
    seen = []
    real = train_mod.augment_appearance

    def spy(images, spec, generator=None, chosen=None):
        seen.append(chosen.clone())
        return real(images, spec, generator, chosen)

    monkeypatch.setattr(train_mod, "augment_appearance", spy)
    config = TrainConfig(features=TINY, epochs=4, batch_size=4, threads=1, appearance=AppearanceSpec(), shift_prob=0.25)
    train(config, _tiny_data(), None, tmp_path / "m.pth.tar")
    share = float(torch.cat(seen).float().mean())
    assert len(seen) == 4 * 6 and 0.1 < share < 0.4


def test_distillation_keeps_the_model_near_its_starting_predictions(tmp_path):
    from limbseg_rt.models import create_model, load_checkpoint, save_checkpoint

    data = _tiny_data()
    torch.manual_seed(0)
    start = create_model("unet", features=TINY)
    save_checkpoint(start, tmp_path / "start.pth.tar", extra={"arch": "unet", "features": list(TINY)})
    x = torch.from_numpy(data.images)

    def drift(weight):
        config = TrainConfig(features=TINY, epochs=3, batch_size=4, lr=1e-2, threads=1, distill_weight=weight)
        out = tmp_path / f"d{weight}.pth.tar"
        train(config, data, None, out, resume=tmp_path / "start.pth.tar")
        model = create_model("unet", features=TINY)
        load_checkpoint(model, out)
        with torch.no_grad():
            start.eval(), model.eval()
            return float(distill_loss(model(x), start(x)))

    free, anchored = drift(0.0), drift(50.0)
    assert math.isfinite(free) and anchored < 0.2 * free


def test_cli_passes_the_fine_tuning_options_to_the_trainer(tmp_path, monkeypatch):
    from limbseg_rt.cli import main
    from limbseg_rt.models import read_checkpoint

    folder = tmp_path / "data"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    import nibabel as nib

    rng = np.random.default_rng(0)
    for case in ("a", "b"):
        lab = np.zeros((24, 20, 3), np.uint8)
        lab[6:14, 5:12] = 1
        img = lab * 100.0 + rng.normal(0, 5, lab.shape)
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), folder / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), folder / "labelsTr" / f"{case}.nii.gz")
    out = tmp_path / "m.pth.tar"
    argv = ["train", "--arch", "unet", "--data", str(folder), "--out", str(out), "--features", *map(str, TINY)]
    argv += ["--batch-size", "2", "--threads", "1", "--epochs", "1", "--val-subjects", "0"]
    argv += ["--shift-augment", "--shift-prob", "0.5", "--warmup-steps", "7", "--distill-weight", "0.3"]
    assert main(argv) == 0
    recorded = read_checkpoint(out)["train_config"]
    assert (recorded["shift_prob"], recorded["warmup_steps"], recorded["distill_weight"]) == (0.5, 7, 0.3)


def test_lr_by_weight_scale_changes_every_layer_by_the_same_fraction(tmp_path):
    """Layers whose weights are 20x smaller move 20x less in absolute terms, the same relative amount."""
    from limbseg_rt.models import create_model, read_checkpoint, save_checkpoint

    data = _tiny_data()
    torch.manual_seed(0)
    start = create_model("unet", features=TINY)
    with torch.no_grad():
        start.downs[1].conv[0].weight.mul_(0.05)  # a layer 20x smaller, as BatchNorm folding leaves them
    save_checkpoint(start, tmp_path / "s.pth.tar", extra={"arch": "unet", "features": list(TINY)})
    w0 = read_checkpoint(tmp_path / "s.pth.tar")["state_dict"]
    small, big = "downs.1.conv.0.weight", "downs.2.conv.0.weight"

    def relative_change(scaled):
        config = TrainConfig(features=TINY, epochs=1, batch_size=4, lr=1e-3, threads=1, lr_by_weight_scale=scaled)
        train(config, data, None, tmp_path / f"m{scaled}.pth.tar", resume=tmp_path / "s.pth.tar")
        w = read_checkpoint(tmp_path / f"m{scaled}.pth.tar")["state_dict"]
        return [float((w[k] - w0[k]).norm() / w0[k].norm()) for k in (small, big)]

    (plain_small, plain_big), (scaled_small, scaled_big) = relative_change(False), relative_change(True)
    assert plain_small > 5 * plain_big  # plain Adam: the small layer changes far more, relatively
    assert 0.33 < scaled_small / scaled_big < 3.0
    with pytest.raises(TrainSettingError, match="cannot be combined"):
        TrainConfig(arch="sc-unet", lr_by_weight_scale=True, position_lr_scale=10.0)
