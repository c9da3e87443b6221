"""Reduced-precision variants of an exported fp32 graph: fp16 and int8 (static QDQ).

Both keep the graph's I/O types (float32 in, float32 ``logits`` and uint8 ``labels`` out) and keep
SC-UNet's position one-hot subgraph in fp32 / unquantised: its ``float32(p) * 100`` truncation is
the rule of runtime/position.py, and in fp16 e.g. p = 0.51, 0.55, 0.57 land in the bin below.

int8 layout (FINDINGS.md): ONNX Runtime's CPU int8 kernels are fast on this machine's VNNI units
only with *uint8 activations*; int8 activations are ~10x slower in GEMM. So activations are QUInt8
(asymmetric), weights QInt8 per output channel (symmetric), in QDQ format, calibrated with MinMax on
real preprocessed slices. Quantised op types: Conv, Relu (fused into the convolution's output
range) and MaxPool (exact on uint8), so each encoder block runs QLinearConv -> uint8 MaxPool ->
QLinearConv without leaving int8. Kept in float: Concat (one shared scale for the skip and the
upsampled path cost up to 0.17 muscle Dice on a briefly trained model, measured), the final 1x1
logits convolution (argmax decides between close logits; 64 -> 38 channels, negligible compute) and
ConvTranspose (no int8 kernel in ONNX Runtime's CPU provider; FINDINGS.md). ONNX Runtime's optimised
graph then holds 18 QLinearConv for the UNet and is about as lean as quantising every op type.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

from limbseg_rt.export.parity_data import SliceSet
from limbseg_rt.export.spec import IMAGE, POSITION
from limbseg_rt.runtime.errors import ModelError

INT8_OP_TYPES: tuple[str, ...] = ("Conv", "Relu", "MaxPool")


def position_nodes(model) -> list[str]:
    """Names of the nodes computed from ``position`` alone (the one-hot + spatiallinear Gemm)."""
    from_position = {POSITION}
    graph_inputs = {i.name for i in model.graph.input}
    initialisers = {t.name for t in model.graph.initializer}
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        ins = [i for i in node.input if i]
        if any(i in from_position for i in ins) and all(
            i in from_position or (i in initialisers) or (i not in graph_inputs and _is_constant(model, i))
            for i in ins
        ):
            from_position.update(node.output)
            names.append(node.name)
    return names


def _input_chain(model, tensor: str):
    """The node producing ``tensor``, then the producer of that node's first input, and so on."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(tensor)
    while node is not None:
        yield node
        node = producers.get(node.input[0]) if node.input else None


def logits_conv(model, output: str = "logits") -> str | None:
    """Name of the convolution that produces ``output`` (directly or through Mul/Cast nodes)."""
    for node in itertools.islice(_input_chain(model, output), 8):
        if node.op_type == "Conv":
            return node.name
    return None


def convs_before(model, conv: str, count: int) -> list[str]:
    """Up to ``count`` convolutions met walking back from ``conv`` through each node's first input,
    nearest first. For the networks here: the final decoder block's two 3x3 convolutions, then (the
    concatenation puts the skip first) the first encoder block's two."""
    node = next(n for n in model.graph.node if n.name == conv)
    if not node.input:
        return []
    convs = (n.name for n in _input_chain(model, node.input[0]) if n.op_type == "Conv")
    return list(itertools.islice(convs, count))


def _is_constant(model, name: str) -> bool:
    return any(n.op_type == "Constant" and name in n.output for n in model.graph.node)


def ensure_node_names(model) -> None:
    """Give every unnamed node a unique name (the converters address nodes by name)."""
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def to_fp16(fp32_path: Path, out_path: Path) -> dict:
    """Write an fp16 copy of ``fp32_path`` (float32 I/O kept). Returns info for the parity record."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    ensure_node_names(model)
    blocked = position_nodes(model)
    with warnings.catch_warnings():  # it warns for every weight below fp16's range (set to +-1e-7)
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=blocked, disable_shape_infer=False
        )
    onnx.save(converted, str(out_path))
    return {"converter": "onnxconverter_common.float16", "keep_io_types": True, "fp32_nodes": blocked}


class _Reader:
    """CalibrationDataReader over preprocessed slices, ``batch`` slices per call."""

    def __init__(self, slices: SliceSet, needs_position: bool, batch: int = 4):
        self._slices, self._needs_position, self._batch, self._start = slices, needs_position, batch, 0

    def get_next(self):
        if self._start >= len(self._slices):
            return None
        s = slice(self._start, self._start + self._batch)
        self._start += self._batch
        feeds = {IMAGE: np.ascontiguousarray(self._slices.images[s], dtype=np.float32)}
        if self._needs_position:
            feeds[POSITION] = np.ascontiguousarray(self._slices.positions[s], dtype=np.float32)
        return feeds

    def rewind(self) -> None:
        self._start = 0


def to_int8(fp32_path: Path, out_path: Path, calibration: SliceSet, *, needs_position: bool, work_dir: Path,
            keep_float: int = 0) -> dict:
    """Static QDQ int8 (uint8 activations, int8 per-channel weights), MinMax-calibrated on
    ``calibration`` slices. Returns info (quantised node counts) for the parity record.

    ``keep_float``: also keep this many convolutions before the logits convolution in float (2 = the
    final full-resolution decoder block). For narrow networks, whose few full-resolution channels
    decide the borders of small muscles, this trades speed for agreement with fp32.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one slice")
    prepared = work_dir / "int8-prepared.onnx"
    # ORT's recommended pre-processing (graph optimisation + ONNX shape inference). Its symbolic
    # shape inference gives up on our dynamic H, W; the exported graph already carries ONNX shapes.
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    ensure_node_names(model)
    excluded = position_nodes(model)
    final = logits_conv(model)
    if final:
        excluded.append(final)
        tail = convs_before(model, final, keep_float)
        if len(tail) < keep_float:
            raise ModelError(f"--int8-keep-float {keep_float}: only {len(tail)} convolution(s) feed the logits; "
                             f"use at most {len(tail)}")
        excluded.extend(tail)
    elif keep_float > 0:
        raise ModelError(f"--int8-keep-float {keep_float}: the logits do not come from a convolution in this graph")
    onnx.save(model, str(prepared))
    quantize_static(
        str(prepared),
        str(out_path),
        _Reader(calibration, needs_position),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=list(INT8_OP_TYPES),
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    quantised = onnx.load(str(out_path), load_external_data=False)
    dq_inputs = {n.output[0] for n in quantised.graph.node if n.op_type == "DequantizeLinear"}
    counts: dict[str, list[int]] = {}
    for n in quantised.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            # quantised = its weights are int8 (an excluded conv may still read a dequantised input)
            q = int(len(n.input) > 1 and n.input[1] in dq_inputs)
            c = counts.setdefault(n.op_type, [0, 0])
            c[0] += q
            c[1] += 1
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "activations": "QUInt8 (asymmetric)",
        "weights": "QInt8 per-channel (symmetric)",
        "calibration_method": "MinMax",
        "op_types_quantized": list(INT8_OP_TYPES),
        "calibration_slices": len(calibration),
        "calibration_source": calibration.source,
        "quantized_nodes": {k: f"{v[0]}/{v[1]}" for k, v in counts.items()},
        "fp32_nodes": excluded,
    }
