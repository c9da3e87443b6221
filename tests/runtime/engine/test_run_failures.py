"""The engine failing while running (issue 17): a kernel error is exit 9 "ONNX Runtime failed while
running", an allocation failure exit 10 "out of memory" (the C library's status codes), one stderr
line, no output files, the input untouched."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import pytest
from onnx_factory import make_tiny_model
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, RuntimeException

from limbseg_rt.cli import main as cli_main
from limbseg_rt.runtime.engine import providers as prov
from limbseg_rt.runtime.engine.runners import create_runner
from limbseg_rt.runtime.errors import EXIT_ENGINE, EXIT_MEMORY, EngineRunError, OutOfMemoryError

HW = (32, 24)


def make_reshape_failing_model(path: Path) -> Path:
    """A tiny model whose graph loads but cannot run: after the convolution, ``logits`` are reshaped
    to their own shape plus one channel, a target known only at run time (Shape -> Add)."""
    import onnx
    from onnx import numpy_helper

    make_tiny_model(path, hw=HW, labels_output=False)
    model = onnx.load(path)
    g = model.graph
    [conv] = [n for n in g.node if n.op_type == "Conv"]
    conv.output[0] = "conv_out"
    g.initializer.append(numpy_helper.from_array(np.array([0, 1, 0, 0], np.int64), "one_more_channel"))
    g.node.extend(
        [
            onnx.helper.make_node("Shape", ["conv_out"], ["shape"]),
            onnx.helper.make_node("Add", ["shape", "one_more_channel"], ["bad_shape"]),
            onnx.helper.make_node("Reshape", ["conv_out", "bad_shape"], ["logits"]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    rng = np.random.default_rng(1)
    img = nib.Nifti1Image(rng.integers(0, 1000, (40, 36, 4)).astype(np.int16), np.diag([1.5, 1.5, 5.0, 1.0]))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    nib.save(img, str(path))
    return path


def _run_cli(scan: Path, model: Path, out_dir: Path, capfd) -> tuple[int, list[str]]:
    before = hashlib.sha256(scan.read_bytes()).hexdigest()
    code = cli_main(
        [
            "run",
            str(scan),
            "--model",
            str(model),
            "--provider",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out_dir / "seg.nii.gz"),
            "--report",
            str(out_dir / "r.json"),
            "--csv",
            str(out_dir / "v.csv"),
        ]
    )
    out, err = capfd.readouterr()
    assert out == ""
    assert list(out_dir.iterdir()) == []  # no partial outputs
    assert sorted(p.name for p in scan.parent.iterdir()) == ["scan.nii.gz"]
    assert hashlib.sha256(scan.read_bytes()).hexdigest() == before
    return code, err.splitlines()


def test_a_kernel_error_at_run_time_is_exit_9_in_one_line(scan, tmp_path, capfd):
    model = make_reshape_failing_model(tmp_path / "reshape.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, lines = _run_cli(scan, model, out_dir, capfd)
    assert code == EXIT_ENGINE == 9
    assert len(lines) == 1, lines
    assert lines[0].startswith("limbseg-rt: error: ONNX Runtime failed while running reshape.onnx (")
    assert "Reshape" in lines[0] and "--provider cpu or another model file" in lines[0]


@pytest.mark.parametrize(
    "message, exc_type, code, words",
    [
        (
            "Failed to allocate memory for requested buffer of size 123456789",
            RuntimeException,
            EXIT_MEMORY,
            "ONNX Runtime ran out of memory running tiny.onnx",
        ),
        ("bad_alloc", Fail, EXIT_MEMORY, "ran out of memory"),
        (
            "Non-zero status code returned while running Conv node. Name:'conv'",
            Fail,
            EXIT_ENGINE,
            "ONNX Runtime failed while running tiny.onnx",
        ),
    ],
)
def test_onnxruntime_exceptions_while_running_map_to_their_codes(
    scan, tmp_path, capfd, monkeypatch, message, exc_type, code, words
):
    model = make_tiny_model(tmp_path / "tiny.onnx", hw=HW)

    def failing_run(self, *args, **kwargs):
        raise exc_type(message)

    monkeypatch.setattr(ort.InferenceSession, "run", failing_run)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    got, lines = _run_cli(scan, model, out_dir, capfd)
    assert got == code
    assert len(lines) == 1 and lines[0].startswith("limbseg-rt: error: ") and words in lines[0], lines


def test_runner_raises_typed_errors_and_keeps_programming_errors_apart(tmp_path, monkeypatch):
    runner = create_runner(make_reshape_failing_model(tmp_path / "reshape.onnx"), provider="cpu", threads=1)
    batch = np.zeros((2, 1, *HW), np.float32)
    with pytest.raises(EngineRunError) as err:
        runner.infer(batch)
    assert not isinstance(err.value, OutOfMemoryError) and err.value.exit_code == 9
    with pytest.raises(ValueError, match="float32"):  # misuse stays a ValueError, not an engine failure
        runner.infer(batch[:, 0])
    ok = create_runner(make_tiny_model(tmp_path / "ok.onnx", hw=HW), provider="cpu", threads=1)
    monkeypatch.setattr(ok.session, "run", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(OutOfMemoryError) as err:
        ok.infer(batch)
    assert err.value.exit_code == 10


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs the openvino package")
def test_the_openvino_runtime_engine_types_its_run_failures_too(tmp_path):
    # OpenVINO folds the Reshape model's shapes at load (and refuses it there, exit 4), so its run
    # failures are injected: it raises RuntimeError for kernel and allocation failures.
    class FailingRequest:
        def __init__(self, message):
            self.message = message

        def infer(self, *args, **kwargs):
            raise RuntimeError(self.message)

    with pytest.raises(Exception, match="the metadata says 38"):
        create_runner(
            make_reshape_failing_model(tmp_path / "reshape.onnx"),
            provider="openvino",
            available=[prov.CPU, prov.OPENVINO_RUNTIME],
            threads=1,
        )
    runner = create_runner(
        make_tiny_model(tmp_path / "ok.onnx", hw=HW),
        provider="openvino",
        available=[prov.CPU, prov.OPENVINO_RUNTIME],
        threads=1,
    )
    batch = np.zeros((2, 1, *HW), np.float32)
    runner._request = FailingRequest("Exception from src/inference/src/cpp/infer_request.cpp: kernel failed")
    with pytest.raises(EngineRunError, match="OpenVINO failed while running ok.onnx") as err:
        runner.infer(batch)
    assert err.value.exit_code == 9
    runner._request = FailingRequest("std::bad_alloc")
    with pytest.raises(OutOfMemoryError, match="OpenVINO ran out of memory"):
        runner.infer(batch)
