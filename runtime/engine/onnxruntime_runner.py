"""The ONNX Runtime engine: build an ``InferenceSession`` on a provider list, check what it really
runs on, and run it (``OrtRunner``). ONNX Runtime's own OpenVINO execution provider is one of its
providers here; the OpenVINO runtime itself is another engine (``openvino_runner.py``).

Provider check: after the session is built, ``session.get_providers()`` is read back. ONNX Runtime
quietly drops a provider it cannot initialise (missing CUDA/TensorRT libraries, an OpenVINO device
refusing a setting) and runs on the next one; we never accept that silently. A single explicitly
requested provider that was dropped is a ``ProviderError`` unless ``allow_fallback``; with
``provider="auto"`` (or a preference list) a drop is accepted but recorded in ``fallback``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine.base import Runner, fallback_note, run_failure
from limbseg_rt.runtime.errors import ModelError, ProviderError
from limbseg_rt.runtime.model.metadata import GraphTensor, ModelMetadata


def build_ort_session(path: Path, providers: list[tuple[str, dict]], *, threads: int):
    """An ``onnxruntime.InferenceSession``: all graph optimisations, sequential execution, ``threads``
    intra-op threads (inter-op parallelism does not help a chain of convolutions)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Fatal only: a kernel error is raised to us and reported as one line (EngineRunError); ONNX
    # Runtime's own log line would be a second, coloured line on stderr.
    opts.log_severity_level = 4
    for name, options in providers:
        if name == prov.TENSORRT:
            cache = Path(options["trt_engine_cache_path"])
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ProviderError(
                    f"cannot create the TensorRT engine cache folder {cache} ({exc.strerror}); "
                    "choose another cache folder"
                ) from None
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises several unrelated types for bad files/options
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load {path.name}: {msg}") from None


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def session_graph(session) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """(inputs, outputs) of an ONNX Runtime session as ``GraphTensor`` (symbolic axes -> None)."""

    def conv(t) -> GraphTensor:
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in (t.shape or []))
        return GraphTensor(t.name, dims, _ORT_TYPES.get(t.type, t.type))

    return [conv(t) for t in session.get_inputs()], [conv(t) for t in session.get_outputs()]


def _is_ort_error(exc: BaseException) -> bool:
    """True for ONNX Runtime's own run-time failures (its pybind exceptions live in
    ``onnxruntime.capi.onnxruntime_pybind11_state``: Fail, RuntimeException, InvalidArgument, ...)."""
    return type(exc).__module__.startswith("onnxruntime")


class OrtRunner(Runner):
    """A runner over a built ``onnxruntime.InferenceSession``; ``provider`` is the first provider the
    session really uses. Only the ``logits`` output is fetched: the pipeline resizes or blends
    logits before the argmax, so the graph's in-graph ``labels`` output is not used here."""

    engine = "onnxruntime"

    def __init__(
        self,
        session,
        *,
        metadata: ModelMetadata,
        model_path: Path,
        model_sha256: str,
        requested: str,
        providers: list[tuple[str, dict]],
        threads: int,
        max_batch: int,
        fallback: str | None = None,
    ):
        self.session = session
        self.providers_requested = providers
        self.session_providers = list(session.get_providers())
        provider = prov.SHORT_NAME.get(self.session_providers[0], self.session_providers[0])
        super().__init__(
            metadata=metadata,
            model_path=model_path,
            model_sha256=model_sha256,
            provider=provider,
            precision=self._precision(provider, metadata.precision),
            requested=requested,
            threads=threads,
            max_batch=max_batch,
            fallback=fallback,
        )

    def _precision(self, provider: str, model: str) -> str:
        if provider == "tensorrt":
            opts = dict(self.providers_requested).get(prov.TENSORRT, {})
            if opts.get("trt_fp16_enable") and model == "fp32":
                return "fp16"
        if provider == "cuda" and model == "int8":
            return "fp32"  # the CUDA EP has no int8 convolutions: it dequantises QDQ weights and computes in fp32
        return model

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # ONNX Runtime allocates a fresh output array per run: nothing to copy.
        try:
            return self.session.run(["logits"], feeds)[0]
        except Exception as exc:
            if _is_ort_error(exc):
                raise run_failure("ONNX Runtime", exc, self.model_path) from exc
            raise

    def describe_impl(self) -> dict:
        import onnxruntime as ort

        return {
            "session_providers": self.session_providers,
            "provider_options": [[name, dict(opts)] for name, opts in self.providers_requested],
            "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__}
            | ({"tensorrt": prov.tensorrt_version()} if self.provider == "tensorrt" else {}),
        }

    def close(self) -> None:
        self.session = None


def runner_from_session(
    session,
    *,
    metadata: ModelMetadata,
    model_path: Path,
    model_sha256: str,
    short: str,
    flexible: bool,
    allow_fallback: bool,
    providers: list[tuple[str, dict]],
    threads: int,
    max_batch: int,
    requested_label: str | None = None,
) -> OrtRunner:
    """Check what ``session`` actually runs on against ``short`` (see module docstring), then wrap it."""
    used = list(session.get_providers())
    got = prov.SHORT_NAME.get(used[0], used[0]) if used else "none"
    note = fallback_note(short, got, flexible, allow_fallback)
    return OrtRunner(
        session,
        metadata=metadata,
        model_path=model_path,
        model_sha256=model_sha256,
        requested=requested_label or short,
        providers=providers,
        threads=threads,
        max_batch=max_batch,
        fallback=note,
    )
