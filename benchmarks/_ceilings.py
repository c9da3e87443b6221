"""The machine's arithmetic ceilings, measured in this run through the engines we ship, and a
plausibility check before any gate is judged against them.

- fp32: numpy SGEMM (the BLAS numpy links) and ONNX Runtime ``MatMul`` fp32; the ceiling is the best.
- int8: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, the layout its VNNI kernels take),
  the OpenVINO runtime on a quantised MatMul (``DequantizeLinear`` int8 weights and a
  ``QuantizeLinear``/``DequantizeLinear`` activation pair, which it compiles to an int8 MatMul), and
  ``torch._int_mm`` when torch is installed. The ceiling is the best *plausible* source.

A source is implausible when it is below the fp32 ceiling (every x86 CPU with an int8 dot product
does at least the fp32 rate in int8; a source below it has no fast int8 path: ``torch._int_mm``
measured 1 GOPS on an AVX2-only EPYC, see docs/benchmarks.md). A gate never judges against an
implausible ceiling: it fails saying why (``Ceilings.problems``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from _harness import time_calls

TORCH_THREADS = 2
N = 2048


@dataclass(frozen=True)
class Ceilings:
    """fp32 GFLOP/s and int8 GOPS per source (2 n^3 operations per n x n x n multiply, best of
    several), and the matrix size ``n``."""

    fp32: dict[str, float]
    int8: dict[str, float]
    n: int = N
    errors: dict[str, str] = field(default_factory=dict)  # source -> why it could not be measured

    @property
    def sgemm_gflops(self) -> float:
        return max(self.fp32.values()) if self.fp32 else float("nan")

    @property
    def plausible_int8(self) -> dict[str, float]:
        return {k: v for k, v in self.int8.items() if v >= self.sgemm_gflops}

    @property
    def int8_gemm_gops(self) -> float:
        """The best plausible int8 source (NaN when there is none)."""
        ok = self.plausible_int8
        return max(ok.values()) if ok else float("nan")

    @property
    def int8_source(self) -> str | None:
        ok = self.plausible_int8
        return max(ok, key=ok.get) if ok else None

    def problems(self) -> list[str]:
        """Why a gate must not judge against these ceilings (empty when they are usable)."""
        out = []
        if not self.fp32:
            out.append("no fp32 ceiling could be measured")
        if not self.plausible_int8:
            got = ", ".join(f"{k} {v:.0f} GOPS" for k, v in self.int8.items()) or "nothing measured"
            out.append(
                f"no plausible int8 ceiling: every int8 source is below the fp32 ceiling "
                f"{self.sgemm_gflops:.0f} GFLOP/s ({got})"
            )
        return out

    def for_precision(self, precision: str) -> float | None:
        return {"fp32": self.sgemm_gflops, "int8": self.int8_gemm_gops}.get(precision)

    def describe(self) -> str:
        f = ", ".join(f"{k} {v:.0f}" for k, v in self.fp32.items())
        i = ", ".join(f"{k} {v:.0f}{'' if v >= self.sgemm_gflops else ' (implausible)'}" for k, v in self.int8.items())
        return f"fp32 GFLOP/s: {f}; int8 GOPS: {i or 'none'} ({self.n}^3)"

    def to_dict(self) -> dict:
        return {
            "fp32_gflops": dict(self.fp32),
            "int8_gops": dict(self.int8),
            "n": self.n,
            "errors": dict(self.errors),
            "sgemm_gflops": self.sgemm_gflops,
            "int8_gemm_gops": self.int8_gemm_gops,
            "int8_source": self.int8_source,
            "problems": self.problems(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Ceilings:
        return cls(
            fp32=dict(d["fp32_gflops"]),
            int8=dict(d["int8_gops"]),
            n=int(d.get("n", N)),
            errors=dict(d.get("errors", {})),
        )


# ----------------------------------------------------------------------------- one GEMM per source
def _matmul_graph(kind: str, n: int):
    """A one-node ONNX graph multiplying an [n, n] input by an [n, n] constant: ``fp32`` MatMul,
    ``u8s8`` MatMulInteger, or ``qdq`` (int8 weights through DequantizeLinear, activations through
    a QuantizeLinear/DequantizeLinear pair, then a float MatMul: the pattern int8 engines fuse)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    if kind == "fp32":
        inits.append(numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "B"))
        nodes.append(helper.make_node("MatMul", ["A", "B"], ["Y"]))
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    elif kind == "u8s8":
        inits.append(numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "B"))
        nodes.append(helper.make_node("MatMulInteger", ["A", "B"], ["Y"]))
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    elif kind == "qdq":
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "Bq"),
            numpy_helper.from_array(np.float32(0.01), "sb"),
            numpy_helper.from_array(np.int8(0), "zb"),
            numpy_helper.from_array(np.float32(1 / 255), "sa"),
            numpy_helper.from_array(np.uint8(0), "za"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["Bq", "sb", "zb"], ["B"]),
            helper.make_node("QuantizeLinear", ["A", "sa", "za"], ["Aq"]),
            helper.make_node("DequantizeLinear", ["Aq", "sa", "za"], ["Ad"]),
            helper.make_node("MatMul", ["Ad", "B"], ["Y"]),
        ]
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        raise ValueError(kind)
    g = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        inits,
    )
    return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _input(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, n), dtype=np.uint8) if kind == "u8s8" else rng.random((n, n), dtype=np.float32)


def gemm_calls(n: int = N, threads: int = TORCH_THREADS) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """{source: a function running one n^3 multiply}, {source: why it is unavailable}. Sources:
    ``numpy-sgemm``, ``ort-fp32`` (fp32) and ``ort-u8s8``, ``openvino-int8``, ``torch-int-mm`` (int8)."""
    import onnxruntime as ort

    calls: dict[str, Callable[[], object]] = {}
    errors: dict[str, str] = {}
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    calls["numpy-sgemm"] = lambda: a @ b
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    for kind, name in (("fp32", "ort-fp32"), ("u8s8", "ort-u8s8")):
        sess = ort.InferenceSession(_matmul_graph(kind, n), so, providers=["CPUExecutionProvider"])
        feed = {"A": _input(kind, n)}
        calls[name] = (lambda s, f: lambda: s.run(None, f))(sess, feed)
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(_matmul_graph("qdq", n), b""), "CPU", {"INFERENCE_NUM_THREADS": threads}
        )
        request = compiled.create_infer_request()
        x = _input("qdq", n)
        calls["openvino-int8"] = lambda: request.infer({0: x})
    except Exception as exc:  # noqa: BLE001 - any failure means "this source is unavailable here"
        errors["openvino-int8"] = f"{type(exc).__name__}: {exc}"[:200]
    try:
        import torch

        torch.set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        ta = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        tb = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        calls["torch-int-mm"] = lambda: torch._int_mm(ta, tb)
    except Exception as exc:  # noqa: BLE001
        errors["torch-int-mm"] = f"{type(exc).__name__}: {exc}"[:200]
    return calls, errors


FP32_SOURCES = ("numpy-sgemm", "ort-fp32")


def measure_ceilings(n: int = N, repeats: int = 5) -> Ceilings:
    """Every source's best of ``repeats`` multiplies (after one warm-up)."""
    calls, errors = gemm_calls(n)
    ops = 2.0 * n**3
    rates = {name: ops / min(time_calls(fn, rounds=repeats, warmup=1)) / 1e9 for name, fn in calls.items()}
    return Ceilings(
        fp32={k: v for k, v in rates.items() if k in FP32_SOURCES},
        int8={k: v for k, v in rates.items() if k not in FP32_SOURCES},
        n=n,
        errors=errors,
    )
