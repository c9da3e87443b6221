"""3D clean-up: the size, volume and chained-distance rules per muscle and side, against connected
components counted by scipy and nearest distances measured by brute force."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

from limbseg_rt.runtime.analysis.cleanup import CleanupDependencyError, clean_labels, nearest_distance_mm
from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse
from limbseg_rt.runtime.errors import EXIT_DEPENDENCY, MissingDependencyError
from limbseg_rt.runtime.model.labels import default_label_table

TABLE = default_label_table()


def _scene():
    lab = np.zeros((60, 30, 20), np.uint8)
    sides = np.zeros_like(lab)
    sides[30:] = 1
    sides[:30] = 2
    lab[35:50, 5:20, 2:18] = 4  # right leg: the muscle, 3600 voxels
    lab[52:55, 25:28, 5:8] = 4  # a right island of 27 voxels (< 10 %): removed
    lab[5:20, 5:20, 2:18] = 4  # left leg copy, same size: kept (its own side)
    lab[22:27, 22:28, 0:14] = 4  # a left piece of 420 voxels (> 10 % of 3600): kept
    lab[40:42, 25:27, 19:20] = 9  # a muscle that is only a tiny piece: its largest, kept
    return lab, sides


def test_small_islands_go_both_legs_stay():
    lab, sides = _scene()
    res = clean_labels(lab, sides, near_mm=-1)  # the size rules alone (27 voxels of 1 mm^3 < 0.5 mL)
    assert int((res.labels == 4).sum()) == int((lab == 4).sum()) - 27
    assert res.removed == {(4, 1): 27}
    assert res.kept_components == {(4, 1): 1, (4, 2): 2, (9, 1): 1}
    assert int((res.labels == 9).sum()) == 4
    assert int((lab == 4).sum()) == 3600 * 2 + 27 + 420  # the input is not changed


def test_components_match_scipy_labelling():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    lab = (rng.random((40, 40, 12)) < 0.08).astype(np.uint8) * 3
    lab[5:30, 5:30, 2:10] = 3
    sides = np.where(lab > 0, 1, 0).astype(np.uint8)
    res = clean_labels(lab, sides, min_fraction=0.0, near_mm=-1)
    comps, n = ndimage.label(lab == 3, structure=np.ones((3, 3, 3)))
    assert res.kept_components[(3, 1)] == n
    sizes = np.bincount(comps.ravel())[1:]
    res2 = clean_labels(lab, sides, min_fraction=0.10, min_ml=math.inf, near_mm=-1)
    assert int((res2.labels == 3).sum()) == int(sizes[sizes >= 0.10 * sizes.max()].sum())


def test_a_small_piece_next_to_its_muscle_stays():
    """The 27-voxel island's nearest voxel lies 3 voxels from the main piece (x 49 -> 52)."""
    lab, sides = _scene()
    near = clean_labels(lab, sides, near_mm=10.0, spacing=(1.0, 1.0, 1.0))  # 3 mm away: kept
    far = clean_labels(lab, sides, near_mm=10.0, min_ml=math.inf, spacing=(4.0, 4.0, 4.0))  # 12 mm away: removed
    assert near.removed == {} and int((near.labels == 4).sum()) == int((lab == 4).sum())
    assert far.removed == {(4, 1): 27} and far.removed_components == {(4, 1): 1}
    # Its 27 voxels of 64 mm^3 are 1.7 mL: at or above min_ml it stays wherever it lies.
    big = clean_labels(lab, sides, near_mm=10.0, min_ml=1.5, spacing=(4.0, 4.0, 4.0))
    assert big.removed == {}


def test_pieces_chained_to_kept_ones_stay():
    """A row of small fragments 15 mm apart: each lies within 20 mm of the previous one only, so
    the chain keeps all of them; an island as small but 40 mm from everything goes."""
    lab = np.zeros((40, 20, 60), np.uint8)
    sides = np.ones_like(lab)
    lab[5:15, 5:15, 0:20] = 7  # the muscle: 2000 voxels of 1 x 1 x 5 mm = 10 mL
    for k in range(4):  # fragments at z = 23, 26, 29, 32 (15 mm apart along z), 4 voxels each
        lab[8:10, 8:10, 23 + 3 * k] = 7
    lab[30:32, 8:10, 10] = 7  # 15 voxels in x away from the muscle's x 14: 16 mm away, kept directly
    lab[36:38, 17:19, 45] = 7  # the far island: 40+ mm from everything
    sp = (1.0, 1.0, 5.0)
    res = clean_labels(lab, sides, near_mm=20.0, spacing=sp)
    assert res.removed == {(7, 1): 4} and res.kept_components == {(7, 1): 6}
    assert int((res.labels[36:38, 17:19, 45] == 7).sum()) == 0
    assert int((res.labels[8:10, 8:10, 32] == 7).sum()) == 4  # the end of the chain, 60 mm from the muscle
    # Without the chain (the fragments measured against the muscle only) the row would not survive:
    short = clean_labels(lab, sides, near_mm=14.0, spacing=sp)
    assert int((short.labels[8:10, 8:10, 23:33] == 7).sum()) == 0


def test_nearest_distance_is_exact():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 30, (50, 3))
    b = rng.integers(0, 30, (2000, 3)) + np.array([40, 0, 0])
    sp = (0.8, 1.3, 4.0)
    brute = min(float(np.sqrt((((p - q) * sp) ** 2).sum())) for p in a for q in b)
    assert nearest_distance_mm(a, b, sp) == pytest.approx(brute, rel=1e-12)
    assert nearest_distance_mm(a[:0], b, sp) == math.inf


def test_distances_match_scipy_on_random_islands():
    """The kept set equals what exact Euclidean distance transforms (scipy) give for the same rule."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    lab = np.zeros((50, 50, 20), np.uint8)
    lab[10:30, 10:30, 5:15] = 2  # 4000 voxels
    isl = rng.random(lab.shape) < 0.002
    lab[isl & (lab == 0)] = 2
    sides = np.where(lab > 0, 1, 0).astype(np.uint8)
    sp = (1.5, 1.5, 3.0)
    res = clean_labels(lab, sides, near_mm=12.0, min_ml=math.inf, spacing=sp)
    comps, n = ndimage.label(lab == 2, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comps.ravel())
    kept = {int(np.argmax(sizes[1:]) + 1)}
    changed = True
    while changed:  # the chained rule, with scipy's exact distance transform of the kept set
        changed = False
        dist = ndimage.distance_transform_edt(~np.isin(comps, list(kept)), sampling=sp)
        for c in range(1, n + 1):
            if c not in kept and dist[comps == c].min() <= 12.0:
                kept.add(c)
                changed = True
    expect = np.where(np.isin(comps, list(kept)), 2, 0)
    assert 0 < len(kept) < n and np.array_equal(res.labels, expect)


def test_analysis_can_leave_the_labels_alone():
    lab, sides = _scene()
    img = np.where(lab > 0, 300.0, 0).astype(np.float32)
    img[:, :, :] += 1000.0 * (lab == 0)
    sp = (2.0, 2.0, 6.0)  # the 27-voxel island lies 6 mm from its muscle: kept
    far = lab.copy()
    far[58:60, 0:2, 0:1] = 4  # a 4-voxel (0.1 mL) right island 23 mm from the muscle: removed
    on = analyse(far, img, sp, np.eye(4), 24.0, TABLE, AnalysisOptions(imat=False))
    off = analyse(far, img, sp, np.eye(4), 24.0, TABLE, AnalysisOptions(imat=False, clean=False))
    assert off.cleanup == {"enabled": False} and np.array_equal(off.labels, far)
    assert on.cleanup["enabled"] and on.cleanup["voxels_removed"] == 4 and on.cleanup["components_removed"] == 1
    assert (on.cleanup["min_fraction"], on.cleanup["min_ml"], on.cleanup["near_mm"]) == (0.1, 0.5, 20.0)
    assert "0.5 mL" in on.cleanup["rule"] and "20 mm" in on.cleanup["rule"]
    assert int(on.labels.sum()) == int(far.sum()) - 16


def test_a_missing_library_says_what_to_install(monkeypatch):
    real = builtins.__import__

    def no_cc3d(name, *a, **k):
        if name == "cc3d":
            raise ImportError("no cc3d")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cc3d)
    lab, sides = _scene()
    with pytest.raises(CleanupDependencyError, match=r'pip install "limbseg-rt\[analysis\]"') as exc:
        clean_labels(lab, sides)
    assert isinstance(exc.value, MissingDependencyError) and exc.value.exit_code == EXIT_DEPENDENCY == 12
    assert "--no-cleanup" in str(exc.value)


@pytest.mark.parametrize("scan", ["both legs", "right leg only", "left leg only", "cut at mid-thigh"])
def test_true_anatomy_survives_on_one_leg_and_cut_off_scans(phantom7, scan):
    """The default rule on the phantom's true labels: every muscle-side present keeps its largest
    piece and almost all its voxels, whether the scan has one leg or stops at mid-thigh."""
    from limbseg_rt.runtime.analysis.sides import assign_sides

    ph = phantom7["ph"]
    img, lab = ph.image.copy(), ph.labels.copy()
    nx, nz = lab.shape[0], lab.shape[2]
    if scan == "right leg only":
        img[: nx // 2 - 1], lab[: nx // 2 - 1] = 0, 0
    elif scan == "left leg only":
        img[nx // 2 + 1 :], lab[nx // 2 + 1 :] = 0, 0
    elif scan == "cut at mid-thigh":  # only the slices from mid-thigh up (z = 0 is the ankle end)
        img, lab = img[:, :, nz // 2 :].copy(), lab[:, :, nz // 2 :].copy()
    sides = assign_sides(lab, img, ph.spacing, TABLE).sides
    res = clean_labels(lab, sides, spacing=ph.spacing)
    compound_before = np.unique(lab.astype(np.int64) * 4 + sides)[1:]
    compound_after = np.unique(res.labels.astype(np.int64) * 4 + np.where(res.labels > 0, sides, 0))[1:]
    assert compound_before.size >= 30 and np.array_equal(compound_before, compound_after), "a muscle-side went"
    assert sum(res.removed.values()) <= 0.001 * int(np.count_nonzero(lab))
