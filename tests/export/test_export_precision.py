"""Reduced precision: fp16 (float32 I/O, position rule kept in fp32) and int8 static QDQ.

int8 is judged by per-muscle Dice against fp32 on held-out slices, which only means something for a
model with real logit margins. A random-weight model flips labels wherever two logits are close,
so the int8 test trains a tiny UNet for a few seconds on phantom slices first. Such a model is
still far less confident than a real one, so the test uses a documented looser gate (0.85 instead
of the export default 0.97); it checks the machinery (calibration on real slices, held-out
evaluation, uint8-activation QDQ layout), not the final quality of a trained model.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from limbseg_rt.export.onnx_export import export_model
from limbseg_rt.export.parity_data import parity_sets
from limbseg_rt.export.spec import Tolerance
from limbseg_rt.models import create_model, save_checkpoint
from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices, resize_nearest
from limbseg_rt.runtime.model.metadata import read_metadata
from limbseg_rt.runtime.phantom.generate import phantom_arrays

HW = (64, 48)
TRAIN_SEEDS = (9301, 9302)  # disjoint from the parity seeds (parity_data.py)
UNTRAINED_INT8_GATE = 0.85


@pytest.fixture(scope="module")
def slices():
    return parity_sets("phantom", hw=HW, slices_per_volume=6)


def _train_slices():
    xs, ys = [], []
    for seed in TRAIN_SEEDS:
        ph = phantom_arrays(seed, slices=40, shape=(160, 144))
        lo, hi = intensity_window(ph.image)
        xs.append(preprocess_slices(np.moveaxis(ph.image, 2, 0), lo, hi, HW))
        ys.append(resize_nearest(np.moveaxis(ph.labels, 2, 0), HW).astype(np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory):
    """A (8, 16, 32, 64) UNet after 200 Adam steps on phantom slices (a few seconds, 1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threading only adds overhead
    try:
        x, y = _train_slices()
        torch.manual_seed(0)
        model = create_model("unet", features=(8, 16, 32, 64))
        opt = torch.optim.Adam(model.parameters(), lr=5e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(200):
            idx = torch.randint(0, len(x), (8,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("trained") / "unet.pth.tar"
    return save_checkpoint(model.eval(), path, extra={"arch": "unet", "features": (8, 16, 32, 64)})


def test_int8_is_uint8_activation_qdq_and_keeps_muscles(trained_unet, slices, tmp_path):
    out = tmp_path / "unet-int8.onnx"
    result = export_model(
        "unet",
        trained_unet,
        out,
        precision="int8",
        calibration=slices,
        input_hw=HW,
        tolerance=Tolerance(min_muscle_dice=UNTRAINED_INT8_GATE),
        threads=1,
    )
    p = result.parity
    assert p["passed"] and p["precision"] == "int8"
    assert len(p["muscle_dice"]) >= 2, "the trained model should find several muscles on held-out slices"
    assert min(p["muscle_dice"].values()) >= UNTRAINED_INT8_GATE
    conv = p["conversion"]
    assert conv["quantized_nodes"]["Conv"] == "18/19"  # all but the logits convolution
    assert "phantom-9201" in p["source"] and "9201" not in conv["calibration_source"]
    assert p["speed"]["speedup_vs_fp32"] > 0 and p["speed"]["batch"] == 1
    proto = onnx.load(str(out))
    init = {t.name: t for t in proto.graph.initializer}
    q_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes and all(init[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in q_nodes)
    weight_dq = [
        n
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in init
        and init[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert weight_dq and all(len(init[n.input[1]].dims) == 1 for n in weight_dq)  # per-channel scales
    # ConvTranspose computes in float from int8-stored weights (no int8 kernel on the CPU provider).
    producers = {o: n for n in proto.graph.node for o in n.output}
    up = [n for n in proto.graph.node if n.op_type == "ConvTranspose"]
    assert len(up) == 4 and conv["int8_weight_storage_only"] == {"ConvTranspose": 4}
    for n in up:
        dq = producers[n.input[1]]
        assert dq.op_type == "DequantizeLinear" and init[dq.input[0]].data_type == onnx.TensorProto.INT8
    md = read_metadata(out)
    assert md.precision == "int8" and md.parity["speed"] == p["speed"]


def test_int8_weight_storage_keeps_a_conv_transpose_within_half_a_step():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from limbseg_rt.export.quantize import int8_weight_storage

    rng = np.random.default_rng(3)
    # Output channels differ in scale by 100x: one scale per output channel (axis 1) must hold them.
    weight = (rng.standard_normal((6, 4, 2, 2)) * np.array([1.0, 0.01, 0.3, 5.0]).reshape(1, 4, 1, 1)).astype(
        np.float32
    )
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="up")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 10])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((1, 6, 5, 5)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    assert int8_weight_storage(model, "ConvTranspose", axis=1) == 1
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert stored["w_int8"].dtype == np.int8 and stored["w_int8_scale"].shape == (4,) and "w" not in stored
    after = run(model)
    # Each output is a sum of 6 input x weight products; per-channel rounding error <= scale / 2 per weight.
    bound = 0.5 * stored["w_int8_scale"].reshape(1, 4, 1, 1) * np.abs(x).max() * 6
    assert np.all(np.abs(after - before) <= bound)
    assert not np.allclose(after, before, rtol=0, atol=1e-9)  # it really was rounded


def test_int8_can_keep_the_finest_resolution_levels_in_float(trained_unet, slices, tmp_path):
    out = tmp_path / "unet-int8-levels.onnx"
    result = export_model(
        "unet",
        trained_unet,
        out,
        precision="int8",
        calibration=slices,
        input_hw=HW,
        tolerance=Tolerance(min_muscle_dice=UNTRAINED_INT8_GATE),
        threads=1,
        int8_float_levels=1,
    )
    conv = result.parity["conversion"]
    assert conv["float_levels"] == 1 and conv["quantized_nodes"]["Conv"] == "14/19"
    # The upsampling into the float level keeps float weights; the three coarser ones store int8.
    assert conv["int8_weight_storage_only"] == {"ConvTranspose": 3}
    proto = onnx.load(str(out))
    dequantised = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    float_convs = {n.name for n in convs if n.input[1] not in dequantised}
    assert float_convs <= set(conv["fp32_nodes"])
    # Full resolution, found from the graph's wiring: the two convolutions reading the image (the first
    # encoder block), the classifier and the two convolutions feeding it (the last decoder block).
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    first = next(n for n in convs if n.input[0] == "image")
    second = consumers[first.output[0]][0]
    while second.op_type != "Conv":  # through the ReLU
        second = consumers[second.output[0]][0]
    producers = {o: n for n in proto.graph.node for o in n.output}
    tail, node = [], producers["logits"]
    while len(tail) < 3:
        if node.op_type == "Conv":
            tail.append(node)
        node = producers[node.input[0]]
    assert float_convs == {first.name, second.name} | {n.name for n in tail}

    two = export_model(
        "unet",
        trained_unet,
        tmp_path / "two.onnx",
        precision="int8",
        calibration=slices,
        input_hw=HW,
        tolerance=Tolerance(min_muscle_dice=UNTRAINED_INT8_GATE),
        threads=1,
        int8_float_levels=2,
        measure_speed=False,
    )
    assert two.parity["conversion"]["quantized_nodes"]["Conv"] == "10/19"
    assert two.parity["conversion"]["int8_weight_storage_only"] == {"ConvTranspose": 2}
    with pytest.raises(ModelError, match="--int8-float-levels 5 would keep every convolution in float .* at most 4"):
        export_model(
            "unet",
            trained_unet,
            tmp_path / "x.onnx",
            precision="int8",
            calibration=slices,
            input_hw=HW,
            threads=1,
            int8_float_levels=5,
            measure_speed=False,
        )
    assert not (tmp_path / "x.onnx").exists()


def test_fp16_keeps_float32_io_and_the_position_rule(slices, tmp_path):
    torch.manual_seed(7)  # random weights: fp16 agreement is pessimistic here, yet >= 99.5% (seeded)
    ckpt = save_checkpoint(
        create_model("sc-unet", features=(4, 8, 16, 32)), tmp_path / "sc.pth.tar", extra={"features": (4, 8, 16, 32)}
    )
    out = tmp_path / "sc-fp16.onnx"
    result = export_model("sc-unet", ckpt, out, precision="fp16", calibration=slices, input_hw=HW, threads=1)
    p = result.parity
    assert p["passed"] and p["label_agreement"] >= 0.995
    assert "edge positions" in p["source"]
    proto = onnx.load(str(out))
    types = Counter(t.data_type for t in proto.graph.initializer if len(t.dims) == 4)
    assert types[onnx.TensorProto.FLOAT16] >= 19 and types[onnx.TensorProto.FLOAT] == 0
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in proto.graph.input)
    out_types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert out_types == {"logits": onnx.TensorProto.FLOAT, "labels": onnx.TensorProto.UINT8}
    kept = set(p["conversion"]["fp32_nodes"])
    ops = {n.name: n.op_type for n in proto.graph.node}
    assert {"Mul", "Cast", "Equal"} <= {ops[name] for name in kept}
    assert read_metadata(out).precision == "fp16"
    # in fp16 arithmetic these positions would fall into the bin below (quantize.py)
    model = create_model("sc-unet", features=(4, 8, 16, 32))
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    x = np.repeat(slices[1].images[:1], 3, axis=0)
    p = np.array([0.51, 0.55, 0.57], dtype=np.float32)
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"image": x, "position": p}
    )[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x), torch.from_numpy(p)).numpy()
    assert np.abs(got - ref).max() < 0.01 * np.abs(ref).max()
