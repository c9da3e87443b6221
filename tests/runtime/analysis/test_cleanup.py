"""3D clean-up: the 10 % rule per muscle and side, against connected components counted by scipy."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from limbseg_rt.runtime.analysis.cleanup import MissingExtraError, clean_labels
from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse
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
    res = clean_labels(lab, sides, near_mm=-1)  # the size rule alone
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
    res2 = clean_labels(lab, sides, min_fraction=0.10, near_mm=-1)
    assert int((res2.labels == 3).sum()) == int(sizes[sizes >= 0.10 * sizes.max()].sum())


def test_a_small_piece_next_to_its_muscle_stays():
    """The 27-voxel island lies 3 voxels (centre to centre) from the main piece along x."""
    lab, sides = _scene()
    near = clean_labels(lab, sides, near_mm=10.0, spacing=(1.0, 1.0, 1.0))  # 3 mm away: kept
    far = clean_labels(lab, sides, near_mm=10.0, spacing=(4.0, 4.0, 4.0))  # 12 mm away: removed
    assert near.removed == {} and int((near.labels == 4).sum()) == int((lab == 4).sum())
    assert far.removed == {(4, 1): 27}


def test_analysis_can_leave_the_labels_alone():
    lab, sides = _scene()
    img = np.where(lab > 0, 300.0, 0).astype(np.float32)
    img[:, :, :] += 1000.0 * (lab == 0)
    sp = (4.0, 4.0, 4.0)
    on = analyse(lab, img, sp, np.eye(4), 64.0, TABLE, AnalysisOptions(imat=False))
    off = analyse(lab, img, sp, np.eye(4), 64.0, TABLE, AnalysisOptions(imat=False, clean=False))
    assert off.cleanup == {"enabled": False} and np.array_equal(off.labels, lab)
    assert on.cleanup["enabled"] and on.cleanup["voxels_removed"] > 0 and int(on.labels.sum()) < int(lab.sum())


def test_a_missing_library_says_what_to_install(monkeypatch):
    real = builtins.__import__

    def no_cc3d(name, *a, **k):
        if name == "cc3d":
            raise ImportError("no cc3d")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cc3d)
    lab, sides = _scene()
    with pytest.raises(MissingExtraError, match=r'pip install "limbseg-rt\[analysis\]"') as exc:
        clean_labels(lab, sides)
    assert exc.value.exit_code == 2
