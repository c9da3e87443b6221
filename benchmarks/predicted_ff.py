"""Dixon FF with predicted labels against the truth (docs/analysis.md, "Dixon").

The setup of ``tests/runtime/analysis/test_predicted_ff.py`` (phantom seed 7, 256 x 256 x 150,
stored LPS, its Dixon images), with the options varied: the clean-up on or off, ``--ff-erode`` 0-3,
the mean / median / signal-weighted FF, and each bundled model. The truth of a muscle-side is the
mean true voxel FF on its true mask eroded once in-plane (what a noise-free Dixon scan gives there).

    python benchmarks/predicted_ff.py [--models unet-int8 unet-fp32 sc-unet-int8 attention-unet-int8]

Prints, per variant, the median and 90th percentile of the absolute error (FF points), how many of
the 74 muscle-sides are within 3 points, and the worst ones. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _errors(records, stat, truth_ff, truth_lab, truth_sides):
    errs, names = [], []
    for r in records:
        mask = (truth_lab == r.index) & (truth_sides == (1 if r.side == "R" else 2))
        errs.append(abs(getattr(r, stat) - float(truth_ff[mask].mean())) * 100.0)
        names.append(f"{r.code} {r.side}")
    return np.array(errs), names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["unet-int8", "unet-fp32", "sc-unet-int8", "attention-unet-int8"])
    args = p.parse_args(argv)

    import nibabel as nib

    from limbseg_rt.runtime.analysis.fat import eroded_labels
    from limbseg_rt.runtime.analysis.measures import AnalysisOptions, analyse_scan
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.io.nifti import read_image
    from limbseg_rt.runtime.model.bundled import MODELS_DIR
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for k, img in make_dixon_phantom(7, orientation="LPS").items():
            nib.save(img, d / f"{k}.nii.gz")
        canon, props = read_image(d / "image.nii.gz")
        lab = read_image(d / "labels.nii.gz")[0].astype(np.uint8)
        sides = read_image(d / "sides.nii.gz")[0].astype(np.uint8)
        ff = read_image(d / "ff.nii.gz")[0]
        truth_lab = eroded_labels(lab, 1)
        for model in args.models:
            with Segmenter(MODELS_DIR / f"{model}.onnx", provider="cpu") as seg:
                pred_img = seg.segment(d / "image.nii.gz").labels
                table = seg.metadata.labels
            nib.save(pred_img, d / "pred.nii.gz")
            pred = read_image(d / "pred.nii.gz")[0].astype(np.uint8)  # canonical, like the scan
            variants = [(True, e) for e in (0, 1, 2, 3)] + [(False, 1)] if model == args.models[0] else [(True, 1)]
            for clean, erode in variants:
                opts = AnalysisOptions(
                    clean=clean, fat=d / "fat.nii.gz", water=d / "water.nii.gz", ff_erode=erode, imat=False
                )
                an = analyse_scan(pred, canon, props, table, opts)
                for stat in ("ff_mean", "ff_weighted", "ff_median"):
                    errs, names = _errors(an.records, stat, ff, truth_lab, sides)
                    worst = np.argsort(errs)[::-1][:3]
                    print(
                        f"{model} clean-up {'on' if clean else 'off'} --ff-erode {erode} {stat}: "
                        f"median {np.median(errs):.2f}, p90 {np.percentile(errs, 90):.2f}, "
                        f"{int((errs < 3).sum())} of {errs.size} within 3 points; worst "
                        + ", ".join(f"{names[i]} {errs[i]:.2f}" for i in worst),
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
