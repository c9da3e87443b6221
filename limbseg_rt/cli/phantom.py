"""``limbseg-rt phantom``: write a synthetic lower-limb T1w MRI subject and its muscle labels (NIfTI)."""

from __future__ import annotations

import argparse


def _axis_code(text: str) -> str:
    from limbseg_rt.runtime.io.geometry import ornt_from_axcodes

    try:
        ornt_from_axcodes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one letter of each pair L/R, A/P, S/I (e.g. RAS, LPS, ASL)"
        ) from None
    return text.upper()


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "phantom",
        help="write a synthetic hip-to-ankle T1w phantom and its 37-muscle labels",
        description="Write a synthetic T1-weighted lower-limb MRI (both legs, hip to ankle) and its "
        "ground-truth labels. The same --seed always gives the same subject.",
    )
    p.add_argument("out", help="image to write (.nii or .nii.gz), int16")
    p.add_argument("--labels", required=True, help="label image to write (.nii or .nii.gz), uint8")
    p.add_argument("--seed", type=int, required=True, help="subject seed")
    p.add_argument("--slices", type=int, default=150, help="axial slices, hip to ankle (default 150)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=[256, 256],
        metavar=("H", "W"),
        help="in-plane size: voxels along x (right-left) and y (anterior-posterior); default 256 256",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default 1.75 1.75 5.0: a 448 mm field of view)",
    )
    p.add_argument(
        "--orientation",
        default="RAS",
        type=_axis_code,
        help="axis code of the stored arrays, e.g. RAS, LPS, LAS or a permutation like ASR (default RAS)",
    )
    p.add_argument(
        "--dicom",
        default=None,
        metavar="DIR",
        help="also write the image as a DICOM MR series into DIR (an empty or new folder; needs the dicom extra)",
    )
    p.add_argument(
        "--dixon",
        default=None,
        metavar="PREFIX",
        help="also write PREFIX_water.nii.gz, PREFIX_fat.nii.gz, PREFIX_ff.nii.gz (true voxel fat fraction) "
        "and PREFIX_sides.nii.gz (true side of each muscle voxel: 1 R, 2 L)",
    )
    return p


def main(args) -> int:
    from pathlib import Path

    import nibabel as nib

    from limbseg_rt.runtime.errors import OutputError
    from limbseg_rt.runtime.io.outputs import OutputSet
    from limbseg_rt.runtime.phantom.generate import DEFAULT_SPACING, make_phantom

    out_path, lab_path = Path(args.out), Path(args.labels)
    for path in (out_path, lab_path):
        if not path.name.lower().endswith((".nii", ".nii.gz")):
            raise OutputError(f"{path}: output must end in .nii or .nii.gz")
    dicom_dir = Path(args.dicom) if args.dicom else None
    if dicom_dir is not None and dicom_dir.exists() and (not dicom_dir.is_dir() or any(dicom_dir.iterdir())):
        raise OutputError(f"{dicom_dir}: --dicom needs an empty or new folder")
    spacing = tuple(args.spacing) if args.spacing else DEFAULT_SPACING
    with OutputSet() as outs:
        outs.add("image", out_path, what="phantom image")
        outs.add("labels", lab_path, what="phantom label file")
        if args.dixon:  # issue 19: Dixon water/fat, true FF and sides (opt-in: the default phantom is unchanged)
            for k in ("water", "fat", "ff", "sides"):
                outs.add(k, Path(f"{args.dixon}_{k}.nii.gz"), what=f"phantom {k} image")
        outs.check()
        if args.dixon:
            from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

            imgs = make_dixon_phantom(
                args.seed, slices=args.slices, shape=tuple(args.shape), spacing=spacing, orientation=args.orientation
            )
        else:
            imgs = dict(
                zip(
                    ("image", "labels"),
                    make_phantom(
                        args.seed,
                        slices=args.slices,
                        shape=tuple(args.shape),
                        spacing=spacing,
                        orientation=args.orientation,
                    ),
                )
            )
        image = imgs["image"]
        for key in outs.paths:
            with outs.writing(key):
                nib.save(imgs[key], str(outs.temp(key)))
        outs.commit()
    out, lab = out_path, lab_path
    if dicom_dir is not None:
        import numpy as np

        from limbseg_rt.runtime.io.dicom.write_series import write_mr_series

        dicom_dir.mkdir(parents=True, exist_ok=True)
        files = write_mr_series(
            np.asarray(image.dataobj), image.affine, dicom_dir, description=f"limbseg-rt phantom seed {args.seed}"
        )
        print(f"wrote {len(files)} DICOM files to {dicom_dir}")
    sx, sy, sz = spacing
    print(
        f"wrote {out} and {lab}: {image.shape[0]}x{image.shape[1]}x{image.shape[2]} voxels, "
        f"{sx:g}x{sy:g}x{sz:g} mm, orientation {''.join(nib.aff2axcodes(image.affine))}, seed {args.seed}"
    )
    return 0
