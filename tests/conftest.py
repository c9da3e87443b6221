"""Shared fixtures for runtime tests: tiny ONNX models built here with ``onnx.helper`` (dev-only).

The tiny model is one 3x3 convolution from the image to 38 class logits (plus, for SC-UNet, a
per-class term times the slice position). Class ``c``'s logit is ``c * s - c^2 * d / 2`` where ``s``
is a lopsided local average of the normalised intensity, so the argmax picks the class whose
intensity bin ``c * d`` is nearest to ``s``: labels follow the image's structure, and because the
kernel is asymmetric, a flipped or transposed slice would give different labels (orientation bugs
show). It is fully convolutional, so any H and W work (tile mode too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from limbseg_rt.runtime.model.input_spec import NormalisationSpec
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.model.metadata import METADATA_KEY, ModelMetadata, PositionSpec


@pytest.fixture(autouse=True, scope="session")
def _private_precision_profile(tmp_path_factory):
    """Tests never see the developer's own `limbseg-rt tune` profile (it would change what
    --precision auto runs): every test, and every CLI it starts, gets an empty cache folder."""
    import os

    old = os.environ.get("LIMBSEG_RT_CACHE")
    os.environ["LIMBSEG_RT_CACHE"] = str(tmp_path_factory.mktemp("limbseg-rt-cache"))
    yield
    if old is None:
        os.environ.pop("LIMBSEG_RT_CACHE", None)
    else:
        os.environ["LIMBSEG_RT_CACHE"] = old


TINY_INPUT_HW = (64, 48)
TINY_PIXEL_SPACING_MM = (2.0, 2.0)
# Lopsided kernel (sums to 1): weights the upper-left neighbours more than the lower-right ones.
TINY_KERNEL = np.array([[0.20, 0.15, 0.05], [0.15, 0.30, 0.02], [0.08, 0.03, 0.02]], dtype=np.float32)


def tiny_model_proto(
    arch: str = "unet", *, classes: int = 38, input_hw=TINY_INPUT_HW, pixel_spacing_mm=TINY_PIXEL_SPACING_MM
):
    """An ``onnx.ModelProto`` with limbseg-rt metadata; ``arch`` is ``"unet"`` or ``"sc-unet"``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = np.arange(classes, dtype=np.float32)
    d = np.float32(1.0 / (classes - 1))
    weight = (c[:, None, None, None] * TINY_KERNEL[None, None]).astype(np.float32)  # [C, 1, 3, 3]
    bias = (-(c**2) * d / 2).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    conv_out = "conv" if arch == "sc-unet" else "logits"
    nodes = [helper.make_node("Conv", ["image", "W", "B"], [conv_out], pads=[1, 1, 1, 1], kernel_shape=[3, 3])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    position = None
    if arch == "sc-unet":
        # Position shifts the class preference: a distal slice (p = 1) favours higher classes.
        shift = (0.3 * c * d).astype(np.float32).reshape(1, classes, 1, 1)
        inits += [numpy_helper.from_array(shift, "P"), numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "S")]
        nodes += [
            helper.make_node("Reshape", ["position", "S"], ["pos4"]),
            helper.make_node("Mul", ["pos4", "P"], ["pterm"]),
            helper.make_node("Add", ["conv", "pterm"], ["logits"]),
        ]
        inputs.append(helper.make_tensor_value_info("position", TensorProto.FLOAT, ["N"]))
        position = PositionSpec()
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "H", "W"])]
    graph = helper.make_graph(nodes, f"tiny-{arch}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    table = default_label_table()
    md = ModelMetadata(
        architecture=arch,
        features=(1,),
        in_channels=1,
        labels=table if classes == len(table) else type(table)(table.labels[:classes]),
        input_hw=tuple(input_hw),
        normalisation=NormalisationSpec(),
        precision="fp32",
        inputs=tuple(i.name for i in inputs),
        outputs=("logits",),
        position=position,
        pixel_spacing_mm=tuple(pixel_spacing_mm) if pixel_spacing_mm else None,
        exporter="tests/runtime/conftest.py tiny model",
    )
    helper.set_model_props(model, {METADATA_KEY: md.to_json()})
    onnx.checker.check_model(model)
    return model


def tiny_model(tmp_path_factory, arch: str = "unet", **kwargs) -> Path:
    """Write a tiny model (see module docstring) to a fresh temp folder and return its path."""
    import onnx

    folder = tmp_path_factory.mktemp(f"tiny-{arch}")
    path = folder / f"tiny-{arch}.onnx"
    onnx.save(tiny_model_proto(arch, **kwargs), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_unet_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory, "unet")


@pytest.fixture(scope="session")
def tiny_scunet_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory, "sc-unet")


@pytest.fixture(scope="session")
def tiny_unet_no_spacing_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory, "unet", pixel_spacing_mm=None)


@pytest.fixture(scope="session", autouse=True)
def every_written_report_follows_the_schema(tmp_path_factory):
    """After the session: every ``*_report.json`` a test wrote under pytest's temporary folder
    validates against ``runtime/report/report.schema.json`` (jsonschema, a dev dependency)."""
    yield
    try:
        import jsonschema
    except ImportError:
        return
    import json

    from limbseg_rt.runtime.report.run_report import REPORT_SCHEMA, schema_path

    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    bad = []
    for path in Path(tmp_path_factory.getbasetemp()).rglob("*_report.json"):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # tests that damage files on purpose
        if isinstance(report, dict) and report.get("schema") == REPORT_SCHEMA:
            bad.extend(f"{path}: {e.json_path}: {e.message}" for e in validator.iter_errors(report))
    assert not bad, "reports that do not follow report.schema.json:\n" + "\n".join(bad[:20])
