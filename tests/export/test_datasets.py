"""Datasets: NIfTI (nnU-Net layout), the authors' PNG layout and phantom subjects -> model slices."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

from limbseg_rt.export import datasets  # noqa: E402
from limbseg_rt.runtime.errors import InputError  # noqa: E402
from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices  # noqa: E402

HW = (32, 48)


def _volume(shape=(20, 24, 6), seed=0):
    """A RAS+ volume whose label is a function of position: label k lives in slab k of x."""
    rng = np.random.default_rng(seed)
    x, y, z = shape
    labels = np.zeros(shape, np.uint8)
    for k in range(1, 5):
        labels[4 * k - 2 : 4 * k, 4:20, :] = k
    image = (labels * 50.0 + rng.normal(0, 1, shape) + 100.0).astype(np.float32)
    image[0, 0, :] = np.arange(z) * 3.0  # distinct values per slice to trace the z order
    return image, labels


def _write_nnunet(root, case, image, labels, affine):
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{case}_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{case}.nii.gz")


def test_nifti_subject_reorients_to_ras_and_matches_runtime_preprocessing(tmp_path):
    image, labels = _volume()
    # Store the volume in LPI order (x, y, z all flipped) so the loader must reorient it.
    lpi = np.diag([-1.0, -1.0, -1.0, 1.0])
    _write_nnunet(tmp_path, "case01", image[::-1, ::-1, ::-1].copy(), labels[::-1, ::-1, ::-1].copy(), lpi)
    cases = datasets.nnunet_cases(tmp_path)
    assert [c[0] for c in cases] == ["case01"]
    subj = datasets.nifti_subject(cases[0][1], cases[0][2], name="case01", input_hw=HW)

    assert subj.images.shape == (6, 1, *HW) and subj.images.dtype == np.float32
    assert subj.labels.shape == (6, *HW) and subj.labels.dtype == np.uint8
    lo, hi = intensity_window(image)
    expected = preprocess_slices(np.moveaxis(image, 2, 0), lo, hi, HW)
    np.testing.assert_array_equal(subj.images, expected)
    # z = 0 is the most inferior slice (ankle end): its position is 1, the top slice 1/6.
    np.testing.assert_allclose(subj.positions, np.arange(6, 0, -1) / 6, rtol=1e-6)
    # Label slab k sits at rows (4k-2 .. 4k) of 20 -> rows scaled by 32/20 of the resized slice.
    assert set(np.unique(subj.labels)) == {0, 1, 2, 3, 4}
    assert subj.labels[0, int(2.5 * 32 / 20), 20] == 1


def test_dataset_items_and_batches_have_the_documented_types(tmp_path):
    image, labels = _volume()
    a = datasets.subject_from_volume("a", image, labels, input_hw=HW)
    b = datasets.subject_from_volume("b", image * 2, labels, input_hw=HW, max_slices=3)
    ds = datasets.SliceDataset([a, b])
    assert len(ds) == 9 and ds.subject_ranges == ((0, 6), (6, 9))
    img, lab, pos = ds[7]
    assert img.shape == (1, *HW) and img.dtype == torch.float32
    assert lab.shape == HW and lab.dtype == torch.int64
    assert pos.ndim == 0 and pos.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # Subsampling keeps the full volume's positions of the slices kept (first, one mid, last).
    np.testing.assert_allclose(b.positions, [1.0, 4 / 6, 1 / 6], rtol=1e-6)  # z = 0, 2, 5
    bi, bl, bp = ds.batch(np.array([0, 8]))
    assert bi.shape == (2, 1, *HW) and bl.dtype == torch.int64 and bp.shape == (2,)


def test_nifti_label_errors_are_reported(tmp_path):
    image, labels = _volume()
    bad = labels.astype(np.int16)
    bad[0, 0, 0] = 40
    _write_nnunet(tmp_path, "c", image, bad, np.eye(4))
    ((case, img, lab),) = datasets.nnunet_cases(tmp_path)
    with pytest.raises(InputError, match="0..37"):
        datasets.nifti_subject(img, lab)
    _write_nnunet(tmp_path, "c", image, labels[:, :, :5].copy(), np.eye(4))
    with pytest.raises(InputError, match="grid"):
        datasets.nifti_subject(img, lab)
    with pytest.raises(InputError, match="imagesTr"):
        datasets.nnunet_cases(tmp_path / "imagesTr")


def test_png_layout_positions_and_masks(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    image, labels = _volume(shape=(20, 24, 4))
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    for n in range(1, 5):  # n counts from the proximal end, so PNG n = 1 is the top slice
        Image.fromarray(pixels[:, :, 4 - n]).save(tmp_path / f"subj_{n}.png")
        Image.fromarray(labels[:, :, 4 - n]).save(tmp_path / f"subj_{n}_mask.png")
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "other_7.png")
    Image.fromarray(labels[:, :, 0]).save(tmp_path / "other_7_mask.png")

    files = datasets.png_subject_files(tmp_path)
    assert list(files) == ["other", "subj"] and [f[0] for f in files["subj"]] == [1, 2, 3, 4]
    subj = datasets.png_subject("subj", files["subj"], input_hw=HW)
    np.testing.assert_allclose(subj.positions, [0.25, 0.5, 0.75, 1.0])
    lo, hi = intensity_window(pixels.astype(np.float32))
    expected = preprocess_slices(np.moveaxis(pixels[:, :, ::-1], 2, 0), lo, hi, HW)
    np.testing.assert_array_equal(subj.images, expected)
    assert subj.labels[0, int(2.5 * 32 / 20), 20] == 1
    assert datasets.png_subject("other", files["other"], input_hw=HW).positions.tolist() == [1.0]

    (tmp_path / "lonely_3.png").write_bytes((tmp_path / "subj_1.png").read_bytes())
    with pytest.raises(InputError, match="missing its mask"):
        datasets.png_subject_files(tmp_path)


def test_phantom_subject_is_sliced_like_a_canonical_volume():
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    ph = phantom_arrays(3, slices=8, shape=(48, 40))
    subj = datasets.phantom_subject(3, slices=8, shape=(48, 40), input_hw=HW)
    assert len(subj) == ph.image.shape[2] == 8
    lo, hi = intensity_window(ph.image)
    np.testing.assert_array_equal(subj.images, preprocess_slices(np.moveaxis(ph.image, 2, 0), lo, hi, HW))
    assert subj.positions[0] == pytest.approx(1.0) and subj.positions[-1] == pytest.approx(1 / 8)
    assert subj.labels.max() > 0 and subj.labels.max() < 38
