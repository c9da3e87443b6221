"""``limbseg-rt demo``: make a synthetic thigh scan with known muscles, segment it, score it.

Works from a fresh clone: the phantom is generated (no data download) and the bundled models run
on the CPU. Prints the same volume table as ``run`` and, because the phantom has ground truth,
the mean Dice similarity coefficient (DSC) against it.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from limbseg_rt.cli.run import add_engine_arguments

    p = subparsers.add_parser(
        "demo",
        help="segment a generated phantom scan and compare with its ground truth",
        description="Generate a phantom lower-limb scan (with ground-truth labels), segment it with "
        "the same code path as 'run', print the muscle volumes and the mean DSC against the truth.",
    )
    p.add_argument(
        "--out-dir", default="limbseg-demo", help="folder for the phantom and the results (default: ./limbseg-demo)"
    )
    p.add_argument("--seed", type=int, default=0, help="phantom random seed (default: 0)")
    p.add_argument("--slices", type=int, default=60, help="axial slices of the phantom, hip to ankle (default: 60)")
    p.add_argument(
        "--no-qc",
        dest="qc",
        action="store_false",
        help="skip the QC overlays and HTML report (written by default when Pillow is installed)",
    )
    add_engine_arguments(p)
    return p


def mean_dice(pred, truth, table) -> tuple[float, int]:
    """Mean DSC over the muscles present in the truth or the prediction, and how many there were."""
    from limbseg_rt.runtime.report.metrics import label_counts

    counts = label_counts(pred, truth)
    return counts.mean_dice(range(1, min(len(table), len(counts))))


def main(args) -> int:
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    from limbseg_rt.cli._progress import ProgressBar
    from limbseg_rt.cli.run import render_summary, segmenter_kwargs_from_args
    from limbseg_rt.runtime.api import Segmenter, segment_file
    from limbseg_rt.runtime.errors import EXIT_EMPTY, EXIT_OK, InputError, OutputError
    from limbseg_rt.runtime.io.outputs import OutputSet
    from limbseg_rt.runtime.phantom.generate import make_phantom

    if args.slices < 2:
        raise InputError("the demo phantom needs at least 2 slices")
    out_dir = Path(args.out_dir)
    qc = bool(getattr(args, "qc", True))
    if qc:
        from limbseg_rt.runtime.qc.write import QCDependencyError, check_available

        try:
            check_available()
        except QCDependencyError as exc:
            print(f"limbseg-rt: note: no QC pictures: {exc}")
            qc = False
    # Load the model first: a missing model fails before anything is written.
    with Segmenter(**segmenter_kwargs_from_args(args)) as seg:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the demo folder {out_dir}: {exc.strerror or exc}") from None
        image, truth = make_phantom(args.seed, slices=args.slices)
        scan = out_dir / f"phantom_seed{args.seed}.nii.gz"
        truth_path = out_dir / f"phantom_seed{args.seed}_truth.nii.gz"
        with OutputSet() as outs:
            for key, path, img in (("scan", scan, image), ("truth", truth_path, truth)):
                outs.add(key, path, what="phantom file")
                with outs.writing(key):
                    nib.save(img, str(outs.temp(key)))
            outs.commit()
        print(f"phantom scan {scan} (ground truth {truth_path.name}), shape {tuple(image.shape)}")
        with ProgressBar("segmenting") as bar:
            result, written = segment_file(scan, progress=bar.update, segmenter=seg, qc=qc)
    render_summary(result, written)
    pred = np.asarray(result.labels.dataobj)
    score, n = mean_dice(pred, np.asarray(truth.dataobj), result.table)
    print(f"mean DSC vs ground truth: {score:.3f} over {n} muscles")
    return EXIT_EMPTY if result.empty else EXIT_OK
