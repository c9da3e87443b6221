"""Runners: results equal a direct ONNX Runtime run, OpenVINO agrees and reports its real precision,
dropped providers are caught, misuse is refused. Tiny models are built by onnx_factory."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest
from onnx_factory import make_tiny_model

from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine import runners as engine
from limbseg_rt.runtime.engine.runners import create_runner
from limbseg_rt.runtime.errors import ModelError, ProviderError
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.metadata import read_metadata

HW = (32, 24)
OV_RUNTIME = [prov.CPU, prov.OPENVINO_RUNTIME]  # the openvino package, not ONNX Runtime's OpenVINO EP
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs the openvino package")
HAVE_OPENVINO = "openvino" in prov.short_available(prov.available_engines())  # package or ORT EP
ENGINES = ["cpu", pytest.param("openvino", marks=pytest.mark.skipif(not HAVE_OPENVINO, reason="no OpenVINO installed"))]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "unet": make_tiny_model(d / "unet.onnx", hw=HW),
        "sc": make_tiny_model(d / "sc.onnx", hw=HW, position=True, seed=1),
        "nolabels": make_tiny_model(d / "nolabels.onnx", hw=HW, labels_output=False, classes=5, seed=2),
        "int8": make_tiny_model(d / "int8.onnx", hw=HW, precision="int8", seed=3),
    }


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(7).random((3, 1, *HW), dtype=np.float32)


def direct(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def test_cpu_runner_equals_a_direct_onnxruntime_run(models, batch):
    runner = create_runner(models["unet"], provider="cpu", threads=1)
    ref = direct(models["unet"], {"image": batch})
    logits = runner.infer(batch)
    assert logits.dtype == np.float32 and logits.shape == (3, 38, *HW)
    np.testing.assert_array_equal(logits, ref["logits"])
    np.testing.assert_array_equal(runner.predict(batch), logits)  # predict is infer
    assert runner.provider == "cpu" and runner.precision == "fp32"
    assert runner.metadata.architecture == "unet" and runner.model_path == models["unet"]
    assert runner.model_sha256 == sha256_file(models["unet"]) and len(runner.model_sha256) == 64
    d = runner.describe()
    assert d["provider_requested"] == "cpu" and d["session_providers"] == ["CPUExecutionProvider"]
    assert d["threads"] == 1 and d["fallback"] is None and d["versions"]["onnxruntime"] == ort.__version__
    so = runner.session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    runner.close()


def test_sc_unet_takes_position_and_it_changes_the_result(models, batch):
    runner = create_runner(models["sc"], provider="cpu", threads=1)
    pos = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    ref = direct(models["sc"], {"image": batch, "position": pos})
    np.testing.assert_array_equal(runner.predict(batch, pos), ref["logits"])
    assert not np.array_equal(runner.predict(batch, pos), runner.predict(batch, pos[::-1].copy()))
    with pytest.raises(ValueError, match="needs a position input"):
        runner.predict(batch)
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        runner.predict(batch, pos[:2])


def test_a_model_without_a_labels_output_runs(models, batch):
    runner = create_runner(models["nolabels"], provider="cpu", threads=1)
    np.testing.assert_array_equal(runner.predict(batch), direct(models["nolabels"], {"image": batch})["logits"])


@pytest.mark.parametrize("provider", ENGINES)
def test_returned_arrays_are_not_overwritten_by_later_calls(models, batch, provider):
    runner = create_runner(models["unet"], provider=provider, threads=1)
    first = runner.predict(batch[:2])
    keep = first.copy()
    runner.predict(batch[1:] * 0.5)
    np.testing.assert_array_equal(first, keep)


def test_misuse_is_refused(models, batch):
    runner = create_runner(models["unet"], provider="cpu", threads=1, max_batch=2)
    with pytest.raises(ValueError, match="exceeds this runner's max_batch=2"):
        runner.predict(batch)
    with pytest.raises(ValueError, match=r"float32 \[N,1,H,W\]"):
        runner.predict(batch[:, 0])
    with pytest.raises(ValueError, match="takes no position input"):
        runner.predict(batch[:2], np.zeros(2, np.float32))
    # float64 input is converted, not rejected
    np.testing.assert_array_equal(runner.predict(batch[:2].astype(np.float64)), runner.predict(batch[:2]))


@needs_openvino
def test_openvino_runner_agrees_with_onnxruntime_and_runs_f32(models, batch):
    runner = create_runner(models["unet"], provider="openvino", threads=1, available=OV_RUNTIME)
    ref = direct(models["unet"], {"image": batch})
    assert runner.provider == "openvino"
    # OpenVINO's default here is bf16; the runner must have forced f32, and read it back
    assert runner.precision == "fp32"
    assert runner.describe()["conv_runtime_precisions"] == {"f32": 1}
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    np.testing.assert_allclose(runner.predict(batch), ref["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(runner.predict(batch).argmax(axis=1), ref["labels"])
    d = runner.describe()
    assert d["engine"] == "openvino" and d["compile_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    sc = create_runner(models["sc"], provider="openvino", threads=1, available=OV_RUNTIME)
    pos = np.array([0.2, 0.4, 1.0], dtype=np.float32)
    np.testing.assert_allclose(
        sc.predict(batch, pos), direct(models["sc"], {"image": batch, "position": pos})["logits"], rtol=1e-5, atol=1e-5
    )


@needs_openvino
def test_openvino_compiles_the_trained_size_static_and_still_serves_other_sizes():
    from limbseg_rt.runtime.model.bundled import resolve_model

    path = resolve_model("unet", precision="fp32", provider="openvino")  # exported with dynamic N, H, W
    runner = create_runner(path, provider="openvino", threads=1, available=OV_RUNTIME)
    hw = tuple(runner.metadata.input_hw)
    assert runner.static_hw == hw and runner.describe()["static_input_hw"] == list(hw)
    rng = np.random.default_rng(3)
    trained = rng.random((2, 1, *hw), dtype=np.float32)
    np.testing.assert_allclose(
        runner.predict(trained), direct(path, {"image": trained})["logits"], rtol=1e-4, atol=1e-4
    )
    assert runner._dynamic is None  # the trained size never needs the dynamic graph
    other = rng.random((2, 1, 96, 80), dtype=np.float32)
    np.testing.assert_allclose(runner.predict(other), direct(path, {"image": other})["logits"], rtol=1e-4, atol=1e-4)
    assert runner._dynamic is not None


@needs_openvino
def test_openvino_runs_an_int8_qdq_model_in_int8(models, batch):
    runner = create_runner(models["int8"], provider="openvino", threads=1, available=OV_RUNTIME)
    assert runner.precision == "int8"
    assert set(runner.describe()["conv_runtime_precisions"]) <= {"u8", "i8"}
    ref = direct(models["int8"], {"image": batch})
    # Same quantised arithmetic; a rare value may round to the neighbouring uint8 step.
    assert np.mean(np.abs(runner.predict(batch) - ref["logits"]) < 1e-4) > 0.999
    assert np.mean(runner.predict(batch).argmax(axis=1) == ref["labels"]) > 0.99
    assert create_runner(models["int8"], provider="cpu", threads=1).precision == "int8"


class ReportingSession:
    """A real CPU session that reports ``providers`` (default: only CPU, as ONNX Runtime does after
    dropping the provider that was asked for)."""

    def __init__(self, path, providers=("CPUExecutionProvider",)):
        self._sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._providers = list(providers)

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._sess, name)


def test_a_silently_dropped_provider_is_an_error(models, batch, monkeypatch):
    # onnxruntime-openvino refusing precision BF16 on this CPU runs on CPUExecutionProvider quietly.
    monkeypatch.setattr(engine, "build_ort_session", lambda path, providers, threads: ReportingSession(path))
    available = [prov.OPENVINO_EP, prov.CPU]
    with pytest.raises(ProviderError) as err:
        create_runner(models["unet"], provider="openvino", available=available)
    msg = str(err.value)
    assert "'openvino' was requested" in msg and "'cpu'" in msg and "--allow-fallback" in msg
    runner = create_runner(models["unet"], provider="openvino", available=available, allow_fallback=True)
    assert runner.provider == "cpu"
    assert (
        runner.describe()["fallback"]
        == "requested openvino, running on cpu: ONNX Runtime could not use openvino (--allow-fallback)"
    )
    np.testing.assert_array_equal(runner.predict(batch), direct(models["unet"], {"image": batch})["logits"])


@pytest.mark.parametrize(
    "used, fp16, model, expected",
    [
        (prov.TENSORRT, True, "unet", "fp16"),  # TensorRT's fp16 mode on an fp32 file
        (prov.TENSORRT, False, "unet", "fp32"),
        (prov.TENSORRT, False, "int8", "int8"),  # explicit QDQ quantisation runs in int8 on TensorRT
        (prov.CUDA, False, "int8", "fp32"),  # the CUDA EP dequantises and convolves in fp32
        (prov.CUDA, False, "unet", "fp32"),
    ],
)
def test_reported_precision_is_what_the_provider_runs(models, used, fp16, model, expected):
    path = models[model]
    short = prov.SHORT_NAME[used]
    chain = [(used, {"trt_fp16_enable": fp16} if used == prov.TENSORRT else {}), (prov.CPU, {})]
    runner = engine.runner_from_session(
        ReportingSession(path, [used, prov.CPU]),
        metadata=read_metadata(path),
        model_path=path,
        model_sha256="0" * 64,
        short=short,
        flexible=False,
        allow_fallback=False,
        providers=chain,
        threads=1,
        max_batch=4,
    )
    assert runner.provider == short and runner.precision == expected


def test_real_onnxruntime_drop_is_caught(models):
    # Plain onnxruntime has no CUDA: told it is available, ORT warns and runs on CPU; we refuse.
    with pytest.warns(UserWarning), pytest.raises(ProviderError, match="'cuda' was requested"):
        create_runner(models["unet"], provider="cuda", available=[prov.CUDA, prov.CPU])
    with pytest.warns(UserWarning):
        runner = create_runner(models["unet"], provider="auto", available=[prov.CUDA, prov.CPU])
    assert runner.provider == "cpu" and "automatic choice" in runner.describe()["fallback"]


def test_tensorrt_request_builds_its_cache_and_is_refused_when_dropped(models, tmp_path):
    # The whole TensorRT path short of a GPU: options accepted by ORT's Python layer, cache folder
    # made under the key, then the drop (no TensorRT in plain onnxruntime) caught.
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT EP present: the drop cannot be provoked")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ProviderError, match="'tensorrt' was requested .* would run on 'cpu'"),
    ):
        create_runner(
            models["sc"],
            provider="tensorrt",
            available=[prov.TENSORRT, prov.CUDA, prov.CPU],
            cache_dir=tmp_path,
            gpu="Test GPU",
            max_batch=4,
        )
    [cache] = (tmp_path / "trt").iterdir()
    assert cache.name.startswith(sha256_file(models["sc"])[:16] + "-test-gpu-ort")
    with pytest.warns(UserWarning):
        runner = create_runner(
            models["sc"],
            provider="tensorrt",
            available=[prov.TENSORRT, prov.CPU],
            cache_dir=tmp_path,
            gpu="Test GPU",
            allow_fallback=True,
        )
    assert runner.provider == "cpu" and "requested tensorrt, running on cpu" in runner.describe()["fallback"]
    trt_opts = dict(runner.describe()["provider_options"])[prov.TENSORRT]
    assert trt_opts["trt_profile_max_shapes"] == "image:16x1x32x24,position:16"


def test_bad_model_files_are_model_errors(tmp_path, models):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for provider in ("cpu", "openvino") if HAVE_OPENVINO else ("cpu",):
        with pytest.raises(ModelError, match=r"cannot (load|read) bad\.onnx"):
            create_runner(bad, provider=provider)
    with pytest.raises(ModelError, match="model file not found"):
        create_runner(tmp_path / "missing.onnx", provider="cpu")
    with pytest.raises(ModelError, match="is a fp32 model, but --precision int8"):
        create_runner(models["unet"], provider="cpu", precision="int8")


@pytest.mark.parametrize("provider", ENGINES)
def test_a_model_without_limbseg_metadata_is_refused_by_every_engine(tmp_path, provider):
    import onnx

    path = make_tiny_model(tmp_path / "plain.onnx")
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ModelError, match="plain.onnx: model has no limbseg-rt metadata"):
        create_runner(path, provider=provider)


@pytest.mark.skipif(
    prov.OPENVINO_EP not in ort.get_available_providers(),
    reason="needs the onnxruntime-openvino build (its OpenVINO EP replaces plain onnxruntime)",
)
def test_onnxruntime_openvino_ep_runs_f32_and_agrees(models, batch):
    runner = create_runner(models["unet"], provider="openvino", threads=1, available=[prov.OPENVINO_EP, prov.CPU])
    assert runner.describe()["session_providers"][0] == prov.OPENVINO_EP and runner.precision == "fp32"
    ref = direct(models["unet"], {"image": batch})
    np.testing.assert_allclose(runner.predict(batch), ref["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(runner.predict(batch).argmax(axis=1), ref["labels"])


def _usable(short):
    return prov.probe_providers().get(short, (False, ""))[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _usable("cuda"), reason="needs an NVIDIA GPU with onnxruntime-gpu (CUDA EP not usable here)")
def test_cuda_runner_matches_cpu(models, batch):
    gpu = create_runner(models["unet"], provider="cuda")
    cpu = create_runner(models["unet"], provider="cpu")
    assert gpu.provider == "cuda"
    np.testing.assert_allclose(gpu.predict(batch), cpu.predict(batch), atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.skipif(not _usable("tensorrt"), reason="needs TensorRT with onnxruntime-gpu (TensorRT EP not usable here)")
def test_tensorrt_runner_matches_cpu_and_fills_the_engine_cache(models, batch, tmp_path):
    trt = create_runner(models["unet"], provider="tensorrt", cache_dir=tmp_path, max_batch=4)
    cpu = create_runner(models["unet"], provider="cpu")
    assert trt.provider == "tensorrt" and trt.precision == "fp32"
    np.testing.assert_allclose(trt.predict(batch), cpu.predict(batch), atol=1e-3)
    assert any((tmp_path / "trt").rglob("*.engine"))


def test_an_unavailable_provider_with_allow_fallback_runs_on_the_best_available_and_says_so(models, batch):
    available = [prov.CPU]  # no CUDA here
    with pytest.raises(ProviderError, match="cuda"):
        create_runner(models["unet"], provider="cuda", available=available)
    runner = create_runner(models["unet"], provider="cuda", available=available, allow_fallback=True)
    try:
        assert runner.provider == "cpu"
        note = runner.describe()["fallback"]
        assert note.startswith("cuda is not usable here (") and note.endswith("--allow-fallback: running on cpu")
        np.testing.assert_array_equal(runner.predict(batch), direct(models["unet"], {"image": batch})["logits"])
    finally:
        runner.close()
