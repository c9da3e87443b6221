"""Execution providers: one resolver from short names to ONNX Runtime provider lists with options.

Short names, in ``auto`` priority order: ``tensorrt`` > ``cuda`` > ``openvino`` > ``cpu``.
``resolve_providers`` returns the list ONNX Runtime's ``InferenceSession(providers=...)`` takes:
``[(ort_provider_name, options), ...]``, order = priority.

Two engines serve these names. ONNX Runtime serves all four (``openvino`` through its
``OpenVINOExecutionProvider`` when the installed build has it); the OpenVINO runtime (the
``openvino`` package) is a separate engine that serves ``openvino`` when ONNX Runtime cannot.
``available_engines()`` is what the machine offers: ONNX Runtime's provider names plus the marker
``OPENVINO_RUNTIME`` when the ``openvino`` package is installed; ``engine_for`` says which engine
runs a short name. The marker never reaches ONNX Runtime.

Nothing here imports onnxruntime or openvino at module import time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from limbseg_rt.runtime.errors import ProviderError

PRIORITY = ("tensorrt", "cuda", "openvino", "cpu")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO_EP = "OpenVINOExecutionProvider"
CPU = "CPUExecutionProvider"
# Not an ONNX Runtime provider: marks, in ``available_engines()``, that the OpenVINO runtime engine
# (the ``openvino`` package) is installed.
OPENVINO_RUNTIME = "openvino-runtime"
ENGINE_ORT = "onnxruntime"
ENGINE_OPENVINO = "openvino"

# ONNX Runtime provider name -> short name.
SHORT_NAME = {TENSORRT: "tensorrt", CUDA: "cuda", OPENVINO_EP: "openvino", CPU: "cpu"}

INSTALL_HINT = {
    "tensorrt": 'pip install "limbseg-rt[gpu]" (onnxruntime-gpu, replacing onnxruntime) plus NVIDIA TensorRT 10 libraries',
    "cuda": 'pip install "limbseg-rt[gpu]" (onnxruntime-gpu, replacing onnxruntime) plus CUDA 12 and cuDNN 9',
    "openvino": 'pip install "limbseg-rt[openvino]"',
    "cpu": "pip install onnxruntime",
}

# Upper bound (bytes) on TensorRT's builder scratch memory: ample for 2D CNNs of this size, and bounded
# so that building an engine cannot claim a shared GPU's whole memory.
TRT_WORKSPACE_BYTES = 2 * 1024**3


def available_providers() -> list[str]:
    """ONNX Runtime's available providers (names as ONNX Runtime spells them)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def available_engines() -> list[str]:
    """What this machine offers: ``available_providers()`` plus ``OPENVINO_RUNTIME`` when the
    ``openvino`` package is installed (found, not imported: importing it costs most of a second; a
    broken install surfaces as a ``ProviderError`` when the OpenVINO runner is built)."""
    import importlib.util

    names = available_providers()
    if importlib.util.find_spec("openvino") is not None:
        names.append(OPENVINO_RUNTIME)
    return names


def short_available(available: Sequence[str]) -> list[str]:
    """Short names served by anything in ``available`` (as from ``available_engines()``), in priority order."""
    have = {SHORT_NAME[n] for n in available if n in SHORT_NAME}
    if OPENVINO_RUNTIME in available:
        have.add("openvino")
    return [s for s in PRIORITY if s in have]


def engine_for(short: str, available: Sequence[str]) -> str:
    """``ENGINE_ORT`` or ``ENGINE_OPENVINO``: the engine that runs the short name ``short``. OpenVINO
    goes through ONNX Runtime's own OpenVINO EP when it is there, else through the OpenVINO runtime."""
    if short == "openvino" and OPENVINO_EP not in available and OPENVINO_RUNTIME in available:
        return ENGINE_OPENVINO
    return ENGINE_ORT


def default_threads() -> int:
    """CPU threads for inference: the cores this process may use, capped at 16 (more rarely helps a 2D CNN)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def _unavailable(name: str, available: Sequence[str]) -> ProviderError:
    have = ", ".join(short_available(available)) or "none"
    return ProviderError(
        f"execution provider {name!r} is not available (available: {have}); to add it: {INSTALL_HINT[name]}"
    )


def choose_provider(requested: str | Sequence[str], available: Sequence[str]) -> tuple[str, bool]:
    """The short name to run on, and whether the user left the choice to us (``auto`` or a list).

    ``requested``: ``"auto"``, one short name, or a sequence of short names in preference order.
    A single name that is unavailable is a ``ProviderError`` naming what is available and how to
    install the missing one.
    """
    if isinstance(requested, str):
        name = requested.strip().lower()
        if name == "auto":
            prefs, flexible = list(PRIORITY), True
        else:
            prefs, flexible = [name], False
    else:
        prefs, flexible = [str(n).strip().lower() for n in requested], True
        if not prefs:
            raise ProviderError("no execution provider requested; use one of: auto, " + ", ".join(PRIORITY))
    for name in prefs:
        if name not in PRIORITY:
            raise ProviderError(f"unknown execution provider {name!r}; use one of: auto, " + ", ".join(PRIORITY))
    have = short_available(available)
    for name in prefs:
        if name in have:
            return name, flexible
    if len(prefs) == 1:
        raise _unavailable(prefs[0], available)
    raise ProviderError(
        f"none of the requested execution providers ({', '.join(prefs)}) is available "
        f"(available: {', '.join(have) or 'none'})"
    )


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/limbseg-rt`` or ``~/.cache/limbseg-rt``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "limbseg-rt"


def gpu_name(device_id: int = 0) -> str:
    """The GPU's marketing name from ``nvidia-smi`` (e.g. ``NVIDIA A100-SXM4-40GB``), or ``unknown-gpu``."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown-gpu"
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader", "-i", str(device_id)],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    return out.splitlines()[0].strip() if out else "unknown-gpu"


def tensorrt_version() -> str:
    """Version of the TensorRT library ONNX Runtime would load, or ``unknown``."""
    try:
        import tensorrt  # the pip wheel, when present

        return str(tensorrt.__version__)
    except Exception:
        pass
    import ctypes

    for soname in ("libnvinfer.so.10", "libnvinfer.so.8", "nvinfer_10.dll", "nvinfer.dll"):
        try:
            lib = ctypes.CDLL(soname)
        except OSError:
            continue
        v = int(lib.getInferLibVersion())  # e.g. 100900 for 10.9.0 (8.x: 8601 for 8.6.1)
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 100000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"
    return "unknown"


def trt_cache_key(model_sha256: str, gpu: str, ort_version: str, trt_version: str, fp16: bool) -> str:
    """Folder name for a TensorRT engine cache: readable, and different whenever an engine would be.

    TensorRT engines are specific to the model, the GPU, the ONNX Runtime and TensorRT versions and
    the precision mode; ONNX Runtime does not check all of these itself when it loads a cached engine.
    """
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu).strip("-").lower() or "gpu"
    return f"{model_sha256[:16] or 'nosha'}-{slug}-ort{ort_version}-trt{trt_version}-{'fp16' if fp16 else 'fp32'}"


def _shape(name: str, batch: int, rest: tuple[int, ...]) -> str:
    return f"{name}:" + "x".join(str(d) for d in (batch, *rest))


def tensorrt_options(
    *,
    device_id: int,
    fp16: bool,
    cache_dir: Path,
    max_batch: int,
    opt_batch: int,
    input_hw: tuple[int, int],
    in_channels: int = 1,
    needs_position: bool = False,
) -> dict:
    """TensorRT EP options (names per ONNX Runtime's TensorRT EP documentation).

    One optimisation profile covers batch 1..``max_batch`` at the model's slice size, tuned for
    ``opt_batch``; ``position`` (SC-UNet, shape [N]) gets the same batch range.
    """
    h, w = input_hw
    profiles = {}
    for key, batch in (("min", 1), ("opt", opt_batch), ("max", max_batch)):
        shapes = [_shape("image", batch, (in_channels, h, w))]
        if needs_position:
            shapes.append(_shape("position", batch, ()))
        profiles[f"trt_profile_{key}_shapes"] = ",".join(shapes)
    return {
        "device_id": device_id,
        "trt_fp16_enable": bool(fp16),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_max_workspace_size": TRT_WORKSPACE_BYTES,
        **profiles,
    }


def cuda_options(*, device_id: int) -> dict:
    """CUDA EP options. Slice shapes are fixed within a run, so an exhaustive cuDNN search pays off
    once; ``kSameAsRequested`` stops the arena doubling when the last batch is smaller."""
    return {
        "device_id": device_id,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }


def openvino_ep_options(*, threads: int) -> dict:
    """ONNX Runtime OpenVINO EP options: CPU device plus OpenVINO properties as ``load_config`` JSON
    (the EP's documented way since ORT 1.23; its ``precision``/``num_of_threads`` keys are deprecated).
    Same properties as ``openvino_runtime_config``: f32 explicitly, threads, latency."""
    import json

    props = {k: str(v) for k, v in openvino_runtime_config(threads=threads)["config"].items()}
    return {"device_type": "CPU", "load_config": json.dumps({"CPU": props}, sort_keys=True)}


def openvino_runtime_config(*, threads: int, bf16: bool = False) -> dict:
    """OpenVINO runtime ``compile_model`` config for the CPU.

    ``INFERENCE_PRECISION_HINT`` is set explicitly: f32 unless ``bf16`` (``--precision bf16``).
    OpenVINO's own default on a bf16-capable CPU is bf16, which would silently change results.
    Quantised (QDQ) layers of an int8 model still run in int8 under the f32 hint.
    """
    return {
        "device": "CPU",
        "config": {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    }


def resolve_providers(
    requested: str | Sequence[str] = "auto",
    *,
    device_id: int = 0,
    threads: int | None = None,
    fp16: bool = False,
    cache_dir: Path | None = None,
    model_sha256: str = "",
    max_batch: int = 16,
    opt_batch: int | None = None,
    available: Sequence[str] | None = None,
    input_hw: tuple[int, int] = (272, 240),
    in_channels: int = 1,
    needs_position: bool = False,
    gpu: str | None = None,
) -> list[tuple[str, dict]]:
    """Provider list with options for ``requested`` (see module docstring), highest priority first.

    ``threads``: CPU threads (default ``default_threads()``); ONNX Runtime's CPU threads are session
    options, set by the engine. ``fp16`` is TensorRT's fp16 mode and only valid there. ``cache_dir``:
    root of the TensorRT engine/timing cache (default ``default_cache_root()``); the cache lives in
    ``<root>/trt/<trt_cache_key(...)>``. ``max_batch``/``opt_batch``: TensorRT's batch profile
    (``opt_batch`` defaults to ``max_batch``). ``available``: names as from
    ``available_engines()`` (injectable for tests); ``openvino`` needs ONNX Runtime's OpenVINO EP
    here (the OpenVINO runtime engine takes no provider list). ``gpu``: GPU name for the cache key (default:
    asked from ``nvidia-smi``). Raises ``ProviderError``.
    """
    if available is None:
        available = available_engines()
    name, _ = choose_provider(requested, available)
    threads = threads or default_threads()
    if max_batch < 1:
        raise ProviderError(f"max batch must be at least 1 (got {max_batch})")
    opt_batch = min(max(1, opt_batch or max_batch), max_batch)
    if fp16 and name != "tensorrt":
        raise ProviderError(
            f"--fp16 sets TensorRT's fp16 mode and needs --provider tensorrt (running on {name}); "
            "on cpu/openvino use an int8 model instead"
        )
    cpu: tuple[str, dict] = (CPU, {})
    if name == "cpu":
        return [cpu]
    if name == "openvino":
        if engine_for(name, available) != ENGINE_ORT:
            raise ValueError("openvino is served by the OpenVINO runtime engine here, not by ONNX Runtime")
        return [(OPENVINO_EP, openvino_ep_options(threads=threads)), cpu]
    cuda = (CUDA, cuda_options(device_id=device_id))
    if name == "cuda":
        return [cuda, cpu]
    import onnxruntime as ort

    key = trt_cache_key(model_sha256, gpu or gpu_name(device_id), ort.__version__, tensorrt_version(), fp16)
    trt = tensorrt_options(
        device_id=device_id,
        fp16=fp16,
        cache_dir=Path(cache_dir or default_cache_root()) / "trt" / key,
        max_batch=max_batch,
        opt_batch=opt_batch,
        input_hw=input_hw,
        in_channels=in_channels,
        needs_position=needs_position,
    )
    # CUDA after TensorRT takes any node TensorRT cannot (ONNX Runtime's recommended pairing).
    return [(TENSORRT, trt)] + ([cuda] if CUDA in available else []) + [cpu]


# A 75-byte ONNX model, y = Relu(x) for float32 x[1,4] (opset 17, IR 8), serialised once with
# onnx.helper and kept as bytes so a provider can be tried without the onnx package or a real model.
_PROBE_MODEL = bytes.fromhex(
    "080812003a3f0a0c0a0178120179220452656c75120570726f62655a130a0178120e0a0c080112080a0208010a02080462"
    "130a0179120e0a0c080112080a0208010a02080442040a001011"
)


def probe_providers(available: Sequence[str] | None = None) -> dict[str, tuple[bool, str]]:
    """Which available providers actually work: short name -> (usable, detail).

    ONNX Runtime lists providers it was built with, not ones whose libraries load; each is tried on a
    tiny model and ``get_providers()`` read back. OpenVINO runtime: usable when it sees a CPU device.
    """
    import onnxruntime as ort

    if available is None:
        available = available_engines()
    result: dict[str, tuple[bool, str]] = {}
    for ort_name, short in ((TENSORRT, "tensorrt"), (CUDA, "cuda"), (OPENVINO_EP, "openvino"), (CPU, "cpu")):
        if ort_name not in available:
            continue
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        try:
            sess = ort.InferenceSession(
                _PROBE_MODEL, sess_options=opts, providers=[ort_name] + ([CPU] if ort_name != CPU else [])
            )
            got = sess.get_providers()[0]
        except Exception as exc:
            result[short] = (
                False,
                f"{ort_name} failed: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}",
            )
            continue
        ok = got == ort_name
        result[short] = (
            ok,
            f"onnxruntime {ort_name}"
            if ok
            else f"listed by onnxruntime but dropped (libraries missing?): {INSTALL_HINT[short]}",
        )
    if OPENVINO_RUNTIME in available and "openvino" not in result:
        try:
            import openvino as ov

            devices = ov.Core().available_devices
        except Exception as exc:
            result["openvino"] = (False, f"openvino runtime failed: {type(exc).__name__}")
        else:
            ok = "CPU" in devices
            result["openvino"] = (
                ok,
                f"openvino runtime {ov.__version__.split('-')[0]}, devices: {', '.join(devices) or 'none'}",
            )
    return result
