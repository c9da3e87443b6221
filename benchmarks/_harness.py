"""Benchmark harness: engines behind one call, timers, the machine's ceilings, MAC counts, gates.

Everything here is measured in the same process and run as the engines it is compared with, so the
gates are ratios (engine vs engine, engine vs ceiling) and never absolute times.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TORCH_THREADS = 2


# ----------------------------------------------------------------------------- gates
class GateFailure(AssertionError):
    """A performance or accuracy gate was missed; the message names the number and the shortfall."""


def gate_at_least(what: str, value: float, required: float, *, unit: str = "", detail: str = "") -> None:
    """Raise ``GateFailure`` unless ``value >= required`` (NaN always fails)."""
    if not (value >= required):  # NaN-safe: NaN >= x is False
        short = required - value
        rel = f" ({short / required:.1%} short)" if required and math.isfinite(value) else ""
        raise GateFailure(
            f"GATE MISSED: {what} = {value:.4g}{unit}, needs >= {required:.4g}{unit}: short by "
            f"{short:.4g}{unit}{rel}" + (f"; {detail}" if detail else "")
        )


def gate_at_most(what: str, value: float, limit: float, *, unit: str = "", detail: str = "") -> None:
    """Raise ``GateFailure`` unless ``value <= limit`` (NaN always fails)."""
    if not (value <= limit):
        over = value - limit
        rel = f" ({over / limit:.1%} over)" if limit and math.isfinite(value) else ""
        raise GateFailure(
            f"GATE MISSED: {what} = {value:.4g}{unit}, must be <= {limit:.4g}{unit}: over by "
            f"{over:.4g}{unit}{rel}" + (f"; {detail}" if detail else "")
        )


def speedup_gate(what: str, candidate_s: float, reference_s: float, min_speedup: float, **kw) -> float:
    """Speed-up = ``reference_s / candidate_s`` (same work); raises ``GateFailure`` below ``min_speedup``."""
    speedup = reference_s / candidate_s
    gate_at_least(
        f"speed-up of {what}",
        speedup,
        min_speedup,
        unit="x",
        detail=f"{candidate_s * 1e3:.1f} ms vs {reference_s * 1e3:.1f} ms"
        + (f"; {kw['detail']}" if kw.get("detail") else ""),
    )
    return speedup


# ----------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], object], *, rounds: int, warmup: int = 1) -> list[float]:
    """Wall times (s) of ``rounds`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved_medians(
    fns: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 1, settle_s: float = 0.02
) -> dict[str, float]:
    """Median of ``interleaved_times`` per function."""
    return {
        k: float(np.median(v))
        for k, v in interleaved_times(fns, rounds=rounds, warmup=warmup, settle_s=settle_s).items()
    }


# Time budget (s) for timing one engine (or one set of interleaved contenders) beyond its warm-up;
# rounds stop early once it is spent (at least MIN_ROUNDS). LIMBSEG_BENCH_BUDGET_S overrides it.
ENGINE_BUDGET_S = float(os.environ.get("LIMBSEG_BENCH_BUDGET_S", "30"))
MIN_ROUNDS = 3
# Rounds also stop early when every contender's spread is below this: (max - min) / min of the
# rounds so far, i.e. more rounds would not change the comparison.
SETTLED_SPREAD = 0.03


def budget_rounds(call_s: float, rounds: int, budget_s: float = ENGINE_BUDGET_S, least: int = MIN_ROUNDS) -> int:
    """Rounds to time a call of ``call_s`` seconds: ``rounds`` unless that exceeds ``budget_s``,
    never fewer than ``least``."""
    return max(least, min(rounds, int(budget_s // max(call_s, 1e-9))))


def settled(times: list[float], spread: float = SETTLED_SPREAD) -> bool:
    """True when at least ``MIN_ROUNDS`` times lie within ``spread`` of their minimum."""
    return len(times) >= MIN_ROUNDS and (max(times) - min(times)) / min(times) < spread


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int = 1,
    settle_s: float = 0.02,
    budget_s: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Wall times (s) per function, calling them in turn (A B A B ...) so that load from other
    processes on a shared machine hits every contender alike. ``warmup`` untimed rounds first.

    ``rounds`` is the most; after ``MIN_ROUNDS`` the rounds stop when every contender is
    ``settled`` or the time since the first timed round exceeds ``budget_s`` (default
    ``ENGINE_BUDGET_S``), so slow machines stay in their time and quiet ones do not over-sample.

    ``settle_s`` (untimed) after each call: ONNX Runtime's and OpenVINO's worker threads spin for a
    moment after a run; without a pause they would steal the cores from the next contender's threads
    (PyTorch's OpenMP team suffers most) and bias the comparison.
    """
    budget_s = ENGINE_BUDGET_S if budget_s is None else budget_s
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = clock()
    for i in range(rounds):
        for k, fn in fns.items():
            time.sleep(settle_s)
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
        if i + 1 >= MIN_ROUNDS and (all(settled(v) for v in times.values()) or clock() - start > budget_s):
            break
    return times


# ----------------------------------------------------------------------------- MACs
def onnx_macs(path: Path, hw: tuple[int, int], *, in_channels: int = 1) -> int:
    """Multiply-accumulates of one slice [1, C, H, W] through an fp32 ONNX graph: Conv, ConvTranspose,
    Gemm and MatMul, from shapes inferred with the input fixed to batch 1 at ``hw``."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name == "image":
            for d, v in zip(dims, (1, in_channels, *hw)):
                d.ClearField("dim_param")
                d.dim_value = v
        elif len(dims) >= 1:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    weights = {t.name: tuple(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
    for node in model.graph.node:  # exported constants may carry weights too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims:
            weights[node.output[0]] = tuple(node.attribute[0].t.dims)
    total = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w = weights.get(node.input[1]) or tuple(shapes[node.input[1]])
            out = shapes[node.output[0]]
            total += int(np.prod(out)) * (w[1] * int(np.prod(w[2:])))
        elif node.op_type == "ConvTranspose":
            w = weights.get(node.input[1]) or tuple(shapes[node.input[1]])  # [Cin, Cout/g, kh, kw]
            inp = shapes[node.input[0]]
            total += int(np.prod(inp)) * w[1] * int(np.prod(w[2:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or list(weights.get(node.input[0], ()))
            b = weights.get(node.input[1]) or tuple(shapes.get(node.input[1], ()))
            if a and b:
                k = b[0] if not attrs.get("transB") else b[1]
                n_out = b[1] if not attrs.get("transB") else b[0]
                total += int(np.prod(a[:-1])) * k * n_out
    if total <= 0:
        raise ValueError(f"{path.name}: no convolution shapes could be inferred")
    return total


# ----------------------------------------------------------------------------- engines
@dataclass
class Engine:
    """One engine + precision ready to run: ``predict(image [N,1,H,W] f32, position [N] | None) ->
    logits [N,C,H,W]``. ``label`` e.g. ``onnxruntime-cpu``; ``precision`` as actually run (read back)."""

    label: str
    precision: str
    predict: Callable
    describe: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None

    def labels(self, image: np.ndarray, position=None) -> np.ndarray:
        return np.argmax(self.predict(image, position), axis=1).astype(np.uint8)


def torch_engine(model) -> Engine:
    """PyTorch eager fp32 reference: ``torch.inference_mode``, ``TORCH_THREADS`` threads, NCHW."""
    import torch

    torch.set_num_threads(TORCH_THREADS)
    needs_position = getattr(model, "needs_position", None)
    if needs_position is None:
        needs_position = type(model).__name__ == "SCUNet"

    def predict(image: np.ndarray, position=None) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            if needs_position:
                return model(x, torch.from_numpy(np.asarray(position, dtype=np.float32))).numpy()
            return model(x).numpy()

    return Engine(
        "pytorch-eager", "fp32", predict, {"engine": "pytorch", "torch": torch.__version__, "threads": TORCH_THREADS}
    )


ENGINE_LABEL = {"cpu": "onnxruntime-cpu", "cuda": "onnxruntime-cuda", "tensorrt": "onnxruntime-tensorrt"}


def runner_engine(
    path: Path,
    provider: str,
    *,
    threads: int = 2,
    max_batch: int = 16,
    fp16: bool = False,
    cache_dir: Path | None = None,
    precision: str = "auto",
) -> Engine:
    """An Engine over ``runtime.engine.create_runner`` for one explicit provider (no fallback).
    ``precision``: ``auto`` (the file's own) or ``bf16`` (an fp32 file on the OpenVINO engine)."""
    from limbseg_rt.runtime.engine.runners import create_runner

    runner = create_runner(
        path,
        provider=provider,
        threads=threads,
        max_batch=max_batch,
        fp16=fp16,
        cache_dir=cache_dir,
        precision=precision,
    )
    info = runner.describe()
    label = "openvino-runtime" if info["engine"] == "openvino" else ENGINE_LABEL.get(runner.provider, runner.provider)
    return Engine(label, runner.precision, runner.predict, info, runner.close)


def auto_cpu_config() -> tuple[str, str]:
    """(provider, precision) that ``--provider auto --precision auto`` runs on a machine without GPU."""
    from limbseg_rt.runtime.engine.providers import available_engines, choose_provider
    from limbseg_rt.runtime.model.bundled import AUTO_PRECISION

    cpu_side = [n for n in available_engines() if n not in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    short, _ = choose_provider("auto", cpu_side)
    return short, AUTO_PRECISION[short][0]


# ----------------------------------------------------------------------------- accuracy
def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels with the same label."""
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def muscle_dice(pred: np.ndarray, ref: np.ndarray, classes: int, *, min_pixels: int = 100) -> dict[int, float]:
    """Dice per muscle (1..classes-1) for muscles covering >= ``min_pixels`` in the union (smaller ones
    are dominated by a handful of boundary pixels)."""
    from limbseg_rt.runtime.report.metrics import label_counts

    counts = label_counts(pred, ref, classes)
    dice = counts.dice()
    return {c: float(dice[c]) for c in range(1, classes) if counts.pred[c] + counts.ref[c] >= min_pixels}


def muscle_rve(pred: np.ndarray, ref: np.ndarray, classes: int, *, min_pixels: int = 100) -> dict[int, float]:
    """Relative volume error (%) per muscle vs ``ref`` for muscles with >= ``min_pixels`` in ``ref``."""
    from limbseg_rt.runtime.report.metrics import label_counts

    counts = label_counts(pred, ref, classes)
    rve = counts.rve_percent()
    return {c: float(rve[c]) for c in range(1, classes) if counts.ref[c] >= min_pixels}


def phantom_model_slices(seed: int, *, slices: int, hw: tuple[int, int], shape=(256, 256)):
    """(images float32 [N,1,H,W] preprocessed exactly as the runtime does, positions float32 [N],
    phantom) for a phantom volume: the same data every engine sees."""
    from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices
    from limbseg_rt.runtime.model.position import slice_positions
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    ph = phantom_arrays(seed, slices=slices, shape=shape)
    lo, hi = intensity_window(ph.image)
    images = preprocess_slices(np.moveaxis(ph.image, 2, 0), lo, hi, hw)
    positions = slice_positions(slices, proximal_first=False).astype(np.float32)
    return images, positions, ph


def in_batches(engine: Engine, images: np.ndarray, positions, batch: int) -> np.ndarray:
    """Labels uint8 [N,H,W] of ``images`` run ``batch`` slices per call."""
    out = []
    for s in range(0, len(images), batch):
        pos = positions[s : s + batch] if positions is not None else None
        out.append(engine.labels(images[s : s + batch], pos))
    return np.concatenate(out)
