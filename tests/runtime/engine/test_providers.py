"""Provider resolution: priority, per-provider options (TensorRT exactly as documented), errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.errors import EXIT_PROVIDER, ProviderError

TRT, CUDA, OV_EP, OV_RT, CPU = prov.TENSORRT, prov.CUDA, prov.OPENVINO_EP, prov.OPENVINO_RUNTIME, prov.CPU
GPU_BOX = [TRT, CUDA, CPU]
SHA = "0123456789abcdef" * 4


def names(resolved):
    return [name for name, _ in resolved]


@pytest.mark.parametrize(
    "available, expected",
    [
        ([TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        ([CUDA, CPU, OV_RT], [CUDA, CPU]),
        ([CPU, OV_EP, OV_RT], [OV_EP, CPU]),  # ONNX Runtime's own OpenVINO EP wins over the runtime
        (["AzureExecutionProvider", CPU], [CPU]),
    ],
)
def test_auto_takes_the_best_available_in_priority_order(available, expected):
    assert names(prov.resolve_providers("auto", available=available, gpu="X", model_sha256=SHA)) == expected


def test_the_openvino_runtime_is_its_own_engine_not_an_onnxruntime_provider():
    assert prov.short_available([CPU, OV_RT]) == ["openvino", "cpu"]
    assert prov.engine_for("openvino", [CPU, OV_RT]) == prov.ENGINE_OPENVINO
    assert prov.engine_for("openvino", [CPU, OV_EP, OV_RT]) == prov.ENGINE_ORT  # ORT's own EP first
    assert prov.engine_for("cpu", [CPU, OV_RT]) == prov.ENGINE_ORT
    assert OV_RT not in prov.SHORT_NAME  # never handed to ONNX Runtime
    with pytest.raises(ValueError, match="OpenVINO runtime engine"):
        prov.resolve_providers("auto", available=[CPU, OV_RT])


def test_explicit_choice_and_preference_list():
    assert names(prov.resolve_providers("cpu", available=GPU_BOX)) == [CPU]
    assert names(prov.resolve_providers("CUDA", available=GPU_BOX)) == [CUDA, CPU]
    assert names(prov.resolve_providers(["openvino", "cuda", "cpu"], available=GPU_BOX)) == [CUDA, CPU]
    assert prov.choose_provider(["openvino", "cpu"], [CPU]) == ("cpu", True)
    assert prov.choose_provider("cpu", [CPU]) == ("cpu", False)


def test_unavailable_provider_names_what_is_available_and_how_to_install():
    with pytest.raises(ProviderError) as err:
        prov.resolve_providers("cuda", available=[CPU, OV_RT])
    msg = str(err.value)
    assert "'cuda' is not available" in msg and "available: openvino, cpu" in msg
    assert 'pip install "limbseg-rt[gpu]"' in msg and "onnxruntime-gpu" in msg
    assert err.value.exit_code == EXIT_PROVIDER
    with pytest.raises(ProviderError, match=r'pip install "limbseg-rt\[openvino\]"'):
        prov.resolve_providers("openvino", available=[CPU])
    with pytest.raises(ProviderError, match=r"limbseg-rt\[gpu\]"):
        prov.resolve_providers("tensorrt", available=[CUDA, CPU])


def test_unknown_or_empty_request_lists_the_choices():
    with pytest.raises(
        ProviderError, match="unknown execution provider 'gpu'; use one of: auto, tensorrt, cuda, openvino, cpu"
    ):
        prov.resolve_providers("gpu", available=GPU_BOX)
    with pytest.raises(ProviderError, match="no execution provider requested"):
        prov.resolve_providers([], available=GPU_BOX)
    with pytest.raises(ProviderError, match="none of the requested"):
        prov.resolve_providers(["tensorrt", "cuda"], available=[CPU])


def test_tensorrt_options_follow_the_onnxruntime_documentation(tmp_path):
    resolved = prov.resolve_providers(
        "tensorrt",
        available=GPU_BOX,
        device_id=1,
        fp16=True,
        cache_dir=tmp_path,
        model_sha256=SHA,
        max_batch=16,
        opt_batch=8,
        input_hw=(272, 240),
        gpu="NVIDIA A100-SXM4-40GB",
    )
    assert names(resolved) == [TRT, CUDA, CPU]  # CUDA takes nodes TensorRT cannot
    trt = resolved[0][1]
    import onnxruntime as ort

    key = f"{SHA[:16]}-nvidia-a100-sxm4-40gb-ort{ort.__version__}-trt{prov.tensorrt_version()}-fp16"
    cache = tmp_path / "trt" / key
    assert trt == {
        "device_id": 1,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_max_workspace_size": 2 * 1024**3,
        "trt_profile_min_shapes": "image:1x1x272x240",
        "trt_profile_opt_shapes": "image:8x1x272x240",
        "trt_profile_max_shapes": "image:16x1x272x240",
    }
    assert resolved[1][1]["device_id"] == 1
    assert not cache.exists()  # resolving has no side effects; the engine creates the folder


def test_tensorrt_profile_covers_the_position_input_of_sc_unet(tmp_path):
    trt = prov.resolve_providers(
        "tensorrt",
        available=GPU_BOX,
        cache_dir=tmp_path,
        model_sha256=SHA,
        max_batch=4,
        input_hw=(272, 240),
        needs_position=True,
        gpu="g",
    )[0][1]
    assert trt["trt_profile_min_shapes"] == "image:1x1x272x240,position:1"
    assert trt["trt_profile_opt_shapes"] == "image:4x1x272x240,position:4"  # opt defaults to max
    assert trt["trt_profile_max_shapes"] == "image:4x1x272x240,position:4"
    assert trt["trt_fp16_enable"] is False


def test_tensorrt_cache_is_keyed_by_model_gpu_versions_and_precision(tmp_path, monkeypatch):
    def cache_path(**kw):
        args = dict(available=GPU_BOX, cache_dir=tmp_path, model_sha256=SHA, gpu="GPU A", fp16=False)
        args.update(kw)
        return prov.resolve_providers("tensorrt", **args)[0][1]["trt_engine_cache_path"]

    base = cache_path()
    assert len({base, cache_path(model_sha256="f" * 64), cache_path(gpu="GPU B"), cache_path(fp16=True)}) == 4
    monkeypatch.setattr(prov, "tensorrt_version", lambda: "10.99.0")
    assert "trt10.99.0" in cache_path() and cache_path() != base
    # default root: the user's cache folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    default = prov.resolve_providers("tensorrt", available=GPU_BOX, model_sha256=SHA, gpu="GPU A")[0][1]
    assert Path(default["trt_engine_cache_path"]).parent == tmp_path / "xdg" / "limbseg-rt" / "trt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert prov.default_cache_root() == Path.home() / ".cache" / "limbseg-rt"


def test_cuda_options():
    cuda = dict(prov.resolve_providers("cuda", available=GPU_BOX, device_id=2))[CUDA]
    assert cuda == {
        "device_id": 2,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }


def test_openvino_runtime_forces_f32_and_sets_threads_and_latency():
    cfg = prov.openvino_runtime_config(threads=3)
    assert cfg == {
        "device": "CPU",
        "config": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 3, "PERFORMANCE_HINT": "LATENCY"},
    }
    ep = dict(prov.resolve_providers("openvino", available=[OV_EP, CPU], threads=3))[OV_EP]
    assert ep["device_type"] == "CPU"
    assert json.loads(ep["load_config"]) == {
        "CPU": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "3", "PERFORMANCE_HINT": "LATENCY"}
    }


def test_fp16_is_only_a_tensorrt_flag():
    with pytest.raises(ProviderError, match="--fp16 .* needs --provider tensorrt"):
        prov.resolve_providers("cpu", available=GPU_BOX, fp16=True)
    with pytest.raises(ProviderError, match="max batch must be at least 1"):
        prov.resolve_providers("cpu", available=[CPU], max_batch=0)


def test_default_threads_is_sane():
    n = prov.default_threads()
    assert 1 <= n <= 16


def test_probe_reports_a_listed_but_unloadable_provider_as_not_usable():
    # Our plain onnxruntime lacks CUDA; pretending it is listed mimics onnxruntime-gpu without CUDA libraries.
    with pytest.warns(UserWarning):
        probes = prov.probe_providers([CUDA, CPU])
    assert probes["cpu"][0] is True
    assert probes["cuda"][0] is False and "limbseg-rt[gpu]" in probes["cuda"][1]
    assert "tensorrt" not in probes


def test_available_providers_matches_onnxruntime():
    import onnxruntime as ort

    assert prov.available_providers() == ort.get_available_providers()
    engines = prov.available_engines()
    assert engines[: len(ort.get_available_providers())] == ort.get_available_providers()
    try:
        import openvino  # noqa: F401
    except ImportError:
        assert OV_RT not in engines
    else:
        assert engines[-1] == OV_RT
