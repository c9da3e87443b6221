"""Tiny ONNX segmentation models with real limbseg-rt metadata, built by tests (no fixtures on disk).

``make_tiny_model(path, ...)``: ``image`` float32 [N,1,H,W] (dynamic N) -> 3x3 Conv -> ``logits``
float32 [N,C,H,W]; optionally ``labels`` uint8 [N,H,W] = argmax over C. With ``position=True``
(SC-UNet style) the graph also takes ``position`` float32 [N] and adds it to every pixel before the
convolution, so results depend on it. ``precision="int8"`` quantises the Conv with ONNX Runtime's
static QDQ quantiser (uint8 activations, int8 per-channel weights), like the project's int8 models.
Needs the ``onnx`` package (test/training side only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from limbseg_rt.runtime.model.input_spec import NormalisationSpec
from limbseg_rt.runtime.model.labels import Label, LabelTable, default_label_table
from limbseg_rt.runtime.model.metadata import METADATA_KEY, ModelMetadata, PositionSpec


def small_label_table(n: int) -> LabelTable:
    """Background + ``n - 1`` made-up muscles (for graphs with few classes)."""
    labels = [Label(0, "background", "BG", (0, 0, 0))]
    labels += [Label(i, f"muscle {i}", f"M{i}", (10 * i % 256, 50, 200)) for i in range(1, n)]
    return LabelTable(tuple(labels))


def tiny_metadata(
    *, classes: int, hw: tuple[int, int], position: bool, labels_output: bool, precision: str
) -> ModelMetadata:
    table = default_label_table() if classes == 38 else small_label_table(classes)
    return ModelMetadata(
        architecture="sc-unet" if position else "unet",
        features=(4,),
        in_channels=1,
        labels=table,
        input_hw=hw,
        normalisation=NormalisationSpec(),
        precision=precision,
        inputs=("image", "position") if position else ("image",),
        outputs=("logits", "labels") if labels_output else ("logits",),
        position=PositionSpec() if position else None,
        checkpoint_sha256="ab" * 32,
        exporter="tests/runtime/onnx_factory.py",
        versions={"opset": 17},
        parity={"argmax_agreement": 1.0, "max_abs_logit_diff": 0.0},
    )


def make_tiny_model(
    path: Path,
    *,
    classes: int = 38,
    hw: tuple[int, int] = (32, 24),
    position: bool = False,
    labels_output: bool = True,
    precision: str = "fp32",
    seed: int = 0,
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, w = hw
    weight = rng.normal(0.0, 1.0, (classes, 1, 3, 3)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, (classes,)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "conv_w"), numpy_helper.from_array(bias, "conv_b")]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, h, w])]
    nodes = []
    conv_in = "image"
    if position:
        inputs.append(helper.make_tensor_value_info("position", TensorProto.FLOAT, ["batch"]))
        inits.append(numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "pos_axes"))
        nodes += [
            helper.make_node("Unsqueeze", ["position", "pos_axes"], ["pos4"]),
            helper.make_node("Add", ["image", "pos4"], ["image_pos"]),
        ]
        conv_in = "image_pos"
    nodes.append(helper.make_node("Conv", [conv_in, "conv_w", "conv_b"], ["logits"], pads=[1, 1, 1, 1]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes, h, w])]
    if labels_output:
        nodes += [
            helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
            helper.make_node("Cast", ["argmax"], ["labels"], to=TensorProto.UINT8),
        ]
        outputs.append(helper.make_tensor_value_info("labels", TensorProto.UINT8, ["batch", h, w]))
    graph = helper.make_graph(nodes, "tiny_seg", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = Path(path)
    if precision == "int8":
        fp32_path = path.with_suffix(".fp32-tmp.onnx")
        onnx.save(model, fp32_path)
        _quantize(fp32_path, path, hw=hw, position=position, rng=rng)
        fp32_path.unlink()
        model = onnx.load(path)
    md = tiny_metadata(classes=classes, hw=hw, position=position, labels_output=labels_output, precision=precision)
    del model.metadata_props[:]
    model.metadata_props.add(key=METADATA_KEY, value=md.to_json())
    onnx.save(model, path)
    return path


def _quantize(src: Path, dst: Path, *, hw, position: bool, rng) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            feeds = []
            for _ in range(4):
                feed = {"image": rng.random((2, 1, *hw), dtype=np.float32)}
                if position:
                    feed["position"] = rng.random(2, dtype=np.float32)
                feeds.append(feed)
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
    )
