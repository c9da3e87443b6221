"""``limbseg-rt run``: segment one NIfTI scan; write labels, a JSON report and a volume CSV."""

from __future__ import annotations

import argparse
import sys

PROVIDERS = ("auto", "tensorrt", "cuda", "openvino", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "int8")


def _batch_size(text: str):
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"batch size must be at least 1, got {value}")
    return value


def _limb_range(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B such as 0:0.5, got {text!r}") from None
    if not 0.0 <= a < b <= 1.0:
        raise argparse.ArgumentTypeError(f"need 0 <= A < B <= 1 (0 = hip, 1 = ankle), got {text!r}")
    return a, b


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _orientation(text: str) -> str:
    from limbseg_rt.runtime.io.geometry import ornt_from_axcodes

    try:
        ornt_from_axcodes(text.upper())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.upper()


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Model and engine options shared by ``run`` and ``demo``."""
    p.add_argument("--model", default="unet", help="unet | attention-unet | sc-unet (bundled) or PATH.onnx (default: unet)")
    p.add_argument("--provider", default="auto", choices=PROVIDERS, help="execution provider (default: auto = best available)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="model precision for bundled models (default: auto)")
    p.add_argument("--allow-fallback", action="store_true", help="accept a slower provider if the requested one is unavailable (reported)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference (default: engine's choice)")
    p.add_argument("--device-id", type=_positive_int, default=0, help="GPU index for cuda/tensorrt (default: 0)")
    p.add_argument("--fit", default="auto", choices=("auto", "resize", "tile"),
                   help="resize: each slice resized to the model's input (paper); tile: overlapping windows at the "
                        "model's pixel spacing; auto (default): resize when the scan's field of view matches the "
                        "model's trained scale, else tile (the report says which and why)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="slices per model call, or auto (default)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="segment the muscles of one lower-limb MRI scan",
        description="Segment one NIfTI scan. Writes <stem>_labels.nii.gz, <stem>_report.json and "
        "<stem>_volumes.csv next to the scan unless told otherwise; never overwrites the scan.",
    )
    p.add_argument("scan", help="input scan (.nii or .nii.gz)")
    add_engine_arguments(p)
    p.add_argument("--out", default=None, help="label file (default: <stem>_labels.nii.gz next to the scan)")
    p.add_argument("--report", default=None, help="JSON report (default: <stem>_report.json)")
    p.add_argument("--csv", default=None, help="per-muscle volume CSV (default: <stem>_volumes.csv)")
    p.add_argument("--limb-range", type=_limb_range, default=None, metavar="A:B",
                   help="part of the limb the scan covers, 0 = hip, 1 = ankle (SC-UNet positions), e.g. 0:0.5 for a thigh")
    add_read_arguments(p)
    return p


def add_read_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input geometry")
    g.add_argument("--volume", type=_positive_int, default=None, metavar="N", help="which volume of a 4D scan to use (0-based)")
    g.add_argument("--allow-2d", action="store_true", help="accept a single-slice (2D) image")
    form = g.add_mutually_exclusive_group()
    form.add_argument("--prefer-sform", dest="prefer", action="store_const", const="sform", default=None,
                      help="use the sform when qform and sform disagree")
    form.add_argument("--prefer-qform", dest="prefer", action="store_const", const="qform",
                      help="use the qform when qform and sform disagree")
    g.add_argument("--assume-orientation", type=_orientation, default=None, metavar="RAS",
                   help="orientation to assume when the file has no usable geometry (e.g. RAS, LPS)")


def read_options_from_args(args):
    from limbseg_rt.runtime.io.nifti import ReadOptions

    kwargs = {"allow_2d": bool(args.allow_2d)}
    if args.volume is not None:
        kwargs["volume_index"] = args.volume
    if args.prefer is not None:
        kwargs["prefer"] = args.prefer
    if args.assume_orientation is not None:
        kwargs["assume_orientation"] = args.assume_orientation
    return ReadOptions(**kwargs)


def segmenter_kwargs_from_args(args) -> dict:
    return {
        "model": args.model,
        "provider": args.provider,
        "precision": args.precision,
        "allow_fallback": bool(args.allow_fallback),
        "threads": args.threads,
        "device_id": args.device_id,
        "batch_size": args.batch_size,
        "fit": args.fit,
    }


def render_summary(result, written: dict | None = None, *, out=None) -> None:
    """Print the volume table and the engine line to ``out`` (stdout), warnings to stderr."""
    out = out if out is not None else sys.stdout
    report = result.report
    found = report.found
    width = max([len("muscle")] + [len(m.name) for m in found])
    print(f"{'muscle':<{width}}  {'code':<5} {'mL':>9} {'voxels':>9}  {'slices (z)':<11} FOV", file=out)
    for m in found:
        cut = "cut" if (m.touches_first_slice or m.touches_last_slice) else ""
        print(f"{m.name:<{width}}  {m.code:<5} {m.volume_ml:>9.2f} {m.voxels:>9d}  {f'{m.z_first}-{m.z_last}':<11} {cut}", file=out)
    print(f"{'total':<{width}}  {'':<5} {report.total_volume_ml:>9.2f}  ({len(found)} of {len(report.muscles)} muscles found)", file=out)
    engine = report.manifest["engine"]
    model = report.manifest["model"]
    print(
        f"model {model['metadata']['architecture']} ({model['file']}, sha256 {model['sha256'][:12]}); "
        f"provider {engine['provider']}; precision {engine['precision']}",
        file=out,
    )
    pipe = report.manifest.get("pipeline", {})
    if pipe.get("fit"):
        why = f" ({pipe['fit_reason']})" if pipe.get("fit_requested") == "auto" and pipe.get("fit_reason") else ""
        print(f"fit {pipe['fit']}{why}", file=out)
    if written:
        print("wrote " + ", ".join(str(p) for p in written.values()), file=out)
    for w in report.warnings:
        print(f"limbseg-rt: warning: {w}", file=sys.stderr)


def main(args) -> int:
    from limbseg_rt.cli._progress import ProgressBar
    from limbseg_rt.runtime.api import segment_file
    from limbseg_rt.runtime.errors import EXIT_EMPTY, EXIT_OK

    with ProgressBar("segmenting") as bar:
        result, written = segment_file(
            args.scan, out=args.out, report_json=args.report, csv=args.csv, limb_range=args.limb_range,
            read_options=read_options_from_args(args), progress=bar.update, **segmenter_kwargs_from_args(args),
        )
    render_summary(result, written)
    return EXIT_EMPTY if result.empty else EXIT_OK
