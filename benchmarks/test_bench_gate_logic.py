"""The gates themselves: each must fail, with the number and the shortfall in its message, when its
ratio is not met. Fast (a tiny ONNX convolution and sleeps), runs in every mode."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from _harness import (
    GateFailure,
    gate_at_least,
    gate_at_most,
    interleaved_medians,
    label_agreement,
    muscle_dice,
    onnx_macs,
    speedup_gate,
)
from _results import Results, write_outputs


def _tiny_conv(path, cin=1, cout=8, k=3):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((cout, cin, k, k)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["image", "W"], ["logits"], pads=[k // 2] * 4)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", cin, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", cout, "H", "W"])],
        [numpy_helper.from_array(w, "W")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_speedup_gate_fails_for_an_engine_slowed_by_sleep(tmp_path):
    import onnxruntime as ort

    path = _tiny_conv(tmp_path / "tiny.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 1, 64, 64), dtype=np.float32)

    def engine():
        sess.run(None, {"image": x})

    def slowed():  # the same engine plus 20 ms: at least ~1.5x slower whatever the machine's load
        engine()
        time.sleep(0.02)

    t = interleaved_medians({"fast": engine, "slow": slowed}, rounds=5)
    with pytest.raises(GateFailure, match=r"speed-up of slowed engine = \d.*needs >= 1\.2x: short by"):
        speedup_gate("slowed engine", t["slow"], t["fast"], 1.2)
    # The same gate passes the other way round: the gate is not a constant failure.
    assert speedup_gate("engine over its slowed copy", t["fast"], t["slow"], 1.2) >= 1.2


def test_gate_messages_say_which_number_missed_and_by_how_much():
    with pytest.raises(GateFailure) as exc:
        gate_at_least("ORT fp32 agreement", 0.9990, 0.9999)
    msg = str(exc.value)
    assert "ORT fp32 agreement = 0.999" in msg and ">= 0.9999" in msg and "short by 0.0009" in msg
    with pytest.raises(GateFailure, match=r"peak RSS = 2500 MiB, must be <= 2048 MiB: over by 452 MiB \(22\.1% over\)"):
        gate_at_most("peak RSS", 2500.0, 2048.0, unit=" MiB")
    with pytest.raises(GateFailure):  # NaN never passes
        gate_at_least("Dice", float("nan"), 0.98)
    gate_at_least("exactly at the threshold", 1.2, 1.2)
    gate_at_most("exactly at the limit", 1.1, 1.1)


def test_agreement_and_dice_gates_catch_a_corrupted_engine():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 38, (4, 64, 48), dtype=np.uint8)
    bad = ref.copy()
    flat = bad.reshape(-1)
    flat[::500] = (flat[::500] + 1) % 38  # 0.2 % of pixels change label
    with pytest.raises(GateFailure, match="label agreement"):
        gate_at_least("label agreement", label_agreement(bad, ref), 0.9999)
    big = np.zeros((1, 100, 100), np.uint8)
    big[0, 20:60, 20:60] = 5
    shrunk = big.copy()
    shrunk[0, 20:25, 20:60] = 0  # muscle 5 loses an eighth of its area
    d = muscle_dice(shrunk, big, 38)
    assert set(d) == {5} and d[5] == pytest.approx(2 * 1400 / (1400 + 1600))
    with pytest.raises(GateFailure, match="minimum per-muscle Dice"):
        gate_at_least("minimum per-muscle Dice", min(d.values()), 0.98)


def test_macs_counted_from_the_onnx_graph(tmp_path):
    path = _tiny_conv(tmp_path / "tiny.onnx", cin=1, cout=8, k=3)
    assert onnx_macs(path, (32, 24)) == 32 * 24 * 8 * 1 * 9


def test_macs_of_an_int8_graph_equal_its_fp32_graphs():
    """Demo models bundled in int8 only are rated by their QDQ graph: same convolutions, same count."""
    from limbseg_rt.runtime.model.bundled import MODELS_DIR

    fp32, int8 = MODELS_DIR / "unet-fp32.onnx", MODELS_DIR / "unet-int8.onnx"
    if not (fp32.is_file() and int8.is_file()):
        pytest.skip("needs the bundled UNet in fp32 and int8")
    assert onnx_macs(int8, (272, 240)) == onnx_macs(fp32, (272, 240)) > 10**9


def test_summary_table_chart_and_json(tmp_path):
    from _ceilings import Ceilings

    res = Results()
    res.ceilings = Ceilings(fp32={"numpy-sgemm": 200.0}, int8={"ort-u8s8": 800.0})
    r = res.row("unet", "pytorch-eager", "fp32", 1)
    r.ms_per_slice, r.gflops, r.pct_ceiling = 500.0, 192.0, 96.0
    r2 = res.row("unet", "openvino-runtime", "int8", 1)
    r2.ms_per_slice, r2.gflops, r2.pct_ceiling = 120.0, 800.0, 100.0
    res.gate("unet: speed", 1.1, ">= 1.2x", False)
    md = res.markdown()
    assert re.search(r"\| unet \| openvino-runtime \| int8 \| 1 \| 120\.0 \| 8\.33 \| 4\.17 \|", md)
    assert "| unet: speed | 1.1 | >= 1.2x | FAIL |" in md
    paths = write_outputs(res, tmp_path / "out", full=False)
    assert {p.name for p in paths} == {"summary.md", "summary.json", "chart.png"}
    assert (tmp_path / "out" / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_auto_config_is_what_create_runner_picks(tmp_path):
    """The gates judge the configuration the runtime really runs for --provider auto on a CPU machine."""
    from _harness import auto_cpu_config

    from limbseg_rt.runtime.engine.providers import PRIORITY, available_engines, choose_provider
    from limbseg_rt.runtime.model.bundled import AUTO_PRECISION

    provider, precision = auto_cpu_config()
    cpu_side = [n for n in available_engines() if n not in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    assert choose_provider("auto", cpu_side)[0] == provider
    assert precision == AUTO_PRECISION[provider][0] == "int8"
    assert PRIORITY.index("openvino") < PRIORITY.index("cpu")


def test_fp32_gate_times_the_batch_size_run_uses():
    """The fp32 gate claims to time `run`'s own batch size: check it against a real run's report."""
    from test_bench_gates import RUN_SLICE_HW, run_batch

    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, _ = make_phantom(3, slices=6, shape=RUN_SLICE_HW, spacing=(0.875, 0.875, 25.0))
    with Segmenter("unet", provider="cpu", precision="fp32") as seg:
        result = seg.segment(image)
        hw = tuple(seg.metadata.input_hw)
    assert result.report.manifest["pipeline"]["batch_size"] == run_batch(hw) == 4


def test_rounds_stop_when_settled_or_over_budget_and_never_below_the_minimum():
    from _harness import MIN_ROUNDS, budget_rounds, interleaved_times

    class Clock:  # each call of a contender advances a fake clock by its "duration"
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()

    def call(durations):
        it = iter(durations)

        def fn():
            clock.now += next(it, durations[-1])

        return fn

    steady = call([1.0] * 50)
    noisy = call([1.0, 2.0] * 25)
    # all contenders settled (identical times): stops at the minimum number of rounds
    t = interleaved_times({"a": steady}, rounds=20, warmup=0, settle_s=0, budget_s=1e9, clock=clock)
    assert len(t["a"]) == MIN_ROUNDS
    # one noisy contender keeps the rounds going until the budget is spent
    t = interleaved_times(
        {"a": call([1.0] * 50), "b": noisy}, rounds=20, warmup=0, settle_s=0, budget_s=9.5, clock=clock
    )
    assert len(t["a"]) == 4  # rounds of 2-3 s each: over 9.5 s after the 4th round
    # without a budget the noisy pair runs all its rounds
    t = interleaved_times(
        {"a": call([1.0] * 50), "b": call([1.0, 2.0] * 25)}, rounds=7, warmup=0, settle_s=0, budget_s=1e9, clock=clock
    )
    assert len(t["a"]) == 7
    assert budget_rounds(10.0, 5, budget_s=30) == 3 and budget_rounds(0.1, 5, budget_s=30) == 5
    assert budget_rounds(100.0, 5, budget_s=30) == MIN_ROUNDS
