"""Augmentation keeps labels under their pixels; a tiny training run learns and saves a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from limbseg_rt.export.augment import NO_AUGMENT, AugmentSpec, augment_batch  # noqa: E402
from limbseg_rt.export.train import (  # noqa: E402
    TrainConfig,
    confusion,
    predict_volume,
    train,
    volume_dice,
)
from limbseg_rt.runtime.report.metrics import dice_from_confusion  # noqa: E402


def _painted_batch(n=16, hw=(64, 48), seed=0):
    """Blocks of labels 1..6 on background; the image is the label times 0.1 (image encodes label)."""
    g = np.random.default_rng(seed)
    labels = np.zeros((n, *hw), np.int64)
    for i in range(n):
        for k in range(1, 7):
            r, c = g.integers(4, hw[0] - 16), g.integers(4, hw[1] - 16)
            labels[i, r : r + 12, c : c + 12] = k
    labels = torch.from_numpy(labels)
    return (labels[:, None].float() * 0.1), labels


@pytest.mark.parametrize("crop", [None, (40, 32)])
def test_rotation_flips_and_crops_keep_labels_under_their_pixels(crop):
    images, labels = _painted_batch()
    spec = AugmentSpec(35.0, 0.5, 0.5, crop)
    out_img, out_lab = augment_batch(images, labels, spec, torch.Generator().manual_seed(1))
    hw = crop or images.shape[2:]
    assert out_img.shape == (16, 1, *hw) and out_lab.shape == (16, *hw) and out_lab.dtype == torch.int64
    assert not torch.equal(out_lab, labels)  # something actually moved
    # Where the 3x3 neighbourhood holds one label, bilinear image = nearest label exactly.
    lab = out_lab.float()[:, None]
    lo = -torch.nn.functional.max_pool2d(-lab, 3, 1, 1)
    hi = torch.nn.functional.max_pool2d(lab, 3, 1, 1)
    interior = (lo == hi)[:, 0]
    interior[:, [0, -1], :] = False  # the output's edge pixels have unseen neighbours outside the window
    interior[:, :, [0, -1]] = False
    diff = (out_img[:, 0] - out_lab.float() * 0.1).abs()[interior]
    assert float((diff < 1e-4).float().mean()) > 0.999
    # Labels are resampled, not re-invented: only existing classes appear.
    assert set(out_lab.unique().tolist()) <= set(labels.unique().tolist())


def test_rotation_is_rigid_on_a_non_square_slice():
    # A centred disc must stay a disc (area and centroid) under rotation of a 64 x 48 slice.
    h, w = 64, 48
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = ((yy**2 + xx**2) <= 15**2).long()
    labels = disc[None].repeat(8, 1, 1)
    _, out = augment_batch(
        labels[:, None].float(), labels, AugmentSpec(35.0, 0.0, 0.0), torch.Generator().manual_seed(0)
    )
    areas = out.sum(dim=(1, 2)).float()
    assert torch.allclose(areas, disc.sum().float(), rtol=0.03)


def test_flip_probabilities_match_the_paper():
    n, hw = 4000, (16, 16)
    images = torch.arange(hw[0] * hw[1], dtype=torch.float32).reshape(1, 1, *hw).repeat(n, 1, 1, 1)
    labels = torch.zeros(n, *hw, dtype=torch.int64)
    out, _ = augment_batch(images, labels, AugmentSpec(0.0, 0.5, 0.1), torch.Generator().manual_seed(123))
    lr = (out - torch.flip(images, dims=[2])).abs().amax(dim=(1, 2, 3)) < 1e-3  # mirrors H only
    ap = (out - torch.flip(images, dims=[3])).abs().amax(dim=(1, 2, 3)) < 1e-3  # mirrors W only
    both = (out - torch.flip(images, dims=[2, 3])).abs().amax(dim=(1, 2, 3)) < 1e-3
    none = (out - images).abs().amax(dim=(1, 2, 3)) < 1e-3
    assert int((lr | ap | both | none).sum()) == n  # every output is exactly one of the four
    p_lr = float((lr | both).float().mean())
    p_ap = float((ap | both).float().mean())
    # 4000 draws: standard errors 0.008 and 0.005; 4 sigma bounds.
    assert abs(p_lr - 0.5) < 0.032 and abs(p_ap - 0.1) < 0.019
    same, _ = augment_batch(images[:4], labels[:4], NO_AUGMENT)
    assert torch.allclose(same, images[:4], atol=1e-4)


def test_dice_helpers():
    truth = torch.tensor([0, 1, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 2, 2, 2, 0])
    d = dice_from_confusion(confusion(pred, truth, 4).numpy())
    np.testing.assert_allclose(d[:3], [2 / 3, 2 / 3, 2 * 2 / 6])
    assert np.isnan(d[3])  # absent from both: no Dice
    np.testing.assert_allclose(volume_dice(pred.numpy(), truth.numpy(), 4)[:3], d[:3])


@pytest.mark.parametrize("arch", ["unet", "sc-unet"])
def test_tiny_training_run_lowers_the_loss_and_saves_a_loadable_checkpoint(tmp_path, arch):
    from limbseg_rt.export.datasets import SliceDataset, phantom_subject
    from limbseg_rt.models import create_model, load_checkpoint

    hw, shape, spacing = (48, 48), (48, 48), (9.0, 9.0, 5.0)  # coarse: both legs in a tiny field of view
    subjects = [phantom_subject(s, slices=12, shape=shape, spacing=spacing, input_hw=hw) for s in (1, 2)]
    val = SliceDataset([phantom_subject(100, slices=6, shape=shape, spacing=spacing, input_hw=hw)])
    config = TrainConfig(arch=arch, features=(4, 8, 16, 32), epochs=3, batch_size=4, lr=1e-2, seed=0, threads=1)
    logs = []
    result = train(config, SliceDataset(subjects), val, tmp_path / "m.pth.tar", on_epoch=logs.append)

    assert [log.epoch for log in result.history] == [1, 2, 3] and logs == list(result.history)
    assert result.history[-1].train_loss < 0.9 * result.history[0].train_loss
    assert result.history[-1].val_loss < result.history[0].val_loss
    model = create_model(arch, features=(4, 8, 16, 32))
    ckpt = load_checkpoint(model, result.checkpoint)
    assert ckpt["arch"] == arch and ckpt["features"] == [4, 8, 16, 32]
    assert ckpt["epoch"] == result.best_epoch and "optimizer" in ckpt
    best = result.history[result.best_epoch - 1]
    assert ckpt["val_dice"] == pytest.approx(best.val_dice) == max(h.val_dice for h in result.history)

    # The saved weights segment a phantom volume at its native grid better than chance.
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    ph = phantom_arrays(100, slices=6, shape=shape, spacing=spacing)
    pred = predict_volume(model, arch, ph.image, input_hw=hw)
    assert pred.shape == ph.labels.shape
    assert volume_dice(pred, ph.labels)[0] > 0.8  # background at least

    # Resuming continues from the saved weights: its first epoch beats the fresh run's first epoch.
    again = train(
        TrainConfig(**{**config.__dict__, "epochs": 1}),
        SliceDataset(subjects),
        val,
        tmp_path / "r.pth.tar",
        resume=result.checkpoint,
    )
    assert again.history[0].train_loss < result.history[0].train_loss


def test_time_budget_stops_early_and_still_saves(tmp_path):
    from limbseg_rt.export.datasets import SliceDataset, subject_from_volume

    rng = np.random.default_rng(0)
    labels = (rng.random((32, 32, 8)) > 0.5).astype(np.uint8)
    image = labels * 10.0 + rng.random((32, 32, 8))
    ds = SliceDataset([subject_from_volume("s", image, labels, input_hw=(32, 32))])
    ticks = iter(range(0, 10_000, 20))  # a fake clock: 20 s per reading
    config = TrainConfig(features=(4, 8, 16, 32), epochs=50, batch_size=2, max_minutes=2.0, threads=1)
    result = train(config, ds, None, tmp_path / "t.pth.tar", clock=lambda: float(next(ticks)))
    assert result.stopped_by_time and len(result.history) < 50
    assert result.checkpoint.is_file()


def _nnunet_folder(root):
    """Three tiny subjects (24 x 20 x 3, one muscle) in the nnU-Net layout."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    for d in ("imagesTr", "labelsTr"):
        (root / d).mkdir(parents=True)
    for case in ("a", "b", "c"):
        labels = np.zeros((24, 20, 3), np.uint8)
        labels[6:14, 5:12] = 5
        image = (labels * 20.0 + rng.random(labels.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    return root


def test_cli_trains_on_an_nnunet_folder(tmp_path, capsys):
    from limbseg_rt.cli import main
    from limbseg_rt.models import create_model, load_checkpoint

    _nnunet_folder(tmp_path / "data")
    out = tmp_path / "cli.pth.tar"
    code = main(
        [
            "train",
            "--arch",
            "unet",
            "--data",
            str(tmp_path / "data"),
            "--epochs",
            "1",
            "--features",
            "4",
            "8",
            "16",
            "32",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--out",
            str(out),
            "--loss",
            "ce+dice",
            "--crop",
            "16",
            "16",
            "--class-balanced",
            "0.5",
            "--rotation",
            "10",
            "--bf16",
            "--val-every",
            "3",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "train: 2 subjects, 6 slices; validation: 1 subjects, 3 slices" in text and "epoch   1" in text
    ckpt = load_checkpoint(create_model("unet", features=(4, 8, 16, 32)), out)
    assert ckpt["epoch"] == 1 and ckpt["val_dice"] is not None
    # The checkpoint records how it was trained.
    cfg = ckpt["train_config"]
    assert cfg["loss"] == "ce+dice" and cfg["class_balanced"] == 0.5 and cfg["crop_foreground"] == 0.67
    assert cfg["augment"]["crop_hw"] == [16, 16] and cfg["augment"]["max_rotation_deg"] == 10.0
    assert cfg["bf16"] is True and cfg["val_every"] == 3  # the last epoch is validated all the same


TINY = ["--features", "4", "8", "16", "32", "--batch-size", "2", "--threads", "1", "--epochs", "1"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "unet", "--val-every", "0"], "--val-every must be 1 or more (got 0)"),
        (["--arch", "unet", "--position-lr-scale", "10"], "--position-lr-scale is for sc-unet's position layer"),
        (["--arch", "sc-unet", "--position-lr-scale", "0"], "--position-lr-scale must be above 0"),
        (["--arch", "unet", "--class-balanced", "1.5"], "--class-balanced and --crop-foreground must lie in [0, 1]"),
        (["--arch", "attention-unet", "--channels-last"], "--channels-last crashes PyTorch"),
        (["--arch", "unet", "--epochs", "0"], "--epochs and --batch-size must be 1 or more (got 0, 2)"),
        (["--arch", "unet", "--max-minutes", "0"], "--max-minutes must be above 0 (got 0)"),
        (["--arch", "unet", "--subjects", "0"], "--subjects must be 1 or more (got 0)"),
    ],
)
def test_cli_refuses_bad_training_settings_in_one_line_before_loading_data(tmp_path, capsys, argv, message):
    from limbseg_rt.cli import main

    out = tmp_path / "m.pth.tar"
    code = main(["train", "--data", str(tmp_path / "no-such-folder"), "--out", str(out), *TINY, *argv])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("limbseg-rt: error: " + message) and err.count("\n") == 1
    assert "internal error" not in err and "loading subjects" not in err  # failed before touching the data


def test_cli_reports_a_resume_that_cannot_work_as_a_usage_error(tmp_path, capsys):
    from limbseg_rt.cli import main

    data = str(_nnunet_folder(tmp_path / "data"))
    first = tmp_path / "sc.pth.tar"
    assert main(["train", "--arch", "sc-unet", "--data", data, "--out", str(first), *TINY]) == 0
    capsys.readouterr()
    # Saved with one Adam parameter group; --position-lr-scale 10 trains with two.
    out = tmp_path / "resumed.pth.tar"
    code = main(
        [
            "train",
            "--arch",
            "sc-unet",
            "--data",
            data,
            "--out",
            str(out),
            *TINY,
            "--position-lr-scale",
            "10",
            "--resume",
            str(first),
        ]
    )
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and not out.exists()
    assert err[-1].startswith("limbseg-rt: error: sc.pth.tar: its optimiser state has 1 parameter group(s), this run 2")
    assert err[-1].endswith("(--init-from)")


def test_cli_without_torch_names_the_extra(monkeypatch, capsys):
    import argparse

    from limbseg_rt.cli import train as cli_train

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # main() sets it; restored after the test
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # makes `import torch` fail
    from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, MissingDependencyError

    args = argparse.Namespace(arch="unet", channels_last=False)
    with pytest.raises(MissingDependencyError, match=r'pip install "limbseg-rt\[export\]"') as err:
        cli_train.main(args)  # the CLI's handler turns it into one line and exit 12 (tests/cli)
    assert err.value.exit_code == EXIT_DEPENDENCY


def test_soft_dice_loss_rewards_overlap_of_present_muscles():
    from limbseg_rt.export.train import soft_dice_loss

    labels = torch.zeros(1, 8, 8, dtype=torch.int64)
    labels[0, 2:6, 2:6] = 2
    perfect = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() * 50
    wrong = perfect[:, [0, 2, 1, 3]]  # predicts class 1 where class 2 is
    assert float(soft_dice_loss(perfect, labels)) < 0.01
    assert float(soft_dice_loss(wrong, labels)) > 0.9


def test_warm_start_copies_unet_weights_into_the_other_architectures(tmp_path):
    from limbseg_rt.export.train import warm_start
    from limbseg_rt.models import create_model, save_checkpoint

    unet = create_model("unet", features=(4, 8, 16, 32))
    save_checkpoint(unet, tmp_path / "u.pth.tar")
    src = unet.state_dict()
    sc = create_model("sc-unet", features=(4, 8, 16, 32))
    assert warm_start(sc, tmp_path / "u.pth.tar") == len(src)
    assert torch.equal(sc.state_dict()["final_conv.weight"], src["final_conv.weight"])
    att = create_model("attention-unet", features=(4, 8, 16, 32))
    warm_start(att, tmp_path / "u.pth.tar")
    assert torch.equal(att.state_dict()["up_convs.0.conv.0.weight"], src["ups.1.conv.0.weight"])
    assert torch.equal(att.state_dict()["up_samples.3.weight"], src["ups.6.weight"])


def test_warm_started_models_compute_exactly_the_unet_they_start_from(tmp_path):
    """SC-UNet (identity position scaling) and the Attention UNet (open gates) begin as the trained
    UNet: same logits on real phantom slices, at any position."""
    from limbseg_rt.export.train import init_for_training, warm_start
    from limbseg_rt.models import create_model, save_checkpoint
    from limbseg_rt.runtime.phantom.generate import make_phantom

    torch.manual_seed(3)
    unet = create_model("unet", features=(4, 8, 16, 32))
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for m in unet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(unet, tmp_path / "u.pth.tar")
    image, _ = make_phantom(5, slices=6, shape=(64, 48))
    x = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32).transpose(2, 0, 1)[:, None].copy())
    x = (x - x.mean()) / x.std()
    with torch.no_grad():
        want = unet.eval()(x)
        sc = create_model("sc-unet", features=(4, 8, 16, 32))
        init_for_training(sc, None)
        warm_start(sc, tmp_path / "u.pth.tar")
        pos = torch.tensor([0.0, 0.004, 0.3, 0.5, 0.999, 1.0])
        assert torch.allclose(sc.eval()(x, pos), want, atol=1e-5)
        att = create_model("attention-unet", features=(4, 8, 16, 32))
        warm_start(att, tmp_path / "u.pth.tar")
        assert torch.allclose(att.eval()(x), want, atol=1e-5)
        fresh = create_model("attention-unet", features=(4, 8, 16, 32)).eval()
        assert not torch.allclose(fresh(x), want, atol=1e-2)  # the check above can fail


def test_fused_loss_equals_the_one_hot_formulation_in_value_and_gradient():
    from limbseg_rt.export.train import loss_terms

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 10, 12, generator=g, requires_grad=True)
    labels = torch.randint(0, 6, (3, 10, 12), generator=g)
    labels[labels == 4] = 0  # one muscle absent from the batch: left out of the Dice mean

    probs = logits.softmax(dim=1)
    onehot = torch.nn.functional.one_hot(labels, 6).permute(0, 3, 1, 2).float()
    dice = (2 * (probs * onehot).sum(dim=(0, 2, 3)) + 1) / (probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1)
    ref = (torch.nn.functional.cross_entropy(logits, labels), 1 - dice[[1, 2, 3, 5]].mean())
    got = loss_terms(logits, labels)
    for a, b in zip(ref, got):
        assert abs(float(a.detach()) - float(b.detach())) < 1e-6
    g_ref = torch.autograd.grad(sum(ref), logits)[0]
    g_got = torch.autograd.grad(sum(got), logits)[0]
    assert torch.allclose(g_ref, g_got, atol=1e-7)


def test_class_balanced_sampling_shows_a_rare_muscle_as_often_as_a_common_one():
    from limbseg_rt.export.train import slice_sampling_weights

    labels = np.zeros((100, 4, 4), np.uint8)
    labels[:, 0, 0] = 1  # muscle 1 in every slice
    labels[:2, 1, 1] = 2  # muscle 2 in 2 slices of 100
    uniform = slice_sampling_weights(labels, 4, 0.0)
    np.testing.assert_allclose(uniform, 0.01)
    p = slice_sampling_weights(labels, 4, 1.0)
    assert abs(p.sum() - 1) < 1e-12
    # Expected share of draws that contain each muscle: 1 for muscle 1, and 1/2 for muscle 2
    # (half of the draws pick muscle 2 first) instead of 2 % with uniform shuffling.
    assert abs(p[:2].sum() - 0.5 - 0.5 * 2 / 100) < 1e-12
    half = slice_sampling_weights(labels, 4, 0.5)
    np.testing.assert_allclose(half, 0.5 * uniform + 0.5 * p)
    with pytest.raises(ValueError):
        slice_sampling_weights(labels, 4, 1.5)


def test_foreground_crops_are_centred_on_a_muscle_pixel():
    from limbseg_rt.export.train import foreground_centres

    h, w = 40, 30
    labels = np.zeros((3, h, w), np.uint8)
    labels[0, 30:33, 5:8] = 7
    labels[1, 2:4, 20:25] = 3
    rng = np.random.default_rng(0)
    centres = foreground_centres(labels, 1.0, rng)
    assert np.isnan(centres[2]).all()  # no muscle in slice 2: a random window instead
    for i in (0, 1):
        r, c = centres[i].astype(int)
        assert labels[i, r, c] != 0
    assert np.isnan(foreground_centres(labels, 0.0, rng)).all()

    # The window's centre pixel (odd crop, no rotation or flip) is exactly the chosen input pixel.
    ids = torch.arange(h * w, dtype=torch.int64).reshape(1, h, w).repeat(3, 1, 1)
    spec = AugmentSpec(0.0, 0.0, 0.0, (15, 11))
    given = torch.tensor([[31.0, 6.0], [3.0, 22.0], [float("nan"), float("nan")]])
    _, out = augment_batch(ids[:, None].float(), ids, spec, torch.Generator().manual_seed(0), given)
    assert out[0, 7, 5] == 31 * w + 6 and out[1, 7, 5] == 3 * w + 22


def test_training_keeps_freed_activation_buffers_instead_of_faulting_them_in_again():
    import platform
    import resource

    from limbseg_rt.export.train import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt tuning applies to glibc only")
    assert keep_freed_memory()
    n = 40 * 1024 * 1024 // 4  # 40 MiB: above the largest mmap threshold glibc picks by itself (32 MiB)
    buf = np.ones(n, np.float32)
    del buf
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        buf = np.ones(n, np.float32)  # touch every page
        del buf
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # With glibc's defaults each buffer is mmapped and unmapped: ~10,600 faults here (measured,
    # with transparent huge pages); kept in the heap it is reused with none.
    assert faults < 2000, f"{faults} page faults for 20 reused 40 MiB buffers"


def test_bf16_steps_and_sparse_validation_still_train_and_keep_the_best_validated_checkpoint(tmp_path):
    from limbseg_rt.export.datasets import SliceDataset, phantom_subject
    from limbseg_rt.models import create_model, load_checkpoint

    hw, shape, spacing = (48, 48), (48, 48), (9.0, 9.0, 5.0)
    subjects = [phantom_subject(s, slices=12, shape=shape, spacing=spacing, input_hw=hw) for s in (1, 2)]
    val = SliceDataset([phantom_subject(100, slices=6, shape=shape, spacing=spacing, input_hw=hw)])
    config = TrainConfig(
        features=(4, 8, 16, 32), epochs=5, batch_size=4, lr=1e-2, seed=0, threads=1, bf16=True, val_every=2
    )
    result = train(config, SliceDataset(subjects), val, tmp_path / "m.pth.tar")

    # Validated on epochs 2 and 4, and after the last one; the others carry no validation numbers.
    assert [h.val_dice is not None for h in result.history] == [False, True, False, True, True]
    assert result.history[-1].train_loss < 0.9 * result.history[0].train_loss
    assert result.best_epoch in (2, 4, 5)
    model = create_model("unet", features=(4, 8, 16, 32))
    ckpt = load_checkpoint(model, result.checkpoint)
    assert ckpt["epoch"] == result.best_epoch and ckpt["train_config"]["bf16"] is True
    # Mixed precision lives in the forward pass only: the saved weights are float32.
    assert all(v.dtype == torch.float32 for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    with pytest.raises(ValueError, match="val-every"):
        TrainConfig(val_every=0)


def test_position_lr_scale_moves_only_the_sc_unet_position_layer_faster(tmp_path):
    """--position-lr-scale 10: after a warm start from a UNet, SC-UNet's position layer takes Adam steps
    ten times as long as with scale 1, while the rest of the network moves as before."""
    from limbseg_rt.export.datasets import SliceDataset, phantom_subject
    from limbseg_rt.models import create_model, read_checkpoint, save_checkpoint

    hw, shape, spacing = (48, 48), (48, 48), (9.0, 9.0, 5.0)
    data = SliceDataset([phantom_subject(s, slices=12, shape=shape, spacing=spacing, input_hw=hw) for s in (1, 2)])
    torch.manual_seed(0)
    save_checkpoint(create_model("unet", features=(4, 8, 16, 32)), tmp_path / "u.pth.tar")
    start = read_checkpoint(tmp_path / "u.pth.tar")["state_dict"]

    def moved(scale):
        config = TrainConfig(
            arch="sc-unet",
            features=(4, 8, 16, 32),
            epochs=1,
            batch_size=4,
            lr=1e-3,
            seed=0,
            threads=1,
            position_lr_scale=scale,
        )
        out = tmp_path / f"sc{scale}.pth.tar"
        train(config, data, None, out, init_from=tmp_path / "u.pth.tar")
        ckpt = read_checkpoint(out)
        assert ckpt["train_config"]["position_lr_scale"] == scale
        state = ckpt["state_dict"]
        position = float((state["spatiallinear.bias"] - 1.0).abs().max())  # starts at identity: bias 1
        rest = float((state["final_conv.weight"] - start["final_conv.weight"]).abs().max())
        return position, rest

    (pos1, rest1), (pos10, rest10) = moved(1.0), moved(10.0)
    assert pos1 > 0 and 6.0 < pos10 / pos1 < 14.0
    assert 0.5 < rest10 / rest1 < 2.0
    with pytest.raises(ValueError, match="parameter group"):  # Adam state saved with one group
        train(
            TrainConfig(
                arch="sc-unet", features=(4, 8, 16, 32), epochs=1, batch_size=4, threads=1, position_lr_scale=10.0
            ),
            data,
            None,
            tmp_path / "r.pth.tar",
            resume=tmp_path / "sc1.0.pth.tar",
        )
    with pytest.raises(ValueError, match="no position layer|has none"):
        TrainConfig(arch="unet", position_lr_scale=10.0)
