"""Build the bundled demo models: export trained checkpoints (fp32 + int8), evaluate, write model cards.

    python -m limbseg_rt.export.demo_models --checkpoints DIR --out runtime/data/models \
        [--train-notes NOTES.md] [--seeds 200 201]

``DIR`` holds ``{arch}.pth.tar`` for each architecture to ship (checkpoints written by
``limbseg-rt train``). For each one this exports ``{arch}-fp32.onnx`` and ``{arch}-int8.onnx`` with
the export's own parity gates (a failed gate leaves no file), then segments held-out phantom
subjects (seeds never used for training or validation) through the runtime exactly as
``limbseg-rt run`` does, and writes ``{arch}.md``: provenance, parity, and the paper's metrics
(DSC, RVE, HD) against the phantom's ground truth. For SC-UNet it also reports DSC with the slice
positions shuffled, which shows whether the position input matters.

``--bundle int8`` writes only the int8 file to ``--out``: the fp32 export still runs (it is the
reference the int8 gate and the card compare with) but goes to a temporary folder, and the card
says so. That is how 16-wide SC-UNet and Attention UNet fit next to the UNet in the 16 MB budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.hashing import sha256_file

ARCHS = ("unet", "attention-unet", "sc-unet")
PHANTOM_SHAPE = (256, 256)
PHANTOM_SLICES = 150


def trained_pixel_spacing() -> tuple[float, float]:
    """In-plane spacing (mm) of the phantom slices after resizing to the model input (for --fit tile)."""
    from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW
    from limbseg_rt.runtime.phantom.generate import DEFAULT_SPACING

    return (
        PHANTOM_SHAPE[0] * DEFAULT_SPACING[0] / MODEL_INPUT_HW[0],
        PHANTOM_SHAPE[1] * DEFAULT_SPACING[1] / MODEL_INPUT_HW[1],
    )


def _shuffled_predict(runner, n_slices: int, seed: int):
    """A predict callable that feeds SC-UNet a random permutation of the volume's positions."""
    from limbseg_rt.runtime.model.position import slice_positions

    perm = np.random.default_rng(seed).permutation(slice_positions(n_slices, proximal_first=False))
    cursor = {"i": 0}

    def predict(x, pos):
        i = cursor["i"]
        cursor["i"] = i + x.shape[0]
        return runner.predict(x, perm[i : i + x.shape[0]].astype(np.float32))

    return predict


def evaluate_model(model_path: Path, seeds, *, shuffle_positions: bool = False) -> dict:
    """Per-seed and mean DSC / RVE / HD of one ONNX model on held-out phantoms, run on the CPU
    through the runtime pipeline (resize fit, as ``limbseg-rt run``)."""
    from limbseg_rt.runtime.engine.runners import create_runner
    from limbseg_rt.runtime.inference.pipeline import segment_canonical
    from limbseg_rt.runtime.io.nifti import from_nibabel
    from limbseg_rt.runtime.phantom.generate import make_phantom
    from limbseg_rt.runtime.report.metrics import evaluate_labels

    runner = create_runner(model_path, provider="cpu")
    per_seed = {}
    try:
        for seed in seeds:
            img, ref_img = make_phantom(seed, slices=PHANTOM_SLICES, shape=PHANTOM_SHAPE)
            canon, props = from_nibabel(img)
            ref, _ = from_nibabel(ref_img)
            predict = runner.predict
            if shuffle_positions:
                predict = _shuffled_predict(runner, canon.shape[2], seed)
            run = segment_canonical(canon, runner.metadata, predict)
            res = evaluate_labels(
                run.labels,
                np.rint(ref).astype(np.uint8),
                spacing=props.canonical_spacing,
                labels=runner.metadata.labels,
            )
            per_seed[int(seed)] = {
                "dsc": res.mean.dsc,
                "rve_percent": res.mean.rve_percent,
                "abs_rve_percent": float(np.nanmean([abs(r.rve_percent) for r in res.rows])),
                "hd_mm": res.mean.hd_mm,
                "hd95_mm": res.mean.hd95_mm,
                "per_muscle_dsc": {r.code: r.dsc for r in res.rows},
            }
    finally:
        runner.close()
    keys = ("dsc", "rve_percent", "abs_rve_percent", "hd_mm", "hd95_mm")
    mean = {k: float(np.nanmean([v[k] for v in per_seed.values()])) for k in keys}
    return {"seeds": per_seed, "mean": mean}


def _fmt(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def failed_section(failed: dict[str, str]) -> list[str]:
    """Card lines for precisions whose export failed its parity gate (so no file is shipped)."""
    lines = []
    for prec, message in failed.items():
        lines += [
            "",
            f"## {prec}: not shipped",
            f"The {prec} export failed its parity gate, so no {prec} file is bundled and `--precision auto` "
            "runs the fp32 file on every provider. The gate said:",
            "",
            f"    {message}",
        ]
    return lines


def _row_name(info: dict) -> str:
    return info["file"] if info["bundled"] else f"{info['file']} (not bundled)"


def model_card(
    arch: str,
    ckpt: Path,
    exports: dict,
    evals: dict,
    shuffled: dict | None,
    notes: str,
    failed: dict[str, str] | None = None,
    export_options: str = "",
) -> str:
    lines = [
        f"# Demo model: {arch}",
        "",
        "**Trained on synthetic phantoms only (limbseg-rt's lower-limb phantom). Not for real scans.**",
        "It exists so that `limbseg-rt run` / `demo` work out of the box and so that the runtime,",
        "parity and benchmark machinery can be exercised on a trained network.",
        "",
        "## Provenance",
        f"- Checkpoint: `{ckpt.name}`, SHA-256 `{sha256_file(ckpt)}`",
    ]
    for prec, info in exports.items():
        where = (
            ""
            if info["bundled"]
            else (
                " - exported for the parity and accuracy rows below, not bundled: the 16 MB budget for bundled "
                "models holds one 16-wide fp32 network (the default UNet's)"
            )
        )
        lines.append(
            f"- `{info['file']}` ({prec}): {info['size_bytes'] / 1e6:.2f} MB, SHA-256 `{info['sha256']}`{where}"
        )
    lines += [
        f"- Export: `python -m limbseg_rt.export.demo_models --checkpoints DIR --out runtime/data/models "
        f"--archs {arch}{export_options}` (calls `export_model(arch, ckpt, out, precision=..., calibration='phantom')`)",
        "",
        "## Training (commands and seeds)",
        notes.strip() or "(see the checkpoint's `train_config` entry)",
        "",
        "## Parity of the export (ONNX Runtime CPU vs PyTorch, phantom slices)",
    ]
    for prec, info in exports.items():
        lines.append(f"- {prec}: `{json.dumps(info['parity'], sort_keys=True, default=str)[:1500]}`")
    lines += [
        "",
        "## Accuracy on held-out phantom subjects (runtime pipeline, CPU)",
        "",
        "| file | seeds | mean DSC | mean RVE % | mean abs RVE % | mean HD mm | mean HD95 mm |",
        "|---|---|---|---|---|---|---|",
    ]
    for prec, ev in evals.items():
        m = ev["mean"]
        lines.append(
            f"| {_row_name(exports[prec])} | {', '.join(str(s) for s in ev['seeds'])} | {_fmt(m['dsc'])} | "
            f"{_fmt(m['rve_percent'], 1)} | {_fmt(m['abs_rve_percent'], 1)} | {_fmt(m['hd_mm'], 1)} | {_fmt(m['hd95_mm'], 1)} |"
        )
    shown = next((p for p, info in exports.items() if info["bundled"]), "fp32")
    if shuffled is not None:
        lines += [
            "",
            f"Position input check ({exports[shown]['file']}): mean DSC with true positions "
            f"{_fmt(evals[shown]['mean']['dsc'])}, with shuffled positions {_fmt(shuffled['mean']['dsc'])}.",
        ]
    per_seed = evals[shown]["seeds"]
    codes = list(next(iter(per_seed.values()))["per_muscle_dsc"])
    lines += [
        "",
        f"Per-muscle DSC ({exports[shown]['file']}, mean over seeds):",
        "",
        ", ".join(
            f"{c} {_fmt(float(np.nanmean([per_seed[s]['per_muscle_dsc'][c] for s in per_seed])), 2)}" for c in codes
        ),
    ]
    lines += failed_section(failed or {})
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m limbseg_rt.export.demo_models", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    p.add_argument("--seeds", nargs="+", type=int, default=[200, 201])
    p.add_argument(
        "--train-notes", type=Path, default=None, help="markdown with the training commands, per arch section"
    )
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument(
        "--bundle",
        nargs="+",
        default=None,
        metavar="PREC",
        help="precisions written to --out (default: all of --precisions); the others are exported "
        "to a temporary folder for the card only",
    )
    p.add_argument(
        "--int8-float-levels",
        type=int,
        default=0,
        metavar="K",
        help="int8: finest resolution levels kept in float (see limbseg-rt export)",
    )
    p.add_argument("--parity-slices", type=int, default=8, metavar="N", help="slices per phantom for the parity checks")
    args = p.parse_args(argv)

    from limbseg_rt.export.onnx_export import export_model
    from limbseg_rt.runtime.errors import LimbsegError

    notes = args.train_notes.read_text() if args.train_notes else ""
    bundle = args.precisions if args.bundle is None else args.bundle
    if "fp32" not in args.precisions or not set(bundle) <= set(args.precisions):
        p.error("--precisions must include fp32 (the reference), and --bundle only precisions from --precisions")
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="demo-models-")
    summary, missing = {}, []
    for arch in args.archs:
        ckpt = args.checkpoints / f"{arch}.pth.tar"
        if not ckpt.is_file():
            print(f"skip {arch}: no {ckpt}", file=sys.stderr)
            missing.append(arch)
            continue
        exports, evals, failed = {}, {}, {}
        for prec in args.precisions:
            out = (args.out if prec in bundle else Path(scratch.name)) / f"{arch}-{prec}.onnx"
            try:
                res = export_model(
                    arch,
                    ckpt,
                    out,
                    precision=prec,
                    calibration="phantom",
                    pixel_spacing_mm=trained_pixel_spacing(),
                    parity_slices=args.parity_slices,
                    int8_float_levels=args.int8_float_levels if prec == "int8" else 0,
                )
            except LimbsegError as exc:
                print(f"{arch} {prec}: export failed: {exc}", file=sys.stderr)
                failed[prec] = str(exc)
                continue
            exports[prec] = {
                "file": out.name,
                "size_bytes": out.stat().st_size,
                "sha256": sha256_file(out),
                "parity": res.parity,
                "bundled": prec in bundle,
                "path": out,
            }
            evals[prec] = evaluate_model(out, args.seeds)
            print(f"{arch} {prec}: mean DSC {evals[prec]['mean']['dsc']:.4f}", file=sys.stderr)
        shipped = [prec for prec in exports if prec in bundle]
        if "fp32" not in evals or not shipped:
            print(f"{arch}: nothing to bundle (fp32 reference or every bundled precision failed)", file=sys.stderr)
            missing.append(arch)
            continue
        shuffled = (
            evaluate_model(exports[shipped[0]]["path"], args.seeds, shuffle_positions=True)
            if arch == "sc-unet"
            else None
        )
        (args.out / f"{arch}.md").write_text(
            model_card(
                arch,
                ckpt,
                exports,
                evals,
                shuffled,
                notes,
                failed,
                export_options=(f" --int8-float-levels {args.int8_float_levels}" if args.int8_float_levels else "")
                + (
                    f" --parity-slices {args.parity_slices}"
                    if args.parity_slices != p.get_default("parity_slices")
                    else ""
                )
                + (
                    f" --precisions {' '.join(args.precisions)}"
                    if args.precisions != p.get_default("precisions")
                    else ""
                )
                + (f" --bundle {' '.join(args.bundle)}" if args.bundle is not None else ""),
            )
        )
        summary[arch] = {
            "exports": exports,
            "evals": {k: v["mean"] for k, v in evals.items()},
            "shuffled": shuffled["mean"] if shuffled else None,
        }
    scratch.cleanup()
    print(json.dumps(summary, indent=1, default=str))
    if missing:
        print(f"not bundled: {', '.join(missing)} (see the messages above)", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
