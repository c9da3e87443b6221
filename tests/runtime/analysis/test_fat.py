"""Fat per muscle and side: Dixon FF against the phantom's truth, the T1w IMAT estimate against a
controlled two-class mixture and (as a correlation) against the phantom's true FF."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from limbseg_rt.runtime.analysis.fat import eroded_labels
from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse, analyse_scan
from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.phantom.generate import canonical_affine

TABLE = default_label_table()


def _run(ph, **kw):
    return analyse(
        ph.labels,
        ph.image,
        ph.spacing,
        canonical_affine(ph.labels.shape, ph.spacing),
        float(np.prod(ph.spacing)),
        TABLE,
        AnalysisOptions(clean=False, **kw),
    )


def _truth(ph, sides, ff, index, side, erode=0):
    lab = eroded_labels(ph.labels, erode) if erode else ph.labels
    sel = (lab == index) & (sides == (1 if side == "R" else 2))
    return float(ff[sel].mean()), float(np.median(ff[sel]))


@pytest.mark.parametrize("erode", [0, 1])
def test_dixon_ff_within_one_point_of_the_truth_on_true_labels(phantom7, erode):
    """Truth: the FF of each voxel's content (phantom fat and water under the same blur)."""
    d = phantom7
    an = _run(d["ph"], fat=d["fat"], water=d["water"], ff_erode=erode, imat=False)
    assert len(an.records) >= 70
    for r in an.records:
        mean, median = _truth(d["ph"], d["sides"], d["pv"], r.index, r.side, erode)
        assert abs(r.ff_mean - mean) < 0.01, (r.code, r.side, r.ff_mean, mean)
        assert abs(r.ff_median - median) < 0.01
        assert abs(r.ff_weighted - mean) < 0.02  # signal weighting differs from the plain mean
    assert an.fat_info["dixon"]["erode_voxels"] == erode and an.fat_info["imat"] is None


def test_an_ff_map_in_percent_gives_the_same_numbers(phantom7):
    d = phantom7
    a = _run(d["ph"], fat=d["fat"], water=d["water"], imat=False)
    ffmap = 100 * d["fat"] / np.maximum(d["fat"] + d["water"], 1e-6)
    b = _run(d["ph"], fat_fraction=ffmap, imat=False)
    for ra, rb in zip(a.records, b.records):
        assert rb.ff_mean == pytest.approx(ra.ff_mean, abs=1e-4)
        assert rb.ff_weighted == rb.ff_mean


def test_dixon_images_on_another_grid_are_refused(tmp_path, phantom7):
    from limbseg_rt.runtime.io.nifti import read_image

    ph = phantom7["ph"]
    aff = canonical_affine(ph.labels.shape, ph.spacing)
    nib.save(nib.Nifti1Image(ph.image.astype(np.int16), aff), tmp_path / "scan.nii.gz")
    nib.save(nib.Nifti1Image(phantom7["fat"], aff), tmp_path / "fat.nii.gz")
    shifted = aff.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(phantom7["water"], shifted), tmp_path / "water.nii.gz")
    canon, props = read_image(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError, match="not on the scan's grid"):
        analyse_scan(
            ph.labels,
            canon,
            props,
            TABLE,
            AnalysisOptions(clean=False, fat=tmp_path / "fat.nii.gz", water=tmp_path / "water.nii.gz"),
        )
    with pytest.raises(InputError, match="not found"):
        analyse_scan(ph.labels, canon, props, TABLE, AnalysisOptions(clean=False, fat_fraction=tmp_path / "no.nii.gz"))


def test_imat_recovers_a_controlled_two_class_mixture():
    """Muscles of known fat share f: I = (1 - f) M + f F, plus noise; references from the image."""
    rng = np.random.default_rng(3)
    nx, ny, nz = 120, 60, 10
    lab = np.zeros((nx, ny, nz), np.uint8)
    img = np.zeros((nx, ny, nz), np.float32)
    M, F = 300.0, 1000.0
    img[5:55, 5:55] = F  # left leg fat
    img[65:115, 5:55] = F  # right leg fat
    truths = {}
    for k, (x0, f) in enumerate(((10, 0.0), (25, 0.05), (70, 0.15), (85, 0.30))):
        c = k + 1
        lab[x0 : x0 + 12, 15:45] = c
        marb = rng.random((12, 30, nz)) < f  # marbling: a share f of voxels is fat
        img[x0 : x0 + 12, 15:45] = np.where(marb, F, M)
        truths[c] = float(marb.mean())
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    an = analyse(lab, img, (1.0, 1.0, 5.0), np.eye(4), 5.0, TABLE, AnalysisOptions(clean=False, imat_erode=0))
    got = {r.index: r.imat_percent / 100 for r in an.records}
    for c, t in truths.items():
        assert got[c] == pytest.approx(t, abs=0.02), (c, got[c], t)


def test_imat_estimate_follows_the_phantom_true_fat(phantom7):
    """Correlation across the 74 muscle-sides with the true FF of the voxels' content (what a
    perfect Dixon scan measures on the same eroded masks). Measured on this grid: r = 0.85 for this
    subject, 0.83-0.86 over seeds 5, 7, 13, 19, 34 (docs/analysis.md). The estimate also carries
    each muscle's own signal offset and the bias field, so it is not a fat fraction."""
    d = phantom7
    an = _run(d["ph"], imat_erode=1)
    est = np.array([r.imat_percent for r in an.records])
    true = np.array([_truth(d["ph"], d["sides"], d["pv"], r.index, r.side, 1)[0] for r in an.records])
    r = float(np.corrcoef(est, true)[0, 1])
    assert r >= 0.8, r
    assert "not a fat fraction" in an.fat_info["imat"]["note"]
