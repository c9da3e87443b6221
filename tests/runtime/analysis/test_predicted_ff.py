"""Dixon FF with the bundled UNet's labels instead of the truth (slow: a full 256 x 256 x 150 phantom)."""

from __future__ import annotations

import numpy as np
import pytest

from limbseg_rt.runtime.analysis.fat import eroded_labels


@pytest.mark.slow
def test_dixon_ff_with_predicted_labels_is_close_to_the_truth(tmp_path):
    import nibabel as nib

    from limbseg_rt.runtime.analysis.measures import AnalysisOptions
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.io.nifti import read_image
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    imgs = make_dixon_phantom(7, orientation="LPS")
    for k, img in imgs.items():
        nib.save(img, tmp_path / f"{k}.nii.gz")
    with Segmenter("unet", provider="cpu") as seg:
        res = seg.segment(
            tmp_path / "image.nii.gz",
            analysis=AnalysisOptions(fat=tmp_path / "fat.nii.gz", water=tmp_path / "water.nii.gz", ff_erode=1),
        )
    lab = read_image(tmp_path / "labels.nii.gz")[0].astype(np.uint8)
    sides = read_image(tmp_path / "sides.nii.gz")[0].astype(np.uint8)
    pv = read_image(tmp_path / "ff.nii.gz")[0]
    le = eroded_labels(lab, 1)
    errs = []
    for r in res.report.analysis.records:
        truth = float(pv[(le == r.index) & (sides == (1 if r.side == "R" else 2))].mean())
        errs.append(abs(r.ff_mean - truth) * 100)
    errs = np.array(errs)
    # Measured (int8 UNet on ONNX Runtime CPU, clean-up on; benchmarks/predicted_ff.py): median 0.52,
    # 90th percentile 1.9, 72 of 74 within 3 points, worst 3.9 (obturator externus R) and 3.5
    # (gracilis L): border voxels the model misplaces. The "all within 3" is not reached.
    assert errs.size == 74
    assert float(np.median(errs)) < 1.0
    assert int((errs < 3.0).sum()) >= 72 and float(errs.max()) < 5.0
