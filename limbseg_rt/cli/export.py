"""``limbseg-rt export``: checkpoint (.pth.tar) -> parity-checked ONNX model with metadata.

The model is exported, converted to the requested precision, checked against PyTorch on real
slices (phantom or a folder of NIfTI scans) and written only if every check passes (exit 7 and no
file otherwise). Bad checkpoints exit 4 with one line naming the problem.
"""

from __future__ import annotations

import argparse

ARCHES = ("unet", "attention-unet", "sc-unet")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (needs the export extra: PyTorch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", required=True, choices=ARCHES)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint (.pth.tar, authors' format)")
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    p.add_argument(
        "--features",
        type=int,
        nargs="+",
        default=None,
        metavar="F",
        help="encoder widths, e.g. 64 128 256 512 (default: the checkpoint's, else the paper's)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp32 (default), fp16, or int8 (static QDQ: uint8 activations, int8 per-channel weights)",
    )
    p.add_argument(
        "--calibration",
        default="phantom",
        metavar="DIR|phantom",
        help="real slices for the parity checks and int8 calibration: 'phantom' (default) or a folder of NIfTI scans",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument(
        "--labels", default=None, metavar="TABLE.json", help="label table JSON (default: the 38-class table)"
    )
    p.add_argument(
        "--with-labels-output",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a uint8 'labels' output (argmax inside the graph); default on",
    )
    p.add_argument(
        "--pixel-spacing-mm",
        type=float,
        nargs=2,
        default=None,
        metavar=("SX", "SY"),
        help="in-plane pixel spacing (mm) of the training slices, recorded in the metadata when known",
    )
    p.add_argument(
        "--input-hw",
        type=int,
        nargs=2,
        default=[272, 240],
        metavar=("H", "W"),
        help="trained slice size recorded in the metadata (default 272 240)",
    )
    p.add_argument(
        "--parity-slices",
        type=int,
        default=8,
        metavar="N",
        help="slices per scan used by the parity checks (default 8)",
    )
    p.add_argument(
        "--int8-float-levels",
        type=_non_negative,
        default=0,
        metavar="K",
        help="int8: keep the convolutions of the K finest resolution levels in float (1 = full "
        "resolution, 2 = also half); slower, closer to fp32 on small muscles (default 0)",
    )
    p.add_argument(
        "--resampling",
        choices=("antialias", "exact"),
        default=None,
        help="how the model's training slices were resized (recorded in the metadata; the runtime "
        "resizes the same way); default: the checkpoint's record, else exact (the authors' "
        "checkpoints: the paper's linear resize)",
    )
    return p


def main(args) -> int:
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        from limbseg_rt.runtime.errors import MissingDependencyError

        raise MissingDependencyError(
            f"limbseg-rt export needs the optional packages 'torch' and 'onnx' ({exc.name!r} "
            'is not installed); install them with: pip install "limbseg-rt[export]"'
        ) from None
    from limbseg_rt.export.onnx_export import export_model

    result = export_model(
        args.arch,
        args.checkpoint,
        args.out,
        features=args.features,
        precision=args.precision,
        calibration=args.calibration,
        opset=args.opset,
        labels=args.labels,
        with_labels_output=args.with_labels_output,
        pixel_spacing_mm=tuple(args.pixel_spacing_mm) if args.pixel_spacing_mm else None,
        input_hw=tuple(args.input_hw),
        parity_slices=args.parity_slices,
        int8_float_levels=args.int8_float_levels,
        resampling=args.resampling,
    )
    md, parity = result.metadata, result.parity
    print(f"wrote {result.path} ({md.architecture}, features {' '.join(map(str, md.features))}, {md.precision})")
    line = (
        f"parity on {parity['slices']} slices ({parity['source']}): label agreement {parity['label_agreement']:.4%}, "
        f"max logit error {parity['max_logit_error']:.2e} of scale"
    )
    if parity.get("min_muscle_dice") is not None:
        line += f", min muscle Dice {parity['min_muscle_dice']:.4f}"
    print(line)
    if "speed" in parity:
        s = parity["speed"]
        print(
            f"int8 speed-up vs fp32: {s['speedup_vs_fp32']:.2f}x ({s['int8_ms']:.1f} vs {s['fp32_ms']:.1f} ms/slice, batch 1, {s['threads']} threads)"
        )
    return 0
