"""``limbseg-rt info``: installation summary, one model's metadata and I/O, bad files."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx_factory import make_tiny_model

from limbseg_rt.cli import main
from limbseg_rt.runtime.errors import EXIT_MODEL
from limbseg_rt.runtime.model import bundled


@pytest.fixture(scope="module")
def sc_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("info") / "sc.onnx", hw=(272, 240), position=True)


def test_info_without_model_lists_versions_providers_and_bundles(tmp_path, monkeypatch, capsys):
    make_tiny_model(tmp_path / "unet-int8.onnx", precision="int8")
    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"onnxruntime  {ort.__version__}" in out and f"numpy        {np.__version__}" in out
    assert "limbseg-rt   0.1.0" in out and "nibabel" in out
    assert "  cpu       usable" in out
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert 'cuda      absent      pip install "limbseg-rt[gpu]"' in out
    sha = bundled.list_bundled(tmp_path)[0].sha256()
    assert "unet            int8 " in out and f"sha256 {sha[:12]}" in out


def test_info_with_a_model_prints_metadata_and_graph_io(sc_model, capsys):
    assert main(["info", str(sc_model)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "architecture   sc-unet",
        "classes        38 (background + 37 muscles)",
        "label table    38 labels: BG, ADB, ADL, ADM, ..., VL, VM",
        "input size     272 x 240 pixels (H x W), 1 channel(s)",
        "normalisation  percentile 0.5-99.5 per volume",
        "position       100 bins, proximal_to_distal",
        "precision      fp32",
        "checkpoint     " + "ab" * 32,
        '"argmax_agreement": 1.0',
    ):
        assert expected in out, expected
    lines = out.splitlines()
    io = lines[lines.index("inputs:") :]
    assert any(line.split() == ["image", "[batch,", "1,", "272,", "240]", "tensor(float)"] for line in io)
    assert any(line.split() == ["position", "[batch]", "tensor(float)"] for line in io)
    assert any(line.split() == ["labels", "[batch,", "272,", "240]", "tensor(uint8)"] for line in io)


def test_info_with_a_bundled_name(tmp_path, monkeypatch, capsys):
    make_tiny_model(tmp_path / "unet-fp32.onnx")
    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path)
    assert main(["info", "unet"]) == 0
    assert f"file           {tmp_path / 'unet-fp32.onnx'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (b"definitely not protobuf", "bad.onnx is not a readable ONNX model"),
        (None, "model file not found"),
    ],
)
def test_a_bad_model_file_is_one_line_and_exit_4(tmp_path, capsys, content, message):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    assert main(["info", str(path)]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert err.startswith("limbseg-rt: error: ") and message in err and err.count("\n") == 1


def test_a_model_without_limbseg_metadata_is_exit_4(tmp_path, capsys):
    import onnx

    path = make_tiny_model(tmp_path / "plain.onnx")
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    assert main(["info", str(path)]) == EXIT_MODEL
    assert "has no limbseg-rt metadata" in capsys.readouterr().err
