"""The synthetic phantom: determinism, geometry in every orientation, anatomy by region, intensities."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom import generate as P

# Small but anatomically complete: 442 mm FOV like the default, coarser voxels, fewer slices.
SMALL = dict(slices=40, shape=(96, 88), spacing=(4.6, 5.0, 20.0))

TABLE = default_label_table()
INDEX = {lab.code: lab.index for lab in TABLE.muscles}
HIP = ("GMAX", "GMED", "GMIN", "PIR", "GEM", "OI", "OE", "QF", "ILI", "PSO", "PEC", "TFL")
THIGH = ("VL", "VM", "VI", "RF", "ADB", "ADL", "ADM", "BFS")
CALF = ("GM", "GL", "SOL", "TA", "TP", "EDL", "EHL", "FDL", "FHL", "PL", "PB", "POP")


@pytest.fixture(scope="module")
def default_phantom():
    return P.phantom_arrays(11)


@pytest.fixture(scope="module")
def small_images():
    return {code: P.make_phantom(4, orientation=code, **SMALL) for code in ("RAS", "LPS", "ASL", "IRP")}


def test_same_seed_same_subject_other_seed_differs():
    a = P.phantom_arrays(5, **SMALL)
    b = P.phantom_arrays(5, **SMALL)
    c = P.phantom_arrays(6, **SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.subject == b.subject
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_shapes_dtypes_and_spacing():
    ph = P.phantom_arrays(2, **SMALL)
    assert ph.image.shape == ph.labels.shape == ph.tissue.shape == (96, 88, 40)
    assert ph.image.dtype == np.float32 and ph.labels.dtype == np.uint8
    assert ph.spacing == (4.6, 5.0, 20.0)
    assert ph.labels.max() <= 37
    # scanner-like integers that fit int16
    assert np.all(ph.image == np.round(ph.image)) and ph.image.min() >= 0 and ph.image.max() <= 32767


@pytest.mark.parametrize("code", ["RAS", "LPS", "ASL", "IRP"])
def test_nifti_geometry(small_images, code):
    img, lab = small_images[code]
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    for im in (img, lab):
        assert "".join(nib.aff2axcodes(im.affine)) == code
        assert int(im.header["qform_code"]) == 1 and int(im.header["sform_code"]) == 1
        np.testing.assert_allclose(im.get_qform(), im.get_sform(), atol=1e-4)
        zooms = dict(zip("".join(nib.aff2axcodes(im.affine)), im.header.get_zooms()))
        assert zooms[code[[c in "LR" for c in code].index(True)]] == pytest.approx(4.6)
        assert zooms[code[[c in "SI" for c in code].index(True)]] == pytest.approx(20.0)
    np.testing.assert_array_equal(img.affine, lab.affine)


@pytest.mark.parametrize("code", ["LPS", "ASL", "IRP"])
def test_same_world_point_same_label_in_every_orientation(small_images, code):
    ras_img, ras_lab = small_images["RAS"]
    img, lab = small_images[code]
    ras = np.asarray(ras_lab.dataobj)
    other = np.asarray(lab.dataobj)
    other_img = np.asarray(img.dataobj)
    rng = np.random.default_rng(0)
    fg = np.argwhere(ras > 0)
    ijk = np.concatenate([fg[rng.choice(len(fg), 500)], rng.integers(0, ras.shape, size=(500, 3))])
    world = nib.affines.apply_affine(ras_lab.affine, ijk)
    ijk2 = np.rint(nib.affines.apply_affine(np.linalg.inv(lab.affine), world)).astype(int)
    np.testing.assert_array_equal(other[tuple(ijk2.T)], ras[tuple(ijk.T)])
    np.testing.assert_array_equal(other_img[tuple(ijk2.T)], np.asarray(ras_img.dataobj)[tuple(ijk.T)])
    # and as a whole: back to canonical gives the RAS arrays and affine
    canon = nib.as_closest_canonical(lab)
    np.testing.assert_array_equal(np.asarray(canon.dataobj), ras)
    np.testing.assert_allclose(canon.affine, ras_lab.affine)


def test_lps_stores_the_ras_arrays_flipped_in_x_and_y(small_images):
    ras = np.asarray(small_images["RAS"][1].dataobj)
    lps = np.asarray(small_images["LPS"][1].dataobj)
    np.testing.assert_array_equal(lps, ras[::-1, ::-1, :])


def test_bad_arguments_raise_input_error():
    for code in ("RAX", "RRS", "RA", "rasl"):
        with pytest.raises(InputError):
            P.make_phantom(1, orientation=code, **SMALL)
    with pytest.raises(InputError):
        P.phantom_arrays(1, slices=1)
    with pytest.raises(InputError):
        P.phantom_arrays(1, spacing=(1.0, 0.0, 5.0))


def test_every_muscle_present_in_both_legs_and_never_tiny(default_phantom):
    lab = default_phantom.labels
    x_half = lab.shape[0] // 2
    for code, idx in INDEX.items():
        mask = lab == idx
        per_slice = mask.sum(axis=(0, 1))
        present = np.nonzero(per_slice)[0]
        assert present.size >= 4, f"{code} present in only {present.size} slices"
        assert mask[:x_half].any() and mask[x_half:].any(), f"{code} missing in one leg"
        # contiguous along the limb, and a few voxels across wherever present (per leg)
        assert present.max() - present.min() + 1 == present.size, f"{code} has gaps along the limb"
        for half in (mask[:x_half], mask[x_half:]):
            counts = half.sum(axis=(0, 1))[present]
            assert counts.min() >= 6, f"{code}: only {counts.min()} voxels in a slice"


def test_muscles_sit_in_their_region(default_phantom):
    lab = default_phantom.labels
    n_z = lab.shape[2]
    zs = {code: np.nonzero((lab == idx).any(axis=(0, 1)))[0] for code, idx in INDEX.items()}
    knee = 0.45 * n_z  # z counted from the ankle: the knee lies ~45 % up the scan
    for code in HIP:
        assert zs[code].min() > 0.75 * n_z, f"hip muscle {code} reaches z={zs[code].min()}"
    for code in THIGH:
        assert zs[code].min() > knee and zs[code].max() < 0.96 * n_z, f"thigh muscle {code} out of the thigh"
    for code in CALF:
        assert zs[code].max() < 0.52 * n_z, f"calf muscle {code} reaches z={zs[code].max()}"
    # the slice at mid-thigh has no calf muscle and the mid-calf slice no thigh muscle
    mid_thigh, mid_calf = lab[:, :, int(0.7 * n_z)], lab[:, :, int(0.25 * n_z)]
    assert not np.isin(mid_thigh, [INDEX[c] for c in CALF]).any()
    assert not np.isin(mid_calf, [INDEX[c] for c in THIGH + HIP]).any()


def test_intensities_look_t1_weighted(default_phantom):
    img, tis = default_phantom.image, default_phantom.tissue
    med = {name: float(np.median(img[tis == i])) for i, name in enumerate(P.TISSUE_NAMES) if (tis == i).any()}
    assert med["fat"] > 2.0 * med["muscle"]
    # thick cortex (femoral/tibial shaft: voxels whose 4 in-plane neighbours are cortex too) is dark;
    # thin cortex is lifted by partial volume, as on a scanner
    cortex = tis == P.TISSUE_NAMES.index("cortical bone")
    core = cortex.copy()
    core[1:-1, 1:-1] &= cortex[:-2, 1:-1] & cortex[2:, 1:-1] & cortex[1:-1, :-2] & cortex[1:-1, 2:]
    assert core.sum() > 1000
    assert np.median(img[core]) < 0.5 * med["muscle"]
    assert med["yellow marrow"] > 1.5 * med["muscle"]
    assert med["air"] < 0.1 * med["fat"]
    # muscles share one intensity range: within a slice no muscle stands out by its median alone
    lab = default_phantom.labels
    for z in range(5, lab.shape[2], 12):
        present = [i for i in np.unique(lab[:, :, z]) if i and (lab[:, :, z] == i).sum() > 30]
        if len(present) < 3:
            continue
        medians = np.array([np.median(img[:, :, z][lab[:, :, z] == i]) for i in present])
        fat_z = np.median(img[:, :, z][tis[:, :, z] == P.TISSUE_NAMES.index("fat")])
        # spread between muscles is small next to the muscle-fat contrast
        spread = medians.max() - medians.min()
        assert spread < 0.6 * (fat_z - medians.mean()), f"slice {z}: muscle medians {medians}, fat {fat_z}"
        assert medians.max() < 0.75 * fat_z, f"slice {z}: a muscle is as bright as fat"


def test_cli_writes_both_files(tmp_path):
    from limbseg_rt.cli import main

    out, lab = tmp_path / "ph.nii.gz", tmp_path / "lab.nii.gz"
    rc = main(
        [
            "phantom",
            str(out),
            "--labels",
            str(lab),
            "--seed",
            "3",
            "--slices",
            "12",
            "--shape",
            "64",
            "64",
            "--spacing",
            "7",
            "7",
            "60",
            "--orientation",
            "LPS",
        ]
    )
    assert rc == 0
    img = nib.load(str(out))
    assert img.shape == (64, 64, 12) and "".join(nib.aff2axcodes(img.affine)) == "LPS"
    assert nib.load(str(lab)).get_data_dtype() == np.uint8
    assert main(["phantom", str(out), "--labels", str(out), "--seed", "3"]) == 8
