"""The machine's arithmetic ceilings, measured in this run through the engines we ship, and a
plausibility check before any gate is judged against them.

- fp32: numpy SGEMM (the BLAS numpy links) and ONNX Runtime ``MatMul`` fp32; the ceiling is the best.
- int8: ONNX Runtime ``MatMulInteger`` (uint8 x int8 -> int32, the layout its VNNI kernels take),
  the OpenVINO runtime on a quantised MatMul (``DequantizeLinear`` int8 weights and a
  ``QuantizeLinear``/``DequantizeLinear`` activation pair, which it compiles to an int8 MatMul), and
  ``torch._int_mm`` when torch is installed. The ceiling is the best *plausible* source.
- bf16 (only on a CPU with AVX512-BF16 or AMX-BF16): the OpenVINO runtime on the fp32 MatMul compiled
  with ``INFERENCE_PRECISION_HINT=bf16`` (read back from the compiled model), and a bfloat16 ``torch``
  matmul when torch is installed. The ceiling is the best plausible source.

A source is implausible when it is below the fp32 ceiling (every x86 CPU with an int8 dot product
does at least the fp32 rate in int8, and one with a bf16 dot product at least the fp32 rate in bf16;
a source below it has no fast path: ``torch._int_mm`` measured 1 GOPS on an AVX2-only EPYC, see
docs/benchmarks.md). A gate never judges against an implausible ceiling: it fails saying why
(``Ceilings.problems``).

A ceiling is a peak, so two measurements of the same machine (at the start of the run and
interleaved with the model) combine by taking each source's best (``Ceilings.best_of``): load from
other processes can only pull a GEMM down, never push it above what the hardware does.
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
    bf16: dict[str, float] = field(default_factory=dict)  # empty on a CPU without a bf16 instruction

    @classmethod
    def from_rates(cls, rates: dict[str, float], *, n: int = N, errors: dict[str, str] | None = None) -> Ceilings:
        """Sort ``{source: rate}`` (as ``gemm_calls`` names them) into fp32, bf16 and int8."""
        return cls(
            fp32={k: v for k, v in rates.items() if k in FP32_SOURCES},
            int8={k: v for k, v in rates.items() if k not in FP32_SOURCES and k not in BF16_SOURCES},
            bf16={k: v for k, v in rates.items() if k in BF16_SOURCES},
            n=n,
            errors=dict(errors or {}),
        )

    def best_of(self, other: Ceilings | None) -> Ceilings:
        """Each source's best over this measurement and ``other`` (of the same machine and size)."""
        if other is None:
            return self

        def best(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
            return {k: max(a.get(k, float("-inf")), b.get(k, float("-inf"))) for k in {**a, **b}}

        measured = (
            set(self.fp32) | set(self.int8) | set(self.bf16) | set(other.fp32) | set(other.int8) | set(other.bf16)
        )
        errors = {k: v for k, v in {**other.errors, **self.errors}.items() if k not in measured}
        return Ceilings(
            fp32=best(self.fp32, other.fp32),
            int8=best(self.int8, other.int8),
            bf16=best(self.bf16, other.bf16),
            n=self.n,
            errors=errors,
        )

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

    @property
    def bf16_gflops(self) -> float:
        """The best plausible bf16 source (NaN when there is none)."""
        ok = [v for v in self.bf16.values() if v >= self.sgemm_gflops]
        return max(ok) if ok else float("nan")

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

    def bf16_problems(self) -> list[str]:
        """Why a bf16 gate must not judge against these ceilings (empty when usable)."""
        if not self.fp32:
            return ["no fp32 ceiling could be measured"]
        if not self.bf16:
            return [f"no bf16 ceiling was measured ({self.errors.get('openvino-bf16', 'no bf16 source here')})"]
        if self.bf16_gflops != self.bf16_gflops:  # NaN: every source below the fp32 ceiling
            got = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in self.bf16.items())
            return [f"no plausible bf16 ceiling: below the fp32 ceiling {self.sgemm_gflops:.0f} GFLOP/s ({got})"]
        return []

    def for_precision(self, precision: str) -> float | None:
        value = {"fp32": self.sgemm_gflops, "int8": self.int8_gemm_gops, "bf16": self.bf16_gflops}.get(precision)
        return None if value is None or value != value else value

    def describe(self) -> str:
        def listed(d: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.0f}{'' if v >= self.sgemm_gflops else ' (implausible)'}" for k, v in d.items())

        f = ", ".join(f"{k} {v:.0f}" for k, v in self.fp32.items())
        b = f"; bf16 GFLOP/s: {listed(self.bf16)}" if self.bf16 else ""
        return f"fp32 GFLOP/s: {f}; int8 GOPS: {listed(self.int8) or 'none'}{b} ({self.n}^3)"

    def to_dict(self) -> dict:
        return {
            "fp32_gflops": dict(self.fp32),
            "int8_gops": dict(self.int8),
            "bf16_gflops": dict(self.bf16),
            "n": self.n,
            "errors": dict(self.errors),
            "sgemm_gflops": self.sgemm_gflops,
            "int8_gemm_gops": self.int8_gemm_gops,
            "int8_source": self.int8_source,
            "bf16_ceiling_gflops": self.for_precision("bf16"),
            "problems": self.problems(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Ceilings:
        return cls(
            fp32=dict(d["fp32_gflops"]),
            int8=dict(d["int8_gops"]),
            bf16=dict(d.get("bf16_gflops", {})),
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
    ``numpy-sgemm``, ``ort-fp32`` (fp32), ``ort-u8s8``, ``openvino-int8``, ``torch-int-mm`` (int8) and,
    on a CPU with a bf16 instruction, ``openvino-bf16``."""
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
    bf16_call, why = _openvino_bf16_call(n, threads)
    if bf16_call is not None:
        calls["openvino-bf16"] = bf16_call
    else:
        errors["openvino-bf16"] = why
    try:
        import torch

        torch.set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        ta = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        tb = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g)
        calls["torch-int-mm"] = lambda: torch._int_mm(ta, tb)
        if _bf16_cpu() is None:
            fa, fb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
            calls["torch-bf16"] = lambda: fa @ fb
    except Exception as exc:  # noqa: BLE001
        errors["torch-int-mm"] = f"{type(exc).__name__}: {exc}"[:200]
    return calls, errors


def _bf16_cpu() -> str | None:
    """None on a CPU with a bf16 instruction (AVX512-BF16 or AMX-BF16), else why there is no bf16 source."""
    from limbseg_rt.runtime.engine.cpu import detect
    from limbseg_rt.runtime.engine.precision_profile import has_bf16

    cpu = detect()
    return None if has_bf16(cpu) else f"no bf16 instruction on this CPU (ISA class {cpu.isa})"


def _openvino_bf16_call(n: int, threads: int) -> tuple[Callable[[], object] | None, str]:
    """One n^3 fp32 MatMul compiled by OpenVINO in bf16, or (None, why not): no bf16 instruction, no
    OpenVINO, or the compiled model reads back another precision than bf16."""
    no_bf16 = _bf16_cpu()
    if no_bf16 is not None:
        return None, no_bf16
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(_matmul_graph("fp32", n), b""),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16"},
        )
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != "bf16":
            return None, f"OpenVINO compiled the bf16 MatMul for {got}"
        request = compiled.create_infer_request()
        x = _input("fp32", n)
        return (lambda: request.infer({0: x})), ""
    except Exception as exc:  # noqa: BLE001 - any failure means "this source is unavailable here"
        return None, f"{type(exc).__name__}: {exc}"[:200]


FP32_SOURCES = ("numpy-sgemm", "ort-fp32")
BF16_SOURCES = ("openvino-bf16", "torch-bf16")


def measure_ceilings(n: int = N, repeats: int = 5) -> Ceilings:
    """Every source's best of ``repeats`` multiplies (after one warm-up)."""
    calls, errors = gemm_calls(n)
    ops = 2.0 * n**3
    rates = {name: ops / min(time_calls(fn, rounds=repeats, warmup=1)) / 1e9 for name, fn in calls.items()}
    return Ceilings.from_rates(rates, n=n, errors=errors)
