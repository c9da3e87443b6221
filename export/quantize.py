"""Reduced-precision variants of an exported fp32 graph: fp16 and int8 (static QDQ).

Both keep the graph's I/O types (float32 in, float32 ``logits`` and uint8 ``labels`` out) and keep
SC-UNet's position one-hot subgraph in fp32 / unquantised: its ``float32(p) * 100`` truncation is
the rule of runtime/model/position.py, and in fp16 e.g. p = 0.51, 0.55, 0.57 land in the bin below.

int8 layout (docs/engines.md): ONNX Runtime's CPU int8 kernels are fast on this machine's VNNI units
only with *uint8 activations*; int8 activations are ~10x slower in GEMM. So activations are QUInt8
(asymmetric), weights QInt8 per output channel (symmetric), in QDQ format, calibrated with MinMax on
real preprocessed slices. Quantised op types: Conv, Relu (fused into the convolution's output
range) and MaxPool (exact on uint8), so each encoder block runs QLinearConv -> uint8 MaxPool ->
QLinearConv without leaving int8. Kept in float: Concat (one shared scale for the skip and the
upsampled path cost up to 0.17 muscle Dice on a briefly trained model, measured), the final 1x1
logits convolution (argmax decides between close logits; 64 -> 38 channels, negligible compute) and
ConvTranspose (no int8 kernel in ONNX Runtime's CPU provider; docs/engines.md). ONNX Runtime's optimised
graph then holds 18 QLinearConv for the UNet and is about as lean as quantising every op type.
ConvTranspose weights are still stored as int8 (per output channel, dequantised by a
DequantizeLinear node in front of the float ConvTranspose; not at the levels kept in float): a
quarter of their float size, which keeps the bundled demo models within their size budget.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np

from limbseg_rt.export.parity_data import SliceSet
from limbseg_rt.export.spec import IMAGE, POSITION
from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW

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
            i in from_position or (i in initialisers) or (i not in graph_inputs and _is_constant(model, i)) for i in ins
        ):
            from_position.update(node.output)
            names.append(node.name)
    return names


def logits_conv(model, output: str = "logits") -> str | None:
    """Name of the convolution that produces ``output`` (directly or through Mul/Cast nodes)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(output)
    for _ in range(8):
        if node is None or node.op_type == "Conv":
            return node.name if node is not None else None
        node = producers.get(node.input[0]) if node.input else None
    return None


def conv_levels(model, hw: tuple[int, int], op_types: tuple[str, ...] = ("Conv",)) -> dict[str, int]:
    """Resolution level of the output of each ``op_types`` node for an ``hw`` input: 0 = full (H x W), 1 = half,
    2 = quarter, ... From ONNX shape inference on a copy of ``model`` whose inputs are given a batch of
    1 and ``hw`` (the graph's own H, W are dynamic). Raises ``ModelError`` if a size cannot be inferred."""
    import copy

    from onnx import shape_inference

    static = copy.deepcopy(model)
    for graph_input in static.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        fixed = [1, 1, *hw] if graph_input.name == IMAGE else [1]
        for dim, value in zip(dims, fixed):
            dim.ClearField("dim_param")
            dim.dim_value = value
    static = shape_inference.infer_shapes(static)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in itertools.chain(static.graph.value_info, static.graph.output)
    }
    levels = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        shape = shapes.get(node.output[0], [])
        matches = [k for k in range(8) if len(shape) == 4 and shape[2:] == [hw[0] >> k, hw[1] >> k]]
        if not matches:
            raise ModelError(f"int8: cannot tell the resolution of convolution {node.name} (inferred shape {shape})")
        levels[node.name] = matches[0]
    return levels


def int8_weight_storage(model, op_type: str, *, axis: int, skip=()) -> int:
    """Store the float weights (input 1) of every ``op_type`` node as int8, symmetric per channel along
    ``axis``, behind a DequantizeLinear node; the op itself still computes in float. Returns how many
    weights were converted. Nodes named in ``skip``, and weights already produced by a node (e.g. a
    quantiser's DequantizeLinear) or shared by several nodes, are left alone."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    converted = 0
    for node in list(model.graph.node):
        if (
            node.op_type != op_type
            or node.name in skip
            or len(node.input) < 2
            or node.input[1] not in inits
            or uses[node.input[1]] > 1
        ):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        reduce_axes = tuple(a for a in range(weight.ndim) if a != axis)
        peak = np.abs(weight).max(axis=reduce_axes)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shape = [1] * weight.ndim
        shape[axis] = -1
        q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = node.input[1]
        names = (f"{base}_int8", f"{base}_int8_scale", f"{base}_int8_zero_point", f"{base}_dequantized")
        model.graph.initializer.remove(inits[base])
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, names[0]),
                numpy_helper.from_array(scale, names[1]),
                numpy_helper.from_array(np.zeros_like(q, shape=scale.shape), names[2]),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear", list(names[:3]), [names[3]], name=f"{node.name}_weight_DequantizeLinear", axis=axis
        )
        model.graph.node.insert(list(model.graph.node).index(node), dq)
        node.input[1] = names[3]
        converted += 1
    return converted


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


def to_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: SliceSet,
    *,
    needs_position: bool,
    work_dir: Path,
    float_levels: int = 0,
    hw: tuple[int, int] = MODEL_INPUT_HW,
) -> dict:
    """Static QDQ int8 (uint8 activations, int8 per-channel weights), MinMax-calibrated on
    ``calibration`` slices. Returns info (quantised node counts) for the parity record.

    ``float_levels``: also keep in float every convolution of the finest ``float_levels`` resolution
    levels (1 = the input's full resolution: the first encoder block and the last decoder block; 2 = also
    half resolution). In narrow networks the few channels at these levels decide the borders of small
    muscles, and quantising them flips boundary pixels. The coarser levels stay int8; in a UNet each
    level does about the same arithmetic (channels double as the area quarters), so K = 2 leaves about
    3/5 of it in int8. ``hw``: a slice size to resolve the levels with.
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
    float_upsampling: set[str] = set()
    if float_levels > 0:
        # One shape inference for both op types; ConvTranspose into a float level keeps float weights.
        levels = conv_levels(model, hw, ("Conv", "ConvTranspose"))
        op_type = {n.name: n.op_type for n in model.graph.node}
        deepest = max(level for n, level in levels.items() if op_type[n] == "Conv")
        if float_levels > deepest:
            raise ModelError(
                f"--int8-float-levels {float_levels} would keep every convolution in float (this network "
                f"has {deepest + 1} resolution levels); use at most {deepest}"
            )
        fine = [n for n, level in levels.items() if level < float_levels]
        float_upsampling = {n for n in fine if op_type[n] == "ConvTranspose"}
        excluded.extend(n for n in fine if op_type[n] == "Conv" and n not in excluded)
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
    # Counted before the ConvTranspose weights are stored as int8: those still compute in float.
    dq_inputs = {n.output[0] for n in quantised.graph.node if n.op_type == "DequantizeLinear"}
    counts: dict[str, list[int]] = {}
    for n in quantised.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            # quantised = its weights are int8 (an excluded conv may still read a dequantised input)
            q = int(len(n.input) > 1 and n.input[1] in dq_inputs)
            c = counts.setdefault(n.op_type, [0, 0])
            c[0] += q
            c[1] += 1
    stored = int8_weight_storage(quantised, "ConvTranspose", axis=1, skip=float_upsampling)
    onnx.save(quantised, str(out_path))
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
        "int8_weight_storage_only": {"ConvTranspose": stored},
        "float_levels": float_levels,
        "fp32_nodes": excluded,
    }
