"""``limbseg-rt run``: segment one NIfTI scan; write labels, a JSON report and a volume CSV."""

from __future__ import annotations

import argparse
import sys

from limbseg_rt.runtime.errors import EXIT_USAGE, LimbsegError

PROVIDERS = ("auto", "tensorrt", "cuda", "openvino", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "int8", "bf16")


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


def _threads(text: str) -> int:
    """0 (the engine's choice) .. 4 x the CPUs this process may use: more only thrashes the machine."""
    import os

    value = _positive_int(text)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if value > 4 * cpus:
        raise argparse.ArgumentTypeError(
            f"{value} threads for {cpus} CPU(s) would only slow the machine down; "
            f"use at most {4 * cpus} (or leave it out)"
        )
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
    p.add_argument(
        "--model", default="unet", help="unet | attention-unet | sc-unet (bundled) or PATH.onnx (default: unet)"
    )
    p.add_argument(
        "--provider", default="auto", choices=PROVIDERS, help="execution provider (default: auto = best available)"
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="model precision (default: auto: the measured choice of `limbseg-rt tune`, else int8 on CPU; bf16: the fp32 file in bf16 on OpenVINO)",
    )
    p.add_argument(
        "--allow-fallback",
        action="store_true",
        help="accept a slower provider if the requested one is unavailable (reported)",
    )
    p.add_argument(
        "--threads", type=_threads, default=None, help="CPU threads for inference (default: engine's choice)"
    )
    p.add_argument("--device-id", type=_positive_int, default=0, help="GPU index for cuda/tensorrt (default: 0)")
    p.add_argument(
        "--fit",
        default="auto",
        choices=("auto", "resize", "tile"),
        help="resize: each slice resized to the model's input (paper); tile: overlapping windows at the "
        "model's pixel spacing; auto (default): resize when the scan's field of view matches the "
        "model's trained scale, else tile (the report says which and why)",
    )
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="slices per model call, or auto (default)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        help="segment the muscles of one lower-limb MRI scan",
        description="Segment one NIfTI scan or DICOM series (folder, .zip, Enhanced MR file; DICOM also gets <name>_seg.dcm). Writes <stem>_labels.nii.gz, <stem>_report.json and "
        "<stem>_volumes.csv next to the scan unless told otherwise; never overwrites the scan.",
    )
    p.add_argument(
        "scan", help="input scan: .nii / .nii.gz, or DICOM (a series folder, a .zip of one, an Enhanced MR file)"
    )
    add_engine_arguments(p)
    p.add_argument("--out", default=None, help="label file (default: <stem>_labels.nii.gz next to the scan)")
    p.add_argument("--report", default=None, help="JSON report (default: <stem>_report.json)")
    p.add_argument("--csv", default=None, help="per-muscle volume CSV (default: <stem>_volumes.csv)")
    p.add_argument(
        "--limb-range",
        type=_limb_range,
        default=None,
        metavar="A:B",
        help="part of the limb the scan covers, 0 = hip, 1 = ankle (SC-UNet positions), e.g. 0:0.5 for a thigh",
    )
    p.add_argument(
        "--qc",
        action="store_true",
        help="also write QC overlays (<stem>_qc_*.png) and <stem>_report.html beside the labels (needs the qc extra)",
    )
    add_read_arguments(p)
    add_dicom_arguments(p)
    add_analysis_arguments(p)
    return p


def add_dicom_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('DICOM input and output (pip install "limbseg-rt[dicom]"; docs/dicom.md)')
    g.add_argument(
        "--series",
        default=None,
        metavar="NUMBER|UID",
        help="which series of a DICOM input to segment when it holds several (limbseg-rt info DIR lists them)",
    )
    g.add_argument(
        "--seg",
        default=None,
        metavar="PATH",
        help="DICOM SEG to write for a DICOM input (default: <name>_seg.dcm beside the input)",
    )
    g.add_argument(
        "--seg-type",
        default="binary",
        choices=("binary", "labelmap"),
        help="SEG kind: binary (default, what most viewers show) or labelmap (the newer Label Map SOP class)",
    )


def add_no_cleanup_argument(g) -> None:
    """``--no-cleanup`` (alias ``--no-clean``), shared by ``run`` and ``batch``."""
    g.add_argument(
        "--no-cleanup",
        "--no-clean",
        dest="no_clean",
        action="store_true",
        help="with --analysis: skip the 3D clean-up (keep the small islands far from their muscle); "
        "the clean-up is on by default wherever labels are analysed",
    )


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """Issue 19: sides, 3D clean-up, per muscle x side geometry and fat (docs/analysis.md)."""
    g = p.add_argument_group('analysis (per muscle and side; needs pip install "limbseg-rt[analysis]")')
    g.add_argument(
        "--analysis",
        action="store_true",
        help="add left/right, ACSA, length, IMAT estimate, asymmetry; writes <stem>_muscles.csv",
    )
    add_no_cleanup_argument(g)
    g.add_argument(
        "--measures-csv", default=None, metavar="PATH", help="per muscle x side CSV (default: <stem>_muscles.csv)"
    )
    g.add_argument(
        "--split-sides",
        action="store_true",
        help="label map with a right and a left label per muscle (implies --analysis)",
    )
    g.add_argument(
        "--measures-wide",
        action="store_true",
        help="the per muscle x side CSV in wide form: one row per muscle, each measure as _R and _L columns",
    )
    g.add_argument(
        "--dixon-fat",
        "--fat",
        dest="dixon_fat",
        default=None,
        metavar="FAT.nii.gz",
        help="Dixon fat image on the scan's grid (with --dixon-water)",
    )
    g.add_argument(
        "--dixon-water",
        "--water",
        dest="dixon_water",
        default=None,
        metavar="WATER.nii.gz",
        help="Dixon water image on the scan's grid",
    )
    g.add_argument(
        "--fat-fraction", default=None, metavar="FF.nii.gz", help="fat-fraction map (0..1 or %%) on the scan's grid"
    )
    g.add_argument(
        "--ff-erode",
        type=_positive_int,
        default=0,
        metavar="N",
        help="erode each muscle N voxels in-plane before Dixon FF (default 0)",
    )


class AnalysisUsageError(LimbsegError):
    """Analysis options that cannot work together (exit code 2)."""

    exit_code = EXIT_USAGE


def analysis_options_from_args(args):
    """``AnalysisOptions`` or None (no analysis asked for); exit 2 on options that do not fit."""
    wants = args.analysis or args.split_sides or args.dixon_fat or args.dixon_water or args.fat_fraction
    if not wants:
        if args.no_clean or args.measures_csv or args.ff_erode or args.measures_wide:
            raise AnalysisUsageError("--no-cleanup, --measures-csv, --measures-wide and --ff-erode need --analysis")
        return None
    if bool(args.dixon_fat) != bool(args.dixon_water):
        raise AnalysisUsageError("give both --dixon-fat and --dixon-water (or --fat-fraction)")
    if args.fat_fraction and args.dixon_fat:
        raise AnalysisUsageError("give --fat-fraction or --dixon-fat/--dixon-water, not both")
    from limbseg_rt.runtime.analysis.measures import AnalysisOptions

    return AnalysisOptions(
        clean=not args.no_clean,
        fat=args.dixon_fat,
        water=args.dixon_water,
        fat_fraction=args.fat_fraction,
        ff_erode=args.ff_erode,
        csv_form="wide" if args.measures_wide else "long",
    )


def add_read_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input geometry")
    g.add_argument(
        "--volume", type=_positive_int, default=None, metavar="N", help="which volume of a 4D scan to use (0-based)"
    )
    g.add_argument("--allow-2d", action="store_true", help="accept a single-slice (2D) image")
    form = g.add_mutually_exclusive_group()
    form.add_argument(
        "--prefer-sform",
        dest="prefer",
        action="store_const",
        const="sform",
        default=None,
        help="use the sform when qform and sform disagree",
    )
    form.add_argument(
        "--prefer-qform",
        dest="prefer",
        action="store_const",
        const="qform",
        help="use the qform when qform and sform disagree",
    )
    g.add_argument(
        "--assume-orientation",
        type=_orientation,
        default=None,
        metavar="RAS",
        help="orientation to assume when the file has no usable geometry (e.g. RAS, LPS)",
    )


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
        print(
            f"{m.name:<{width}}  {m.code:<5} {m.volume_ml:>9.2f} {m.voxels:>9d}  {f'{m.z_first}-{m.z_last}':<11} {cut}",
            file=out,
        )
    print(
        f"{'total':<{width}}  {'':<5} {report.total_volume_ml:>9.2f}  ({len(found)} of {len(report.muscles)} muscles found)",
        file=out,
    )
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
    choice = (engine.get("details") or {}).get("precision_choice") or {}
    if choice.get("how") in ("measured", "rule"):
        print(f"precision auto -> {choice['chose']}: {choice['why']}", file=out)
    if written:
        print("wrote " + ", ".join(str(p) for p in written.values()), file=out)
    for w in report.warnings:
        print(f"limbseg-rt: warning: {w}", file=sys.stderr)


def render_sides(analysis, *, out=None) -> None:
    """The per muscle table with R and L side by side (mL, max ACSA cm^2, IMAT %, FF %)."""
    out = out if out is not None else sys.stdout
    by = {(r.code, r.side): r for r in analysis.records}
    codes = list(dict.fromkeys(r.code for r in analysis.records))
    dixon = any(r.ff_mean is not None for r in analysis.records)

    def cell(r, attr, scale=1.0, fmt="{:8.2f}"):
        v = getattr(r, attr) if r is not None else None
        return fmt.format(v * scale) if v is not None else f"{'-':>8}"

    head = f"{'code':<5} {'R mL':>8} {'L mL':>8} {'asym %':>8} {'R ACSA':>8} {'L ACSA':>8} {'R IMAT':>8} {'L IMAT':>8}"
    print(head + (f" {'R FF %':>8} {'L FF %':>8}" if dixon else ""), file=out)
    asym = {a.code: a for a in analysis.asymmetry}
    for c in codes:
        r, left = by.get((c, "R")), by.get((c, "L"))
        a = asym[c].volume_percent
        line = (
            f"{c:<5} {cell(r, 'volume_ml')} {cell(left, 'volume_ml')} {a:8.1f} "
            if a is not None
            else f"{c:<5} {cell(r, 'volume_ml')} {cell(left, 'volume_ml')} {'-':>8} "
        )
        line += f"{cell(r, 'max_acsa_mm2', 0.01)} {cell(left, 'max_acsa_mm2', 0.01)} {cell(r, 'imat_percent')} {cell(left, 'imat_percent')}"
        if dixon:
            line += f" {cell(r, 'ff_mean', 100)} {cell(left, 'ff_mean', 100)}"
        print(line, file=out)
    print(
        f"legs: {analysis.side_info['legs']}; ACSA in cm^2 (max, slice plane); IMAT = T1w estimate (%), not a fat "
        f"fraction; asymmetry {analysis.to_dict()['asymmetry_formula']}",
        file=out,
    )


def main(args) -> int:
    from limbseg_rt.cli._progress import ProgressBar
    from limbseg_rt.runtime.api import segment_file
    from limbseg_rt.runtime.errors import EXIT_EMPTY, EXIT_OK

    analysis = analysis_options_from_args(args)
    with ProgressBar("segmenting") as bar:
        result, written = segment_file(
            args.scan,
            out=args.out,
            report_json=args.report,
            csv=args.csv,
            limb_range=args.limb_range,
            read_options=read_options_from_args(args),
            progress=bar.update,
            qc=bool(getattr(args, "qc", False)),
            **segmenter_kwargs_from_args(args),
            series=args.series,
            seg=args.seg,
            seg_type=args.seg_type,
            analysis=analysis,
            measures_csv=args.measures_csv,
            split_sides=args.split_sides,
        )
    render_summary(result, written)
    if result.report.analysis is not None:
        render_sides(result.report.analysis)
    return EXIT_EMPTY if result.empty else EXIT_OK
