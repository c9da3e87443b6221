"""``limbseg-rt info [MODEL]``: the installation (versions, providers, bundled models) or one model.

With no argument: package versions, execution providers (available and actually usable) and the
bundled models. With a ``.onnx`` file or a bundled name: the model's metadata and graph I/O.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info",
        help="show versions, execution providers and bundled models, or describe one model",
        description="Without MODEL: versions, execution providers and bundled models. "
        "With MODEL (a .onnx file or a bundled name such as unet): its metadata and inputs/outputs.",
    )
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help=".onnx file or bundled model name (unet, attention-unet, sc-unet), "
        "or a DICOM folder / .zip / file to list its series",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "int8", "bf16"),
        help="which bundled file a name refers to (default: the CPU choice, int8 when bundled)",
    )
    return p


def _versions() -> list[tuple[str, str]]:
    import importlib

    import limbseg_rt

    rows = [("limbseg-rt", limbseg_rt.__version__)]
    for name in ("onnxruntime", "numpy", "nibabel", "openvino"):
        try:
            mod = importlib.import_module(name)
        except Exception:
            rows.append((name, "not installed"))
            continue
        rows.append((name, str(getattr(mod, "__version__", "?")).split("-")[0]))
    return rows


def _print_installation() -> None:
    from limbseg_rt.runtime.engine.providers import INSTALL_HINT, PRIORITY, available_engines, probe_providers
    from limbseg_rt.runtime.model.bundled import MODELS_DIR, list_bundled

    print("versions:")
    for name, version in _versions():
        print(f"  {name:<12} {version}")
    available = available_engines()
    probes = probe_providers(available)
    print("execution providers (auto picks the first usable):")
    for short in PRIORITY:
        if short in probes:
            ok, detail = probes[short]
            print(f"  {short:<9} {'usable' if ok else 'NOT usable':<11} {detail}")
        else:
            print(f"  {short:<9} {'absent':<11} {INSTALL_HINT[short]}")
    models = list_bundled()
    print(f"bundled models ({MODELS_DIR}):")
    if not models:
        print("  none")
    for m in models:
        print(f"  {m.arch:<15} {m.precision:<5} {m.size_bytes / 1e6:8.1f} MB  sha256 {m.sha256()[:12]}")


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _label_summary(labels) -> str:
    codes = [lab.code for lab in labels]
    shown = ", ".join(codes) if len(codes) <= 8 else ", ".join(codes[:4]) + ", ..., " + ", ".join(codes[-2:])
    return f"{len(codes)} labels: {shown}"


def _print_model(path) -> None:
    import json

    import onnxruntime as ort

    from limbseg_rt.runtime.engine.base import check_model_graph
    from limbseg_rt.runtime.engine.onnxruntime_runner import session_graph
    from limbseg_rt.runtime.hashing import sha256_file
    from limbseg_rt.runtime.model.metadata import read_metadata

    md = read_metadata(path)  # ModelError (exit 4) for an unreadable file or missing metadata
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    check_model_graph(md, *session_graph(sess), Path(path))  # ModelError (exit 4): graph and metadata disagree
    norm = md.normalisation
    rows = [
        ("file", str(path)),
        ("sha256", sha256_file(path)),
        ("architecture", md.architecture),
        ("features", ", ".join(str(f) for f in md.features)),
        ("classes", f"{md.classes} (background + {md.classes - 1} muscles)"),
        ("label table", _label_summary(md.labels)),
        ("input size", f"{md.input_hw[0]} x {md.input_hw[1]} pixels (H x W), {md.in_channels} channel(s)"),
        (
            "pixel spacing",
            f"{md.pixel_spacing_mm[0]} x {md.pixel_spacing_mm[1]} mm" if md.pixel_spacing_mm else "not recorded",
        ),
        ("normalisation", f"{norm.method} {norm.lower_percentile}-{norm.upper_percentile} per {norm.scope}"),
        ("position", f"{md.position.bins} bins, {md.position.direction}" if md.position else "none"),
        ("precision", md.precision),
        ("checkpoint", md.checkpoint_sha256 or "not recorded"),
        ("exporter", md.exporter or "not recorded"),
        ("versions", ", ".join(f"{k} {v}" for k, v in md.versions.items()) or "not recorded"),
        ("parity", json.dumps(md.parity, sort_keys=True) if md.parity else "not recorded"),
    ]
    for key, value in rows:
        print(f"{key:<14} {value}")
    print("inputs:")
    for i in sess.get_inputs():
        print(f"  {i.name:<10} {_fmt_shape(i.shape):<22} {i.type}")
    print("outputs:")
    for o in sess.get_outputs():
        print(f"  {o.name:<10} {_fmt_shape(o.shape):<22} {o.type}")


def _print_dicom(path) -> None:
    from limbseg_rt.runtime.io.dicom import list_series

    found, series = list_series(path)
    print(
        f"{path}: {len(found.instances)} DICOM file(s), {found.skipped_non_dicom} non-DICOM file(s) skipped"
        + (f", {found.skipped_dicomdir} DICOMDIR skipped" if found.skipped_dicomdir else "")
    )
    print(
        f"  {'series':>6}  {'modality':<8} {'orientation':<22} {'slices':>6}  {'spacing (mm)':<20} {'run':<4} description"
    )
    for s in series:
        sp = "x".join(f"{v:.3g}" for v in s.spacing) if s.spacing else "-"
        run = "yes" if s.skip_reason is None else "no"
        why = f" [{s.skip_reason}]" if s.skip_reason else ""
        notes = "".join(f" [{n}]" for n in s.notes)
        number = s.number if s.number is not None else "?"
        print(
            f"  {number:>6}  {s.modality:<8} {s.orientation:<22} {len(s.main):>6}  {sp:<20} {run:<4} {s.description}{why}{notes}"
        )
    print("  UIDs: " + "; ".join(f"{s.number}: {s.uid}" for s in series))


def main(args) -> int:
    if args.model is None:
        _print_installation()
        return 0
    from limbseg_rt.runtime.io.dicom import looks_like_dicom

    if not str(args.model).lower().endswith(".onnx") and looks_like_dicom(args.model):
        _print_dicom(args.model)
        return 0
    from limbseg_rt.runtime.model.bundled import resolve_model

    _print_model(resolve_model(args.model, precision=args.precision, provider="cpu"))
    return 0
