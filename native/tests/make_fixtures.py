"""Test fixtures for the C library's ctest suite: tiny models, volumes and Python reference labels.

Writes into OUT (the build tree):
- ``models/{unet,attention-unet,sc-unet}.onnx``: the real architectures (``limbseg_rt.models``)
  at features (4, 8, 16, 32), random weights (seeded; the final layer widened so many classes
  win somewhere), with the limbseg-rt metadata attached. In the UNet, class 1 is a copy of its most
  frequent winner k: wherever they win it is a tie, which must go to class 1 (numpy argmax: first
  maximum), so k never appears.
- ``models/{no-metadata,bad-metadata,unknown-arch,corrupt}.onnx`` for the error-path tests.
- with ``--phantom``: cases on the phantom scan, also for the bundled demo models (``--bundled``).
- ``cases/<name>.txt`` + raw little-endian buffers: a volume, optional positions, the reference
  labels (uint8, same layout as the volume) and per-class volumes (float64, mL), one case per line
  ``key=value`` (read by parity_check.c).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_labels import reference_labels  # noqa: E402

FEATURES = (4, 8, 16, 32)
ARCHS = ("unet", "attention-unet", "sc-unet")


def export_tiny(arch: str, path: Path, seed: int) -> None:
    import onnx
    import torch

    from limbseg_rt.models import create_model
    from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices
    from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW, NormalisationSpec
    from limbseg_rt.runtime.model.labels import default_label_table
    from limbseg_rt.runtime.model.metadata import METADATA_KEY, ModelMetadata, PositionSpec

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    table = default_label_table()
    model = create_model(arch, classes=len(table), features=FEATURES)
    h, w = MODEL_INPUT_HW
    needs_position = arch == "sc-unet"
    # Random init puts one class everywhere. Batch-norm statistics measured on preprocessed
    # synthetic slices, and a wide bias-free final layer, make many classes win somewhere.
    vol = synthetic_volume((h, w, 4), seed=seed, dtype=np.float32)
    lo, hi = intensity_window(vol)
    calib = torch.from_numpy(preprocess_slices(np.moveaxis(vol, 2, 0), lo, hi))
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = None  # cumulative average
            mod.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(calib, torch.linspace(0.1, 1.0, 4)) if needs_position else model(calib)
    model.eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == len(table)][-1]
    with torch.no_grad():
        last.weight.normal_(0.0, 1.0)
        if last.bias is not None:
            last.bias.zero_()
    if arch == "unet":
        # Tie test: class 1 becomes a copy of the class that wins most often (k > 1).
        with torch.no_grad():
            counts = torch.bincount(model(calib).argmax(1).flatten(), minlength=len(table))
            counts[:2] = 0
            k = int(counts.argmax())
            last.weight[1].copy_(last.weight[k])
    image = torch.rand(2, 1, h, w)
    args = (image, torch.tensor([0.3, 0.9])) if needs_position else (image,)
    inputs = ("image", "position") if needs_position else ("image",)
    dyn = {"image": {0: "n"}, "logits": {0: "n"}}
    if needs_position:
        dyn["position"] = {0: "n"}
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        args,
        buf,
        input_names=list(inputs),
        output_names=["logits"],
        dynamic_axes=dyn,
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    md = ModelMetadata(
        architecture=arch,
        features=FEATURES,
        in_channels=1,
        labels=table,
        input_hw=MODEL_INPUT_HW,
        normalisation=NormalisationSpec(),
        precision="fp32",
        inputs=inputs,
        outputs=("logits",),
        position=PositionSpec() if needs_position else None,
        exporter="native/tests/make_fixtures.py",
    )
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, md.to_json()
    onnx.save(proto, str(path))


def error_models(models: Path) -> None:
    import onnx

    from limbseg_rt.runtime.model.metadata import METADATA_KEY

    proto = onnx.load(str(models / "unet.onnx"))
    good = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]

    def with_meta(value: str | None, name: str) -> None:
        del proto.metadata_props[:]
        if value is not None:
            e = proto.metadata_props.add()
            e.key, e.value = METADATA_KEY, value
        onnx.save(proto, str(models / name))

    with_meta(None, "no-metadata.onnx")
    with_meta(good[: len(good) // 2], "bad-metadata.onnx")  # truncated JSON
    with_meta(json.dumps({**json.loads(good), "architecture": "vnet"}), "unknown-arch.onnx")
    with_meta(json.dumps({**json.loads(good), "resampling": "antialias"}), "unet-antialias.onnx")
    (models / "corrupt.onnx").write_bytes(b"this is not an ONNX protobuf \x00\x01\x02" * 100)


def synthetic_volume(shape: tuple[int, int, int], seed: int, dtype) -> np.ndarray:
    """A canonical [X, Y, Z] volume: two 'thighs' of varying brightness, texture and noise."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    vol = np.empty(shape, dtype=np.float64)
    for z in range(nz):
        legs = ((x + 0.45) ** 2 / 0.16 + y**2 / 0.5 < 1) | ((x - 0.45) ** 2 / 0.16 + y**2 / 0.5 < 1)
        core = ((x + 0.45) ** 2 + y**2 < 0.02 + 0.01 * z) | ((x - 0.45) ** 2 + y**2 < 0.03)
        img = 30.0 + 700.0 * legs - 400.0 * core + 120.0 * np.sin(7 * x + z) * np.cos(5 * y) * legs
        vol[:, :, z] = img + rng.normal(0, 25.0, (nx, ny))
    return vol.astype(dtype)


def write_case(
    cases: Path,
    name: str,
    *,
    model: Path,
    volume: np.ndarray,
    layout: str,
    spacing,
    batch_c: int,
    batch_ref: int,
    positions: np.ndarray | None = None,
    expect: int = 0,
    min_labels: int = 3,
) -> None:
    ref = reference_labels(str(model), volume, positions=positions, batch=batch_ref)
    if expect == 0 and len(np.unique(ref)) < min_labels:
        raise SystemExit(f"case {name}: the reference has only labels {np.unique(ref)}; the comparison would be weak")
    order = "C" if layout == "c" else "F"
    dtype = {np.dtype(np.int16): "int16", np.dtype(np.float32): "float32"}[volume.dtype]
    (cases / f"{name}.volume.raw").write_bytes(volume.astype(volume.dtype.newbyteorder("<")).tobytes(order=order))
    (cases / f"{name}.labels.raw").write_bytes(ref.tobytes(order=order))
    classes = len(json.loads(_meta_text(model))["labels"])
    ml = np.bincount(ref.ravel(), minlength=classes).astype(np.float64) * (
        spacing[0] * spacing[1] * spacing[2] / 1000.0
    )
    (cases / f"{name}.volumes.raw").write_bytes(ml.astype("<f8").tobytes())
    pos_file = "-"
    if positions is not None:
        pos_file = f"{name}.positions.raw"
        (cases / pos_file).write_bytes(np.asarray(positions, dtype="<f4").tobytes())
    lines = {
        "model": str(model),
        "dtype": dtype,
        "layout": layout,
        "dims": " ".join(map(str, volume.shape)),
        "spacing": " ".join(repr(float(s)) for s in spacing),
        "positions": pos_file,
        "batch": batch_c,
        "expect": expect,
        "volume": f"{name}.volume.raw",
        "labels": f"{name}.labels.raw",
        "volumes": f"{name}.volumes.raw",
    }
    (cases / f"{name}.txt").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    print(f"case {name}: {volume.shape} {dtype} layout={layout}, reference labels {np.unique(ref).tolist()}")


def _meta_text(model: Path) -> str:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess.get_modelmeta().custom_metadata_map["limbseg_rt.metadata"]


def phantom_cases(cases: Path, models: Path, bundled: Path | None) -> None:
    """Cases on the project's phantom scan (``runtime/phantom/generate.py``): the tiny SC-UNet, and each
    bundled demo model found in ``bundled`` (``{arch}-fp32.onnx``, else ``{arch}-int8.onnx``)."""
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    ph = phantom_arrays(7, slices=6, shape=(96, 80))
    write_case(
        cases,
        "phantom-sc-unet",
        model=models / "sc-unet.onnx",
        volume=np.asarray(ph.image),
        layout="f",
        spacing=ph.spacing,
        batch_c=3,
        batch_ref=3,
    )
    if bundled is None:
        return
    ph = phantom_arrays(11, slices=3, shape=(192, 160))
    for arch in ARCHS:
        model = next((f for f in (bundled / f"{arch}-fp32.onnx", bundled / f"{arch}-int8.onnx") if f.is_file()), None)
        if model is not None:
            write_case(
                cases,
                f"bundled-{arch}",
                model=model,
                volume=np.asarray(ph.image),
                layout="f",
                spacing=ph.spacing,
                batch_c=1,
                batch_ref=1,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--phantom", action="store_true", help="add cases on runtime/phantom/generate.py's phantom scan")
    ap.add_argument("--bundled", type=Path, help="folder with the demo models {arch}-{fp32,int8}.onnx (with --phantom)")
    a = ap.parse_args()
    out = a.out
    models, cases = out / "models", out / "cases"
    models.mkdir(parents=True, exist_ok=True)
    cases.mkdir(parents=True, exist_ok=True)
    for i, arch in enumerate(ARCHS):
        export_tiny(arch, models / f"{arch}.onnx", seed=100 + i)
    error_models(models)

    unet, att, sc = models / "unet.onnx", models / "attention-unet.onnx", models / "sc-unet.onnx"
    v1 = synthetic_volume((70, 62, 5), seed=1, dtype=np.int16)
    write_case(
        cases, "unet-int16-c", model=unet, volume=v1, layout="c", spacing=(1.2, 1.3, 5.0), batch_c=1, batch_ref=1
    )
    write_case(
        cases, "unet-int16-f-batch3", model=unet, volume=v1, layout="f", spacing=(1.2, 1.3, 5.0), batch_c=3, batch_ref=1
    )
    v2 = synthetic_volume((300, 250, 3), seed=2, dtype=np.float32)
    v2[5, 7, 0], v2[100, 100, 1], v2[200, 10, 2] = np.nan, np.inf, -np.inf  # ignored by the window
    write_case(
        cases, "attention-float32-f", model=att, volume=v2, layout="f", spacing=(0.8, 0.8, 4.0), batch_c=2, batch_ref=2
    )
    v3 = synthetic_volume((64, 64, 7), seed=3, dtype=np.int16)
    write_case(
        cases,
        "sc-unet-default-positions",
        model=sc,
        volume=v3,
        layout="c",
        spacing=(1.5, 1.5, 6.0),
        batch_c=4,
        batch_ref=4,
    )
    edge = np.array([0.004, 0.01, 0.5, 0.999, 1.0, 0.0, 1.2], dtype=np.float32)  # see runtime/model/position.py
    write_case(
        cases,
        "sc-unet-given-positions",
        model=sc,
        volume=v3,
        layout="f",
        spacing=(1.5, 1.5, 6.0),
        batch_c=1,
        batch_ref=1,
        positions=edge,
    )
    thin = synthetic_volume((2, 300, 3), seed=4, dtype=np.int16)  # 2 -> 272 up, 300 -> 240 down, and back
    write_case(
        cases,
        "unet-thin",
        model=unet,
        volume=thin,
        layout="c",
        spacing=(2.0, 0.5, 3.0),
        batch_c=2,
        batch_ref=1,
        min_labels=2,
    )
    flat = np.full((40, 30, 2), 123, dtype=np.int16)
    write_case(
        cases,
        "unet-constant",
        model=unet,
        volume=flat,
        layout="c",
        spacing=(1.0, 1.0, 1.0),
        batch_c=1,
        batch_ref=1,
        expect=6,
    )
    # Antialias resampling (runtime/inference/preprocess.py): both axes shrink, by ~1.1x and by > 2x.
    aa = models / "unet-antialias.onnx"
    write_case(
        cases, "unet-antialias", model=aa, volume=v2, layout="f", spacing=(0.8, 0.8, 4.0), batch_c=2, batch_ref=1
    )
    v4 = synthetic_volume((600, 530, 2), seed=5, dtype=np.int16)
    write_case(
        cases, "unet-antialias-512", model=aa, volume=v4, layout="c", spacing=(0.7, 0.7, 5.0), batch_c=1, batch_ref=1
    )
    if a.phantom:
        phantom_cases(cases, models, a.bundled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
