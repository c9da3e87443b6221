"""Choose and build a runner: provider first, then precision, then the model file, then the engine.

``create_runner`` resolves the provider against what the machine offers, then the precision for
that provider (so ``--provider auto --precision fp16`` behaves as ``--provider tensorrt --precision
fp16`` when auto lands on TensorRT), then the model file (``bundled.resolve_model``), then builds the
engine that serves the provider:

- ONNX Runtime (``onnxruntime_runner.py``) for ``tensorrt``, ``cuda``, ``cpu``, and ``openvino`` when
  the installed ONNX Runtime has its OpenVINO execution provider;
- the OpenVINO runtime (``openvino_runner.py``) for ``openvino`` otherwise.

Every engine checks the graph against the model's metadata at load time (``ModelError``, exit 4).
The runner interface is ``base.Runner`` (``infer`` / ``predict``, ``describe``, ``close``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine.base import Runner, check_model_graph
from limbseg_rt.runtime.engine.cpu import detect
from limbseg_rt.runtime.engine.onnxruntime_runner import build_ort_session, runner_from_session, session_graph
from limbseg_rt.runtime.engine.precision_profile import AutoChoice, auto_precision, has_bf16
from limbseg_rt.runtime.errors import ModelError, ProviderError
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.bundled import bundled_files
from limbseg_rt.runtime.model.metadata import metadata_from_props, read_metadata

__all__ = ["Runner", "create_runner", "resolve_precision"]


def resolve_precision(precision: str, provider: str, *, fp16: bool = False) -> tuple[str, bool]:
    """(precision of the file to load, TensorRT fp16 mode) for ``precision`` as asked on the
    provider ``provider`` that will run (a short name, never ``auto``).

    TensorRT makes fp16 from the fp32 file (a builder flag); elsewhere fp16 means an fp16 file.
    ``fp16=True`` (the TensorRT flag asked directly) is the same as ``precision="fp16"`` on TensorRT.
    """
    if provider == "tensorrt" and (precision == "fp16" or fp16):
        return ("auto" if precision == "fp16" else precision), True
    return precision, fp16


def create_runner(
    model: str | Path,
    *,
    provider: str | Sequence[str] = "auto",
    allow_fallback: bool = False,
    threads: int | None = None,
    device_id: int = 0,
    fp16: bool = False,
    cache_dir: Path | None = None,
    max_batch: int = 16,
    precision: str = "auto",
    available: Sequence[str] | None = None,
    gpu: str | None = None,
) -> Runner:
    """Build a runner for ``model`` (a ``.onnx`` path, or a bundled name such as ``unet``).

    ``provider``: ``auto`` | ``tensorrt`` | ``cuda`` | ``openvino`` | ``cpu`` or a preference list.
    ``precision``: ``auto`` | ``fp32`` | ``fp16`` | ``int8`` | ``bf16``, resolved for the provider
    chosen (``choose_precision`` for ``auto``, then ``resolve_precision``), then it picks the bundled file for a name (``bundled.resolve_model``)
    or must match a path's metadata. ``max_batch``: the largest N a call may pass (TensorRT builds
    its profile for 1..max_batch). ``available`` (as ``providers.available_engines()``) and ``gpu``:
    injectable for tests. Raises ``ModelError`` (model unusable) or ``ProviderError``.
    """
    from limbseg_rt.runtime.model.bundled import resolve_model

    if available is None:
        available = prov.available_engines()
    short, flexible, missing = _provider_or_fallback(provider, available, allow_fallback)
    choice = choose_precision(str(model), precision, short)
    precision = choice.precision if choice.how == "measured" else precision
    if precision == "bf16":
        _check_bf16(short, available)
    file_precision, trt_fp16 = resolve_precision(precision, short, fp16=fp16)
    path = resolve_model(str(model), precision=file_precision, provider=short)
    if trt_fp16 and precision == "fp16":
        # TensorRT's fp16 mode works on the fp32 file (a bundled name resolves to it above).
        actual = read_metadata(path).precision
        if actual != "fp32":
            raise ModelError(f"{path.name} is a {actual} model; TensorRT's fp16 mode needs an fp32 model")
    sha = sha256_file(path)
    threads = threads or prov.default_threads()
    requested_label = provider if isinstance(provider, str) else ",".join(provider)

    if prov.engine_for(short, available) == prov.ENGINE_OPENVINO:
        from limbseg_rt.runtime.engine.openvino_runner import OpenVinoRunner, build_openvino_model

        config = prov.openvino_runtime_config(threads=threads, bf16=precision == "bf16")
        compiled, _, md = build_openvino_model(path, config)
        runner: Runner = OpenVinoRunner(
            compiled,
            metadata=md,
            model_path=path,
            model_sha256=sha,
            requested=requested_label,
            config=config,
            threads=threads,
            max_batch=max_batch,
        )
        if precision == "bf16" and runner.precision != "bf16":
            runner.close()
            raise ProviderError(
                f"OpenVINO was asked for bf16 but compiled {path.name} for {runner.precision}; "
                "use --precision fp32 or int8"
            )
        runner.precision_choice = choice.to_dict()
        runner.fallback = runner.fallback or missing
        return runner

    md, shapes = None, {}
    if short == "tensorrt":  # the batch profile needs the input size before the session exists
        md = read_metadata(path)
        shapes = {"input_hw": md.input_hw, "in_channels": md.in_channels, "needs_position": md.needs_position}
    resolved = prov.resolve_providers(
        short,
        device_id=device_id,
        threads=threads,
        fp16=trt_fp16,
        cache_dir=cache_dir,
        model_sha256=sha,
        max_batch=max_batch,
        available=available,
        gpu=gpu,
        **shapes,
    )
    session = build_ort_session(path, resolved, threads=threads)
    # Metadata from the engine's own load of the file: one load instead of two.
    md = md or metadata_from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    check_model_graph(md, *session_graph(session), path)
    runner = runner_from_session(
        session,
        metadata=md,
        model_path=path,
        model_sha256=sha,
        short=short,
        flexible=flexible,
        allow_fallback=allow_fallback,
        providers=resolved,
        threads=threads,
        max_batch=max_batch,
        requested_label=requested_label,
    )
    runner.precision_choice = choice.to_dict()
    runner.fallback = runner.fallback or missing
    return runner


def _provider_or_fallback(provider, available, allow_fallback: bool) -> tuple[str, bool, str | None]:
    """``choose_provider``, except that one named provider that is not available here, with
    ``allow_fallback``, falls back to the best available one (as ``auto`` would pick) and says so
    (the third item: the fallback note, else None)."""
    try:
        short, flexible = prov.choose_provider(provider, available)
        return short, flexible, None
    except ProviderError as exc:
        if not (allow_fallback and isinstance(provider, str) and provider.strip().lower() in prov.PRIORITY):
            raise
        short, _ = prov.choose_provider("auto", available)
        return short, True, f"{provider} is not usable here ({exc}); --allow-fallback: running on {short}"


def choose_precision(model: str, precision: str, provider: str) -> AutoChoice:
    """How the precision to run is decided for ``model`` on ``provider`` (a short name).

    ``auto`` with a bundled name: the measured choice of ``limbseg-rt tune`` when its profile entry
    still matches this machine, else the rule (``precision_profile``). ``auto`` with a file: the
    file's own precision. Anything else: what the user asked.
    """
    if precision != "auto":
        return AutoChoice(precision, "asked", f"--precision {precision} was asked for")
    arch, files = bundled_files(model)
    if not files:
        how = "a model file was given" if not arch else "no such bundled model"
        return AutoChoice("auto", "file", f"the model file's own precision ({how})")
    return auto_precision(provider, arch, files)


def _check_bf16(provider: str, available: Sequence[str]) -> None:
    """bf16 runs only on the OpenVINO engine, and only on a CPU with a bf16 instruction."""
    if provider != "openvino" or prov.engine_for(provider, available) != prov.ENGINE_OPENVINO:
        raise ProviderError(
            "bf16 runs only on the OpenVINO runtime engine: use --provider openvino "
            f"(with pip install openvino), not {provider}"
        )
    cpu = detect()
    if not has_bf16(cpu):
        raise ProviderError(
            f"this CPU has no bf16 instructions (ISA class {cpu.isa}: needs AVX512-BF16 or "
            "AMX-BF16); use --precision int8 or fp32"
        )
