"""``limbseg-rt phantom``: write a synthetic lower-limb T1w MRI subject and its muscle labels (NIfTI)."""

from __future__ import annotations

import argparse


def _axis_code(text: str) -> str:
    code = text.upper()
    groups = ("LR", "AP", "SI")
    if len(code) != 3 or sorted(next((i for i, g in enumerate(groups) if c in g), -1) for c in code) != [0, 1, 2]:
        raise argparse.ArgumentTypeError(f"{text!r}: give one letter of each pair L/R, A/P, S/I (e.g. RAS, LPS, ASL)")
    return code


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
    p.add_argument("--shape", type=int, nargs=2, default=[256, 256], metavar=("H", "W"),
                   help="in-plane size: voxels along x (right-left) and y (anterior-posterior); default 256 256")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="voxel size in mm (default 1.75 1.75 5.0: a 448 mm field of view)")
    p.add_argument("--orientation", default="RAS", type=_axis_code,
                   help="axis code of the stored arrays, e.g. RAS, LPS, LAS or a permutation like ASR (default RAS)")
    p.add_argument("--dixon", default=None, metavar="PREFIX",
                   help="also write PREFIX_water.nii.gz, PREFIX_fat.nii.gz, PREFIX_ff.nii.gz (true voxel fat fraction) "
                   "and PREFIX_sides.nii.gz (true side of each muscle voxel: 1 R, 2 L)")
    return p


def main(args) -> int:
    from pathlib import Path

    import nibabel as nib

    from limbseg_rt.runtime.errors import OutputError
    from limbseg_rt.runtime.phantom.generate import DEFAULT_SPACING, make_phantom

    out, lab = Path(args.out), Path(args.labels)
    if out.resolve() == lab.resolve():
        raise OutputError("the image and --labels paths are the same; give two different files")
    for path in (out, lab):
        if not path.name.endswith((".nii", ".nii.gz")):
            raise OutputError(f"{path}: output must end in .nii or .nii.gz")
        if not path.parent.is_dir():
            raise OutputError(f"{path.parent}: folder does not exist; create it first")
    spacing = tuple(args.spacing) if args.spacing else DEFAULT_SPACING
    extra = {}
    if args.dixon:  # issue 19: Dixon water/fat, true FF and sides (opt-in: the default phantom is unchanged)
        from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

        imgs = make_dixon_phantom(args.seed, slices=args.slices, shape=tuple(args.shape), spacing=spacing,
                                  orientation=args.orientation)
        image, labels = imgs["image"], imgs["labels"]
        extra = {Path(f"{args.dixon}_{k}.nii.gz"): imgs[k] for k in ("water", "fat", "ff", "sides")}
        if not Path(f"{args.dixon}_water.nii.gz").parent.is_dir():
            raise OutputError(f"{Path(args.dixon).parent}: folder does not exist; create it first")
    else:
        image, labels = make_phantom(args.seed, slices=args.slices, shape=tuple(args.shape), spacing=spacing,
                                     orientation=args.orientation)
    try:
        nib.save(image, str(out))
        nib.save(labels, str(lab))
        for path, img in extra.items():
            nib.save(img, str(path))
    except OSError as exc:
        raise OutputError(f"cannot write output: {exc.strerror or exc}") from exc
    sx, sy, sz = spacing
    print(f"wrote {out} and {lab}: {image.shape[0]}x{image.shape[1]}x{image.shape[2]} voxels, "
          f"{sx:g}x{sy:g}x{sz:g} mm, orientation {''.join(nib.aff2axcodes(image.affine))}, seed {args.seed}")
    return 0
