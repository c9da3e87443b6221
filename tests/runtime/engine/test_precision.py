"""Precision is resolved after the provider: what ``--provider auto`` lands on decides what
``--precision`` means (TensorRT's fp16 is a builder flag on the fp32 file, not a file).

The machine's providers are injected (``providers.available_engines`` monkeypatched) and GPU sessions
are real CPU sessions that report the GPU provider, as ONNX Runtime would on a GPU machine."""

from __future__ import annotations

import importlib.util

import onnxruntime as ort
import pytest

from limbseg_rt.runtime.api import Segmenter
from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine import runners
from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model.bundled import list_bundled

TRT, CUDA, CPU, OV_RT = prov.TENSORRT, prov.CUDA, prov.CPU, prov.OPENVINO_RUNTIME
HAVE_OV = importlib.util.find_spec("openvino") is not None
BUNDLED = {(m.arch, m.precision): m.path for m in list_bundled()}
pytestmark = pytest.mark.skipif(
    ("unet", "fp32") not in BUNDLED or ("unet", "int8") not in BUNDLED,
    reason="needs the bundled UNet fp32 and int8 files",
)


class GpuReportingSession:
    """A real CPU session that reports the first provider it was asked for (a GPU box)."""

    def __init__(self, path, providers):
        self._sess = ort.InferenceSession(str(path), providers=[CPU])
        self._providers = [name for name, _ in providers]

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._sess, name)


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """``machine([...])`` makes this process see those providers/engines."""
    monkeypatch.setattr(
        runners, "build_ort_session", lambda path, providers, threads: GpuReportingSession(path, providers)
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the TensorRT cache folder goes here

    def set_available(names):
        monkeypatch.setattr(prov, "available_engines", lambda: list(names))

    return set_available


@pytest.mark.parametrize("provider", ["auto", "tensorrt"])
def test_fp16_on_tensorrt_is_trt_fp16_mode_whether_typed_or_chosen_by_auto(machine, provider):
    machine([TRT, CUDA, CPU])
    with Segmenter("unet", provider=provider, precision="fp16") as seg:
        assert seg.provider == "tensorrt" and seg.precision == "fp16"
        assert seg.model_path == BUNDLED[("unet", "fp32")]
        assert dict(seg.describe()["provider_options"])[TRT]["trt_fp16_enable"] is True


@pytest.mark.parametrize(
    "available, provider, precision, want_provider, want_file, want_precision",
    [
        ([TRT, CUDA, CPU], "auto", "auto", "tensorrt", "fp32", "fp32"),
        ([TRT, CUDA, CPU], "auto", "int8", "tensorrt", "int8", "int8"),
        ([CUDA, CPU], "auto", "auto", "cuda", "fp32", "fp32"),
        ([CUDA, CPU], "auto", "int8", "cuda", "int8", "fp32"),  # the CUDA EP dequantises and computes in fp32
        ([CPU], "auto", "auto", "cpu", "int8", "int8"),
        ([CPU], "auto", "fp32", "cpu", "fp32", "fp32"),
        ([TRT, CUDA, CPU], "cpu", "auto", "cpu", "int8", "int8"),
        pytest.param(
            [CPU, OV_RT],
            "auto",
            "auto",
            "openvino",
            "int8",
            "int8",
            marks=pytest.mark.skipif(not HAVE_OV, reason="needs the openvino package"),
        ),
        pytest.param(
            [CPU, OV_RT],
            "auto",
            "fp32",
            "openvino",
            "fp32",
            "fp32",
            marks=pytest.mark.skipif(not HAVE_OV, reason="needs the openvino package"),
        ),
    ],
)
def test_precision_follows_the_provider_that_runs(
    machine, available, provider, precision, want_provider, want_file, want_precision
):
    machine(available)
    with Segmenter("unet", provider=provider, precision=precision, threads=1) as seg:
        assert seg.provider == want_provider
        assert seg.model_path == BUNDLED[("unet", want_file)]
        assert seg.precision == want_precision
        if want_provider == "tensorrt":
            assert dict(seg.describe()["provider_options"])[TRT]["trt_fp16_enable"] is False


@pytest.mark.parametrize("available, provider", [([CUDA, CPU], "auto"), ([CPU], "auto"), ([TRT, CUDA, CPU], "cuda")])
def test_fp16_off_tensorrt_is_refused_naming_tensorrt(machine, available, provider):
    machine(available)
    with pytest.raises(ModelError, match="no fp16 models are bundled: TensorRT runs"):
        Segmenter("unet", provider=provider, precision="fp16")


def test_tensorrt_fp16_mode_needs_an_fp32_file(machine):
    machine([TRT, CPU])
    with pytest.raises(ModelError, match="unet-int8.onnx is a int8 model; TensorRT's fp16 mode needs an fp32 model"):
        Segmenter(BUNDLED[("unet", "int8")], provider="auto", precision="fp16")
