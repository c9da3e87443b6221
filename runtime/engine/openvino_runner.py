"""The OpenVINO runtime engine (the ``openvino`` package, no ONNX Runtime involved): compile an ONNX
file for an OpenVINO device, read back the precision it really runs, and run it (``OpenVinoRunner``).

This is its own engine, next to ONNX Runtime (``onnxruntime_runner.py``): ``--provider openvino``
uses ONNX Runtime's OpenVINO execution provider when the installed ONNX Runtime has one, and this
engine otherwise (``runners.create_runner`` decides). Compile settings come from
``providers.openvino_runtime_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine.base import Runner, check_model_graph, run_failure
from limbseg_rt.runtime.errors import ModelError, ProviderError
from limbseg_rt.runtime.model.metadata import GraphTensor, ModelMetadata, metadata_from_props

_OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_CONV_TYPES = ("Convolution", "Deconvolution")


def _tensor(port) -> GraphTensor:
    """A graph port of an OpenVINO model as a ``GraphTensor`` (dynamic axes -> None)."""
    dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return GraphTensor(port.get_any_name(), dims, np.dtype(port.get_element_type().to_dtype()).name)


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
        raise ProviderError(
            f"the openvino package does not import ({type(exc).__name__}: {exc}); reinstall it: "
            f"{prov.INSTALL_HINT['openvino']}"
        ) from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as exc:
        raise ModelError(f"OpenVINO cannot read {path.name}: {str(exc).splitlines()[0][:200]}") from None
    # OpenVINO keeps the ONNX file's metadata_props in the model's rt_info under "framework".
    framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
    props = {str(k): v.astype(str) for k, v in framework.items()} if isinstance(framework, dict) else {}
    md = metadata_from_props(props, path)
    check_model_graph(md, [_tensor(t) for t in model.inputs], [_tensor(t) for t in model.outputs], path)
    try:
        if static_hw:
            model.reshape({"image": [-1, md.in_channels, *md.input_hw]})
        return core.compile_model(model, config["device"], dict(config["config"])), props, md
    except Exception as exc:  # device missing or refusing a property
        raise ProviderError(
            f"OpenVINO cannot compile {path.name} for {config['device']}: {str(exc).splitlines()[0][:200]}"
        ) from None


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


class OpenVinoRunner(Runner):
    """A runner over an OpenVINO ``CompiledModel``. ``precision`` is read back from the compiled model.

    Buffers: the infer request shares its output memory with the next request; ``infer_impl``
    copies the logits out, so what it returns stays the caller's.
    """

    engine = "openvino"

    def __init__(
        self,
        compiled,
        *,
        metadata: ModelMetadata,
        model_path: Path,
        model_sha256: str,
        requested: str,
        config: dict,
        threads: int,
        max_batch: int,
        fallback: str | None = None,
    ):
        self.compiled = compiled
        self.config = config
        precision, self.conv_precisions = openvino_precisions(compiled)
        super().__init__(
            metadata=metadata,
            model_path=model_path,
            model_sha256=model_sha256,
            provider="openvino",
            precision=precision,
            requested=requested,
            threads=threads,
            max_batch=max_batch,
            fallback=fallback,
        )
        self._outputs = {o.get_any_name(): o for o in compiled.outputs}
        self._request = compiled.create_infer_request()
        shape = compiled.input("image").get_partial_shape()
        self.static_hw = (shape[2].get_length(), shape[3].get_length()) if shape[2].is_static else None
        # (request, outputs) compiled on first use for another H x W
        self._dynamic: tuple[Any, dict[str, Any]] | None = None

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        request, outputs = self._request, self._outputs
        if self.static_hw is not None and feeds["image"].shape[2:] != self.static_hw:
            if self._dynamic is None:
                compiled, _, _ = build_openvino_model(self.model_path, self.config, static_hw=False)
                self._dynamic = (compiled.create_infer_request(), {o.get_any_name(): o for o in compiled.outputs})
            request, outputs = self._dynamic
        try:
            # Share buffers in both directions (no copy of every output), then copy only the logits:
            # the request reuses its output memory on the next call.
            result = request.infer(feeds, share_inputs=True, share_outputs=True)
        except RuntimeError as exc:  # OpenVINO reports kernel and allocation failures as RuntimeError
            raise run_failure("OpenVINO", exc, self.model_path) from exc
        return np.array(result[outputs["logits"]], copy=True)

    def describe_impl(self) -> dict:
        import openvino as ov

        return {
            "device": self.config["device"],
            "compile_config": {k: str(v) for k, v in self.config["config"].items()},
            "static_input_hw": list(self.static_hw) if self.static_hw else None,
            "conv_runtime_precisions": dict(self.conv_precisions),
            "versions": {"openvino": ov.get_version(), "numpy": np.__version__},
        }

    def close(self) -> None:
        self._request = None
        self._dynamic = None
        self.compiled = None
