"""Runners: a built inference engine behind one small interface (ONNX Runtime or OpenVINO runtime).

Building and running are separate: ``create_runner`` resolves the model and the providers, builds the
session (``build_ort_session`` / ``build_openvino_model``), checks that the engine actually uses the
provider that was asked for, and wraps it in a runner. A runner only runs.

Buffers: runners do NOT reuse output buffers. Every ``predict``/``predict_labels`` call returns new
arrays that the caller owns; nothing returned is overwritten by a later call. (The cost of a fresh
[N,H,W] uint8 or [N,C,H,W] float32 array is negligible next to a convolution network.)

Provider check: after the session is built, ``session.get_providers()`` is read back. ONNX Runtime
quietly drops a provider it cannot initialise (missing CUDA/TensorRT libraries, an OpenVINO device
refusing a setting) and runs on the next one; we never accept that silently. A single explicitly
requested provider that was dropped is a ``ProviderError`` unless ``allow_fallback``; with
``provider="auto"`` (or a preference list) a drop is accepted but recorded. Either way
``describe()["fallback"]`` holds a one-line note for the CLI and the report.

Runners are not thread-safe; use one per thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from limbseg_rt.runtime.hashing import sha256_file

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.errors import ModelError, ProviderError
from limbseg_rt.runtime.model.metadata import ModelMetadata, read_metadata


class Runner(Protocol):
    metadata: ModelMetadata
    provider: str  # short name actually in use: "tensorrt" | "cuda" | "openvino" | "cpu"
    precision: str  # precision actually run: "fp32" | "fp16" | "int8" | "bf16"
    model_path: Path
    model_sha256: str

    def predict(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray: ...
    def predict_labels(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray: ...
    def describe(self) -> dict: ...
    def close(self) -> None: ...


def check_feeds(md: ModelMetadata, image: np.ndarray, position, max_batch: int | None) -> dict[str, np.ndarray]:
    """Validated, contiguous float32 feeds. ``image`` [N,C,H,W] with C = ``md.in_channels``;
    ``position`` [N] iff the model takes it. Raises ``ValueError`` on misuse (a programming error)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[1] != md.in_channels or image.shape[0] < 1:
        raise ValueError(f"image must be float32 [N,{md.in_channels},H,W] with N >= 1; got shape {image.shape}")
    if max_batch is not None and image.shape[0] > max_batch:
        raise ValueError(f"batch of {image.shape[0]} exceeds this runner's max_batch={max_batch}")
    feeds = {"image": image}
    if md.needs_position:
        if position is None:
            raise ValueError(f"{md.architecture} needs a position input (float32 [N])")
        pos = np.ascontiguousarray(position, dtype=np.float32).reshape(-1)
        if pos.shape[0] != image.shape[0]:
            raise ValueError(f"position has {pos.shape[0]} values for a batch of {image.shape[0]}")
        feeds["position"] = pos
    elif position is not None:
        raise ValueError(f"{md.architecture} takes no position input")
    return feeds


def argmax_labels(logits: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W] class index from float32 logits [N,C,H,W] (ties -> lowest index, as ONNX ArgMax)."""
    if logits.shape[1] > 256:
        raise ValueError(f"{logits.shape[1]} classes do not fit uint8 labels")
    return np.argmax(logits, axis=1).astype(np.uint8)


def fallback_note(requested: str, got: str, flexible: bool, allow_fallback: bool) -> str | None:
    """None when ``got`` (short name in use) is ``requested``; else a note, or ``ProviderError``."""
    if got == requested:
        return None
    if not (flexible or allow_fallback):
        raise ProviderError(
            f"execution provider {requested!r} was requested but ONNX Runtime could not initialise it and would "
            f"run on {got!r} (missing libraries or a refused option; 'limbseg-rt info' shows what is usable); "
            f"fix the {requested} installation, choose --provider {got}, or pass --allow-fallback to accept this"
        )
    how = "automatic choice" if flexible else "--allow-fallback"
    return f"requested {requested}, running on {got}: ONNX Runtime could not use {requested} ({how})"


def metadata_from_props(props: dict[str, str], path: Path) -> ModelMetadata:
    """``ModelMetadata`` from a model's ``metadata_props`` as already loaded by an engine
    (same checks and messages as ``read_metadata``, prefixed with the file name)."""
    from types import SimpleNamespace

    holder = SimpleNamespace(metadata_props=[SimpleNamespace(key=k, value=v) for k, v in props.items()])
    try:
        return read_metadata(holder)
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from None


# ----------------------------------------------------------------------------- ONNX Runtime


def build_ort_session(path: Path, providers: list[tuple[str, dict]], *, threads: int):
    """An ``onnxruntime.InferenceSession``: all graph optimisations, sequential execution, ``threads``
    intra-op threads (inter-op parallelism does not help a chain of convolutions)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    for name, options in providers:
        if name == prov.TENSORRT:
            cache = Path(options["trt_engine_cache_path"])
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ProviderError(f"cannot create the TensorRT engine cache folder {cache} ({exc.strerror}); "
                                    "choose another cache folder") from None
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # ORT raises several unrelated types for bad files/options
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load {path.name}: {msg}") from None


class OrtRunner:
    """A runner over a built ``onnxruntime.InferenceSession``.

    ``use_io_binding`` (default: on for cuda/tensorrt): ``predict_labels`` binds the inputs from host
    memory and asks for the uint8 ``labels`` output in host memory, so only labels cross PCIe.
    """

    def __init__(self, session, *, metadata: ModelMetadata, model_path: Path, model_sha256: str,
                 requested: str, providers: list[tuple[str, dict]], threads: int, max_batch: int,
                 fallback: str | None = None, use_io_binding: bool | None = None):
        self.session = session
        self.metadata = metadata
        self.model_path = Path(model_path)
        self.model_sha256 = model_sha256
        self.requested = requested
        self.providers_requested = providers
        self.threads = threads
        self.max_batch = max_batch
        self.fallback = fallback
        self.session_providers = list(session.get_providers())
        self.provider = prov.SHORT_NAME.get(self.session_providers[0], self.session_providers[0])
        self.precision = self._precision()
        self._outputs = [o.name for o in session.get_outputs()]
        self.use_io_binding = self.provider in ("cuda", "tensorrt") if use_io_binding is None else use_io_binding

    def _precision(self) -> str:
        model = self.metadata.precision
        if self.provider == "tensorrt":
            opts = dict(self.providers_requested).get(prov.TENSORRT, {})
            if opts.get("trt_fp16_enable") and model == "fp32":
                return "fp16"
        if self.provider == "cuda" and model == "int8":
            return "fp32"  # the CUDA EP has no int8 convolutions: it dequantises QDQ weights and computes in fp32
        return model

    def predict(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Logits float32 [N,C,H,W] for ``image`` float32 [N,1,H,W] (and ``position`` float32 [N] for sc-unet)."""
        feeds = check_feeds(self.metadata, image, position, self.max_batch)
        return self.session.run(["logits"], feeds)[0]

    def predict_labels(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Labels uint8 [N,H,W]: the graph's ``labels`` output when it has one, else argmax of the logits."""
        feeds = check_feeds(self.metadata, image, position, self.max_batch)
        if "labels" not in self._outputs:
            return argmax_labels(self.session.run(["logits"], feeds)[0])
        if not self.use_io_binding:
            return self.session.run(["labels"], feeds)[0]
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        binding.bind_output("labels", "cpu")  # logits stay on the device; only uint8 comes back
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "engine": "onnxruntime",
            "provider_requested": self.requested,
            "provider": self.provider,
            "session_providers": self.session_providers,
            "provider_options": [[name, dict(opts)] for name, opts in self.providers_requested],
            "precision": self.precision,
            "model_precision": self.metadata.precision,
            "threads": self.threads,
            "max_batch": self.max_batch,
            "io_binding": self.use_io_binding,
            "fallback": self.fallback,
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "versions": {"onnxruntime": ort.__version__, "numpy": np.__version__}
            | ({"tensorrt": prov.tensorrt_version()} if self.provider == "tensorrt" else {}),
        }

    def close(self) -> None:
        self.session = None


# ----------------------------------------------------------------------------- OpenVINO runtime

_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_CONV_TYPES = ("Convolution", "Deconvolution")


def build_openvino_model(path: Path, config: dict, *, static_hw: bool = True):
    """(OpenVINO ``CompiledModel`` for ``path`` on ``config["device"]`` with ``config["config"]``,
    the ONNX file's ``metadata_props`` as a dict, the model's ``ModelMetadata``).

    With ``static_hw`` the image input is fixed to the trained ``[N, C, h, w]`` of the metadata
    (N stays dynamic): the pipeline only ever feeds that size (whole slices are resized to it and
    tiles have it), and OpenVINO's CPU plugin runs the static graph about 4-8 % faster than the
    fully dynamic one (full UNet int8, batch 4, measured A/B in one process). ``OpenVinoRunner``
    compiles the dynamic graph on demand for any other size.
    """
    try:
        import openvino as ov
    except Exception as exc:
        raise ProviderError(f"the openvino package does not import ({type(exc).__name__}: {exc}); reinstall it: "
                            f"{prov.INSTALL_HINT['openvino']}") from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot read {path.name}: {str(exc).splitlines()[0][:200]}") from None
    # OpenVINO keeps the ONNX file's metadata_props in the model's rt_info under "framework".
    framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
    props = {str(k): v.astype(str) for k, v in framework.items()} if isinstance(framework, dict) else {}
    md = metadata_from_props(props, path)
    try:
        if static_hw:
            model.reshape({"image": [-1, md.in_channels, *md.input_hw]})
        return core.compile_model(model, config["device"], dict(config["config"])), props, md
    except Exception as exc:  # device missing or refusing a property
        raise ProviderError(f"OpenVINO cannot compile {path.name} for {config['device']}: {str(exc).splitlines()[0][:200]}") from None


def openvino_precisions(compiled) -> tuple[str, dict[str, int]]:
    """(precision actually run, counts of convolution runtime precisions) read back from the compiled
    model: ``int8`` when convolutions run in u8/i8, else the inference precision hint in effect."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in _CONV_TYPES:
            p = info["runtimePrecision"].astype(str)
            counts[p] = counts.get(p, 0) + 1
    if counts.get("u8", 0) + counts.get("i8", 0) > 0:
        return "int8", counts
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return _OV_PRECISION.get(hint, hint), counts


class OpenVinoRunner:
    """A runner over an OpenVINO ``CompiledModel`` (the ``openvino`` package, no ONNX Runtime)."""

    provider = "openvino"

    def __init__(self, compiled, *, metadata: ModelMetadata, model_path: Path, model_sha256: str,
                 requested: str, config: dict, threads: int, max_batch: int, fallback: str | None = None):
        self.compiled = compiled
        self.metadata = metadata
        self.model_path = Path(model_path)
        self.model_sha256 = model_sha256
        self.requested = requested
        self.config = config
        self.threads = threads
        self.max_batch = max_batch
        self.fallback = fallback
        self.precision, self.conv_precisions = openvino_precisions(compiled)
        self._outputs = {o.get_any_name(): o for o in compiled.outputs}
        self._request = compiled.create_infer_request()
        shape = compiled.input("image").get_partial_shape()
        self.static_hw = (shape[2].get_length(), shape[3].get_length()) if shape[2].is_static else None
        self._dynamic = None  # (request, outputs) compiled on first use for another H x W

    def _run(self, feeds: dict[str, np.ndarray], name: str) -> np.ndarray:
        request, outputs = self._request, self._outputs
        if self.static_hw is not None and feeds["image"].shape[2:] != self.static_hw:
            if self._dynamic is None:
                compiled, _, _ = build_openvino_model(self.model_path, self.config, static_hw=False)
                self._dynamic = (compiled.create_infer_request(), {o.get_any_name(): o for o in compiled.outputs})
            request, outputs = self._dynamic
        # Share buffers in both directions (no copy of every output), then copy only the one asked for:
        # the request reuses its output memory on the next call.
        result = request.infer(feeds, share_inputs=True, share_outputs=True)
        return np.array(result[outputs[name]], copy=True)

    def predict(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Logits float32 [N,C,H,W] for ``image`` float32 [N,1,H,W] (and ``position`` float32 [N] for sc-unet)."""
        return self._run(check_feeds(self.metadata, image, position, self.max_batch), "logits")

    def predict_labels(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Labels uint8 [N,H,W]: the graph's ``labels`` output when it has one, else argmax of the logits."""
        feeds = check_feeds(self.metadata, image, position, self.max_batch)
        if "labels" in self._outputs:
            return self._run(feeds, "labels").astype(np.uint8, copy=False)
        return argmax_labels(self._run(feeds, "logits"))

    def describe(self) -> dict:
        import openvino as ov

        return {
            "engine": "openvino",
            "provider_requested": self.requested,
            "provider": self.provider,
            "device": self.config["device"],
            "compile_config": {k: str(v) for k, v in self.config["config"].items()},
            "precision": self.precision,
            "static_input_hw": list(self.static_hw) if self.static_hw else None,
            "conv_runtime_precisions": dict(self.conv_precisions),
            "model_precision": self.metadata.precision,
            "threads": self.threads,
            "max_batch": self.max_batch,
            "fallback": self.fallback,
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "versions": {"openvino": ov.get_version(), "numpy": np.__version__},
        }

    def close(self) -> None:
        self._request = None
        self._dynamic = None
        self.compiled = None


# ----------------------------------------------------------------------------- factory


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
    ``precision`` picks the bundled file for a name (see ``bundled.resolve_model``); for a path it
    must match the file's metadata unless ``auto``. ``max_batch``: the largest N a call may pass
    (TensorRT builds its profile for 1..max_batch). ``available``/``gpu``: injectable for tests.
    Raises ``ModelError`` (model unusable) or ``ProviderError`` (provider unusable or dropped).
    """
    from limbseg_rt.runtime.model.bundled import resolve_model

    if available is None:
        available = prov.available_providers()
    short, flexible = prov.choose_provider(provider, available)
    path = resolve_model(str(model), precision=precision, provider=short)
    sha = sha256_file(path)
    threads = threads or prov.default_threads()
    md, shapes = None, {}
    if short == "tensorrt":  # the batch profile needs the input size before the session exists
        md = read_metadata(path)
        shapes = {"input_hw": md.input_hw, "in_channels": md.in_channels, "needs_position": md.needs_position}
    resolved = prov.resolve_providers(
        short, device_id=device_id, threads=threads, fp16=fp16, cache_dir=cache_dir, model_sha256=sha,
        max_batch=max_batch, available=available, gpu=gpu, **shapes,
    )
    requested_label = provider if isinstance(provider, str) else ",".join(provider)
    # Otherwise metadata comes from the engine's own load of the file: one load instead of two.
    if resolved[0][0] == prov.OPENVINO_RUNTIME:
        config = resolved[0][1]
        compiled, _, ov_md = build_openvino_model(path, config)
        return OpenVinoRunner(compiled, metadata=md or ov_md, model_path=path,
                              model_sha256=sha, requested=requested_label, config=config, threads=threads,
                              max_batch=max_batch)
    session = build_ort_session(path, resolved, threads=threads)
    md = md or metadata_from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    return runner_from_session(session, metadata=md, model_path=path, model_sha256=sha, short=short,
                               flexible=flexible, allow_fallback=allow_fallback, providers=resolved,
                               threads=threads, max_batch=max_batch, requested_label=requested_label)


def runner_from_session(session, *, metadata: ModelMetadata, model_path: Path, model_sha256: str, short: str,
                        flexible: bool, allow_fallback: bool, providers: list[tuple[str, dict]], threads: int,
                        max_batch: int, requested_label: str | None = None) -> OrtRunner:
    """Check what ``session`` actually runs on against ``short`` (see module docstring), then wrap it."""
    used = list(session.get_providers())
    got = prov.SHORT_NAME.get(used[0], used[0]) if used else "none"
    note = fallback_note(short, got, flexible, allow_fallback)
    return OrtRunner(session, metadata=metadata, model_path=model_path, model_sha256=model_sha256,
                     requested=requested_label or short, providers=providers, threads=threads,
                     max_batch=max_batch, fallback=note)
